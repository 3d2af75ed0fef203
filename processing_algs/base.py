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
            feedback.pushWarning(f"Style {self.qml.name} could not be applied: {ok_msg}")
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
    #: Python modules the algorithm needs at run time (the provider sets it from its ALGORITHMS table)
    REQUIRES: tuple = ()

    def group(self):
        return self.tr(self.GROUP)

    def addParameter(self, definition, createOutput=True):  # noqa: N802, N803 - QGIS's names
        """Every ``DEVICE`` text parameter gets a drop-down of devices in the dialog (the value stays
        text, so ``DEVICE=cuda:3`` keeps working in qgis_process and models)."""
        if definition.name() == "DEVICE" and definition.type() == "string":
            meta = dict(definition.metadata())
            meta["widget_wrapper"] = dict(meta.get("widget_wrapper") or {}, value_hints=list(DEVICE_CHOICES))
            definition.setMetadata(meta)
        return super().addParameter(definition, createOutput)

    def groupId(self):  # noqa: N802
        return self.GROUP_ID

    def shortHelpString(self):  # noqa: N802
        problem = self.missing_dependencies_message()
        text = self.help_with_labels(self.HELP)
        return self.tr(f"<b>Cannot run yet.</b> {problem}<br><br>{text}" if problem else text)

    def help_with_labels(self, text: str) -> str:
        """``text`` with each parameter id (``POI_MAPS``) replaced by the label the dialog shows
        (*POI probability maps*), so that the help speaks the dialog's language."""
        import re

        labels = {}
        for p in self.parameterDefinitions():
            label = re.split(r" \(|: ", p.description(), maxsplit=1)[0].strip()
            if label:
                labels[p.name()] = label
        if not labels:
            return text
        pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, labels), key=len, reverse=True)) + r")\b")
        return pattern.sub(lambda m: f"<i>{labels[m.group(1)]}</i>", text)

    def missing_dependencies_message(self) -> str | None:
        """What is missing to run this tool and how to install it; None when nothing is missing."""
        from ..qgis_plugin.dependencies import missing_message, missing_modules, plugin_target, qgis_python

        missing = missing_modules(self.REQUIRES)
        if not missing:
            return None
        try:
            python = qgis_python()
        except EdificeError:
            python = None
        return missing_message(self.displayName(), missing, python, str(plugin_target()))

    def canExecute(self):  # noqa: N802 - the Toolbox shows the message instead of the dialog
        problem = self.missing_dependencies_message()
        return problem is None, problem or ""

    def checkParameterValues(self, parameters, context):  # noqa: N802 - processing.run and qgis_process
        problem = self.missing_dependencies_message()
        if problem:
            return False, problem
        return super().checkParameterValues(parameters, context)

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

    def vector_source(self, parameters, name: str, context, feedback) -> tuple[str | None, str | None]:
        """(path, layer name or None) of the vector input ``name``, readable by pyogrio; QGIS
        exports selections, filtered and non-file (e.g. memory) layers to a temporary
        GeoPackage. (None, None) when the parameter is not set."""
        if parameters.get(name) in (None, ""):
            return None, None
        path, layer = self.parameterAsCompatibleSourceLayerPathAndLayerName(parameters, name, context,
                                                                           VECTOR_FORMATS, "gpkg", feedback)
        if not path:
            raise QgsProcessingException(f"{name}: the layer could not be opened. Fix: choose a vector layer or file.")
        return _file_and_layer(path, layer)

    def point_source(self, parameters, name: str, field_param: str, context):
        """(QgsProcessingFeatureSource, category field name) of a POI point layer, checked:
        it opens, holds points, has a CRS, and has the field named by ``field_param``."""
        from qgis.core import QgsWkbTypes

        source = self.parameterAsSource(parameters, name, context)
        if source is None:
            raise QgsProcessingException(f"{name}: the POI layer could not be opened. Fix: choose a point layer.")
        if QgsWkbTypes.geometryType(source.wkbType()) != QgsWkbTypes.PointGeometry:
            raise QgsProcessingException(f"{name}: the layer does not hold points. Fix: use a point layer "
                                         "(e.g. the 'points' layer of an .osm.pbf) or take centroids.")
        if not source.sourceCrs().isValid():
            raise QgsProcessingException(f"{name}: the POI layer has no CRS. Fix: set the layer's CRS.")
        field = self.parameterAsString(parameters, field_param, context).strip()
        names = source.fields().names()
        if field not in names:
            raise QgsProcessingException(f"{field_param}: field '{field}' is not in the POI layer. "
                                         f"Fix: use one of {', '.join(names)}.")
        return source, field

    @staticmethod
    def vector_layer_file(layer, context, feedback, tag: str) -> tuple[str, str | None]:
        """(path, layer name or None) of a vector layer object (e.g. one of a multiple-layers
        parameter), written to a temporary GeoPackage named after ``tag`` when it is not a plain file."""
        from qgis.core import QgsProcessingUtils

        path, name = QgsProcessingUtils.convertToCompatibleFormatAndLayerName(
            layer, False, tag, VECTOR_FORMATS, "gpkg", context, feedback)
        return _file_and_layer(path, name)

    @staticmethod
    def secret_from_authcfg(authcfg_id: str | None, parameter_name: str) -> str | None:
        """The secret of a QGIS authentication configuration (None when ``authcfg_id`` is empty):
        the password of a Basic config, or the single value of an API-header / key config.
        The secret is never put in a message; give it to core as one of the client's ``secrets``."""
        if not authcfg_id:
            return None
        from qgis.core import QgsApplication, QgsAuthMethodConfig

        manager = QgsApplication.authManager()
        config = QgsAuthMethodConfig()
        if not manager.loadAuthenticationConfig(authcfg_id, config, True) or not config.isValid(True):
            raise QgsProcessingException(
                f"{parameter_name}: authentication configuration '{authcfg_id}' was not found or could not be "
                "decrypted. Fix: choose a configuration from Settings > Options > Authentication "
                "(and enter the master password when QGIS asks).")
        values = dict(config.configMap())
        for key in ("password", "token", "apikey", "api_key", "key", "value"):
            if values.get(key):
                return values[key]
        filled = [v for k, v in values.items() if v and k not in ("username", "realm")]
        if len(filled) == 1:
            return filled[0]
        raise QgsProcessingException(
            f"{parameter_name}: authentication configuration '{authcfg_id}' ({config.method()}) holds no key. "
            "Fix: use a Basic configuration with the key as its password, or an API-header configuration "
            "with one header.")

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


#: Devices offered in the dialogs' DEVICE drop-down (core/devices.py resolves them; auto = CUDA when available)
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:0", "cuda:1", "cuda:2", "cuda:3", "mps")

#: Vector formats the core reads as they are (others are exported to a GeoPackage first).
VECTOR_FORMATS = ["gpkg", "shp", "geojson", "json", "fgb", "pbf", "csv", "gml", "kml", "sqlite", "tab", "xlsx", "ods"]


def _file_and_layer(path: str, layer: str | None) -> tuple[str, str | None]:
    """Split QGIS's ``file|layername=x|...`` source into (file, layer name); a layer name
    the file does not hold (e.g. a GeoJSON's name is its file stem) means its only layer."""
    path, _, rest = path.partition("|")
    if not layer and "layername=" in rest:
        layer = rest.split("layername=", 1)[1].split("|")[0]
    if layer:
        import pyogrio

        try:
            layers = [str(x[0]) for x in pyogrio.list_layers(path)]
        except Exception:  # noqa: BLE001 - unreadable: the core reports it with the parameter name
            layers = [layer]
        if layer not in layers:
            layer = None
    return path, layer or None
