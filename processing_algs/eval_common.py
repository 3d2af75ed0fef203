"""Parts shared by the two evaluation algorithms: layers as (kind, path, layer
name), the three report outputs, the metrics table sink, and a notifier that
tells the plugin's evaluation dock where the last result JSON is."""
from __future__ import annotations

from qgis.core import (QgsCoordinateReferenceSystem, QgsFeature, QgsField, QgsFields, QgsMapLayerType,
                       QgsProcessing, QgsProcessingException, QgsProcessingOutputNumber,
                       QgsProcessingParameterFeatureSink, QgsProcessingParameterFileDestination, QgsWkbTypes)
from qgis.PyQt.QtCore import QObject, QVariant, pyqtSignal

#: extensions read directly (by pyogrio/OGR); other layers (memory, PostGIS, filtered) are exported first

OUTPUT_JSON, OUTPUT_HTML, OUTPUT_TABLE = "OUTPUT_JSON", "OUTPUT_HTML", "OUTPUT_TABLE"


class EvaluationNotifier(QObject):
    """``evaluated(json_path)`` is emitted (in the main thread, from
    ``postProcessAlgorithm``) after each successful evaluation."""

    evaluated = pyqtSignal(str)


NOTIFIER = EvaluationNotifier()


def add_report_outputs(alg, what: str) -> None:
    """OUTPUT_TABLE (metrics table, no geometry), OUTPUT_JSON, OUTPUT_HTML (shown
    in the Results Viewer: an .html file destination becomes an HTML output). Each is
    optional (created by default in the dialog; skipped when not given, e.g. in qgis_process)."""
    alg.addParameter(QgsProcessingParameterFeatureSink(OUTPUT_TABLE, f"{what} metrics table",
                                                       QgsProcessing.TypeVector, optional=True))
    alg.addParameter(QgsProcessingParameterFileDestination(OUTPUT_JSON, f"{what} result (JSON)",
                                                           fileFilter="JSON files (*.json)", optional=True))
    alg.addParameter(QgsProcessingParameterFileDestination(OUTPUT_HTML, f"{what} report (HTML)",
                                                           fileFilter="HTML files (*.html)", optional=True))


def add_number_outputs(alg, names: dict[str, str]) -> None:
    for name, description in names.items():
        alg.addOutput(QgsProcessingOutputNumber(name, description))


def layer_input(alg, parameters, name: str, context, feedback, optional: bool = False):
    """A map-layer parameter as ``(kind, path, layer_name)``; kind 'raster' or
    'vector'; (None, None, None) when optional and not given. Vector layers
    that are not plain OGR files (memory layers, databases, filtered layers)
    are exported to a temporary GeoPackage first."""
    layer = alg.parameterAsLayer(parameters, name, context)
    if layer is None:
        if optional and parameters.get(name) in (None, ""):
            return None, None, None
        raise QgsProcessingException(f"{name}: the layer could not be opened. Fix: choose a layer or a file.")
    if layer.type() == QgsMapLayerType.RasterLayer:
        return "raster", alg.raster_path(layer, name), None
    if layer.type() != QgsMapLayerType.VectorLayer:
        raise QgsProcessingException(f"{name}: '{layer.name()}' is neither a vector nor a raster layer.")
    path, layer_name = alg.vector_source(parameters, name, context, feedback)
    return "vector", path, layer_name


def vector_path(alg, parameters, name: str, context, feedback) -> str | None:
    """Optional vector parameter (e.g. BUILDING_MASK) as a path readable by OGR."""
    kind, path, layer_name = layer_input(alg, parameters, name, context, feedback, optional=True)
    if kind is None:
        return None
    if kind != "vector":
        raise QgsProcessingException(f"{name}: give a polygon layer.")
    if layer_name:
        # the core readers take one path: a layer other than the first needs its own file
        import pyogrio

        if str(pyogrio.list_layers(path)[0][0]) != layer_name:
            raise QgsProcessingException(f"{name}: use a file whose first layer is the mask "
                                         f"(layer '{layer_name}' of '{path}'). Fix: save the layer to its own file.")
    return path


def write_metrics_table(alg, parameters, context, result: dict) -> str | None:
    """The flat metrics rows (:func:`edifice.core.evaluation.reports.metrics_rows`) into the
    OUTPUT_TABLE sink: fields level, class, metric, value (double; NULL if undefined).
    None when the table was not asked for."""
    from ..core.evaluation.reports import metrics_rows

    if parameters.get(OUTPUT_TABLE) in (None, ""):
        return None
    fields = QgsFields()
    for f in ("level", "class", "metric"):
        fields.append(QgsField(f, QVariant.String))
    fields.append(QgsField("value", QVariant.Double))
    sink, dest = alg.parameterAsSink(parameters, OUTPUT_TABLE, context, fields, QgsWkbTypes.NoGeometry,
                                     QgsCoordinateReferenceSystem())
    if sink is None:
        raise QgsProcessingException(f"{OUTPUT_TABLE}: the table could not be created.")
    for row in metrics_rows(result):
        feat = QgsFeature(fields)
        v = row["value"]
        feat.setAttributes([row["level"], row["class"], row["metric"],
                            None if v is None else float(v)])
        sink.addFeature(feat)
    return dest


def report_outputs(table, json_path, html_path) -> dict:
    """The report outputs that were written (those not asked for are left out)."""
    return {k: v for k, v in ((OUTPUT_TABLE, table), (OUTPUT_JSON, json_path), (OUTPUT_HTML, html_path)) if v}


def numbers(result: dict, mapping: dict[str, object]) -> dict:
    """Output numbers from the result (undefined values left out)."""
    out = {}
    for name, getter in mapping.items():
        v = getter(result) if callable(getter) else result.get(getter)
        if v is not None:
            out[name] = v
    return out
