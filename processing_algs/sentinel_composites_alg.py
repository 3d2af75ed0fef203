"""edifice:sentinelcomposites — annual Sentinel-1/2 and DEM composites on SHAFTS's grids, for
edifice:heightfootprint (adapter over core.acquire.composites.make_composites)."""
from __future__ import annotations

from qgis.core import (QgsCoordinateReferenceSystem, QgsProcessingParameterAuthConfig,
                       QgsProcessingParameterEnum, QgsProcessingParameterExtent,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterString)

from .base import EdificeAlgorithm
from .height_footprint_algs import _advanced, _double, _int, _resolution_param

SOURCES = ["earthengine", "stac"]
CATALOGUES = ["earth-search", "planetary-computer"]
OUTPUTS = {"S1": ("OUTPUT_S1", "sentinel1_db.qml"), "S2": ("OUTPUT_S2", "sentinel2_rgb.qml"),
           "DEM": ("OUTPUT_DEM", "dem_m.qml")}


class SentinelCompositesAlgorithm(EdificeAlgorithm):
    GROUP, GROUP_ID = "Data acquisition", "acquire"
    EXTENT, YEAR, RESOLUTION, SOURCE, PROJECT, AUTH = "EXTENT", "YEAR", "RESOLUTION", "SOURCE", "PROJECT", "AUTH"
    PADDING, WORKERS, MAX_REQUEST_MB, SERVICE_URL = "PADDING", "WORKERS", "MAX_REQUEST_MB", "SERVICE_URL"
    CATALOGUE, TOKEN_URL = "CATALOGUE", "TOKEN_URL"
    HELP = ("Annual Sentinel-1, Sentinel-2 and SRTM composites for EXTENT and YEAR, named and banded as "
            "edifice:heightfootprint expects: S-1 VV_p50, VH_p50 (median dB, IW scenes with both polarisations), "
            "S-2 B4_p50, B3_p50, B2_p50, B8_p50 (median reflectance x 1e4 of S2_SR_HARMONIZED scenes under 20 % "
            "cloud), both at 10 m; DEM elevation (m) at 30 m; all on EPSG:4326 grids snapped to the pixel size and "
            "covering the extent plus the padding the model of RESOLUTION needs (0.03° for 100 m). "
            "SOURCE earthengine computes the recipe on Earth Engine and downloads it in chunks (several at a "
            "time, retried on 429/5xx, split when too large); finished chunks are kept next to the output, so "
            "running again after a cancel resumes. AUTH: a QGIS authentication configuration whose password "
            "holds the service-account key (the JSON text or the path of the key file); empty = the credentials "
            "stored by 'earthengine authenticate'. PROJECT: the Google Cloud project registered for Earth Engine "
            "(default: the service account's project). Leave an output unset (skip) to not make it. "
            "SOURCE stac needs no account: CATALOGUE earth-search (Sentinel-2 L2A and Copernicus DEM; it has no "
            "Sentinel-1 readable over HTTP) or planetary-computer (also Sentinel-1 RTC; asset URLs are signed "
            "through its token endpoint); the annual median is computed here chunk by chunk, Sentinel-2 pixels "
            "masked by the scene classification (clouds, shadows, cirrus), Sentinel-1 RTC converted to dB, "
            "reading only the parts of each scene the extent needs. SERVICE_URL (advanced) replaces the "
            "Earth Engine endpoint or the STAC API; TOKEN_URL its SAS token endpoint.")

    def name(self):
        return "sentinelcomposites"

    def displayName(self):  # noqa: N802
        return "Sentinel-1/2 and DEM composites (for height and footprint)"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Extent"))
        self.addParameter(_int(self.YEAR, "Year", 2020, 2015, 2100))
        self.addParameter(_resolution_param(self.RESOLUTION, "Height model resolution (m)"))
        self.addParameter(QgsProcessingParameterEnum(self.SOURCE, "Source", options=SOURCES, defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum(self.CATALOGUE, "STAC catalogue", options=CATALOGUES,
                                                     defaultValue=0))
        self.addParameter(QgsProcessingParameterString(self.PROJECT, "Earth Engine project", optional=True))
        self.addParameter(QgsProcessingParameterAuthConfig(self.AUTH, "Service-account key (authentication "
                                                                      "configuration)", optional=True))
        self.addParameter(_advanced(_double(self.PADDING, "Padding (degrees; empty = what the model needs)", None,
                                            0.0, 1.0, optional=True)))
        self.addParameter(_advanced(_int(self.WORKERS, "Requests at a time", 4, 1, 32)))
        self.addParameter(_advanced(_int(self.MAX_REQUEST_MB, "First chunk size (MB, uncompressed)", 32, 1, 48)))
        self.addParameter(_advanced(QgsProcessingParameterString(self.SERVICE_URL, "Service URL (empty = default)",
                                                                 optional=True)))
        self.addParameter(_advanced(QgsProcessingParameterString(self.TOKEN_URL, "STAC SAS token endpoint "
                                                                 "(empty = the catalogue's)", optional=True)))
        for key, (name, _) in OUTPUTS.items():
            text = {"S1": "Sentinel-1 composite (VV, VH dB)", "S2": "Sentinel-2 composite (B4, B3, B2, B8)",
                    "DEM": "DEM (SRTM, m)"}[key]
            self.addParameter(QgsProcessingParameterRasterDestination(name, text, optional=True,
                                                                      createByDefault=True))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.acquire.composites import DownloadOptions, make_composites, open_source

        wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
        ext = self.parameterAsExtent(parameters, self.EXTENT, context, wgs84)
        extent = (ext.xMinimum(), ext.yMinimum(), ext.xMaximum(), ext.yMaximum())
        res = int(self.parameterAsEnumString(parameters, self.RESOLUTION, context) or 100)
        key = self.secret_from_authcfg(self.parameterAsString(parameters, self.AUTH, context), self.AUTH)
        project = self.parameterAsString(parameters, self.PROJECT, context).strip() or None
        url = self.parameterAsString(parameters, self.SERVICE_URL, context).strip() or None
        padding = parameters.get(self.PADDING)
        padding = None if padding in (None, "") else self.parameterAsDouble(parameters, self.PADDING, context)
        outputs = {k: self.parameterAsOutputLayer(parameters, name, context) for k, (name, _) in OUTPUTS.items()}
        outputs = {k: path for k, path in outputs.items() if path}     # a skipped output is not made
        request_mb = self.parameterAsInt(parameters, self.MAX_REQUEST_MB, context)
        options = DownloadOptions(workers=self.parameterAsInt(parameters, self.WORKERS, context),
                                  max_request_bytes=request_mb * 2**20)
        progress = self.progress(feedback)      # one progress: the source's retry waits end on a cancel too
        source = self.run_core(open_source, SOURCES[self.parameterAsEnum(parameters, self.SOURCE, context)],
                               self.parameterAsInt(parameters, self.YEAR, context), key=key, project=project, url=url,
                               catalogue=CATALOGUES[self.parameterAsEnum(parameters, self.CATALOGUE, context)],
                               token_url=self.parameterAsString(parameters, self.TOKEN_URL, context).strip() or None,
                               progress=progress)
        summary = self.run_core(make_composites, source, extent, outputs, resolution_m=res, padding=padding,
                                options=options, progress=progress)
        result = {}
        for k, (name, qml) in OUTPUTS.items():
            if k not in outputs:
                continue
            self.style_output(context, outputs[k], qml)
            result[name] = outputs[k]
            feedback.pushInfo(f"{k}: {summary[k]['width']} x {summary[k]['height']} px, {summary[k]['chunks']} "
                              f"chunk(s), {summary[k]['chunks_resumed']} resumed from an earlier run.")
        return result
