"""Example graphical-modeler models shipped with the plugin (built in code so
they always match the algorithms' current parameters)."""
from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingModelAlgorithm, QgsProcessingModelChildAlgorithm,
                       QgsProcessingModelChildParameterSource as Source, QgsProcessingModelOutput,
                       QgsProcessingModelParameter, QgsProcessingParameterFeatureSource,
                       QgsProcessingParameterRasterLayer)


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


def imagery_poi_use_map() -> QgsProcessingModelAlgorithm:
    """imagery + POI points -> edifice:poiprobability (imagery grid) -> edifice:mapbuildinguse
    (checkpoint) -> building polygons. Model outputs: ``usemap:use_class`` and ``usemap:buildings``."""
    from qgis.core import QgsProcessingParameterFile

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
    "imagery_poi_use_map": imagery_poi_use_map,
}
