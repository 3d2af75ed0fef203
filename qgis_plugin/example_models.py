"""Example graphical-modeler models shipped with the plugin (built in code so
they always match the algorithms' current parameters)."""
from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingModelAlgorithm, QgsProcessingModelChildAlgorithm,
                       QgsProcessingModelChildParameterSource as Source, QgsProcessingModelOutput,
                       QgsProcessingModelParameter, QgsProcessingParameterExtent,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterFile,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterString)


def _output(name: str, description: str, child_id: str, child_output: str) -> QgsProcessingModelOutput:
    out = QgsProcessingModelOutput(name, description)
    out.setChildId(child_id)
    out.setChildOutputName(child_output)
    return out


def retinex_poi_chain() -> QgsProcessingModelAlgorithm:
    """imagery -> edifice:retinex -> its grid -> edifice:poiprobability (OSM POIs).
    Model outputs: ``retinex:corrected`` and ``poimaps:poi_maps``."""
    m = QgsProcessingModelAlgorithm("Retinex and POI probability maps", "Edifice examples", "edifice_retinex_poi")
    m.addModelParameter(QgsProcessingParameterRasterLayer("imagery", "Imagery"), QgsProcessingModelParameter("imagery"))
    m.addModelParameter(QgsProcessingParameterFeatureSource("pois", "POI points", [QgsProcessing.TypeVectorPoint]),
                        QgsProcessingModelParameter("pois"))

    retinex = QgsProcessingModelChildAlgorithm("edifice:retinex")
    retinex.setChildId("retinex")
    retinex.setDescription("Retinex illumination correction")
    retinex.addParameterSources("INPUT", [Source.fromModelParameter("imagery")])
    retinex.addParameterSources("SIGMAS", [Source.fromStaticValue("15,80,250")])
    retinex.setModelOutputs({"corrected": _output("corrected", "Corrected imagery", "retinex", "OUTPUT")})
    m.addChildAlgorithm(retinex)

    poi = QgsProcessingModelChildAlgorithm("edifice:poiprobability")
    poi.setChildId("poimaps")
    poi.setDescription("POI probability maps on the imagery grid")
    poi.addParameterSources("INPUT", [Source.fromModelParameter("pois")])
    poi.addParameterSources("CATEGORY_FIELD", [Source.fromStaticValue("other_tags")])
    poi.addParameterSources("PRESET", [Source.fromStaticValue(0)])
    poi.addParameterSources("REFERENCE", [Source.fromChildOutput("retinex", "OUTPUT")])
    poi.addParameterSources("MAX_DISTANCES", [Source.fromStaticValue("500,500,1500")])
    poi.setModelOutputs({"poi_maps": _output("poi_maps", "POI probability maps", "poimaps", "OUTPUT")})
    m.addChildAlgorithm(poi)
    return m


def poi_dataset_training() -> QgsProcessingModelAlgorithm:
    """POI points -> edifice:poiprobability on the imagery grid -> edifice:trainingdataset (with the
    labelled buildings) -> edifice:trainbuildinguse (imagery + POI, multi-task). Epochs and the
    encoder's base width are model parameters (a tiny model trains in seconds). Model outputs:
    ``poimaps:poi_maps``, ``dataset:dataset`` (folder) and ``train:checkpoint``."""
    m = QgsProcessingModelAlgorithm("POI maps, training dataset and building-use training", "Edifice examples",
                                    "edifice_poi_dataset_training")

    def param(definition):
        m.addModelParameter(definition, QgsProcessingModelParameter(definition.name()))

    param(QgsProcessingParameterRasterLayer("imagery", "Imagery"))
    param(QgsProcessingParameterFeatureSource("pois", "POI points", [QgsProcessing.TypeVectorPoint]))
    param(QgsProcessingParameterString("category_field", "POI category field", defaultValue="other_tags"))
    param(QgsProcessingParameterString("max_distances", "POI d_max in metres (R,C,I)", defaultValue="500,500,1500"))
    param(QgsProcessingParameterFeatureSource("buildings", "Building polygons", [QgsProcessing.TypeVectorPolygon]))
    param(QgsProcessingParameterString("use_field", "Building use field", defaultValue="building"))
    param(QgsProcessingParameterNumber("chip_size", "Chip size (pixels)", QgsProcessingParameterNumber.Integer,
                                       256, minValue=16))
    param(QgsProcessingParameterNumber("split_tile", "Split tile size (m; 0 = 4 chips)",
                                       QgsProcessingParameterNumber.Double, 0.0, minValue=0.0))
    param(QgsProcessingParameterNumber("epochs", "Epochs", QgsProcessingParameterNumber.Integer, 50, minValue=1))
    param(QgsProcessingParameterNumber("base_width", "Encoder base width (64 = standard; 4 = tiny test model)",
                                       QgsProcessingParameterNumber.Integer, 64, minValue=1))

    poi = QgsProcessingModelChildAlgorithm("edifice:poiprobability")
    poi.setChildId("poimaps")
    poi.setDescription("POI probability maps on the imagery grid")
    poi.addParameterSources("INPUT", [Source.fromModelParameter("pois")])
    poi.addParameterSources("CATEGORY_FIELD", [Source.fromModelParameter("category_field")])
    poi.addParameterSources("PRESET", [Source.fromStaticValue(0)])
    poi.addParameterSources("REFERENCE", [Source.fromModelParameter("imagery")])
    poi.addParameterSources("MAX_DISTANCES", [Source.fromModelParameter("max_distances")])
    poi.setModelOutputs({"poi_maps": _output("poi_maps", "POI probability maps", "poimaps", "OUTPUT")})
    m.addChildAlgorithm(poi)

    ds = QgsProcessingModelChildAlgorithm("edifice:trainingdataset")
    ds.setChildId("dataset")
    ds.setDescription("Building-use training dataset")
    ds.addParameterSources("IMAGERY", [Source.fromModelParameter("imagery")])
    ds.addParameterSources("POI_RASTER", [Source.fromChildOutput("poimaps", "OUTPUT")])
    ds.addParameterSources("BUILDINGS", [Source.fromModelParameter("buildings")])
    ds.addParameterSources("USE_FIELD", [Source.fromModelParameter("use_field")])
    ds.addParameterSources("USE_PRESET", [Source.fromStaticValue(0)])
    ds.addParameterSources("CHIP_SIZE", [Source.fromModelParameter("chip_size")])
    ds.addParameterSources("SPLIT_TILE", [Source.fromModelParameter("split_tile")])
    ds.addParameterSources("SEED", [Source.fromStaticValue(0)])
    ds.setModelOutputs({"dataset": _output("dataset", "Training dataset folder", "dataset", "OUTPUT_FOLDER")})
    m.addChildAlgorithm(ds)

    tr = QgsProcessingModelChildAlgorithm("edifice:trainbuildinguse")
    tr.setChildId("train")
    tr.setDescription("Train the building-use model")
    tr.addParameterSources("DATASET", [Source.fromChildOutput("dataset", "OUTPUT_FOLDER")])
    tr.addParameterSources("VARIANT", [Source.fromStaticValue(2)])
    tr.addParameterSources("ENCODER", [Source.fromStaticValue(1)])
    tr.addParameterSources("BASE_WIDTH", [Source.fromModelParameter("base_width")])
    tr.addParameterSources("EPOCHS", [Source.fromModelParameter("epochs")])
    tr.addParameterSources("BATCH_SIZE", [Source.fromStaticValue(16)])
    tr.addParameterSources("LEARNING_RATE", [Source.fromStaticValue(0.001)])
    tr.addParameterSources("DEVICE", [Source.fromStaticValue("auto")])
    tr.addParameterSources("SEED", [Source.fromStaticValue(0)])
    tr.setModelOutputs({"checkpoint": _output("checkpoint", "Building-use model checkpoint", "train",
                                              "OUTPUT_CHECKPOINT")})
    m.addChildAlgorithm(tr)
    return m


def height_footprint_ccap() -> QgsProcessingModelAlgorithm:
    """Sentinel-1/2 + DEM -> edifice:heightfootprint (SHAFTS, 100 m) -> edifice:ccap (urban mask).
    Model parameters: ``s1``, ``s2``, ``dem``, ``checkpoint``, ``extent``, ``padding`` (degrees). Model outputs:
    ``heightfootprint:height``, ``heightfootprint:footprint``, ``ccap:mask``, ``ccap:urban_height``,
    ``ccap:urban_footprint``; the CCAP threshold is written to the log."""
    m = QgsProcessingModelAlgorithm("Height, footprint and CCAP urban mask", "Edifice examples",
                                    "edifice_height_footprint_ccap")
    for name, text in (("s1", "Sentinel-1 (VV, VH dB)"), ("s2", "Sentinel-2 (R, G, B, NIR)"), ("dem", "DEM (SRTM)")):
        m.addModelParameter(QgsProcessingParameterRasterLayer(name, text), QgsProcessingModelParameter(name))
    m.addModelParameter(QgsProcessingParameterFile("checkpoint", "Checkpoint (SHAFTS .pth or Edifice)", extension="pth"),
                        QgsProcessingModelParameter("checkpoint"))
    m.addModelParameter(QgsProcessingParameterExtent("extent", "Extent"), QgsProcessingModelParameter("extent"))
    m.addModelParameter(QgsProcessingParameterNumber("padding", "Padding (degrees)", QgsProcessingParameterNumber.Double,
                                                     defaultValue=0.03, minValue=0.0),
                        QgsProcessingModelParameter("padding"))

    hf = QgsProcessingModelChildAlgorithm("edifice:heightfootprint")
    hf.setChildId("heightfootprint")
    hf.setDescription("Building height and footprint (SHAFTS, 100 m)")
    for param, source in (("SENTINEL1", "s1"), ("SENTINEL2", "s2"), ("DEM", "dem"), ("CHECKPOINT", "checkpoint"),
                          ("EXTENT", "extent"), ("PADDING", "padding")):
        hf.addParameterSources(param, [Source.fromModelParameter(source)])
    hf.addParameterSources("RESOLUTION", [Source.fromStaticValue(0)])
    hf.addParameterSources("MODE", [Source.fromStaticValue(0)])
    hf.addParameterSources("DEVICE", [Source.fromStaticValue("auto")])
    hf.addParameterSources("BATCH_SIZE", [Source.fromStaticValue(64)])
    hf.setModelOutputs({"height": _output("height", "Building height (m)", "heightfootprint", "OUTPUT_HEIGHT"),
                        "footprint": _output("footprint", "Building footprint fraction", "heightfootprint",
                                             "OUTPUT_FOOTPRINT")})
    m.addChildAlgorithm(hf)

    ccap = QgsProcessingModelChildAlgorithm("edifice:ccap")
    ccap.setChildId("ccap")
    ccap.setDescription("CCAP urban mask")
    ccap.addParameterSources("HEIGHTS", [Source.fromChildOutput("heightfootprint", "OUTPUT_HEIGHT")])
    ccap.addParameterSources("FOOTPRINTS", [Source.fromChildOutput("heightfootprint", "OUTPUT_FOOTPRINT")])
    ccap.addParameterSources("H_MIN", [Source.fromStaticValue(2.0)])
    ccap.addParameterSources("CRITERION", [Source.fromStaticValue(0)])
    ccap.addParameterSources("FUSION_RATIO", [Source.fromStaticValue(0.5)])
    ccap.setModelOutputs({"mask": _output("mask", "Urban mask", "ccap", "OUTPUT_MASK"),
                          "urban_height": _output("urban_height", "Height, urban only", "ccap", "OUTPUT_HEIGHT"),
                          "urban_footprint": _output("urban_footprint", "Footprint, urban only", "ccap",
                                                     "OUTPUT_FOOTPRINT")})
    m.addChildAlgorithm(ccap)
    return m


def imagery_poi_use_map() -> QgsProcessingModelAlgorithm:
    """imagery + POI points -> edifice:poiprobability (imagery grid) -> edifice:mapbuildinguse
    (checkpoint) -> building polygons. Model outputs: ``usemap:use_class`` and ``usemap:buildings``."""
    m = QgsProcessingModelAlgorithm("Building use map from imagery and POIs", "Edifice examples",
                                    "edifice_imagery_poi_use_map")
    m.addModelParameter(QgsProcessingParameterRasterLayer("imagery", "Imagery"), QgsProcessingModelParameter("imagery"))
    m.addModelParameter(QgsProcessingParameterFeatureSource("pois", "POI points", [QgsProcessing.TypeVectorPoint]),
                        QgsProcessingModelParameter("pois"))
    m.addModelParameter(QgsProcessingParameterFile("checkpoint", "Building-use checkpoint",
                                                   fileFilter="Edifice checkpoint (*.pt *.pth)"),
                        QgsProcessingModelParameter("checkpoint"))

    poi = QgsProcessingModelChildAlgorithm("edifice:poiprobability")
    poi.setChildId("poimaps")
    poi.setDescription("POI probability maps on the imagery grid")
    poi.addParameterSources("INPUT", [Source.fromModelParameter("pois")])
    poi.addParameterSources("CATEGORY_FIELD", [Source.fromStaticValue("other_tags")])
    poi.addParameterSources("PRESET", [Source.fromStaticValue(0)])
    poi.addParameterSources("REFERENCE", [Source.fromModelParameter("imagery")])
    poi.addParameterSources("MAX_DISTANCES", [Source.fromStaticValue("500,500,1500")])
    poi.addParameterSources("OUTPUT", [Source.fromStaticValue("TEMPORARY_OUTPUT")])
    m.addChildAlgorithm(poi)

    use = QgsProcessingModelChildAlgorithm("edifice:mapbuildinguse")
    use.setChildId("usemap")
    use.setDescription("Building use (sliding window)")
    use.addParameterSources("IMAGERY", [Source.fromModelParameter("imagery")])
    use.addParameterSources("POI_MAPS", [Source.fromChildOutput("poimaps", "OUTPUT")])
    use.addParameterSources("CHECKPOINT", [Source.fromModelParameter("checkpoint")])
    use.addParameterSources("DEVICE", [Source.fromStaticValue("auto")])
    use.addParameterSources("BATCH_SIZE", [Source.fromStaticValue(4)])
    use.addParameterSources("WINDOW", [Source.fromStaticValue(0)])
    use.addParameterSources("OVERLAP", [Source.fromStaticValue(128)])
    use.setModelOutputs({"use_class": _output("use_class", "Building use class", "usemap", "USE_CLASS"),
                         "buildings": _output("buildings", "Building polygons with use", "usemap", "POLYGONS")})
    m.addChildAlgorithm(use)
    return m


#: name -> builder of every example model; scripts/build_example_models.py writes examples/<name>.model3
EXAMPLES = {
    "retinex_poi_chain": retinex_poi_chain,
    "poi_dataset_training": poi_dataset_training,
    "height_footprint_ccap": height_footprint_ccap,
    "imagery_poi_use_map": imagery_poi_use_map,
}
