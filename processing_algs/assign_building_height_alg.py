"""edifice:assignbuildingheight — height of existing footprints from a height raster
(adapter over core.height.building_height.assign_building_height)."""
from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingParameterDefinition,
                       QgsProcessingParameterEnum, QgsProcessingParameterFeatureSource,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterString, QgsProcessingParameterVectorDestination)

from .base import EdificeAlgorithm

METHODS = [("auto: median where the building holds MIN_PIXELS pixels, else area-weighted", "auto"),
           ("median of the pixels inside (nDSM, lidar)", "median"),
           ("area-weighted mean of the cells overlapped (SHAFTS 100 m grid)", "area_weighted")]


class AssignBuildingHeightAlgorithm(EdificeAlgorithm):
    INPUT, HEIGHT, METHOD, MIN_PIXELS, BAND, HEIGHT_FIELD, OUTPUT = (
        "INPUT", "HEIGHT", "METHOD", "MIN_PIXELS", "BAND", "HEIGHT_FIELD", "OUTPUT")
    GROUP, GROUP_ID = "Height and footprint", "heightfootprint"
    HELP = ("Gives existing building footprints a height from a height raster: a SHAFTS 100 m grid "
            "(edifice:heightfootprint), an nDSM or a lidar height-above-ground raster. Fine rasters: the median "
            "of the valid pixels whose centres the footprint holds (robust to ground pixels at the edge, trees "
            "and noise). Coarse grids (cells larger than the building): the mean of the cells the footprint "
            "overlaps, weighted by the footprint's area in each. METHOD auto picks the median where the "
            "building holds at least MIN_PIXELS pixel centres. Adds HEIGHT_FIELD (the raster's unit, NULL "
            "without a valid pixel), height_source (raster:method) and height_pixels; the layer's own fields "
            "(e.g. the use from Assign building use) are kept.")

    def name(self):
        return "assignbuildingheight"

    def displayName(self):  # noqa: N802
        return "Assign building height to footprints"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFeatureSource(self.INPUT, "Building footprints",
                                                              [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterRasterLayer(self.HEIGHT, "Height raster (m)"))
        self.addParameter(QgsProcessingParameterEnum(self.METHOD, "Height per building", options=[m[0] for m in METHODS],
                                                     defaultValue=0))
        advanced = [QgsProcessingParameterNumber(self.MIN_PIXELS, "Auto: fewest pixel centres for the median",
                                                 QgsProcessingParameterNumber.Integer, defaultValue=4, minValue=1),
                    QgsProcessingParameterNumber(self.BAND, "Band of the height raster",
                                                 QgsProcessingParameterNumber.Integer, defaultValue=1, minValue=1),
                    QgsProcessingParameterString(self.HEIGHT_FIELD, "Name of the height field", defaultValue="height")]
        for p in advanced:
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterVectorDestination(self.OUTPUT, "Buildings with height",
                                                                  QgsProcessing.TypeVectorPolygon))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.height.building_height import assign_building_height

        path, layer = self.vector_source(parameters, self.INPUT, context, feedback)
        height = self.raster_path(self.parameterAsRasterLayer(parameters, self.HEIGHT, context), self.HEIGHT)
        out = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        if not out.lower().endswith(".gpkg"):
            raise QgsProcessingException("OUTPUT: written as GeoPackage. Fix: give a .gpkg file name.")
        summary = self.run_core(
            assign_building_height, path, height, out, layer=layer,
            method=METHODS[self.parameterAsEnum(parameters, self.METHOD, context)][1],
            min_pixels=self.parameterAsInt(parameters, self.MIN_PIXELS, context),
            band=self.parameterAsInt(parameters, self.BAND, context),
            height_field=self.parameterAsString(parameters, self.HEIGHT_FIELD, context) or "height",
            progress=self.progress(feedback))
        feedback.pushInfo(f"{summary['buildings']} buildings: {summary['with_height']} with a height "
                          f"({summary['median']} median, {summary['area_weighted']} area-weighted), "
                          f"{summary['without_height']} without a valid pixel.")
        self.style_output(context, out, "building_height.qml")
        return {self.OUTPUT: out}
