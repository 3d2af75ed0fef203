"""edifice:builtupmask — union of built-up reference layers on the imagery grid
(adapter over core.use.builtup_mask.builtup_mask)."""
from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingParameterMultipleLayers,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterString)

from .base import EdificeAlgorithm


class BuiltupMaskAlgorithm(EdificeAlgorithm):
    REFERENCE, RASTERS, VALUES, POLYGONS, OUTPUT = "REFERENCE", "RASTERS", "VALUES", "POLYGONS", "OUTPUT"
    GROUP, GROUP_ID = "Building use", "buildinguse"
    HELP = ("Built-up mask (1 built-up, 0 not) on the grid of the REFERENCE raster (the imagery): the union "
            "of class RASTERS (e.g. WSF 2019, CLCD, ESA WorldCover; resampled nearest-neighbour) whose VALUES "
            "mean built-up, and POLYGONS (every polygon is built-up; burnt with all touched pixels). VALUES: "
            "one list for all rasters ('1', '80,190', '10-20') or one list per raster separated by ';' "
            "in the order of RASTERS. Use it as MASK of Map building use to skip uninhabited areas.")

    def name(self):
        return "builtupmask"

    def displayName(self):  # noqa: N802
        return "Built-up mask"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.REFERENCE, "Reference raster (imagery grid)"))
        self.addParameter(QgsProcessingParameterMultipleLayers(self.RASTERS, "Class rasters",
                                                               QgsProcessing.TypeRaster, optional=True))
        self.addParameter(QgsProcessingParameterString(self.VALUES, "Built-up class values (e.g. 1 or 80,190; "
                                                       "';' between rasters)", defaultValue="1", optional=True))
        self.addParameter(QgsProcessingParameterMultipleLayers(self.POLYGONS, "Built-up polygons",
                                                               QgsProcessing.TypeVectorPolygon, optional=True))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Built-up mask"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.use.builtup_mask import builtup_mask

        ref = self.raster_path(self.parameterAsRasterLayer(parameters, self.REFERENCE, context), self.REFERENCE)
        rasters = [self.raster_path(lyr, self.RASTERS)
                   for lyr in self.parameterAsLayerList(parameters, self.RASTERS, context)]
        values = (self.parameterAsString(parameters, self.VALUES, context) or "").split(";")
        if len(values) not in (1, len(rasters)) and rasters:
            raise QgsProcessingException(f"VALUES: {len(values)} lists for {len(rasters)} rasters. Fix: give one "
                                         "list for all, or one per raster separated by ';'.")
        pairs = [(r, values[i] if len(values) > 1 else values[0]) for i, r in enumerate(rasters)]
        polys = []
        for k, lyr in enumerate(self.parameterAsLayerList(parameters, self.POLYGONS, context)):
            # a file path and layer name; memory or other non-file layers (e.g. in a graphical
            # model) are first written to a temporary GeoPackage
            polys.append(self.vector_layer_file(lyr, context, feedback, f"builtup_polygons_{k}"))
        out = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        summary = self.run_core(builtup_mask, ref, out, rasters=pairs, polygons=polys, progress=self.progress(feedback))
        feedback.pushInfo(f"Built-up: {100 * summary['builtup_fraction']:.1f} % of the grid.")
        self.style_output(context, out, "builtup_mask.qml")
        return {self.OUTPUT: out}
