"""edifice:mapbuildinguse — sliding-window building-use mapping (adapter over
core.use.building_use_map.map_building_use)."""
from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingParameterBoolean,
                       QgsProcessingParameterDefinition, QgsProcessingParameterEnum,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterFile,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterDestination,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterString,
                       QgsProcessingParameterVectorDestination, QgsProcessingOutputString)

from ..core.use.probability_type import DEFAULT_PROBABILITY_TYPE, PROBABILITY_TYPES as CORE_PROBABILITY_TYPES
from .base import EdificeAlgorithm, field_parameter

PRESETS = ["osm", "gbt35648", "overture", "google_places", "csv"]
PRECISIONS = ["auto", "fp32", "bf16", "fp16"]
COMPRESSIONS = ["zstd:1", "deflate:1", "deflate:6", "lzw", "none"]
#: PROBABILITY_TYPE options (core/use/probability_type.py: numpy only, importable without the others), in their
#: old order (indices saved in models and scripts keep their meaning); the default is uint8
PROBABILITY_TYPES = list(CORE_PROBABILITY_TYPES)
RASTER_OUTPUTS = [("FOOTPRINT_PROBABILITY", "footprint_probability", "Footprint probability", "footprint_probability.qml"),
                  ("FOOTPRINT_MASK", "footprint_mask", "Footprint mask", "footprint_mask.qml"),
                  ("USE_CLASS", "use_class", "Building use class", "use_class.qml"),
                  ("USE_PROBABILITIES", "use_probabilities", "Building use probabilities (R, C, I)",
                   "use_probabilities.qml")]


class MapBuildingUseAlgorithm(EdificeAlgorithm):
    IMAGERY, POI_MAPS, POI_LAYER, CATEGORY_FIELD = "IMAGERY", "POI_MAPS", "POI_LAYER", "CATEGORY_FIELD"
    PRESET, MAPPING_FILE, MASK, CHECKPOINT, DEVICE = "PRESET", "MAPPING_FILE", "MASK", "CHECKPOINT", "DEVICE"
    BATCH_SIZE, WINDOW, OVERLAP, BLEND, THRESHOLD, WORKERS = ("BATCH_SIZE", "WINDOW", "OVERLAP", "BLEND",
                                                              "THRESHOLD", "WORKERS")
    POLYGONS, CLUSTER, BLOCK_WINDOWS = "POLYGONS", "CLUSTER", "BLOCK_WINDOWS"
    PRECISION, COMPRESSION, PROBABILITY_TYPE = "PRECISION", "COMPRESSION", "PROBABILITY_TYPE"
    GROUP, GROUP_ID = "Building use", "buildinguse"
    #: values that meant "automatic" before these parameters could be left unset (saved models, scripts)
    LEGACY_AUTOMATIC = {"WINDOW": (0, "the model card's window"), "OVERLAP": (-1, "window / 8")}
    HELP = ("Runs a building-use checkpoint over imagery with overlapping windows (the method's defaults: 1024 px windows, "
            "128 px OVERLAP = the margin discarded on each side, central 768 px kept; stride = WINDOW - "
            "2 x OVERLAP). Leave WINDOW not set for the model card's window and OVERLAP not set for window / 8 "
            "(the old values WINDOW 0 and OVERLAP -1 mean the same, with a warning). Borders are padded by reflection; BLEND cross-fades neighbouring windows instead "
            "of cutting. Band order, scaling, GSD and default window come from the model card; imagery at "
            "another resolution is resampled with a warning. POI models need POI_MAPS (3-band output of "
            "POI probability maps) or a POI_LAYER (computed on the imagery grid on the fly). MASK (e.g. "
            "from Built-up mask) limits the work: windows outside it are skipped, pixels outside it are "
            "nodata. Outputs (each optional): footprint probability, footprint mask, use class "
            "(0 non-building, 1 residential, 2 commercial, 3 industrial, 255 nodata; colours from the "
            "card), per-class probabilities and building polygons with use_class, use_name, "
            "p_residential, p_commercial, p_industrial, confidence, area_m2. DEVICE: auto (CUDA when "
            "available), cpu, cuda, cuda:N or mps; the device used is reported. PRECISION (advanced): auto = bf16 "
            "(else fp16) on CUDA, fp32 on the CPU; bf16 on a CPU with AVX-512 BF16 or AMX is about twice as fast "
            "(the largest difference from fp32 is reported in the log). COMPRESSION (advanced) of the raster "
            "outputs: zstd:1 keeps up with the model; deflate for readers without ZSTD. PROBABILITY_TYPE (advanced) of the "
            "probability outputs: uint8 (the default since issue 17: p = DN x 0.004, nodata 255; a seventh of "
            "float32's size and compression time), uint16 (p = DN x 0.00002, nodata 65535) or float32 (exact, nodata -1), "
            "DN = round(p x scale), so within half a step of the model's value (0.002 for uint8); the "
            "scale is written in the raster (GDAL band scale), masks, classes and polygons are the same whatever "
            "the type. A cancelled run keeps its "
            "finished rows and resumes when run again with the same inputs. CLUSTER (advanced): the address "
            "of a Dask scheduler (tcp://HOST:8786) or local:N runs the windows on that cluster, BLOCK_WINDOWS x "
            "BLOCK_WINDOWS windows per task (paths must be visible to the workers: a shared folder); a "
            "raster output named .vrt is then a VRT of the blocks, a .tif one a COG mosaic (VRT beside it); "
            "finished blocks are skipped when run again. Empty: this machine.")

    def name(self):
        return "mapbuildinguse"

    def displayName(self):  # noqa: N802
        return "Map building use (sliding window)"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.IMAGERY, "Imagery"))
        self.addParameter(QgsProcessingParameterFile(self.CHECKPOINT, "Building-use checkpoint",
                                                     fileFilter="Edifice checkpoint (*.pt *.pth)"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.POI_MAPS, "POI probability maps (3 bands R, C, I)",
                                                            optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(self.POI_LAYER, "POI points (instead of POI maps)",
                                                              [QgsProcessing.TypeVectorPoint], optional=True))
        self.addParameter(field_parameter(self.CATEGORY_FIELD, "POI category field", self.POI_LAYER, "other_tags",
                                          optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.PRESET, "POI category mapping preset", options=PRESETS,
                                                     defaultValue=0))
        self.addParameter(QgsProcessingParameterFile(self.MAPPING_FILE, "POI mapping file (CSV value,class) for preset csv",
                                                     extension="csv", optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(self.MASK, "Built-up mask (1 = process)", optional=True))
        self.addParameter(QgsProcessingParameterString(self.DEVICE, "Device (auto, cpu, cuda, cuda:N, mps)",
                                                       defaultValue="auto"))
        self.addParameter(QgsProcessingParameterNumber(self.BATCH_SIZE, "Batch size (windows per model call)",
                                                       QgsProcessingParameterNumber.Integer, defaultValue=4, minValue=1))
        # Not set = automatic (the dialog and the modeler show "Not set"; qgis_process: leave it out), as the
        # CLI's --window/--overlap; the old magic values WINDOW=0 / OVERLAP=-1 are still read (LEGACY_AUTOMATIC).
        self.addParameter(QgsProcessingParameterNumber(self.WINDOW, "Window size in pixels (not set: the model "
                                                       "card's window)", QgsProcessingParameterNumber.Integer,
                                                       optional=True, minValue=8, maxValue=8192))
        self.addParameter(QgsProcessingParameterNumber(self.OVERLAP, "Overlap: margin discarded on each side in "
                                                       "pixels (not set: window / 8, i.e. 128 for 1024)",
                                                       QgsProcessingParameterNumber.Integer, optional=True, minValue=0))
        for p in (QgsProcessingParameterBoolean(self.BLEND, "Blend neighbouring windows (instead of keeping centres)",
                                                defaultValue=False),
                  QgsProcessingParameterNumber(self.THRESHOLD, "Building probability threshold",
                                               QgsProcessingParameterNumber.Double, defaultValue=0.5,
                                               minValue=0.01, maxValue=0.99),
                  QgsProcessingParameterNumber(self.WORKERS, "Reader threads", QgsProcessingParameterNumber.Integer,
                                               defaultValue=1, minValue=1, maxValue=8),
                  QgsProcessingParameterEnum(self.PRECISION, "Precision (auto: bf16 on CUDA, fp32 on the CPU)",
                                             options=PRECISIONS, defaultValue=0),
                  QgsProcessingParameterEnum(self.COMPRESSION, "Output compression", options=COMPRESSIONS,
                                             defaultValue=0),
                  QgsProcessingParameterEnum(self.PROBABILITY_TYPE, "Probability rasters' type (uint8 default: "
                                             "p = DN x 0.004; uint16: p = DN x 0.00002; float32 exact)",
                                             options=PROBABILITY_TYPES,
                                             defaultValue=PROBABILITY_TYPES.index(DEFAULT_PROBABILITY_TYPE)),
                  self.cluster_parameter(),
                  QgsProcessingParameterNumber(self.BLOCK_WINDOWS, "Cluster: windows along a block's side",
                                               QgsProcessingParameterNumber.Integer, defaultValue=8, minValue=1)):
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)
        for name, _, desc, _ in RASTER_OUTPUTS:
            self.addParameter(QgsProcessingParameterRasterDestination(name, desc, optional=True,
                                                                      createByDefault=name == "USE_CLASS"))
        self.addParameter(QgsProcessingParameterVectorDestination(self.POLYGONS, "Building polygons",
                                                                  QgsProcessing.TypeVectorPolygon, optional=True,
                                                                  createByDefault=False))
        self.addOutput(QgsProcessingOutputString("DEVICE_USED", "Device used"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.use.building_use_map import map_building_use

        imagery = self.raster_path(self.parameterAsRasterLayer(parameters, self.IMAGERY, context), self.IMAGERY)
        poi_layer = self.parameterAsRasterLayer(parameters, self.POI_MAPS, context)
        poi_maps = self.raster_path(poi_layer, self.POI_MAPS) if poi_layer is not None else None
        mask_layer = self.parameterAsRasterLayer(parameters, self.MASK, context)
        mask = self.raster_path(mask_layer, self.MASK) if mask_layer is not None else None
        poi_points, poi_layer_name, field = None, None, None
        if parameters.get(self.POI_LAYER) not in (None, ""):
            _, field = self.point_source(parameters, self.POI_LAYER, self.CATEGORY_FIELD, context)
            # path and layer name (a GeoPackage may hold several layers; memory layers are written out)
            poi_points, poi_layer_name = self.vector_source(parameters, self.POI_LAYER, context, feedback)
        outs = {}
        for name, key, _, _ in RASTER_OUTPUTS:
            path = self.parameterAsOutputLayer(parameters, name, context)
            if path:
                outs[key] = path
        poly = self.parameterAsOutputLayer(parameters, self.POLYGONS, context)
        if poly:
            if not poly.lower().endswith(".gpkg"):
                raise QgsProcessingException("POLYGONS: building polygons are written as GeoPackage. "
                                             "Fix: give a .gpkg file name.")
            outs["polygons"] = poly
        if not outs:
            raise QgsProcessingException("No output was asked for. Fix: set at least one output.")
        cluster = self.cluster_address(parameters, context)
        run, extra = map_building_use, {}
        if cluster:
            from ..core.cluster.building_use import map_building_use_on_cluster

            run, extra = map_building_use_on_cluster, {
                "cluster": cluster, "block_windows": self.parameterAsInt(parameters, self.BLOCK_WINDOWS, context)}
        summary = self.run_core(
            run, imagery, self.parameterAsFile(parameters, self.CHECKPOINT, context),
            poi_maps=poi_maps, poi_points=poi_points, poi_layer=poi_layer_name or None, poi_category_field=field,
            poi_preset=PRESETS[self.parameterAsEnum(parameters, self.PRESET, context)],
            poi_mapping_file=self.parameterAsFile(parameters, self.MAPPING_FILE, context) or None, mask=mask,
            device=self.parameterAsString(parameters, self.DEVICE, context) or "auto",
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            window=self.automatic_int(parameters, self.WINDOW, context, feedback),
            overlap=self.automatic_int(parameters, self.OVERLAP, context, feedback),
            blend=self.parameterAsBool(parameters, self.BLEND, context),
            threshold=self.parameterAsDouble(parameters, self.THRESHOLD, context),
            workers=self.parameterAsInt(parameters, self.WORKERS, context),
            precision=PRECISIONS[self.parameterAsEnum(parameters, self.PRECISION, context)],
            compression=COMPRESSIONS[self.parameterAsEnum(parameters, self.COMPRESSION, context)],
            probability_type=PROBABILITY_TYPES[self.parameterAsEnum(parameters, self.PROBABILITY_TYPE, context)],
            progress=self.progress(feedback), **outs, **extra)
        results = {"DEVICE_USED": summary.get("device_description")
                   or f"Dask cluster {cluster}: {summary['blocks_run']} block(s) run, {summary['blocks_skipped']} skipped"}
        for name, key, _, qml in RASTER_OUTPUTS:
            if key in outs:
                results[name] = outs[key]
                if not (key == "use_class" and not self._default_colours(summary)):
                    self.style_output(context, outs[key], qml)
        if poly:
            results[self.POLYGONS] = poly
            self.style_output(context, poly, "building_use_polygons.qml")
        return results

    @staticmethod
    def _default_colours(summary) -> bool:
        return summary.get("default_colours", True)
