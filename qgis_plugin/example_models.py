"""Example graphical-modeler models shipped with the plugin (built in code so
they always match the algorithms' current parameters)."""
from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingModelAlgorithm, QgsProcessingModelChildAlgorithm,
                       QgsProcessingModelChildParameterSource as Source, QgsProcessingModelOutput,
                       QgsProcessingModelParameter, QgsProcessingParameterExtent,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterFile,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterString)

Number = QgsProcessingParameterNumber


def _params(m: QgsProcessingModelAlgorithm, *definitions) -> None:
    """Add model inputs (each under its own name)."""
    for d in definitions:
        m.addModelParameter(d, QgsProcessingModelParameter(d.name()))


def _model_input(name: str) -> Source:
    return Source.fromModelParameter(name)


def _from(child_id: str, output: str) -> Source:
    return Source.fromChildOutput(child_id, output)


def _child(m: QgsProcessingModelAlgorithm, alg_id: str, child_id: str, description: str, sources: dict,
           outputs: dict | None = None) -> None:
    """Add a child algorithm. ``sources``: parameter -> Source, or a static value; ``outputs``: model
    output name -> (description, the child's output name)."""
    c = QgsProcessingModelChildAlgorithm(alg_id)
    c.setChildId(child_id)
    c.setDescription(description)
    for name, src in sources.items():
        c.addParameterSources(name, [src if isinstance(src, Source) else Source.fromStaticValue(src)])
    model_outputs = {}
    for name, (text, child_output) in (outputs or {}).items():
        out = QgsProcessingModelOutput(name, text)
        out.setChildId(child_id)
        out.setChildOutputName(child_output)
        model_outputs[name] = out
    c.setModelOutputs(model_outputs)
    m.addChildAlgorithm(c)


def _imagery_and_pois(m: QgsProcessingModelAlgorithm) -> None:
    _params(m, QgsProcessingParameterRasterLayer("imagery", "Imagery"),
            QgsProcessingParameterFeatureSource("pois", "POI points", [QgsProcessing.TypeVectorPoint]))


def retinex_poi_chain() -> QgsProcessingModelAlgorithm:
    """imagery -> edifice:retinex -> its grid -> edifice:poiprobability (OSM POIs).
    Model outputs: ``retinex:corrected`` and ``poimaps:poi_maps``."""
    m = QgsProcessingModelAlgorithm("Retinex and POI probability maps", "Edifice examples", "edifice_retinex_poi")
    _imagery_and_pois(m)
    _child(m, "edifice:retinex", "retinex", "Retinex illumination correction",
           {"INPUT": _model_input("imagery"), "SIGMAS": "15,80,250"},
           {"corrected": ("Corrected imagery", "OUTPUT")})
    _child(m, "edifice:poiprobability", "poimaps", "POI probability maps on the imagery grid",
           {"INPUT": _model_input("pois"), "CATEGORY_FIELD": "other_tags", "PRESET": 0,
            "REFERENCE": _from("retinex", "OUTPUT"), "MAX_DISTANCES": "500,500,1500"},
           {"poi_maps": ("POI probability maps", "OUTPUT")})
    return m


def poi_dataset_training() -> QgsProcessingModelAlgorithm:
    """POI points -> edifice:poiprobability on the imagery grid -> edifice:trainingdataset (with the
    labelled buildings) -> edifice:trainbuildinguse (imagery + POI, multi-task). Epochs and the
    encoder's base width are model parameters (a tiny model trains in seconds). Model outputs:
    ``poimaps:poi_maps``, ``dataset:dataset`` (folder) and ``train:checkpoint``."""
    m = QgsProcessingModelAlgorithm("POI maps, training dataset and building-use training", "Edifice examples",
                                    "edifice_poi_dataset_training")
    _imagery_and_pois(m)
    _params(m,
            QgsProcessingParameterString("category_field", "POI category field", defaultValue="other_tags"),
            QgsProcessingParameterString("max_distances", "POI d_max in metres (R,C,I)", defaultValue="500,500,1500"),
            QgsProcessingParameterFeatureSource("buildings", "Building polygons", [QgsProcessing.TypeVectorPolygon]),
            QgsProcessingParameterString("use_field", "Building use field", defaultValue="building"),
            Number("chip_size", "Chip size (pixels)", Number.Integer, 256, minValue=16),
            Number("split_tile", "Split tile size (m; 0 = 4 chips)", Number.Double, 0.0, minValue=0.0),
            Number("epochs", "Epochs", Number.Integer, 50, minValue=1),
            Number("base_width", "Encoder base width (64 = standard; 4 = tiny test model)", Number.Integer, 64,
                   minValue=1))
    _child(m, "edifice:poiprobability", "poimaps", "POI probability maps on the imagery grid",
           {"INPUT": _model_input("pois"), "CATEGORY_FIELD": _model_input("category_field"), "PRESET": 0,
            "REFERENCE": _model_input("imagery"), "MAX_DISTANCES": _model_input("max_distances")},
           {"poi_maps": ("POI probability maps", "OUTPUT")})
    _child(m, "edifice:trainingdataset", "dataset", "Building-use training dataset",
           {"IMAGERY": _model_input("imagery"), "POI_RASTER": _from("poimaps", "OUTPUT"),
            "BUILDINGS": _model_input("buildings"), "USE_FIELD": _model_input("use_field"), "USE_PRESET": 0,
            "CHIP_SIZE": _model_input("chip_size"), "SPLIT_TILE": _model_input("split_tile"), "SEED": 0},
           {"dataset": ("Training dataset folder", "OUTPUT_FOLDER")})
    _child(m, "edifice:trainbuildinguse", "train", "Train the building-use model",
           {"DATASET": _from("dataset", "OUTPUT_FOLDER"), "VARIANT": 2, "ENCODER": 1,
            "BASE_WIDTH": _model_input("base_width"), "EPOCHS": _model_input("epochs"), "BATCH_SIZE": 16,
            "LEARNING_RATE": 0.001, "DEVICE": "auto", "SEED": 0},
           {"checkpoint": ("Building-use model checkpoint", "OUTPUT_CHECKPOINT")})
    return m


def height_footprint_ccap() -> QgsProcessingModelAlgorithm:
    """Sentinel-1/2 + DEM -> edifice:heightfootprint (SHAFTS, 100 m) -> edifice:ccap (urban mask).
    Model parameters: ``s1``, ``s2``, ``dem``, ``checkpoint``, ``extent``, ``padding`` (degrees). Model outputs:
    ``heightfootprint:height``, ``heightfootprint:footprint``, ``ccap:mask``, ``ccap:urban_height``,
    ``ccap:urban_footprint``; the CCAP threshold is written to the log."""
    m = QgsProcessingModelAlgorithm("Height, footprint and CCAP urban mask", "Edifice examples",
                                    "edifice_height_footprint_ccap")
    _params(m, QgsProcessingParameterRasterLayer("s1", "Sentinel-1 (VV, VH dB)"),
            QgsProcessingParameterRasterLayer("s2", "Sentinel-2 (R, G, B, NIR)"),
            QgsProcessingParameterRasterLayer("dem", "DEM (SRTM)"),
            QgsProcessingParameterFile("checkpoint", "Checkpoint (SHAFTS .pth/.pth.tar or Edifice)",
                                       fileFilter="PyTorch checkpoints (*.pth *.pth.tar *.pt);;All files (*)"),
            QgsProcessingParameterExtent("extent", "Extent"),
            Number("padding", "Padding (degrees)", Number.Double, defaultValue=0.03, minValue=0.0))
    _child(m, "edifice:heightfootprint", "heightfootprint", "Building height and footprint (SHAFTS, 100 m)",
           {"SENTINEL1": _model_input("s1"), "SENTINEL2": _model_input("s2"), "DEM": _model_input("dem"),
            "CHECKPOINT": _model_input("checkpoint"), "EXTENT": _model_input("extent"),
            "PADDING": _model_input("padding"), "RESOLUTION": "100", "MODE": 0, "DEVICE": "auto", "BATCH_SIZE": 64},
           {"height": ("Building height (m)", "OUTPUT_HEIGHT"),
            "footprint": ("Building footprint fraction", "OUTPUT_FOOTPRINT")})
    _child(m, "edifice:ccap", "ccap", "CCAP urban mask",
           {"HEIGHTS": _from("heightfootprint", "OUTPUT_HEIGHT"),
            "FOOTPRINTS": _from("heightfootprint", "OUTPUT_FOOTPRINT"),
            "H_MIN": 2.0, "CRITERION": 0, "FUSION_RATIO": 0.5},
           {"mask": ("Urban mask", "OUTPUT_MASK"), "urban_height": ("Height, urban only", "OUTPUT_HEIGHT"),
            "urban_footprint": ("Footprint, urban only", "OUTPUT_FOOTPRINT")})
    return m


def imagery_poi_use_map() -> QgsProcessingModelAlgorithm:
    """imagery + POI points -> edifice:poiprobability (imagery grid) -> edifice:mapbuildinguse
    (checkpoint) -> building polygons. Model outputs: ``usemap:use_class`` and ``usemap:buildings``."""
    m = QgsProcessingModelAlgorithm("Building use map from imagery and POIs", "Edifice examples",
                                    "edifice_imagery_poi_use_map")
    _imagery_and_pois(m)
    _params(m, QgsProcessingParameterFile("checkpoint", "Building-use checkpoint",
                                          fileFilter="Edifice checkpoint (*.pt *.pth)"))
    _child(m, "edifice:poiprobability", "poimaps", "POI probability maps on the imagery grid",
           {"INPUT": _model_input("pois"), "CATEGORY_FIELD": "other_tags", "PRESET": 0,
            "REFERENCE": _model_input("imagery"), "MAX_DISTANCES": "500,500,1500", "OUTPUT": "TEMPORARY_OUTPUT"})
    _child(m, "edifice:mapbuildinguse", "usemap", "Building use (sliding window)",
           {"IMAGERY": _model_input("imagery"), "POI_MAPS": _from("poimaps", "OUTPUT"),
            "CHECKPOINT": _model_input("checkpoint"), "DEVICE": "auto", "BATCH_SIZE": 4, "WINDOW": 0,
            "OVERLAP": 128},
           {"use_class": ("Building use class", "USE_CLASS"), "buildings": ("Building polygons with use", "POLYGONS")})
    return m


#: name -> builder of every example model; scripts/build_example_models.py writes examples/<name>.model3
EXAMPLES = {
    "retinex_poi_chain": retinex_poi_chain,
    "poi_dataset_training": poi_dataset_training,
    "height_footprint_ccap": height_footprint_ccap,
    "imagery_poi_use_map": imagery_poi_use_map,
}


def install_models(folder: str | None = None) -> list[str]:
    """Write every example model into ``folder`` (default: the profile's Processing models folder,
    which the Toolbox lists under Models) and reload the model provider; returns the models' names."""
    import os

    from qgis.core import QgsApplication

    if folder is None:
        from processing.modeler.ModelerUtils import ModelerUtils

        folder = ModelerUtils.defaultModelsFolder()
    os.makedirs(folder, exist_ok=True)
    names = []
    for name, build in EXAMPLES.items():
        model = build()
        if model.toFile(os.path.join(folder, f"edifice_{name}.model3")):
            names.append(model.displayName())
    provider = QgsApplication.processingRegistry().providerById("model")
    if provider is not None:
        provider.refreshAlgorithms()
    return names
