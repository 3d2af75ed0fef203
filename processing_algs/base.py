"""Shared parts of every Edifice algorithm: errors become
QgsProcessingException, outputs get their QML style when loaded."""
from __future__ import annotations

from pathlib import Path

from qgis.core import (QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingParameterField, QgsProject,
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

    def tr(self, text):
        return text

    def createInstance(self):  # noqa: N802
        return type(self)()

    #: {parameter: (old value, what it meant)}: optional numbers whose "not set" means automatic, and the
    #: value that said so before (still accepted from saved models and scripts, with a warning)
    LEGACY_AUTOMATIC: dict = {}

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """Missing packages first (processing.run and qgis_process refuse with the fix), QGIS's checks,
        then the output contract's first rule before any work: no output may be an input (same file,
        also through links) and no two outputs may share a file."""
        parameters = self._as_checked(parameters)
        problem = (self.missing_dependencies_message() or self._number_out_of_range(parameters, context)
                   or self._unreadable_file(parameters, context))
        if problem:
            return False, problem
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        from ..core.outputs import refuse_input_as_output

        try:
            refuse_input_as_output(self._destination_paths(parameters, context),
                                   self._input_paths(parameters, context))
        except EdificeError as exc:
            return False, str(exc)
        return True, ""

    def _as_checked(self, parameters) -> dict:
        """``parameters`` as QGIS's checks must see them: each :attr:`LEGACY_AUTOMATIC` old value
        replaced by "not set"."""
        out = dict(parameters)
        for name, (old, _) in self.LEGACY_AUTOMATIC.items():
            if _is_number(out.get(name), old):
                out[name] = None
        return out

    def automatic_int(self, parameters, name: str, context, feedback) -> int | None:
        """An optional whole-number parameter whose "not set" means automatic: None when not set (or
        given the old value that meant automatic, with a warning naming the fix), else its value."""
        value = parameters.get(name)
        old, meaning = self.LEGACY_AUTOMATIC.get(name, (None, ""))
        if value is None or value == "" or (old is not None and _is_number(value, old)):
            if value not in (None, ""):
                feedback.pushWarning(f"{name}={old} is the old way to ask for {meaning}; it still works. "
                                     f"Fix: leave {name} not set (in qgis_process, leave it out).")
            return None
        return self.parameterAsInt(parameters, name, context)

    def _number_out_of_range(self, parameters, context) -> str:
        """A message naming the numeric parameter, its value and its accepted range (QGIS's own says
        only "Incorrect parameter value"); empty when every number is acceptable."""
        from qgis.core import QgsProcessingParameterNumber

        for definition in self.parameterDefinitions():
            value = parameters.get(definition.name())
            if definition.type() != "number" or value in (None, "") or \
                    definition.checkValueIsAcceptable(value, context):
                continue
            whole = definition.dataType() == QgsProcessingParameterNumber.Integer
            lo, hi = definition.minimum(), definition.maximum()
            bounds = [f"at least {lo:g}" if abs(lo) < 1e300 else "", f"at most {hi:g}" if abs(hi) < 1e300 else ""]
            wanted = " and ".join(b for b in bounds if b)
            return (f"{definition.name()} ({definition.description()}): {value!r} is not accepted. Fix: give "
                    f"{'a whole number' if whole else 'a number'}{' ' + wanted if wanted else ''}.")
        return ""

    def _unreadable_file(self, parameters, context) -> str:
        """A message for a layer parameter given as a file path that is missing, or present but not
        readable (empty, truncated, corrupt) — QGIS reports both as 'not found'; empty when all open."""
        import os

        for definition in self.parameterDefinitions():
            value = parameters.get(definition.name())
            kind = definition.type()
            if kind not in ("raster", "vector", "source") or not isinstance(value, str) or not value:
                continue
            path = value.split("|")[0]
            if "://" in path or path.startswith(("/vsi", "memory:", "postgres", "dbname=")) or \
                    QgsProject.instance().mapLayer(value) is not None or not os.path.splitext(path)[1]:
                continue  # a layer id, a URI or a layer name: QGIS resolves those itself
            if not os.path.exists(path):
                return f"{definition.name()}: file '{path}' does not exist. Fix: check the path."
            layer = self.parameterAsLayer(parameters, definition.name(), context)
            if layer is None or not layer.isValid():
                what = "raster" if kind == "raster" else "vector layer"
                size = os.path.getsize(path) if os.path.isfile(path) else -1
                why = "it is empty (0 bytes)" if size == 0 else "it may be truncated or corrupt"
                return (f"{definition.name()}: '{path}' is not a readable {what}: {why}. Fix: re-export or "
                        "re-download the file.")
        return ""

    def _destination_paths(self, parameters, context) -> dict[str, str]:
        paths = {}
        for definition in self.destinationParameterDefinitions():
            if parameters.get(definition.name()) in (None, ""):
                continue
            value = self.parameterAsOutputLayer(parameters, definition.name(), context) \
                or self.parameterAsFileOutput(parameters, definition.name(), context)
            if value and not value.startswith(("memory:", "ogr:", "postgres:")):
                paths[definition.name()] = value.split("|")[0]
        return paths

    def _input_paths(self, parameters, context) -> dict[str, list[str]]:
        from qgis.core import QgsProcessingParameterFile, QgsProcessingParameterMultipleLayers

        paths = {}
        for definition in self.parameterDefinitions():
            name = definition.name()
            if definition.isDestination() or parameters.get(name) in (None, ""):
                continue
            if isinstance(definition, QgsProcessingParameterMultipleLayers):
                layers = self.parameterAsLayerList(parameters, name, context) or []
                paths[name] = [lyr.source().split("|")[0] for lyr in layers]
            elif isinstance(definition, QgsProcessingParameterFile):
                paths[name] = [self.parameterAsFile(parameters, name, context)]
            elif definition.type() in ("raster", "vector", "source", "layer", "mesh", "pointcloud"):
                layer = self.parameterAsLayer(parameters, name, context)
                if layer is not None:
                    paths[name] = [layer.source().split("|")[0]]
        return paths

    @staticmethod
    def progress(feedback) -> FeedbackProgress:
        return FeedbackProgress(feedback)

    CLUSTER = "CLUSTER"

    def cluster_parameter(self):
        """The advanced ``CLUSTER`` parameter: a Dask scheduler address (tcp://HOST:PORT) or
        local:N; empty runs on this machine (see core.cluster)."""
        from qgis.core import QgsProcessingParameterDefinition, QgsProcessingParameterString

        p = QgsProcessingParameterString(self.CLUSTER, "Dask cluster: scheduler address tcp://HOST:PORT or local:N "
                                         "(empty = this machine)", defaultValue="", optional=True)
        p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        return p

    def cluster_address(self, parameters, context) -> str:
        """The CLUSTER parameter's value, stripped ('' = this machine)."""
        return (self.parameterAsString(parameters, self.CLUSTER, context) or "").strip()

    @staticmethod
    def run_core(fn, *args, **kwargs):
        """Call a core function; Edifice errors become a QgsProcessingException
        with the user-facing message (no traceback)."""
        from ..core.outputs import Terminated, terminate_cleanly

        try:
            with terminate_cleanly():
                return fn(*args, **kwargs)
        except Terminated as exc:
            raise QgsProcessingException("Terminated (SIGTERM); no output was written.") from exc
        except EdificeError as exc:
            raise QgsProcessingException(str(exc)) from exc
        except MemoryError as exc:
            raise QgsProcessingException("Out of memory; try a smaller block size or extent.") from exc
        except OSError as exc:
            from ..core.outputs import is_disk_full

            if is_disk_full(exc):
                raise QgsProcessingException(f"The disk is full writing '{exc.filename or ''}'; nothing was kept. "
                                             "Fix: free space or choose another folder.") from exc
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
    def style_output_like(context, output_path: str, layer) -> None:
        """Style the output with ``layer``'s current style (an output with the same bands and
        radiometry as its input, e.g. a gap-filled image, renders like it) when QGIS loads it."""
        from qgis.core import QgsProcessingUtils

        if context.willLoadLayerOnCompletion(output_path) and layer is not None:
            qml = QgsProcessingUtils.generateTempFilename("input_style.qml")
            layer.saveNamedStyle(qml)
            details = context.layerToLoadOnCompletionDetails(output_path)
            details.setPostProcessor(_StylePostProcessor.create(Path(qml)))

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
        it opens, holds points, has a CRS, and has the field named by ``field_param``. A CSV
        without geometry gives its points from coordinate columns (see :meth:`table_points`)."""
        from qgis.core import QgsWkbTypes

        source = self.parameterAsSource(parameters, name, context)
        if source is None:
            raise QgsProcessingException(f"{name}: the POI layer could not be opened. Fix: choose a point layer.")
        if QgsWkbTypes.geometryType(source.wkbType()) == QgsWkbTypes.NullGeometry:
            source = self.table_points(parameters, name, source, context)
        if QgsWkbTypes.geometryType(source.wkbType()) != QgsWkbTypes.PointGeometry:
            raise QgsProcessingException(f"{name}: the layer does not hold points. Fix: use a point layer "
                                         "(e.g. the 'points' layer of an .osm.pbf) or take centroids.")
        if not source.sourceCrs().isValid():
            raise QgsProcessingException(f"{name}: the POI layer has no CRS. Fix: set the layer's CRS.")
        field = self.field_name(parameters, field_param, context)
        names = source.fields().names()
        if field not in names:
            raise QgsProcessingException(f"{field_param}: field '{field}' is not in the POI layer. "
                                         f"Fix: use one of {', '.join(names)}.")
        return source, field

    #: optional CRS parameter of the coordinate columns of a POI table (algorithms that declare it)
    POINTS_CRS = "POINTS_CRS"

    def table_points(self, parameters, name: str, table, context):
        """A point layer made from a CSV's coordinate columns (x/y, easting/northing, lon/lat,
        longitude/latitude; core.use.poi_sources.coordinate_columns) in the POINTS_CRS parameter's CRS,
        or EPSG:4326 for longitude/latitude columns."""
        from qgis.core import QgsProcessingFeatureSource, QgsVectorLayer
        from qgis.PyQt.QtCore import QUrl

        from ..core.use.poi_sources import coordinate_columns

        cols = coordinate_columns(table.fields().names())
        layer = self.parameterAsVectorLayer(parameters, name, context)
        path = layer.source().split("|")[0] if layer is not None else ""
        if cols is None or not path.lower().endswith((".csv", ".txt")):
            raise QgsProcessingException(f"{name}: the table has no geometries and no coordinate columns (x/y, "
                                         "lon/lat, longitude/latitude). Fix: give a point layer, or a CSV with "
                                         "such columns.")
        x, y, lonlat = cols
        crs = None
        if self.parameterDefinition(self.POINTS_CRS) is not None and parameters.get(self.POINTS_CRS) not in (None, ""):
            crs = self.parameterAsCrs(parameters, self.POINTS_CRS, context)
        if crs is None or not crs.isValid():
            if not lonlat:
                raise QgsProcessingException(f"{name}: the coordinates ({x}, {y}) come without a CRS. Fix: give "
                                             "POINTS_CRS, use longitude/latitude columns (EPSG:4326), or load the "
                                             "CSV as a delimited-text point layer with its CRS.")
            crs_id = "EPSG:4326"
        else:
            crs_id = crs.authid() or crs.toWkt()
        uri = (f"{QUrl.fromLocalFile(path).toString()}?type=csv&detectTypes=yes&geomType=point"
               f"&xField={x}&yField={y}&crs={crs_id}")
        points = QgsVectorLayer(uri, f"{Path(path).stem} (points)", "delimitedtext")
        if not points.isValid():
            raise QgsProcessingException(f"{name}: '{path}' could not be read as points from ({x}, {y}).")
        context.temporaryLayerStore().addMapLayer(points)
        return QgsProcessingFeatureSource(points, context)

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

    def field_name(self, parameters, name: str, context) -> str:
        """The field chosen in the field parameter ``name``: its default when left out, "" when given
        empty (QGIS would put the default in its place: "no field" is a choice, e.g. footprint-only labels)."""
        if name in parameters and parameters[name] in (None, "", []):
            return ""
        fields = self.parameterAsFields(parameters, name, context)
        return (fields[0] if fields else "").strip()

    def field_names(self, parameters, name: str, context) -> list[str]:
        """The fields of the multiple-field parameter ``name``; a comma-separated string (as older
        scripts and models give it) is split too."""
        return [f.strip() for v in self.parameterAsFields(parameters, name, context) for f in v.split(",") if f.strip()]

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


def _is_number(value, number) -> bool:
    """True when ``value`` (a number or a text such as qgis_process gives) equals ``number``."""
    try:
        return value not in (None, "") and float(value) == number
    except (TypeError, ValueError):
        return False


def field_parameter(name: str, label: str, parent: str, default=None, optional: bool = False,
                    multiple: bool = False) -> QgsProcessingParameterField:
    """A field of the layer parameter ``parent``: a drop-down of that layer's fields in the dialog
    and the graphical modeler, a field name in qgis_process and processing.run (use
    :meth:`EdificeAlgorithm.field_name` / :meth:`EdificeAlgorithm.field_names` to read it).

    One with a default is flagged optional: QGIS 3.22 judges a left-out field parameter by the value
    alone, not its default, so qgis_process and processing.run would refuse it as "mandatory ... not
    specified" / "Incorrect parameter value" (what made earlier versions take field names as text);
    left out, the default is used, and the algorithm checks the field against the layer."""
    return QgsProcessingParameterField(name, label, defaultValue=default, parentLayerParameterName=parent,
                                       type=QgsProcessingParameterField.Any, allowMultiple=multiple,
                                       optional=optional or default is not None)


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
