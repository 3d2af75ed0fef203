"""Shared parts of every Edifice algorithm: errors become
QgsProcessingException, outputs get their QML style when loaded."""
from __future__ import annotations

from pathlib import Path

from qgis.core import (QgsProcessingAlgorithm, QgsProcessingException,
                       QgsProcessingLayerPostProcessorInterface, QgsRasterLayer)

from ..core.errors import EdificeError
from .feedback import FeedbackProgress

STYLE_DIR = Path(__file__).resolve().parent.parent / "qgis_plugin" / "styles"


class _StylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Applies a QML style file to a layer loaded on completion."""

    _alive: list = []  # Processing keeps only a raw pointer: keep the Python object alive

    def __init__(self, qml: Path, name: str | None):
        super().__init__()
        self.qml = qml
        self.name = name

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        if layer is None or not layer.isValid():
            return
        ok_msg, ok = layer.loadNamedStyle(str(self.qml))
        if not ok and feedback is not None:
            feedback.reportError(f"Style {self.qml.name} could not be applied: {ok_msg}", fatalError=False)
        if isinstance(layer, QgsRasterLayer):
            layer.triggerRepaint()

    @classmethod
    def create(cls, qml: Path, name: str | None = None):
        proc = cls(qml, name)
        cls._alive.append(proc)
        return proc


class EdificeAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses declare parameters and call one core function
    inside :meth:`run_core`."""

    #: short help shown in the algorithm dialog (subclasses fill it)
    HELP = ""

    def group(self):
        return self.tr(self.GROUP)

    def groupId(self):  # noqa: N802
        return self.GROUP_ID

    def shortHelpString(self):  # noqa: N802
        return self.tr(self.HELP)

    def tr(self, text):
        return text

    def createInstance(self):  # noqa: N802
        return type(self)()

    @staticmethod
    def progress(feedback) -> FeedbackProgress:
        return FeedbackProgress(feedback)

    @staticmethod
    def run_core(fn, *args, **kwargs):
        """Call a core function; Edifice errors become a QgsProcessingException
        with the user-facing message (no traceback)."""
        try:
            return fn(*args, **kwargs)
        except EdificeError as exc:
            raise QgsProcessingException(str(exc)) from exc
        except MemoryError as exc:
            raise QgsProcessingException("Out of memory; try a smaller block size or extent.") from exc
        except OSError as exc:
            raise QgsProcessingException(f"File system error: {exc}") from exc

    @staticmethod
    def style_output(context, output_path: str, qml_name: str, layer_name: str | None = None) -> None:
        """Style the output with ``qgis_plugin/styles/<qml_name>`` when QGIS loads it."""
        if context.willLoadLayerOnCompletion(output_path):
            details = context.layerToLoadOnCompletionDetails(output_path)
            if layer_name:
                details.name = layer_name
            details.setPostProcessor(_StylePostProcessor.create(STYLE_DIR / qml_name, layer_name))

    @staticmethod
    def raster_path(layer, name: str) -> str:
        """File path of a GDAL raster layer, or a clear error."""
        if layer is None:
            raise QgsProcessingException(f"{name}: no raster layer given. Fix: choose a raster layer or file.")
        if layer.providerType() != "gdal":
            raise QgsProcessingException(
                f"{name}: layer '{layer.name()}' is not a file-based raster ({layer.providerType()}). "
                "Fix: save it as GeoTIFF first (Export > Save As).")
        return layer.source().split("|")[0]
