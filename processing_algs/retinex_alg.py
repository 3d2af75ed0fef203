"""edifice:retinex — Retinex illumination correction (adapter over core.use.retinex)."""
from __future__ import annotations

from qgis.core import (QgsProcessingException, QgsProcessingParameterDefinition,
                       QgsProcessingParameterEnum, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterString)

from .base import EdificeAlgorithm

OUTPUT_TYPES = [("same as input", None), ("Byte (uint8)", "uint8"), ("UInt16", "uint16"), ("Float32", "float32")]
MODES = ["luminance", "bands"]


class RetinexAlgorithm(EdificeAlgorithm):
    INPUT, SIGMAS, MODE, OUTPUT_TYPE, CLIP_PERCENT, OUTPUT = (
        "INPUT", "SIGMAS", "MODE", "OUTPUT_TYPE", "CLIP_PERCENT", "OUTPUT")
    GROUP, GROUP_ID = "Preprocessing", "preprocessing"
    HELP = ("Multi-scale Retinex illumination correction (log image minus log of a smooth "
            "illumination estimate, averaged over the scales). SIGMAS are Gaussian scales in pixels "
            "(default 15,80,250; one value gives single-scale Retinex). MODE 'luminance' corrects the "
            "brightness and keeps colours; 'bands' corrects each band. One stretch is computed for the "
            "whole raster (no seams between blocks); nodata pixels are neither used nor filled. "
            "Works on 8-bit, 16-bit, signed and float rasters with any band count, in bounded memory; "
            "a raster with negative values is corrected as the raster minus its minimum. CLUSTER (advanced): a "
            "Dask scheduler address (tcp://HOST:8786) or local:N runs the blocks on that cluster with the same "
            "pixels (paths visible to the workers); an output ending in .vrt is a VRT of the blocks, any other a "
            "COG mosaic with the VRT beside it.")

    def name(self):
        return "retinex"

    def displayName(self):  # noqa: N802
        return "Retinex illumination correction"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Input raster"))
        self.addParameter(QgsProcessingParameterString(self.SIGMAS, "Scales (Gaussian sigma, pixels, comma-separated)",
                                                       defaultValue="15,80,250"))
        self.addParameter(QgsProcessingParameterEnum(self.MODE, "Mode", options=MODES, defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum(self.OUTPUT_TYPE, "Output data type",
                                                     options=[t[0] for t in OUTPUT_TYPES], defaultValue=0))
        clip = QgsProcessingParameterNumber(self.CLIP_PERCENT, "Stretch: percent clipped at each end",
                                            QgsProcessingParameterNumber.Double, defaultValue=1.0,
                                            minValue=0.0, maxValue=49.0)
        clip.setFlags(clip.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(clip)
        self.addParameter(self.cluster_parameter())
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Corrected raster"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.use.retinex import RetinexSettings, retinex

        src = self.raster_path(self.parameterAsRasterLayer(parameters, self.INPUT, context), self.INPUT)
        text = self.parameterAsString(parameters, self.SIGMAS, context)
        try:
            sigmas = [float(s) for s in text.replace(";", ",").split(",") if s.strip()]
        except ValueError:
            raise QgsProcessingException(f"SIGMAS: '{text}' is not a list of numbers. Fix: write e.g. 15,80,250.")
        settings = RetinexSettings(sigmas=sigmas, mode=MODES[self.parameterAsEnum(parameters, self.MODE, context)],
                                   clip_percent=self.parameterAsDouble(parameters, self.CLIP_PERCENT, context))
        out = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        dtype = OUTPUT_TYPES[self.parameterAsEnum(parameters, self.OUTPUT_TYPE, context)][1]
        run, extra = retinex, {}
        cluster = self.cluster_address(parameters, context)
        if cluster:
            from ..core.cluster.retinex import retinex_on_cluster

            run, extra = retinex_on_cluster, {"cluster": cluster}
        summary = self.run_core(run, src, out, settings, output_dtype=dtype, progress=self.progress(feedback),
                                **extra)
        feedback.pushInfo(f"Stretch (log units): {summary['stretch_low']:.4f} .. {summary['stretch_high']:.4f}; "
                          f"{summary['valid_pixels']} valid pixels.")
        if summary["bands"] >= 3 and summary["dtype"] in ("uint8", "uint16", "float32"):
            self.style_output(context, out, f"retinex_{summary['dtype']}.qml")
        return {self.OUTPUT: out}
