"""Example graphical-modeler models shipped with the plugin (built in code so
they always match the algorithms' current parameters)."""
from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingModelAlgorithm, QgsProcessingModelChildAlgorithm,
                       QgsProcessingModelChildParameterSource as Source, QgsProcessingModelOutput,
                       QgsProcessingModelParameter, QgsProcessingParameterAuthConfig, QgsProcessingParameterEnum,
                       QgsProcessingParameterExtent, QgsProcessingParameterFeatureSource, QgsProcessingParameterField,
                       QgsProcessingParameterFile,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterString)

Number = QgsProcessingParameterNumber


def _params(m: QgsProcessingModelAlgorithm, *definitions) -> None:
    """Add model inputs (each under its own name)."""
    for d in definitions:
        m.addModelParameter(d, QgsProcessingModelParameter(d.name()))


def _field(name: str, label: str, parent: str, default: str, multiple: bool = False) -> QgsProcessingParameterField:
    """A model input that is a field of the model input ``parent`` (a drop-down of its fields)."""
    return QgsProcessingParameterField(name, label, defaultValue=default, parentLayerParameterName=parent,
                                       allowMultiple=multiple)


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
            _field("category_field", "POI category field", "pois", "other_tags"),
            QgsProcessingParameterString("max_distances", "POI d_max in metres (R,C,I)", defaultValue="500,500,1500"),
            QgsProcessingParameterFeatureSource("buildings", "Building polygons", [QgsProcessing.TypeVectorPolygon]),
            _field("use_field", "Building use field", "buildings", "building"),
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
    _height_footprint_then_ccap(m, _model_input("s1"), _model_input("s2"), _model_input("dem"),
                                _model_input("padding"))
    return m


def _height_footprint_then_ccap(m: QgsProcessingModelAlgorithm, s1: Source, s2: Source, dem: Source,
                                padding) -> None:
    """Children ``heightfootprint`` (SHAFTS, 100 m, model inputs ``checkpoint`` and ``extent``) and ``ccap``
    on its outputs; model outputs height, footprint, the mask and the urban-only height and footprint."""
    _child(m, "edifice:heightfootprint", "heightfootprint", "Building height and footprint (SHAFTS, 100 m)",
           {"SENTINEL1": s1, "SENTINEL2": s2, "DEM": dem, "CHECKPOINT": _model_input("checkpoint"),
            "EXTENT": _model_input("extent"), "PADDING": padding, "RESOLUTION": "100", "MODE": 0, "DEVICE": "auto",
            "BATCH_SIZE": 64},
           {"height": ("Building height (m)", "OUTPUT_HEIGHT"),
            "footprint": ("Building footprint fraction", "OUTPUT_FOOTPRINT")})
    _child(m, "edifice:ccap", "ccap", "CCAP urban mask",
           {"HEIGHTS": _from("heightfootprint", "OUTPUT_HEIGHT"),
            "FOOTPRINTS": _from("heightfootprint", "OUTPUT_FOOTPRINT"),
            "H_MIN": 2.0, "CRITERION": 0, "FUSION_RATIO": 0.5},
           {"mask": ("Urban mask", "OUTPUT_MASK"), "urban_height": ("Height, urban only", "OUTPUT_HEIGHT"),
            "urban_footprint": ("Footprint, urban only", "OUTPUT_FOOTPRINT")})


def sentinel_height_footprint() -> QgsProcessingModelAlgorithm:
    """extent + year -> edifice:sentinelcomposites (Earth Engine or STAC) -> edifice:heightfootprint (SHAFTS,
    100 m) -> edifice:ccap. Model parameters: ``extent``, ``year``, ``source`` (0 Earth Engine, 1 STAC),
    ``project``, ``auth`` (service-account key in QGIS's authentication database; empty = stored Earth
    Engine credentials), ``catalogue`` (STAC: 0 earth-search, 1 planetary-computer), ``checkpoint``,
    ``service_url`` (empty = Earth Engine itself or the catalogue's API), ``token_url`` (STAC SAS token
    endpoint; empty = the catalogue's). Model outputs: the three composites and those of
    :func:`height_footprint_ccap`."""
    m = QgsProcessingModelAlgorithm("Sentinel composites, height, footprint and CCAP", "Edifice examples",
                                    "edifice_sentinel_height_footprint")
    _params(m, QgsProcessingParameterExtent("extent", "Extent"),
            Number("year", "Year", Number.Integer, 2020, minValue=2015, maxValue=2100),
            QgsProcessingParameterEnum("source", "Source", options=["earthengine", "stac"], defaultValue=0),
            QgsProcessingParameterEnum("catalogue", "STAC catalogue", options=["earth-search", "planetary-computer"],
                                       defaultValue=1),
            QgsProcessingParameterString("project", "Earth Engine project", optional=True),
            QgsProcessingParameterAuthConfig("auth", "Service-account key (authentication configuration)",
                                             optional=True),
            QgsProcessingParameterFile("checkpoint", "Checkpoint, 100 m (SHAFTS .pth/.pth.tar or Edifice)",
                                       fileFilter="PyTorch checkpoints (*.pth *.pth.tar *.pt);;All files (*)"),
            QgsProcessingParameterString("service_url", "Earth Engine URL or STAC API (empty = default)",
                                         optional=True),
            QgsProcessingParameterString("token_url", "STAC SAS token endpoint (empty = the catalogue's)",
                                         optional=True))
    _child(m, "edifice:sentinelcomposites", "composites", "Sentinel-1/2 and DEM composites",
           {"EXTENT": _model_input("extent"), "YEAR": _model_input("year"), "RESOLUTION": "100",
            "SOURCE": _model_input("source"), "CATALOGUE": _model_input("catalogue"),
            "PROJECT": _model_input("project"), "AUTH": _model_input("auth"),
            "SERVICE_URL": _model_input("service_url"), "TOKEN_URL": _model_input("token_url"), "WORKERS": 4,
            "MAX_REQUEST_MB": 32},
           {"s1": ("Sentinel-1 composite", "OUTPUT_S1"), "s2": ("Sentinel-2 composite", "OUTPUT_S2"),
            "dem": ("DEM", "OUTPUT_DEM")})
    _height_footprint_then_ccap(m, _from("composites", "OUTPUT_S1"), _from("composites", "OUTPUT_S2"),
                                _from("composites", "OUTPUT_DEM"), 0.03)
    return m


def imagery_poi_use_map() -> QgsProcessingModelAlgorithm:
    """imagery + POI points -> edifice:poiprobability (imagery grid) -> edifice:mapbuildinguse
    (checkpoint) -> building polygons. Model outputs: ``usemap:use_class`` and ``usemap:buildings``.
    WINDOW and OVERLAP not set: the model card's window and a margin of window / 8, so that any
    checkpoint the training tool makes fits (a fixed margin would not fit every window)."""
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
            "CHECKPOINT": _model_input("checkpoint"), "DEVICE": "auto", "BATCH_SIZE": 4},
           {"use_class": ("Building use class", "USE_CLASS"), "buildings": ("Building polygons with use", "POLYGONS")})
    return m


def gapfill_retinex_chain() -> QgsProcessingModelAlgorithm:
    """imagery + cloud mask -> edifice:cloudgapfill (kriging) -> edifice:retinex. Model parameters:
    ``imagery``, ``clouds`` (non-zero = gap, on the imagery grid), ``dilation`` (pixels). Model outputs:
    ``gapfill:filled`` and ``retinex:corrected`` (the gap-free image is what training and mapping take)."""
    m = QgsProcessingModelAlgorithm("Cloud gap filling and Retinex", "Edifice examples", "edifice_gapfill_retinex")
    _params(m, QgsProcessingParameterRasterLayer("imagery", "Imagery"),
            QgsProcessingParameterRasterLayer("clouds", "Cloud/shadow mask (non-zero = gap)"),
            Number("dilation", "Grow the clouds by (pixels)", Number.Integer, 0, minValue=0))
    _child(m, "edifice:cloudgapfill", "gapfill", "Cloud gap filling (kriging)",
           {"INPUT": _model_input("imagery"), "MASK": _model_input("clouds"), "DILATION": _model_input("dilation"),
            "NEIGHBOURS": 32, "SEARCH_RADIUS": 256.0, "MODEL": 0, "BEYOND_RANGE": 0},
           {"filled": ("Gap-filled imagery", "OUTPUT")})
    _child(m, "edifice:retinex", "retinex", "Retinex illumination correction",
           {"INPUT": _from("gapfill", "OUTPUT"), "SIGMAS": "15,80,250"},
           {"corrected": ("Corrected imagery", "OUTPUT")})
    return m


def buildingsense_function() -> QgsProcessingModelAlgorithm:
    """buildings + roads -> edifice:streetviewpoints; + imagery + POIs (+ street-view folder) ->
    edifice:buildingsamples -> edifice:classifybuildingfunction (OpenAI-compatible endpoint, data
    combination RST, buildingsense_template categories) -> edifice:evaluateclassification against the
    buildings' reference field (building level, every taxonomy level) with the HTML report. Model outputs:
    ``points:points``, ``samples:samples``, ``classify:functions``, ``evaluate:report``."""
    m = QgsProcessingModelAlgorithm("Building function by a multimodal model, evaluated", "Edifice examples",
                                    "edifice_buildingsense_function")
    _imagery_and_pois(m)
    _params(m, QgsProcessingParameterFeatureSource("buildings", "Building polygons", [QgsProcessing.TypeVectorPolygon]),
            QgsProcessingParameterFeatureSource("roads", "Road lines", [QgsProcessing.TypeVectorLine]),
            _field("id_field", "Building id field", "buildings", "id"),
            _field("height_field", "Building height field (m)", "buildings", "height"),
            _field("attributes", "Building fields for the text", "buildings", "height", multiple=True),
            QgsProcessingParameterFile("street_view_folder", "Street-view images folder",
                                       behavior=QgsProcessingParameterFile.Folder, optional=True),
            _field("reference_field", "Reference function field", "buildings", "function"),
            QgsProcessingParameterString("url", "Endpoint base URL", defaultValue="http://127.0.0.1:8080/v1"),
            QgsProcessingParameterString("model", "Model name"),
            QgsProcessingParameterAuthConfig("authcfg", "API key (authentication configuration)", optional=True))
    _child(m, "edifice:streetviewpoints", "points", "Street-view sampling points",
           {"BUILDINGS": _model_input("buildings"), "ROADS": _model_input("roads"),
            "ID_FIELD": _model_input("id_field"), "HEIGHT_FIELD": _model_input("height_field"),
            "MAX_DISTANCE": 100.0, "DEFAULT_HEIGHT": 10.0},
           {"points": ("Street-view points", "OUTPUT")})
    _child(m, "edifice:buildingsamples", "samples", "Building samples",
           {"BUILDINGS": _model_input("buildings"), "ID_FIELD": _model_input("id_field"),
            "IMAGERY": _model_input("imagery"), "STREET_VIEW_FOLDER": _model_input("street_view_folder"),
            "STREET_VIEW_POINTS": _from("points", "OUTPUT"), "POIS": _model_input("pois"),
            "POI_NAME_FIELD": "name", "POI_CATEGORY_FIELD": "other_tags", "ATTRIBUTES": _model_input("attributes"),
            "BUFFER": 60.96},
           {"samples": ("Samples folder", "OUTPUT_FOLDER")})
    _child(m, "edifice:classifybuildingfunction", "classify", "Classify building function",
           {"SAMPLES": _from("samples", "OUTPUT_FOLDER"), "URL": _model_input("url"), "MODEL": _model_input("model"),
            "AUTHCFG": _model_input("authcfg"), "COMBINATION": 6, "TAXONOMY": 4, "CATEGORY_LEVEL": 0,
            "CONCURRENCY": 4},
           {"functions": ("Building function", "OUTPUT")})
    _child(m, "edifice:evaluateclassification", "evaluate", "Evaluate against the reference",
           {"LEVEL": 0, "PREDICTION": _from("classify", "OUTPUT"), "PREDICTION_FIELD": "function",
            "REFERENCE": _model_input("buildings"), "REFERENCE_FIELD": _model_input("reference_field"),
            "REFERENCE_TAXONOMY": 5, "PREDICTION_TAXONOMY": 0, "SCORE_LEVEL": "all", "UNKNOWN_LABELS": 0,
            "MIN_OVERLAP": 0.5, "N_BOOT": 0},
           {"report": ("Evaluation report (HTML)", "OUTPUT_HTML")})
    return m


def open_data_building_use() -> QgsProcessingModelAlgorithm:
    """The whole open-data chain for an extent (same steps as ``edifice map-city``):
    edifice:imagerydownload and edifice:osmdownload -> edifice:poiprobability (imagery grid) ->
    edifice:trainingdataset (buildings OpenStreetMap labels, USE_PRESET osm_building) ->
    edifice:trainbuildinguse -> edifice:mapbuildinguse -> edifice:assignbuildinguse (every OSM footprint,
    labelled or not) -> edifice:evaluateclassification on the dataset's held-back test buildings.
    Model outputs: ``usemap:use_class``, ``assign:buildings``, ``evaluate:report`` (HTML), ``evaluate:metrics``
    (JSON)."""
    m = QgsProcessingModelAlgorithm("Building use from open data (OpenStreetMap + imagery service)",
                                    "Edifice examples", "edifice_open_data_building_use")
    _params(m, QgsProcessingParameterExtent("extent", "Extent"),
            QgsProcessingParameterString("overpass_url", "Overpass API endpoint",
                                         defaultValue="https://overpass-api.de/api/interpreter"),
            QgsProcessingParameterEnum("imagery_type", "Imagery service type",
                                       options=["XYZ / TMS tile URL template", "WMTS (GetCapabilities URL)", "WMS"],
                                       defaultValue=0),
            QgsProcessingParameterString("imagery_url", "Imagery service URL (tile template, capabilities or WMS)"),
            QgsProcessingParameterString("imagery_layer", "WMTS / WMS layer name", optional=True),
            Number("max_zoom", "XYZ: deepest zoom served", Number.Integer, 19, minValue=0, maxValue=24),
            Number("gsd", "Ground sample distance (m)", Number.Double, 0.5, minValue=0.01),
            Number("chip_size", "Chip size (pixels)", Number.Integer, 256, minValue=32),
            Number("split_tile", "Split tile size (m; 0 = 4 chips)", Number.Double, 0.0, minValue=0.0),
            Number("epochs", "Epochs", Number.Integer, 20, minValue=1),
            Number("base_width", "Encoder base width (64 = standard; 4 = tiny test model)", Number.Integer, 64,
                   minValue=1))
    _child(m, "edifice:imagerydownload", "imagery", "Imagery for the extent",
           {"SOURCE_TYPE": _model_input("imagery_type"), "URL": _model_input("imagery_url"),
            "LAYER_NAME": _model_input("imagery_layer"), "EXTENT": _model_input("extent"),
            "GSD": _model_input("gsd"), "MAX_ZOOM": _model_input("max_zoom"), "OUTPUT": "TEMPORARY_OUTPUT"})
    _child(m, "edifice:osmdownload", "osm", "OpenStreetMap POIs and buildings",
           {"EXTENT": _model_input("extent"), "ENDPOINT": _model_input("overpass_url"),
            "POIS": "TEMPORARY_OUTPUT", "BUILDINGS": "TEMPORARY_OUTPUT"})
    _child(m, "edifice:poiprobability", "poimaps", "POI probability maps on the imagery grid",
           {"INPUT": _from("osm", "POIS"), "CATEGORY_FIELD": "other_tags", "PRESET": 0,
            "REFERENCE": _from("imagery", "OUTPUT"), "MAX_DISTANCES": "500,500,1500", "OUTPUT": "TEMPORARY_OUTPUT"})
    _child(m, "edifice:trainingdataset", "dataset", "Training dataset from the buildings OSM labels",
           {"IMAGERY": _from("imagery", "OUTPUT"), "POI_RASTER": _from("poimaps", "OUTPUT"),
            "BUILDINGS": _from("osm", "BUILDINGS"), "USE_FIELD": "building", "USE_PRESET": 0,
            "CHIP_SIZE": _model_input("chip_size"), "SPLIT_TILE": _model_input("split_tile"), "SEED": 0,
            "OUTPUT_FOLDER": "TEMPORARY_OUTPUT"})
    _child(m, "edifice:trainbuildinguse", "train", "Train the building-use model",
           {"DATASET": _from("dataset", "OUTPUT_FOLDER"), "VARIANT": 2, "ENCODER": 0,
            "BASE_WIDTH": _model_input("base_width"), "EPOCHS": _model_input("epochs"),
            "PATIENCE": _model_input("epochs"), "BATCH_SIZE": 16, "LEARNING_RATE": 0.001, "DEVICE": "auto",
            "SEED": 0, "OUTPUT_CHECKPOINT": "TEMPORARY_OUTPUT"})
    _child(m, "edifice:mapbuildinguse", "usemap", "Building use over the extent",
           {"IMAGERY": _from("imagery", "OUTPUT"), "POI_MAPS": _from("poimaps", "OUTPUT"),
            "CHECKPOINT": _from("train", "OUTPUT_CHECKPOINT"), "DEVICE": "auto", "BATCH_SIZE": 4,
            "USE_PROBABILITIES": "TEMPORARY_OUTPUT"},
           {"use_class": ("Building use class", "USE_CLASS")})
    _child(m, "edifice:assignbuildinguse", "assign", "Use of every OSM footprint",
           {"INPUT": _from("osm", "BUILDINGS"), "PROBABILITIES": _from("usemap", "USE_PROBABILITIES")},
           {"buildings": ("OSM buildings with use", "OUTPUT")})
    _child(m, "edifice:evaluateclassification", "evaluate", "Evaluation on the held-back test buildings",
           {"LEVEL": 0, "PREDICTION": _from("assign", "OUTPUT"), "PREDICTION_FIELD": "use_name",
            "REFERENCE": _from("dataset", "TEST_BUILDINGS_LAYER"), "REFERENCE_FIELD": "use", "REFERENCE_TAXONOMY": 0,
            "OUTPUT_TABLE": "TEMPORARY_OUTPUT"},
           {"report": ("Evaluation report (HTML)", "OUTPUT_HTML"), "metrics": ("Evaluation (JSON)", "OUTPUT_JSON")})
    return m


def building_use_and_height() -> QgsProcessingModelAlgorithm:
    """building footprints + use probabilities (edifice:mapbuildinguse) + a height raster (SHAFTS grid,
    nDSM, lidar) -> edifice:assignbuildinguse -> edifice:assignbuildingheight: one GeoPackage with
    use and height per building. Model output: ``height:buildings``."""
    m = QgsProcessingModelAlgorithm("Use and height per building", "Edifice examples",
                                    "edifice_building_use_and_height")
    _params(m, QgsProcessingParameterFeatureSource("buildings", "Building footprints",
                                                   [QgsProcessing.TypeVectorPolygon]),
            QgsProcessingParameterRasterLayer("probabilities", "Building use probabilities (R, C, I)"),
            QgsProcessingParameterRasterLayer("height", "Height raster (m)"))
    _child(m, "edifice:assignbuildinguse", "use", "Use per building",
           {"INPUT": _model_input("buildings"), "PROBABILITIES": _model_input("probabilities"),
            "OUTPUT": "TEMPORARY_OUTPUT"})
    _child(m, "edifice:assignbuildingheight", "height", "Height per building",
           {"INPUT": _from("use", "OUTPUT"), "HEIGHT": _model_input("height"), "METHOD": 0, "MIN_PIXELS": 4,
            "BAND": 1, "HEIGHT_FIELD": "height"},
           {"buildings": ("Buildings with use and height", "OUTPUT")})
    return m


#: name -> builder of every example model; scripts/build_example_models.py writes examples/<name>.model3
EXAMPLES = {
    "retinex_poi_chain": retinex_poi_chain,
    "poi_dataset_training": poi_dataset_training,
    "height_footprint_ccap": height_footprint_ccap,
    "imagery_poi_use_map": imagery_poi_use_map,
    "gapfill_retinex_chain": gapfill_retinex_chain,
    "buildingsense_function": buildingsense_function,
    "open_data_building_use": open_data_building_use,
    "sentinel_height_footprint": sentinel_height_footprint,
    "building_use_and_height": building_use_and_height,
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
