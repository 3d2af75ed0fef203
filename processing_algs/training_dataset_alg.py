"""edifice:trainingdataset — imagery + POI maps + labelled buildings -> training chips
(adapter over core.use.training_dataset.create_training_dataset)."""
from __future__ import annotations

from pathlib import Path

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingOutputFile,
                       QgsProcessingOutputNumber, QgsProcessingOutputVectorLayer, QgsProcessingParameterDefinition,
                       QgsProcessingParameterEnum,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterFile,
                       QgsProcessingParameterFolderDestination, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterString)

from .base import EdificeAlgorithm, field_parameter

USE_PRESETS = ["osm_building", "eubucco_type", "csv"]
POI_PRESETS = ["osm", "gbt35648", "overture", "google_places", "csv"]
#: formats the core reads directly (others, selections and filtered layers are exported first)


def run_core_named(fn, names: dict, *args, **kwargs):
    """:meth:`EdificeAlgorithm.run_core`, with core parameter names in the message
    replaced by this algorithm's (e.g. core ``RESUME_FROM`` -> ``RESUME``)."""
    from ..core.errors import InputError

    try:
        return EdificeAlgorithm.run_core(fn, *args, **kwargs)
    except QgsProcessingException as exc:
        cause = exc.__cause__
        if isinstance(cause, InputError) and cause.name in names:
            text = f"{names[cause.name]}: {cause.problem}" + (f" Fix: {cause.fix}" if cause.fix else "")
            raise QgsProcessingException(text) from cause
        raise


class TrainingDatasetAlgorithm(EdificeAlgorithm):
    IMAGERY, POI_RASTER, POI_POINTS = "IMAGERY", "POI_RASTER", "POI_POINTS"
    CATEGORY_FIELD, PRESET, POI_MAPPING_FILE, MAX_DISTANCES = (
        "CATEGORY_FIELD", "PRESET", "POI_MAPPING_FILE", "MAX_DISTANCES")
    BUILDINGS, USE_FIELD, USE_PRESET, MAPPING_FILE = "BUILDINGS", "USE_FIELD", "USE_PRESET", "MAPPING_FILE"
    CHIP_SIZE, SPLIT_TILE, SEED, MIN_PIXELS = "CHIP_SIZE", "SPLIT_TILE", "SEED", "MIN_BUILDING_PIXELS"
    BACKGROUND_RATIO, SPLIT_RATIOS, CHIP_STRIDE = "BACKGROUND_RATIO", "SPLIT_RATIOS", "CHIP_STRIDE"
    OUTPUT_FOLDER, MANIFEST, TEST_LAYER = "OUTPUT_FOLDER", "MANIFEST", "TEST_BUILDINGS_LAYER"
    GROUP, GROUP_ID = "Building use", "buildinguse"
    HELP = ("Cuts imagery, POI probability maps and building polygons with a use attribute into training "
            "chips (a folder with manifest.json and train/val/test chips) for 'Train building-use model'. "
            "POI maps come from POI_RASTER (the output of 'POI probability maps', resampled to the imagery grid "
            "if needed) or are computed here from POI_POINTS on the imagery grid (CATEGORY_FIELD, PRESET and "
            "MAX_DISTANCES as in that tool); without either the dataset holds imagery only (variant "
            "'imagery only'). USE_FIELD names the attribute holding the building use, mapped to residential / "
            "commercial / industrial by USE_PRESET (osm_building, eubucco_type, or csv with MAPPING_FILE, "
            "columns value,class); buildings whose value is unmapped keep their footprint but no use label. "
            "Leave USE_FIELD empty for footprint-only labels. Polygons in another CRS are reprojected; invalid "
            "ones are repaired or skipped (counted in the log). CHIP_SIZE in pixels. The split is 6:2:2 at "
            "building level over square SPLIT_TILE tiles (metres, rounded to whole chips; 0 = 4 chips) so that "
            "no building and no tile is shared between subsets; SEED fixes it. Class counts per subset are "
            "written to the log and the manifest.")

    def name(self):
        return "trainingdataset"

    def displayName(self):  # noqa: N802
        return "Create building-use training dataset"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.IMAGERY, "Imagery (e.g. RGB)"))
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.POI_RASTER, "POI probability maps (raster from 'POI probability maps')", optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.POI_POINTS, "or POI points (maps computed on the imagery grid)", [QgsProcessing.TypeVectorPoint],
            optional=True))
        self.addParameter(field_parameter(self.CATEGORY_FIELD, "POI category field", self.POI_POINTS, "other_tags",
                                          optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.PRESET, "POI category mapping preset", options=POI_PRESETS,
                                                     defaultValue=0))
        self.addParameter(QgsProcessingParameterFile(self.POI_MAPPING_FILE, "POI mapping file (CSV value,class) "
                                                     "for POI preset csv", extension="csv", optional=True))
        self.addParameter(QgsProcessingParameterString(self.MAX_DISTANCES, "POI maximum distances d_max in metres "
                                                       "(R,C,I)", defaultValue="500,500,1500", optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(self.BUILDINGS, "Building polygons",
                                                              [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(field_parameter(self.USE_FIELD, "Building use field (empty = footprint only)", self.BUILDINGS,
                                          "building", optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.USE_PRESET, "Building use mapping preset",
                                                     options=USE_PRESETS, defaultValue=0))
        self.addParameter(QgsProcessingParameterFile(self.MAPPING_FILE, "Building use mapping file (CSV value,class) "
                                                     "for preset csv", extension="csv", optional=True))
        self.addParameter(QgsProcessingParameterNumber(self.CHIP_SIZE, "Chip size (pixels)",
                                                       QgsProcessingParameterNumber.Integer, defaultValue=256,
                                                       minValue=16))
        self.addParameter(QgsProcessingParameterNumber(self.SPLIT_TILE, "Split tile size (m; 0 = 4 chips)",
                                                       QgsProcessingParameterNumber.Double, defaultValue=0.0,
                                                       minValue=0.0))
        self.addParameter(QgsProcessingParameterNumber(self.SEED, "Random seed of the split",
                                                       QgsProcessingParameterNumber.Integer, defaultValue=0,
                                                       minValue=0))
        for p in (QgsProcessingParameterNumber(self.MIN_PIXELS, "Minimum building pixels for a chip to be kept",
                                               QgsProcessingParameterNumber.Integer, defaultValue=16, minValue=0),
                  QgsProcessingParameterNumber(self.BACKGROUND_RATIO, "Building-free chips per chip with buildings "
                                               "(negatives; 0 = none)", QgsProcessingParameterNumber.Double,
                                               defaultValue=0.5, minValue=0.0),
                  QgsProcessingParameterString(self.SPLIT_RATIOS, "Train, validation, test shares (test may be 0)",
                                               defaultValue="6,2,2"),
                  QgsProcessingParameterNumber(self.CHIP_STRIDE, "Pixels between chip origins (0 = chip size; half "
                                               "of it doubles the views on small datasets)",
                                               QgsProcessingParameterNumber.Integer, defaultValue=0, minValue=0)):
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, "Training dataset folder"))
        self.addOutput(QgsProcessingOutputFile(self.MANIFEST, "Manifest (manifest.json)"))
        self.addOutput(QgsProcessingOutputVectorLayer(self.TEST_LAYER, "Held-back test buildings (known use)",
                                                      QgsProcessing.TypeVectorPolygon))
        for sub in ("TRAIN", "VAL", "TEST"):
            self.addOutput(QgsProcessingOutputNumber(f"{sub}_BUILDINGS", f"Buildings in the {sub.lower()} subset"))
        self.addOutput(QgsProcessingOutputNumber("CHIPS", "Chips written"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.use.training_dataset import MANIFEST, SUBSETS, create_training_dataset

        imagery = self.raster_path(self.parameterAsRasterLayer(parameters, self.IMAGERY, context), self.IMAGERY)
        poi_layer = self.parameterAsRasterLayer(parameters, self.POI_RASTER, context)
        poi_raster = self.raster_path(poi_layer, self.POI_RASTER) if poi_layer is not None else None
        poi_points, poi_points_layer = self.vector_source(parameters, self.POI_POINTS, context, feedback)
        if poi_raster and poi_points:
            raise QgsProcessingException("POI_RASTER, POI_POINTS: both were given. Fix: give one of them.")
        field = self.field_name(parameters, self.CATEGORY_FIELD, context)
        preset = POI_PRESETS[self.parameterAsEnum(parameters, self.PRESET, context)]
        poi_mapping = self.parameterAsFile(parameters, self.POI_MAPPING_FILE, context) or None
        if poi_points:
            if not field:
                raise QgsProcessingException("CATEGORY_FIELD: is required with POI_POINTS. "
                                             "Fix: name the field holding the POI category.")
            if preset == "csv" and not poi_mapping:
                raise QgsProcessingException("POI_MAPPING_FILE: is required with PRESET=csv. "
                                             "Fix: give a CSV with columns value,class.")
        buildings, buildings_layer = self.vector_source(parameters, self.BUILDINGS, context, feedback)
        if not buildings:
            raise QgsProcessingException("BUILDINGS: no layer given. Fix: choose a polygon layer of buildings.")
        use_field = self.field_name(parameters, self.USE_FIELD, context) or None
        use_preset = USE_PRESETS[self.parameterAsEnum(parameters, self.USE_PRESET, context)]
        mapping = self.parameterAsFile(parameters, self.MAPPING_FILE, context) or None
        split_m = self.parameterAsDouble(parameters, self.SPLIT_TILE, context)
        out = self.parameterAsString(parameters, self.OUTPUT_FOLDER, context)
        # Processing overwrites outputs: replace a previous dataset, never a folder holding anything else
        overwrite = (Path(out) / MANIFEST).is_file()
        if overwrite:
            feedback.pushInfo(f"Replacing the training dataset in {out}.")
        if use_field is None:
            feedback.pushInfo("No USE_FIELD: footprint-only labels (use ignored on every building).")

        names = {"INPUT": self.POI_POINTS, "OUTPUT": self.OUTPUT_FOLDER, "POI_CATEGORY_FIELD": self.CATEGORY_FIELD,
                 "USE_PRESET": self.USE_PRESET}
        m = run_core_named(
            create_training_dataset, names, imagery, buildings, out, use_field, use_preset=use_preset,
            mapping_file=mapping, buildings_layer=buildings_layer, poi_raster_path=poi_raster,
            poi_points_path=poi_points, poi_layer=poi_points_layer, poi_category_field=field or None,
            poi_preset=preset, poi_mapping_file=poi_mapping,
            poi_max_distances=self.parameterAsString(parameters, self.MAX_DISTANCES, context) or None,
            chip_size=self.parameterAsInt(parameters, self.CHIP_SIZE, context),
            split_tile_m=split_m if split_m > 0 else None, seed=self.parameterAsInt(parameters, self.SEED, context),
            min_building_pixels=self.parameterAsInt(parameters, self.MIN_PIXELS, context), overwrite=overwrite,
            background_ratio=self.parameterAsDouble(parameters, self.BACKGROUND_RATIO, context),
            split_ratios=self._split_ratios(parameters, context),
            chip_stride=self.parameterAsInt(parameters, self.CHIP_STRIDE, context) or None,
            progress=self.progress(feedback))
        b = m["buildings"]
        feedback.pushInfo(f"Buildings: {b['read']} read, {b['in_imagery']} over the imagery, "
                          f"{b.get('repaired', 0)} repaired, "
                          f"{sum(v for k, v in b.items() if k.startswith('skipped'))} skipped, "
                          f"{b.get('unmapped', 0)} with an unmapped use value.")
        feedback.pushInfo("Class counts per subset (buildings):")
        for sub in SUBSETS:
            s = m["split"]["subsets"][sub]
            feedback.pushInfo(f"  {sub}: {s['buildings']} buildings (residential {s['residential']}, commercial "
                              f"{s['commercial']}, industrial {s['industrial']}, unknown use {s['unknown']}), "
                              f"{s['tiles']} tiles, {s['chips']} chips")
        bands = ", ".join(x["name"] for x in m["bands"])
        feedback.pushInfo(f"Bands in order: {bands}.")
        res = {self.OUTPUT_FOLDER: out, self.MANIFEST: str(Path(out) / MANIFEST), "CHIPS": len(m["chips"]),
               self.TEST_LAYER: str(Path(out) / m["test_buildings"])}
        for sub in SUBSETS:
            res[f"{sub.upper()}_BUILDINGS"] = m["split"]["subsets"][sub]["buildings"]
        return res

    def _split_ratios(self, parameters, context) -> list[float]:
        text = self.parameterAsString(parameters, self.SPLIT_RATIOS, context) or "6,2,2"
        try:
            return [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
        except ValueError:
            raise QgsProcessingException(f"SPLIT_RATIOS: '{text}' is not a list of numbers. Fix: write e.g. 6,2,2.")
