"""edifice:cloudgapfill — cloud gap filling by ordinary kriging (adapter over core.gapfill)."""
from __future__ import annotations

from qgis.core import (QgsProcessingException, QgsProcessingOutputNumber, QgsProcessingOutputString,
                       QgsProcessingParameterBoolean, QgsProcessingParameterDefinition, QgsProcessingParameterEnum,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterString)

from .base import EdificeAlgorithm

MODELS = ["auto", "spherical", "exponential", "gaussian"]
BEYOND = ["fill (with a warning)", "leave as nodata"]
Number = QgsProcessingParameterNumber


class CloudGapFillAlgorithm(EdificeAlgorithm):
    INPUT, MASK, NODATA_GAPS, RANGES, DILATION = "INPUT", "MASK", "NODATA_GAPS", "RANGES", "DILATION"
    NEIGHBOURS, SEARCH_RADIUS, MODEL, BEYOND_RANGE = "NEIGHBOURS", "SEARCH_RADIUS", "MODEL", "BEYOND_RANGE"
    MAX_LAG, SAMPLE_WINDOWS, SEED = "MAX_LAG", "SAMPLE_WINDOWS", "SEED"
    OUTPUT, OUTPUT_VARIANCE, OUTPUT_HTML = "OUTPUT", "OUTPUT_VARIANCE", "OUTPUT_HTML"
    GROUP, GROUP_ID = "Preprocessing", "preprocessing"
    HELP = ("Fills cloud and shadow gaps by ordinary kriging (seed 000 §2.4.2). Gaps: a MASK raster on the image "
            "grid (non-zero = gap), the image's nodata (NODATA_GAPS) and/or band value RANGES "
            "(band:low:high, e.g. 3:200:255), grown by DILATION pixels; the image's nodata stays nodata unless "
            "NODATA_GAPS. Per band a semivariogram is estimated "
            "from a bounded sample of cloud-free pixels and a model fitted (auto = the best of spherical, "
            "exponential, Gaussian by weighted least squares); it is logged and written to a JSON sidecar "
            "(<output>.variograms.json). Every gap pixel is kriged from its NEIGHBOURS nearest cloud-free pixels "
            "within SEARCH_RADIUS pixels. Cloud-free pixels are never changed; the output keeps the input's data "
            "type. Optional: kriging variance (float32) and an HTML report with the semivariogram plots. "
            "Block-wise in bounded memory; cancel leaves nothing behind. CLUSTER (advanced): a Dask scheduler "
            "address (tcp://HOST:8786) or local:N fills the blocks on that cluster (paths visible to the workers); "
            "an output ending in .vrt is a VRT of the blocks, any other a COG mosaic with the VRT beside it.")

    def name(self):
        return "cloudgapfill"

    def displayName(self):  # noqa: N802
        return "Cloud gap filling (kriging)"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Image"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.MASK, "Cloud/shadow mask (non-zero = gap)",
                                                            optional=True))
        self.addParameter(QgsProcessingParameterBoolean(self.NODATA_GAPS, "The image's nodata pixels are gaps",
                                                        defaultValue=False))
        self.addParameter(QgsProcessingParameterString(self.RANGES, "Gap value ranges (band:low:high, comma-separated)",
                                                       optional=True))
        self.addParameter(Number(self.DILATION, "Grow the gaps by (pixels)", Number.Integer, 0, minValue=0))
        self.addParameter(Number(self.NEIGHBOURS, "Nearest cloud-free pixels per gap pixel", Number.Integer, 32,
                                 minValue=1))
        self.addParameter(Number(self.SEARCH_RADIUS, "Search radius (pixels)", Number.Double, 256.0, minValue=1.0))
        self.addParameter(QgsProcessingParameterEnum(self.MODEL, "Variogram model", options=MODELS, defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum(self.BEYOND_RANGE, "Gap pixels beyond the variogram range",
                                                     options=BEYOND, defaultValue=0))
        for p in (Number(self.MAX_LAG, "Largest semivariogram lag (pixels)", Number.Integer, 100, minValue=2),
                  Number(self.SAMPLE_WINDOWS, "Windows sampled for the semivariogram", Number.Integer, 8, minValue=1),
                  Number(self.SEED, "Random seed of the sample", Number.Integer, 0, minValue=0),
                  self.cluster_parameter()):
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Filled image"))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT_VARIANCE, "Kriging variance",
                                                                  optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT_HTML, "Semivariogram report (HTML)",
                                                                fileFilter="HTML files (*.html)", optional=True,
                                                                createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber("GAP_PIXELS", "Gap pixels"))
        self.addOutput(QgsProcessingOutputNumber("UNFILLED_PIXELS", "Gap pixels left as nodata (all bands)"))
        self.addOutput(QgsProcessingOutputString("VARIOGRAMS", "Variogram sidecar (JSON)"))

    def _settings(self, parameters, context):
        from ..core.errors import EdificeError
        from ..core.gapfill import GapSpec, KrigingSettings, parse_ranges

        mask = self.parameterAsRasterLayer(parameters, self.MASK, context)
        try:
            ranges = parse_ranges(self.parameterAsString(parameters, self.RANGES, context) or "")
        except EdificeError as exc:  # the InputError's message, as it is
            raise QgsProcessingException(str(exc)) from exc
        gaps = GapSpec(mask_path=self.raster_path(mask, self.MASK) if mask is not None else None,
                       use_nodata=self.parameterAsBool(parameters, self.NODATA_GAPS, context), ranges=ranges,
                       dilation=self.parameterAsInt(parameters, self.DILATION, context))
        settings = KrigingSettings(
            n_neighbours=self.parameterAsInt(parameters, self.NEIGHBOURS, context),
            search_radius=self.parameterAsDouble(parameters, self.SEARCH_RADIUS, context),
            model=MODELS[self.parameterAsEnum(parameters, self.MODEL, context)],
            max_lag=self.parameterAsInt(parameters, self.MAX_LAG, context),
            sample_windows=self.parameterAsInt(parameters, self.SAMPLE_WINDOWS, context),
            beyond_range=("fill", "nodata")[self.parameterAsEnum(parameters, self.BEYOND_RANGE, context)],
            seed=self.parameterAsInt(parameters, self.SEED, context))
        return gaps, settings

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.gapfill import cloud_gap_fill

        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        src = self.raster_path(layer, self.INPUT)
        gaps, settings = self._settings(parameters, context)
        out = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        variance = self.parameterAsOutputLayer(parameters, self.OUTPUT_VARIANCE, context) or None
        html = self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context) or None
        run, extra = cloud_gap_fill, {}
        cluster = self.cluster_address(parameters, context)
        if cluster:
            from ..core.cluster.gapfill import cloud_gap_fill_on_cluster

            run, extra = cloud_gap_fill_on_cluster, {"cluster": cluster}
        s = self.run_core(run, src, out, gaps, settings, variance_path=variance, report_path=html,
                          progress=self.progress(feedback), **extra)
        unfilled = s["gap_pixels"] - min(s["filled_per_band"], default=s["gap_pixels"])
        feedback.pushInfo(f"{s['gap_pixels']} gap pixels; filled per band {s['filled_per_band']}; "
                          f"variograms in {s['sidecar']}")
        self.style_output_like(context, out, layer)
        return {self.OUTPUT: out, self.OUTPUT_VARIANCE: variance, self.OUTPUT_HTML: html,
                "GAP_PIXELS": s["gap_pixels"], "UNFILLED_PIXELS": unfilled, "VARIOGRAMS": s["sidecar"]}
