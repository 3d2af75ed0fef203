"""edifice:osmdownload — OpenStreetMap POIs, buildings and roads from Overpass
(adapter over core.acquire.osm.download_osm)."""
from __future__ import annotations

from pathlib import Path

from qgis.core import (QgsCoordinateReferenceSystem, QgsProcessing, QgsProcessingException,
                       QgsProcessingOutputNumber, QgsProcessingOutputString, QgsProcessingParameterBoolean,
                       QgsProcessingParameterCrs, QgsProcessingParameterDefinition, QgsProcessingParameterExtent,
                       QgsProcessingParameterNumber, QgsProcessingParameterString,
                       QgsProcessingParameterVectorDestination, QgsSettings)

from .base import EdificeAlgorithm

#: QGIS setting holding the user's Overpass endpoint (the ENDPOINT default).
ENDPOINT_SETTING = "edifice/overpass_url"


class OsmDownloadAlgorithm(EdificeAlgorithm):
    EXTENT, ENDPOINT, MAX_TILE_KM2, TIMEOUT, PARALLEL = "EXTENT", "ENDPOINT", "MAX_TILE_KM2", "TIMEOUT", "PARALLEL"
    USE_CACHE, OUTPUT_CRS = "USE_CACHE", "OUTPUT_CRS"
    POIS, BUILDINGS, ROADS = "POIS", "BUILDINGS", "ROADS"
    GROUP, GROUP_ID = "Data acquisition", "acquisition"
    HELP = ("OpenStreetMap data for an EXTENT (any CRS) from an Overpass API ENDPOINT (default: the QGIS setting "
            "edifice/overpass_url, else the public instance). POIS: nodes and the centres of ways/relations with "
            "the tags the osm POI preset reads (one field per key, the rest in other_tags), ready for 'POI "
            "probability maps' and 'Training dataset' (PRESET osm, CATEGORY_FIELD other_tags). BUILDINGS: "
            "footprints (multipolygon relations assembled from their member ways) with building, building:use, "
            "amenity, shop, office, craft, industrial, building:levels (integer), height (m), start_date and the "
            "derived use (osm_building taxonomy: residential / commercial / industrial / unknown), ready for "
            "'Training dataset' with USE_FIELD building and USE_PRESET osm_building. ROADS (optional): highway "
            "ways. Every layer records osm_timestamp (the Overpass database's date). Large extents are split so "
            "each query covers at most MAX_TILE_KM2 (a box the server gives up on, timeout or memory, is asked "
            "again in quarters); queries go one at a time (PARALLEL), retried with backoff "
            "(429/504 and Retry-After honoured), and answers are cached, so a re-run sends nothing. Counts per "
            "class are written to the log. Data © OpenStreetMap contributors, ODbL 1.0.")

    def name(self):
        return "osmdownload"

    def displayName(self):  # noqa: N802
        return "Download OpenStreetMap POIs and buildings"

    def initAlgorithm(self, config=None):  # noqa: N802
        from ..core.acquire.overpass import DEFAULT_ENDPOINT, DEFAULT_MAX_TILE_KM2

        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Extent"))
        endpoint = QgsSettings().value(ENDPOINT_SETTING, DEFAULT_ENDPOINT) or DEFAULT_ENDPOINT
        advanced = [
            QgsProcessingParameterString(self.ENDPOINT, "Overpass API endpoint", defaultValue=endpoint),
            QgsProcessingParameterNumber(self.MAX_TILE_KM2, "Largest area of one query (km²)",
                                         QgsProcessingParameterNumber.Double, DEFAULT_MAX_TILE_KM2, minValue=0.001),
            QgsProcessingParameterNumber(self.TIMEOUT, "Query timeout (s)", QgsProcessingParameterNumber.Integer,
                                         180, minValue=1),
            QgsProcessingParameterNumber(self.PARALLEL, "Queries at once", QgsProcessingParameterNumber.Integer,
                                         1, minValue=1, maxValue=4),
            QgsProcessingParameterBoolean(self.USE_CACHE, "Use the response cache", defaultValue=True),
            QgsProcessingParameterCrs(self.OUTPUT_CRS, "Output CRS (default: the extent's)", optional=True),
        ]
        for p in advanced:
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterVectorDestination(self.POIS, "POIs", QgsProcessing.TypeVectorPoint))
        self.addParameter(QgsProcessingParameterVectorDestination(self.BUILDINGS, "Buildings",
                                                                  QgsProcessing.TypeVectorPolygon))
        self.addParameter(QgsProcessingParameterVectorDestination(self.ROADS, "Roads", QgsProcessing.TypeVectorLine,
                                                                  optional=True, createByDefault=False))
        for key in ("POI", "RESIDENTIAL", "COMMERCIAL", "INDUSTRIAL", "UNKNOWN"):
            self.addOutput(QgsProcessingOutputNumber(f"{key}_COUNT", f"{key.lower()} count"))
        self.addOutput(QgsProcessingOutputString("OSM_TIMESTAMP", "OSM data timestamp (UTC)"))

    def _outputs(self, parameters, context) -> dict:
        outs = {}
        for key, layer in ((self.POIS, "pois"), (self.BUILDINGS, "buildings"), (self.ROADS, "roads")):
            if parameters.get(key) in (None, ""):
                continue
            path = self.parameterAsOutputLayer(parameters, key, context)
            if path and Path(path).suffix.lower() != ".gpkg":
                raise QgsProcessingException(f"{key}: '{path}' is not a GeoPackage. Fix: save to a .gpkg file.")
            if path:
                outs[layer] = path
        return outs

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.acquire.osm import OsmRequest, download_osm

        crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
        ext = self.parameterAsExtent(parameters, self.EXTENT, context, crs)
        out_crs = self.parameterAsCrs(parameters, self.OUTPUT_CRS, context)
        outputs = self._outputs(parameters, context)
        request = OsmRequest(
            extent=(ext.xMinimum(), ext.yMinimum(), ext.xMaximum(), ext.yMaximum()),
            extent_crs=crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED), outputs=outputs,
            endpoint=self.parameterAsString(parameters, self.ENDPOINT, context).strip(),
            output_crs=out_crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED) if out_crs.isValid() else None,
            max_tile_km2=self.parameterAsDouble(parameters, self.MAX_TILE_KM2, context),
            timeout_s=self.parameterAsInt(parameters, self.TIMEOUT, context),
            parallel=self.parameterAsInt(parameters, self.PARALLEL, context),
            use_cache=self.parameterAsBool(parameters, self.USE_CACHE, context))
        summary = self.run_core(download_osm, request, progress=self.progress(feedback))
        if "buildings" in outputs:
            self.style_output(context, outputs["buildings"], "osm_buildings.qml", "OSM buildings")
        b = summary.get("buildings", {})
        result = {self.POIS: outputs.get("pois"), self.BUILDINGS: outputs.get("buildings"),
                  self.ROADS: outputs.get("roads"), "POI_COUNT": summary.get("pois", {}).get("total", 0),
                  "OSM_TIMESTAMP": summary["osm_timestamp"] or ""}
        for cls in ("residential", "commercial", "industrial", "unknown"):
            result[f"{cls.upper()}_COUNT"] = b.get(cls, 0)
        return result
