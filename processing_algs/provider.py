"""The Processing provider with the fixed id ``edifice`` (a public contract:
models and scripts reference ``edifice:<algorithm>``)."""
from __future__ import annotations

from pathlib import Path

from qgis.core import QgsMessageLog, QgsProcessingProvider, Qgis
from qgis.PyQt.QtGui import QIcon

from .evaluate_classification_alg import EvaluateClassificationAlgorithm
from .evaluate_regression_alg import EvaluateRegressionAlgorithm
from .imagery_download_alg import ImageryDownloadAlgorithm
from .height_footprint_algs import (CcapAlgorithm, HeightFootprintAlgorithm, ReferenceGridsAlgorithm,
                                    TrainHeightFootprintAlgorithm)
from .assign_building_height_alg import AssignBuildingHeightAlgorithm
from .assign_building_use_alg import AssignBuildingUseAlgorithm
from .builtup_mask_alg import BuiltupMaskAlgorithm
from .cloud_gap_fill_alg import CloudGapFillAlgorithm
from .buildingsense_algs import (BuildingSamplesAlgorithm, ClassifyBuildingFunctionAlgorithm,
                                 StreetViewPointsAlgorithm)
from .map_building_use_alg import MapBuildingUseAlgorithm
from .osm_download_alg import OsmDownloadAlgorithm
from .poi_probability_alg import PoiProbabilityAlgorithm
from .retinex_alg import RetinexAlgorithm
from .sentinel_composites_alg import SentinelCompositesAlgorithm
from .train_building_use_alg import TrainBuildingUseAlgorithm
from .training_dataset_alg import TrainingDatasetAlgorithm
from .dependencies_alg import DiagnosticsAlgorithm, InstallDependenciesAlgorithm

#: (algorithm class, python modules it needs at run time)
ALGORITHMS = [
    (RetinexAlgorithm, ("numpy", "scipy", "rasterio")),
    (CloudGapFillAlgorithm, ("numpy", "scipy", "rasterio")),
    (PoiProbabilityAlgorithm, ("numpy", "scipy", "rasterio", "pyproj")),
    (EvaluateClassificationAlgorithm, ("numpy", "rasterio", "shapely", "pyogrio", "pyproj")),
    (EvaluateRegressionAlgorithm, ("numpy", "scipy", "rasterio", "shapely", "pyogrio", "pyproj")),
    (TrainingDatasetAlgorithm, ("numpy", "scipy", "rasterio", "pyproj", "shapely", "pyogrio")),
    (TrainBuildingUseAlgorithm, ("numpy", "torch")),
    (HeightFootprintAlgorithm, ("numpy", "scipy", "rasterio", "torch")),
    (CcapAlgorithm, ("numpy", "scipy", "rasterio")),
    (ReferenceGridsAlgorithm, ("numpy", "rasterio", "shapely", "pyogrio", "pyproj")),
    (TrainHeightFootprintAlgorithm, ("numpy", "scipy", "rasterio", "pyproj", "torch")),
    (BuiltupMaskAlgorithm, ("numpy", "rasterio", "shapely", "pyproj", "pyogrio")),
    (MapBuildingUseAlgorithm, ("torch", "numpy", "scipy", "rasterio", "shapely", "pyproj", "pyogrio")),
    (AssignBuildingUseAlgorithm, ("numpy", "rasterio", "shapely", "pyproj", "pyogrio")),
    (StreetViewPointsAlgorithm, ("numpy", "rasterio", "shapely", "pyproj", "pyogrio")),
    (BuildingSamplesAlgorithm, ("numpy", "rasterio", "shapely", "pyproj", "pyogrio")),
    (ClassifyBuildingFunctionAlgorithm, ("numpy", "shapely", "pyproj", "pyogrio", "requests")),
    (OsmDownloadAlgorithm, ("numpy", "requests", "shapely", "pyproj", "pyogrio")),
    (ImageryDownloadAlgorithm, ("numpy", "rasterio", "pyproj", "requests")),
    (SentinelCompositesAlgorithm, ("numpy", "rasterio")),  # ee / pystac_client: checked when a source is used
    (AssignBuildingHeightAlgorithm, ("numpy", "rasterio", "shapely", "pyproj", "pyogrio")),
    (InstallDependenciesAlgorithm, ()),
    (DiagnosticsAlgorithm, ()),
]


class EdificeProvider(QgsProcessingProvider):
    def id(self):
        return "edifice"

    def name(self):
        return "Edifice"

    def longName(self):  # noqa: N802
        return "Edifice — building use, height and footprint"

    def icon(self):
        return QIcon(str(Path(__file__).resolve().parent.parent / "icon.svg"))

    def loadAlgorithms(self):  # noqa: N802
        from .native_libs import isolate_native_libs

        for error in isolate_native_libs():  # on the main thread, before core imports them (see native_libs)
            QgsMessageLog.logMessage(f"Edifice: {error}", "Edifice", Qgis.Warning)
        for cls, needs in ALGORITHMS:  # every tool is listed; one that misses packages says so when run
            cls.REQUIRES = tuple(needs)
            alg = cls()
            problem = alg.missing_dependencies_message()
            if problem:
                QgsMessageLog.logMessage(f"Edifice: {problem}", "Edifice", Qgis.Warning)
            self.addAlgorithm(alg)
