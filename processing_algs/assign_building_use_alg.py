"""edifice:assignbuildinguse — use of existing footprints from probability rasters
(adapter over core.use.building_use_map.assign_building_use)."""
from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingParameterFeatureSource,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterVectorDestination)

from .base import EdificeAlgorithm


class AssignBuildingUseAlgorithm(EdificeAlgorithm):
    INPUT, PROBABILITIES, OUTPUT = "INPUT", "PROBABILITIES", "OUTPUT"
    GROUP, GROUP_ID = "Building use", "buildinguse"
    HELP = ("Gives existing building footprints a use from the per-class probability raster of Map building "
            "use: each polygon gets the mean probability of residential, commercial and industrial over the "
            "pixels whose centres it holds (the pixel under it when it holds none), use_class/use_name "
            "(argmax), confidence (the winning mean) and pixels. The layer's own fields are kept.")

    def name(self):
        return "assignbuildinguse"

    def displayName(self):  # noqa: N802
        return "Assign building use to footprints"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFeatureSource(self.INPUT, "Building footprints",
                                                              [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterRasterLayer(self.PROBABILITIES, "Building use probabilities (R, C, I)"))
        self.addParameter(QgsProcessingParameterVectorDestination(self.OUTPUT, "Buildings with use",
                                                                  QgsProcessing.TypeVectorPolygon))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.use.building_use_map import assign_building_use

        path, layer = self.vector_source(parameters, self.INPUT, context, feedback)
        probs = self.raster_path(self.parameterAsRasterLayer(parameters, self.PROBABILITIES, context),
                                 self.PROBABILITIES)
        out = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        if not out.lower().endswith(".gpkg"):
            raise QgsProcessingException("OUTPUT: written as GeoPackage. Fix: give a .gpkg file name.")
        summary = self.run_core(assign_building_use, path, probs, out, layer=layer,
                                progress=self.progress(feedback))
        feedback.pushInfo(f"{summary['buildings']} buildings: {summary['residential']} residential, "
                          f"{summary['commercial']} commercial, {summary['industrial']} industrial, "
                          f"{summary['without_probabilities']} without probabilities.")
        self.style_output(context, out, "building_use_polygons.qml")
        return {self.OUTPUT: out}
