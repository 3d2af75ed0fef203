"""edifice:poiprobability — POI probability maps (adapter over core.use.poi_probability)."""
from __future__ import annotations

from qgis.core import (QgsCoordinateReferenceSystem, QgsProcessing, QgsProcessingException,
                       QgsProcessingParameterCrs, QgsProcessingParameterDefinition, QgsProcessingParameterEnum,
                       QgsProcessingParameterExtent, QgsProcessingParameterFeatureSource,
                       QgsProcessingParameterFile, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterString, QgsProcessingOutputNumber)

from .base import EdificeAlgorithm, field_parameter

PRESETS = ["osm", "gbt35648", "overture", "google_places", "csv"]


class PoiProbabilityAlgorithm(EdificeAlgorithm):
    INPUT, CATEGORY_FIELD, PRESET, MAPPING_FILE = "INPUT", "CATEGORY_FIELD", "PRESET", "MAPPING_FILE"
    REFERENCE, EXTENT, PIXEL_SIZE, TARGET_CRS = "REFERENCE", "EXTENT", "PIXEL_SIZE", "TARGET_CRS"
    MAX_DISTANCES, OUTPUT = "MAX_DISTANCES", "OUTPUT"
    GROUP, GROUP_ID = "Preprocessing", "preprocessing"
    HELP = ("Three POI probability bands (residential, commercial, industrial) on a target grid: "
            "p = 1 - min(d / d_max, 1), d the geodesic distance (metres, WGS84) from each pixel centre "
            "to the nearest POI of the class. The grid is the REFERENCE raster's, or EXTENT + PIXEL_SIZE + "
            "TARGET_CRS. PRESET maps categories to classes: osm (reads the tags inside other_tags), "
            "gbt35648 (GB/T 35648-2017 codes), overture, google_places, or csv with MAPPING_FILE "
            "(columns value,class). MAX_DISTANCES are d_max in metres as R,C,I. POIs just outside the "
            "grid count too. Unmapped POIs are counted in the log. CLUSTER (advanced): a Dask scheduler "
            "address (tcp://HOST:8786) or local:N computes the blocks on that cluster with the same pixels; an "
            "output ending in .vrt is a VRT of the blocks, any other a COG mosaic with the VRT beside it.")

    def name(self):
        return "poiprobability"

    def displayName(self):  # noqa: N802
        return "POI probability maps"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFeatureSource(self.INPUT, "POI points (or a CSV with x/y or "
                                                              "lon/lat columns)", [QgsProcessing.TypeVector]))
        self.addParameter(field_parameter(self.CATEGORY_FIELD, "Category field", self.INPUT, "other_tags"))
        self.addParameter(QgsProcessingParameterEnum(self.PRESET, "Category mapping preset", options=PRESETS,
                                                     defaultValue=0))
        self.addParameter(QgsProcessingParameterFile(self.MAPPING_FILE, "Mapping file (CSV value,class) for preset csv",
                                                     extension="csv", optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(self.REFERENCE, "Reference raster (target grid)",
                                                            optional=True))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Extent (when no reference raster)", optional=True))
        self.addParameter(QgsProcessingParameterNumber(self.PIXEL_SIZE, "Pixel size (target CRS units)",
                                                       QgsProcessingParameterNumber.Double, defaultValue=1.0,
                                                       minValue=0.0, optional=True))
        self.addParameter(QgsProcessingParameterCrs(self.TARGET_CRS, "Target CRS (when no reference raster)",
                                                    optional=True))
        self.addParameter(QgsProcessingParameterString(self.MAX_DISTANCES, "Maximum distances d_max in metres (R,C,I)",
                                                       defaultValue="500,500,1500"))
        crs = QgsProcessingParameterCrs(self.POINTS_CRS, "CRS of the coordinate columns of a POI CSV "
                                        "(default EPSG:4326 for lon/lat)", optional=True)
        crs.setFlags(crs.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(crs)
        self.addParameter(self.cluster_parameter())
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "POI probability maps"))
        self.addOutput(QgsProcessingOutputNumber("UNMAPPED", "POIs whose category is not in the mapping"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.grid import Grid
        from ..core.use.poi_probability import parse_max_distances, poi_probability, reference_grid
        from ..core.use.poi_sources import classify_pois, load_poi_mapping

        source, field = self.point_source(parameters, self.INPUT, self.CATEGORY_FIELD, context)
        names = source.fields().names()
        preset = PRESETS[self.parameterAsEnum(parameters, self.PRESET, context)]
        mapping = self.run_core(load_poi_mapping, preset, self.parameterAsFile(parameters, self.MAPPING_FILE, context))
        dmax = self.run_core(parse_max_distances, self.parameterAsString(parameters, self.MAX_DISTANCES, context))

        keep = names if mapping.keyed else [field]
        xs, ys, records = [], [], []
        total = source.featureCount() or 1
        for i, feat in enumerate(source.getFeatures()):
            if feedback.isCanceled():
                raise QgsProcessingException("Cancelled by the user; no output was written.")
            geom = feat.geometry()
            if geom.isNull() or geom.isEmpty():
                continue
            rec = {n: feat[n] for n in keep}
            rec = {k: (None if v is None or (hasattr(v, "isNull") and v.isNull()) else v) for k, v in rec.items()}
            for pt in (geom.asMultiPoint() if geom.isMultipart() else [geom.asPoint()]):
                xs.append(pt.x())
                ys.append(pt.y())
                records.append(rec)
            if i % 1000 == 0:
                feedback.setProgress(10.0 * i / total)
        if not xs:
            raise QgsProcessingException("INPUT: the POI layer has no point feature. Fix: choose a layer with POIs.")
        crs_wkt = source.sourceCrs().toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED)
        classified = self.run_core(classify_pois, xs, ys, records, field, mapping, crs_wkt)
        feedback.pushInfo(classified.summary())

        ref_layer = self.parameterAsRasterLayer(parameters, self.REFERENCE, context)
        if ref_layer is not None:
            ref_path = self.raster_path(ref_layer, self.REFERENCE)
            grid = self.run_core(reference_grid, ref_path, self.REFERENCE)
        else:
            ref_path = None
            crs = self.parameterAsCrs(parameters, self.TARGET_CRS, context)
            if not crs.isValid():
                raise QgsProcessingException("TARGET_CRS: needed when no REFERENCE raster is given. "
                                             "Fix: choose a reference raster, or a CRS, extent and pixel size.")
            if parameters.get(self.EXTENT) in (None, ""):
                raise QgsProcessingException("EXTENT: needed when no REFERENCE raster is given. "
                                             "Fix: choose a reference raster or an extent.")
            ext = self.parameterAsExtent(parameters, self.EXTENT, context, crs)
            size = self.parameterAsDouble(parameters, self.PIXEL_SIZE, context)
            grid = self.run_core(Grid.from_extent, ext.xMinimum(), ext.yMinimum(), ext.xMaximum(), ext.yMaximum(),
                                 size, crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED))
        out = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        progress = self.progress(feedback).span(0.1, 1.0)
        run, extra = poi_probability, {}
        cluster = self.cluster_address(parameters, context)
        if cluster:
            from ..core.cluster.poi import poi_probability_on_cluster

            run, extra = poi_probability_on_cluster, {"cluster": cluster}
        summary = self.run_core(run, classified.pois, grid, out, dmax, ref_path, progress=progress, **extra)
        feedback.pushInfo(f"Grid {summary['width']} x {summary['height']} px; d_max {summary['max_distances_m']} m.")
        self.style_output(context, out, "poi_probability.qml")
        return {self.OUTPUT: out, "UNMAPPED": classified.unmapped}
