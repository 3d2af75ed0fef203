"""SHAFTS-style building height and footprint tools (adapters over core.height.shafts_inference, core.height.ccap,
core.height.reference_grids and core.height.shafts_workflows):

- edifice:heightfootprint       height + footprint rasters from Sentinel-1/2 + DEM with a SHAFTS network
- edifice:ccap                  CCAP urban mask from one or more (height, footprint) predictions
- edifice:referencegrids        footprint fraction and mean height grids from building polygons
- edifice:trainheightfootprint  train a SHAFTS-architecture network on reference grids
"""
from __future__ import annotations

import json
from pathlib import Path

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingOutputNumber,
                       QgsProcessingOutputString, QgsProcessingParameterBoolean, QgsProcessingParameterDefinition,
                       QgsProcessingParameterEnum, QgsProcessingParameterExtent, QgsProcessingParameterFile,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterMultipleLayers,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterDestination,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterString,
                       QgsProcessingParameterVectorLayer, QgsProviderRegistry)

from .base import EdificeAlgorithm, field_parameter

RESOLUTIONS = [100, 250, 500, 1000]
MODES = ["shafts"]
CRITERIA = ["entropy", "largest_cluster"]
WEIGHTINGS = ["uncertainty", "fixed"]
TARGETS = [None, "height", "footprint"]
#: SHAFTS publishes ``check_pt_*.pth`` and ``checkpoint.pth.tar`` names; QGIS 3.22's extension="pth" refuses the latter.
CHECKPOINT_FILTER = "PyTorch checkpoints (*.pth *.pth.tar *.pt);;All files (*)"


def _advanced(param):
    param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return param


def _double(name, text, default, minimum=None, maximum=None, optional=False):
    kw = {} if minimum is None else {"minValue": minimum}
    if maximum is not None:
        kw["maxValue"] = maximum
    return QgsProcessingParameterNumber(name, text, QgsProcessingParameterNumber.Double, defaultValue=default,
                                        optional=optional, **kw)


def _resolution_param(name, text):
    """RESOLUTION as static strings: the value is "100", "250", "500" or "1000" (metres), not an index."""
    return QgsProcessingParameterEnum(name, text, options=[str(r) for r in RESOLUTIONS], defaultValue="100",
                                      usesStaticStrings=True)


def _int(name, text, default, minimum=None, maximum=None):
    kw = {} if minimum is None else {"minValue": minimum}
    if maximum is not None:
        kw["maxValue"] = maximum
    return QgsProcessingParameterNumber(name, text, QgsProcessingParameterNumber.Integer, defaultValue=default, **kw)


class _HeightFootprintBase(EdificeAlgorithm):
    GROUP, GROUP_ID = "Height and footprint", "heightfootprint"
    #: core input names -> this algorithm's parameter names, so messages name what the user sees
    CORE_NAMES = {"S1": "SENTINEL1", "S2": "SENTINEL2", "FOOTPRINT_REFERENCE": "REFERENCE_FOOTPRINT",
                  "HEIGHT_REFERENCE": "REFERENCE_HEIGHT"}

    def run_core(self, fn, *args, **kwargs):
        """As the base class, with core input names replaced by this algorithm's parameter names."""
        from ..core.errors import InputError
        try:
            return EdificeAlgorithm.run_core(fn, *args, **kwargs)
        except QgsProcessingException as exc:
            cause = exc.__cause__
            if isinstance(cause, InputError) and cause.name in self.CORE_NAMES:
                renamed = InputError(self.CORE_NAMES[cause.name], cause.problem, cause.fix)
                raise QgsProcessingException(str(renamed)) from cause
            raise

    def _sentinel_inputs(self, parameters, context):
        layers = {k: self.parameterAsRasterLayer(parameters, k, context) for k in ("SENTINEL1", "SENTINEL2", "DEM")}
        paths = {k: self.raster_path(v, k) for k, v in layers.items()}
        return layers, paths

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """RESOLUTION is a static-string enum ("100" … "1000"); QGIS 3.22 refuses a number there, so
        processing.run(..., {"RESOLUTION": 100}) is taken as "100" and an old option index gets a clear message."""
        value = parameters.get("RESOLUTION") if self.parameterDefinition("RESOLUTION") else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value in RESOLUTIONS:
            parameters = dict(parameters)
            parameters["RESOLUTION"] = str(int(value))
        elif value not in (None, "") and not isinstance(value, bool) and str(value) not in map(str, RESOLUTIONS) \
                and isinstance(value, (int, float, str)):
            return False, (f"RESOLUTION: {value} is not a resolution in metres. Fix: give 100, 250, 500 or "
                           "1000 (the value, not an option index).")
        return super().checkParameterValues(parameters, context)

    def _resolution(self, parameters, context):
        text = self.parameterAsEnumString(parameters, "RESOLUTION", context)
        if text not in [str(r) for r in RESOLUTIONS]:
            raise QgsProcessingException(f"RESOLUTION: '{text}' is not a SHAFTS resolution. "
                                         "Fix: give 100, 250, 500 or 1000 (metres).")
        return int(text)

    def _checkpoint(self, parameters, context, name="CHECKPOINT"):
        path = self.parameterAsFile(parameters, name, context)
        if not path or not Path(path).is_file():
            raise QgsProcessingException(f"{name}: file '{path}' does not exist. "
                                         "Fix: choose a SHAFTS .pth file or an Edifice height/footprint checkpoint.")
        return path


class HeightFootprintAlgorithm(_HeightFootprintBase):
    SENTINEL1, SENTINEL2, DEM, CHECKPOINT, RESOLUTION = "SENTINEL1", "SENTINEL2", "DEM", "CHECKPOINT", "RESOLUTION"
    EXTENT, PADDING, MODE, DEVICE, BATCH_SIZE = "EXTENT", "PADDING", "MODE", "DEVICE", "BATCH_SIZE"
    TARGET, H_MIN, H_MAX, MAX_TILE_DEG = "TARGET", "H_MIN", "H_MAX", "MAX_TILE_DEG"
    OUTPUT_HEIGHT, OUTPUT_FOOTPRINT = "OUTPUT_HEIGHT", "OUTPUT_FOOTPRINT"
    HELP = ("Mean building height (m) and building footprint fraction (0-1) from annual Sentinel-1 (VV, VH in dB), "
            "Sentinel-2 (R=B4, G=B3, B=B2, NIR=B8, reflectance x 1e4) and SRTM DEM rasters in EPSG:4326, with a "
            "SHAFTS network (Li et al., GMD 2023). CHECKPOINT: a published SHAFTS checkpoint (.pth or .pth.tar) for "
            "the chosen RESOLUTION or an Edifice checkpoint (edifice:trainheightfootprint). RESOLUTION is given in "
            "metres: 100, 250, 500 or 1000 (in scripts and qgis_process the value itself, e.g. RESOLUTION=250). "
            "TARGET (advanced) says what a single-task SHAFTS checkpoint predicts. MODE 'shafts' reproduces SHAFTS's own "
            "inference: inputs clipped to EXTENT plus PADDING degrees, SHAFTS's scaling, patches and output grid "
            "(pixel 0.0009/0.00225/0.0045/0.009° for 100/250/500/1000 m, anchored at the extent's top-left "
            "corner; it may reach past the right and bottom edges). EXTENT defaults to the Sentinel-1 raster "
            "shrunk by PADDING. DEVICE: auto, cpu, cuda or cuda:N (the device used is written to the log). "
            "MAX_TILE_DEG (advanced, default 0.5): an extent wider or taller than this many degrees is cut into "
            "tiles of that size, each clipped and scaled on its own (as running SHAFTS tile by tile), so memory "
            "stays bounded; 0 processes the whole extent as one clip, identical to one SHAFTS run (memory grows "
            "with the extent). CLUSTER (advanced): a Dask scheduler address (tcp://HOST:8786) or local:N runs one "
            "task per tile on that cluster (inputs, checkpoint and outputs in a folder the workers share), with "
            "the same pixels; an output ending in .vrt gets a VRT of the tiles, others a VRT beside them plus a "
            "COG mosaic; a rerun skips the tiles already written. "
            "Outputs are float32 with nodata where an input has no data at the pixel.")

    def name(self):
        return "heightfootprint"

    def displayName(self):  # noqa: N802
        return "Building height and footprint (SHAFTS)"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.SENTINEL1, "Sentinel-1 (band 1 VV, band 2 VH, dB)"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.SENTINEL2, "Sentinel-2 (bands R, G, B, NIR)"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.DEM, "DEM (SRTM, metres)"))
        self.addParameter(QgsProcessingParameterFile(self.CHECKPOINT, "Checkpoint (SHAFTS .pth/.pth.tar or Edifice)",
                                                     fileFilter=CHECKPOINT_FILTER))
        self.addParameter(_resolution_param(self.RESOLUTION, "Target resolution (m)"))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Extent (default: Sentinel-1 minus padding)",
                                                       optional=True))
        self.addParameter(_double(self.PADDING, "Padding around the extent (degrees)", 0.03, 0.0, 1.0))
        self.addParameter(QgsProcessingParameterEnum(self.MODE, "Mode", options=MODES, defaultValue=0))
        self.addParameter(QgsProcessingParameterString(self.DEVICE, "Device (auto, cpu, cuda, cuda:N)",
                                                       defaultValue="auto"))
        self.addParameter(_int(self.BATCH_SIZE, "Batch size (patches)", 64, 1, 65536))
        self.addParameter(_advanced(QgsProcessingParameterEnum(
            self.TARGET, "Single-task SHAFTS checkpoint predicts", defaultValue=0,
            options=["(multi-task checkpoint)", "height", "footprint"])))
        self.addParameter(_advanced(_double(self.H_MIN, "Heights below this are set to 0 (m)", 2.0, 0.0)))
        self.addParameter(_advanced(_double(self.H_MAX, "Heights above this are capped (m)", 1000.0, 0.0)))
        self.addParameter(_advanced(_double(self.MAX_TILE_DEG, "Largest clip side (degrees; 0 = one clip, as SHAFTS)",
                                            0.5, 0.0)))
        self.addParameter(self.cluster_parameter())
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT_HEIGHT, "Building height (m)"))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT_FOOTPRINT, "Building footprint fraction"))
        self.addOutput(QgsProcessingOutputString("DEVICE_USED", "Device used"))
        self.addOutput(QgsProcessingOutputNumber("VALID_PIXELS", "Output pixels predicted"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.height.shafts_inference import predict_height_footprint_shafts

        layers, paths = self._sentinel_inputs(parameters, context)
        ckpt = self._checkpoint(parameters, context)
        res = self._resolution(parameters, context)
        padding = self.parameterAsDouble(parameters, self.PADDING, context)
        s1 = layers["SENTINEL1"]
        if parameters.get(self.EXTENT) not in (None, ""):
            ext = self.parameterAsExtent(parameters, self.EXTENT, context, s1.crs())
            extent = (ext.xMinimum(), ext.yMinimum(), ext.xMaximum(), ext.yMaximum())
        else:
            e = s1.extent()
            extent = (e.xMinimum() + padding, e.yMinimum() + padding, e.xMaximum() - padding, e.yMaximum() - padding)
            feedback.pushInfo("EXTENT not given: using the Sentinel-1 extent shrunk by the padding "
                              f"({extent[0]:.6f}, {extent[1]:.6f}, {extent[2]:.6f}, {extent[3]:.6f}).")
        out_h = self.parameterAsOutputLayer(parameters, self.OUTPUT_HEIGHT, context)
        out_f = self.parameterAsOutputLayer(parameters, self.OUTPUT_FOOTPRINT, context)
        target = TARGETS[self.parameterAsEnum(parameters, self.TARGET, context)]
        device = self.parameterAsString(parameters, self.DEVICE, context) or "auto"
        run, extra = predict_height_footprint_shafts, {}
        cluster = self.cluster_address(parameters, context)
        if cluster:  # one Dask task per tile
            from ..core.cluster.height import height_footprint_on_cluster

            run, extra = height_footprint_on_cluster, {"cluster": cluster}
        summary = self.run_core(
            run, paths["SENTINEL1"], paths["SENTINEL2"], paths["DEM"], extent, ckpt, res,
            out_h, out_f, padding=padding, target=target, device=device,
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            h_min=self.parameterAsDouble(parameters, self.H_MIN, context),
            h_max=self.parameterAsDouble(parameters, self.H_MAX, context),
            max_tile_deg=self.parameterAsDouble(parameters, self.MAX_TILE_DEG, context),
            progress=self.progress(feedback), **extra)
        g = summary["grid"]
        feedback.pushInfo(f"Device used: {summary['device']}. Output grid {g.width} x {g.height} px of "
                          f"{g.res[0]}°, origin ({g.transform.c}, {g.transform.f}).")
        result = {"DEVICE_USED": summary["device"], "VALID_PIXELS": summary["valid_pixels"]}
        for key, path, qml in ((self.OUTPUT_HEIGHT, summary["height"], "height_m.qml"),
                               (self.OUTPUT_FOOTPRINT, summary["footprint"], "footprint_fraction.qml")):
            if path is not None:
                self.style_output(context, path, qml)
            result[key] = path
        return result


class CcapAlgorithm(_HeightFootprintBase):
    HEIGHTS, FOOTPRINTS, H_MIN, CRITERION, FUSION_RATIO = "HEIGHTS", "FOOTPRINTS", "H_MIN", "CRITERION", "FUSION_RATIO"
    OUTPUT_MASK, OUTPUT_HEIGHT, OUTPUT_FOOTPRINT = "OUTPUT_MASK", "OUTPUT_HEIGHT", "OUTPUT_FOOTPRINT"
    HELP = ("CCAP urban mask (SHAFTS post-processing; Cao et al. 2020). For each (height, footprint) prediction "
            "- HEIGHTS and FOOTPRINTS are paired in order, all on one grid - the footprint threshold is the knee "
            "of the urban-cluster criterion over thresholds 0.01-0.9, found with kneed <= 0.8.5 semantics (Kneedle, "
            "convex decreasing, online, S=1, as the kneed version SHAFTS used; kneed itself is not needed), "
            "rounded to 3 decimals, the smallest >= 0.05 (urban = footprint >= t and height >= H_MIN "
            "metres; CRITERION entropy = sum p ln p of the 8-connected cluster shares, or the largest cluster's "
            "share). Several predictions are fused: urban where the share of masks saying urban is >= "
            "FUSION_RATIO. Outputs: the mask (1 urban, 0 not, 255 nodata), the chosen thresholds, and the first "
            "prediction's height and footprint with nodata outside the mask or where 0 (further pairs' masked "
            "rasters are written beside them with suffixes _2, _3, ...). The paper uses H_MIN 5 m; SHAFTS's "
            "code defaults to 2 m.")

    def name(self):
        return "ccap"

    def displayName(self):  # noqa: N802
        return "CCAP urban mask (height/footprint)"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterMultipleLayers(self.HEIGHTS, "Height rasters (m)",
                                                               QgsProcessing.TypeRaster))
        self.addParameter(QgsProcessingParameterMultipleLayers(self.FOOTPRINTS, "Footprint rasters (same order)",
                                                               QgsProcessing.TypeRaster))
        self.addParameter(_double(self.H_MIN, "Minimum height of urban pixels (m)", 2.0, 0.0))
        self.addParameter(QgsProcessingParameterEnum(self.CRITERION, "Cluster criterion", options=CRITERIA,
                                                     defaultValue=0))
        self.addParameter(_double(self.FUSION_RATIO, "Fusion ratio (share of masks that must say urban)",
                                  0.5, 0.0, 1.0))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT_MASK, "Urban mask"))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT_HEIGHT, "Height, urban only (m)",
                                                                  optional=True, createByDefault=True))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT_FOOTPRINT, "Footprint, urban only",
                                                                  optional=True, createByDefault=True))
        self.addOutput(QgsProcessingOutputNumber("THRESHOLD", "Footprint threshold (first prediction)"))
        self.addOutput(QgsProcessingOutputString("THRESHOLDS", "Footprint thresholds (comma-separated, in order)"))
        self.addOutput(QgsProcessingOutputNumber("URBAN_PIXELS", "Urban pixels"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.height.ccap import ccap_files

        heights = [self.raster_path(lyr, self.HEIGHTS)
                   for lyr in self.parameterAsLayerList(parameters, self.HEIGHTS, context)]
        footprints = [self.raster_path(lyr, self.FOOTPRINTS)
                      for lyr in self.parameterAsLayerList(parameters, self.FOOTPRINTS, context)]
        if not heights or len(heights) != len(footprints):
            raise QgsProcessingException(f"FOOTPRINTS: {len(footprints)} footprint raster(s) for {len(heights)} "
                                         "height raster(s). Fix: give one footprint per height, in the same order.")
        out_mask = self.parameterAsOutputLayer(parameters, self.OUTPUT_MASK, context)
        out_h = self.parameterAsOutputLayer(parameters, self.OUTPUT_HEIGHT, context) or None
        out_f = self.parameterAsOutputLayer(parameters, self.OUTPUT_FOOTPRINT, context) or None

        def numbered(path, k):
            if path is None or k == 0:
                return path
            p = Path(path)
            return str(p.with_name(f"{p.stem}_{k + 1}{p.suffix}"))

        masked = [(numbered(out_h, k), numbered(out_f, k)) for k in range(len(heights))]
        criterion = CRITERIA[self.parameterAsEnum(parameters, self.CRITERION, context)]
        summary = self.run_core(ccap_files, list(zip(heights, footprints)), out_mask, masked,
                                h_min=self.parameterAsDouble(parameters, self.H_MIN, context), criterion=criterion,
                                ratio=self.parameterAsDouble(parameters, self.FUSION_RATIO, context),
                                progress=self.progress(feedback))
        thresholds = summary["thresholds"]
        text = ",".join(f"{t:.3f}" for t in thresholds)
        feedback.pushInfo(f"CCAP thresholds: {text}; {summary['urban_pixels']} urban pixels.")
        self.style_output(context, out_mask, "ccap_mask.qml")
        if out_h:
            self.style_output(context, out_h, "height_m.qml")
        if out_f:
            self.style_output(context, out_f, "footprint_fraction.qml")
        return {self.OUTPUT_MASK: out_mask, self.OUTPUT_HEIGHT: out_h, self.OUTPUT_FOOTPRINT: out_f,
                "THRESHOLD": float(thresholds[0]), "THRESHOLDS": text, "URBAN_PIXELS": summary["urban_pixels"]}


class ReferenceGridsAlgorithm(_HeightFootprintBase):
    INPUT, HEIGHT_FIELD, RESOLUTION, EXTENT, APPLY_FILTERS = "INPUT", "HEIGHT_FIELD", "RESOLUTION", "EXTENT", "APPLY_FILTERS"
    OUTPUT_FOOTPRINT, OUTPUT_HEIGHT = "OUTPUT_FOOTPRINT", "OUTPUT_HEIGHT"
    HELP = ("Reference grids for training and evaluating height/footprint models (SHAFTS paper Eq. 1-2): on a "
            "fishnet of RESOLUTION metre cells (anchored at the top-left of EXTENT, default the layer's bounds), "
            "footprint fraction = building area in the cell / cell area, and average height = area-weighted mean "
            "of HEIGHT_FIELD (m). The buildings must be polygons on a projected CRS in metres (e.g. UTM). "
            "APPLY_FILTERS keeps only the paper's samples (2 m <= height <= 500 m, fraction > 1/s², and not "
            "fraction < 4/s² with height > 20 m, s = 20/40/80/160 for 100/250/500/1000 m); rejected cells are "
            "nodata in both outputs.")

    def name(self):
        return "referencegrids"

    def displayName(self):  # noqa: N802
        return "Reference footprint and height grids"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterVectorLayer(self.INPUT, "Building polygons",
                                                            [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(field_parameter(self.HEIGHT_FIELD, "Height field (metres)", self.INPUT, "height"))
        self.addParameter(_resolution_param(self.RESOLUTION, "Cell size (m)"))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Extent (default: the layer's)", optional=True))
        self.addParameter(QgsProcessingParameterBoolean(self.APPLY_FILTERS, "Apply the paper's sample filters",
                                                        defaultValue=True))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT_FOOTPRINT, "Footprint fraction"))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT_HEIGHT, "Average building height (m)"))
        self.addOutput(QgsProcessingOutputNumber("SAMPLES", "Cells kept"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.height.reference_grids import reference_grids_from_file
        from ..models.shafts import PATCH_SIZE

        layer = self.parameterAsVectorLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException("INPUT: the building layer could not be opened. Fix: choose a polygon layer.")
        if layer.providerType() != "ogr":
            raise QgsProcessingException(f"INPUT: layer '{layer.name()}' is not file-based ({layer.providerType()}). "
                                         "Fix: save it as a GeoPackage first.")
        field = self.field_name(parameters, self.HEIGHT_FIELD, context)
        names = layer.fields().names()
        if field not in names:
            raise QgsProcessingException(f"HEIGHT_FIELD: field '{field}' is not in the layer. "
                                         f"Fix: use one of {', '.join(names)}.")
        uri = QgsProviderRegistry.instance().decodeUri("ogr", layer.source())
        res = self._resolution(parameters, context)
        extent = None
        if parameters.get(self.EXTENT) not in (None, ""):
            e = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
            extent = (e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum())
        out_f = self.parameterAsOutputLayer(parameters, self.OUTPUT_FOOTPRINT, context)
        out_h = self.parameterAsOutputLayer(parameters, self.OUTPUT_HEIGHT, context)
        patch = PATCH_SIZE[res] if self.parameterAsBoolean(parameters, self.APPLY_FILTERS, context) else None
        summary = self.run_core(reference_grids_from_file, uri["path"], field, res, out_f, out_h, extent=extent,
                                layer=uri.get("layerName") or None, patch_size=patch, progress=self.progress(feedback))
        g = summary["grid"]
        feedback.pushInfo(f"Fishnet {g.width} x {g.height} cells of {res} m; {summary['cells_with_buildings']} cells "
                          f"with buildings, {summary['samples']} kept.")
        self.style_output(context, out_f, "footprint_fraction.qml")
        self.style_output(context, out_h, "height_m.qml")
        return {self.OUTPUT_FOOTPRINT: out_f, self.OUTPUT_HEIGHT: out_h, "SAMPLES": summary["samples"]}


class TrainHeightFootprintAlgorithm(_HeightFootprintBase):
    SENTINEL1, SENTINEL2, DEM = "SENTINEL1", "SENTINEL2", "DEM"
    REFERENCE_FOOTPRINT, REFERENCE_HEIGHT, RESOLUTION, PADDING = (
        "REFERENCE_FOOTPRINT", "REFERENCE_HEIGHT", "RESOLUTION", "PADDING")
    WEIGHTING, EPOCHS, BATCH_SIZE, LEARNING_RATE, VALIDATION_FRACTION = (
        "WEIGHTING", "EPOCHS", "BATCH_SIZE", "LEARNING_RATE", "VALIDATION_FRACTION")
    AUGMENT, DEVICE, SEED, INIT_CHECKPOINT, OUTPUT = "AUGMENT", "DEVICE", "SEED", "INIT_CHECKPOINT", "OUTPUT"
    TASK, THREADS = "TASK", "THREADS"
    TASKS = ("multi", "height", "footprint")
    HELP = ("Train a SHAFTS-architecture network, multi-task (height and footprint) or one TASK only, on patches cut from "
            "Sentinel-1/2 + DEM exactly as edifice:heightfootprint cuts them, at the centres of the reference "
            "grid cells (edifice:referencegrids). A random share of the samples (VALIDATION_FRACTION, SEED) is "
            "held out; the epoch with the best mean validation R² is saved as an Edifice checkpoint with its "
            "metrics in the model card. Loss: adaptive Huber per task with WEIGHTING 'uncertainty' (learned) or "
            "'fixed' (footprint 100 : height 1); Adam, cosine annealing with warm restarts (the paper trains 155 "
            "epochs). INIT_CHECKPOINT (optional) fine-tunes a SHAFTS or Edifice checkpoint. Cancel stops at the "
            "next batch and writes no checkpoint. With the same SEED and THREADS (intra-op CPU threads, default 4) "
            "the weights are the same as from the CLI (edifice train-height-footprint).")

    def name(self):
        return "trainheightfootprint"

    def displayName(self):  # noqa: N802
        return "Train height/footprint model (SHAFTS)"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.SENTINEL1, "Sentinel-1 (band 1 VV, band 2 VH, dB)"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.SENTINEL2, "Sentinel-2 (bands R, G, B, NIR)"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.DEM, "DEM (SRTM, metres)"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.REFERENCE_FOOTPRINT, "Reference footprint fraction"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.REFERENCE_HEIGHT, "Reference average height (m)"))
        self.addParameter(_resolution_param(self.RESOLUTION, "Target resolution (m)"))
        self.addParameter(_double(self.PADDING, "Padding around the samples (degrees)", 0.03, 0.0, 1.0))
        self.addParameter(QgsProcessingParameterEnum(self.WEIGHTING, "Task weighting", options=WEIGHTINGS,
                                                     defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum(self.TASK, "Task (multi = height and footprint)",
                                                     options=list(self.TASKS), defaultValue=0))
        self.addParameter(_int(self.EPOCHS, "Epochs", 155, 1, 100000))
        self.addParameter(_int(self.BATCH_SIZE, "Batch size", 256, 2, 65536))
        self.addParameter(_advanced(_double(self.LEARNING_RATE, "Initial learning rate", 0.01, 0.0)))
        self.addParameter(_advanced(_double(self.VALIDATION_FRACTION, "Validation share of the samples",
                                            0.2, 0.01, 0.99)))
        self.addParameter(_advanced(QgsProcessingParameterBoolean(self.AUGMENT, "Augment (noise, jitter, flips)",
                                                                  defaultValue=True)))
        self.addParameter(QgsProcessingParameterString(self.DEVICE, "Device (auto, cpu, cuda, cuda:N)",
                                                       defaultValue="auto"))
        self.addParameter(_int(self.SEED, "Random seed", 0, 0))
        self.addParameter(_advanced(_int(self.THREADS, "CPU threads (fixed for reproducible runs)", 4, 1, 256)))
        self.addParameter(_advanced(QgsProcessingParameterFile(self.INIT_CHECKPOINT, "Start from checkpoint",
                                                               optional=True, fileFilter=CHECKPOINT_FILTER)))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT, "Checkpoint",
                                                                fileFilter="PyTorch checkpoint (*.pth)"))
        self.addOutput(QgsProcessingOutputNumber("BEST_EPOCH", "Best epoch"))
        self.addOutput(QgsProcessingOutputString("METRICS", "Validation metrics of the best epoch (JSON)"))
        self.addOutput(QgsProcessingOutputString("DEVICE_USED", "Device used"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.height.shafts_workflows import train_shafts_from_rasters

        _, paths = self._sentinel_inputs(parameters, context)
        refs = {k: self.raster_path(self.parameterAsRasterLayer(parameters, k, context), k)
                for k in (self.REFERENCE_FOOTPRINT, self.REFERENCE_HEIGHT)}
        init = self.parameterAsFile(parameters, self.INIT_CHECKPOINT, context) or None
        if init is not None:
            init = self._checkpoint(parameters, context, self.INIT_CHECKPOINT)
        out = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        res = self._resolution(parameters, context)
        summary = self.run_core(
            train_shafts_from_rasters, paths["SENTINEL1"], paths["SENTINEL2"], paths["DEM"],
            refs[self.REFERENCE_FOOTPRINT], refs[self.REFERENCE_HEIGHT], res, out,
            padding=self.parameterAsDouble(parameters, self.PADDING, context),
            val_fraction=self.parameterAsDouble(parameters, self.VALIDATION_FRACTION, context),
            weighting=WEIGHTINGS[self.parameterAsEnum(parameters, self.WEIGHTING, context)],
            epochs=self.parameterAsInt(parameters, self.EPOCHS, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            lr=self.parameterAsDouble(parameters, self.LEARNING_RATE, context),
            augment=self.parameterAsBoolean(parameters, self.AUGMENT, context),
            device=self.parameterAsString(parameters, self.DEVICE, context) or "auto",
            seed=self.parameterAsInt(parameters, self.SEED, context), init_checkpoint=init,
            task=self.TASKS[self.parameterAsEnum(parameters, self.TASK, context)],
            threads=self.parameterAsInt(parameters, self.THREADS, context), progress=self.progress(feedback))
        metrics = json.dumps({task: {k: (None if isinstance(v, float) and v != v else v) for k, v in m.items()}
                              for task, m in summary["best_metrics"].items()})   # NaN (e.g. constant target) -> null
        feedback.pushInfo(f"Device used: {summary['device']}. Best epoch {summary['best_epoch']}: {metrics}")
        return {self.OUTPUT: out, "BEST_EPOCH": summary["best_epoch"], "METRICS": metrics,
                "DEVICE_USED": summary["device"]}
