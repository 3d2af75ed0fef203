"""Parameters an analyst picks instead of typing (issue 10 item 7), through processing.run in real QGIS:
field parameters are real field parameters of their layer (a drop-down of its fields in the dialog and
the graphical modeler), "automatic" window and overlap are "not set" instead of magic numbers (the old
values 0 and -1 still work from saved models and scripts, with a warning naming the fix), and the
device is picked from a list."""
import pytest

pytestmark = pytest.mark.qgis

#: (algorithm, field parameter, its layer parameter)
FIELDS = [("edifice:poiprobability", "CATEGORY_FIELD", "INPUT"),
          ("edifice:mapbuildinguse", "CATEGORY_FIELD", "POI_LAYER"),
          ("edifice:trainingdataset", "CATEGORY_FIELD", "POI_POINTS"),
          ("edifice:trainingdataset", "USE_FIELD", "BUILDINGS"),
          ("edifice:referencegrids", "HEIGHT_FIELD", "INPUT"),
          ("edifice:streetviewpoints", "ID_FIELD", "BUILDINGS"),
          ("edifice:streetviewpoints", "HEIGHT_FIELD", "BUILDINGS"),
          ("edifice:buildingsamples", "ID_FIELD", "BUILDINGS"),
          ("edifice:buildingsamples", "POI_NAME_FIELD", "POIS"),
          ("edifice:buildingsamples", "POI_CATEGORY_FIELD", "POIS"),
          ("edifice:buildingsamples", "ATTRIBUTES", "BUILDINGS")]


def _recorder():
    """A QgsProcessingFeedback that keeps what the algorithm said (``.lines``)."""
    from qgis.core import QgsProcessingFeedback

    class Recorder(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.lines = []

        def pushInfo(self, info):  # noqa: N802
            self.lines.append(info)

        def pushWarning(self, warning):  # noqa: N802
            self.lines.append("WARNING " + warning)

    return Recorder()


@pytest.mark.parametrize("alg_id,name,parent", FIELDS)
def test_field_parameters_are_fields_of_their_layer(provider, alg_id, name, parent):
    from qgis.core import QgsApplication
    from qgis.gui import QgsGui, QgsProcessingGui

    alg = QgsApplication.processingRegistry().algorithmById(alg_id)
    d = alg.parameterDefinition(name)
    assert d.type() == "field" and d.parentLayerParameterName() == parent
    assert alg.parameterDefinition(parent) is not None
    registry = QgsGui.processingGuiRegistry()
    for kind in (QgsProcessingGui.Standard, QgsProcessingGui.Modeler):  # the dialog's and the modeler's widgets
        assert registry.createParameterWidgetWrapper(d, kind) is not None


def test_saved_models_take_fields_from_their_layer_inputs(provider):
    from edifice.qgis_plugin.example_models import EXAMPLES

    m = EXAMPLES["poi_dataset_training"]()
    assert m.parameterDefinition("category_field").parentLayerParameterName() == "pois"
    assert m.parameterDefinition("use_field").parentLayerParameterName() == "buildings"
    b = EXAMPLES["buildingsense_function"]()
    assert b.parameterDefinition("attributes").allowMultiple()


def _map(kampala_rgb, kampala_pois, checkpoint, out, **extra):
    import processing

    feedback = _recorder()
    params = {"IMAGERY": str(kampala_rgb), "CHECKPOINT": str(checkpoint), "POI_LAYER": str(kampala_pois),
              "CATEGORY_FIELD": "other_tags", "DEVICE": "cpu", "USE_CLASS": str(out), **extra}
    processing.run("edifice:mapbuildinguse", params, feedback=feedback)
    return "\n".join(feedback.lines)


def test_window_and_overlap_not_set_are_automatic_and_old_values_still_work(provider, kampala_rgb, kampala_pois,
                                                                            tiny_use_checkpoint, tmp_path):
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById("edifice:mapbuildinguse")
    for name in ("WINDOW", "OVERLAP"):
        d = alg.parameterDefinition(name)
        assert d.flags() & d.FlagOptional and d.defaultValue() is None and "not set" in d.description()
    log = _map(kampala_rgb, kampala_pois, tiny_use_checkpoint, tmp_path / "auto.tif")
    assert "Window 256 px: the model card's window" in log and "old way" not in log
    # saved models and scripts of before: WINDOW 0 and OVERLAP -1 meant the same, now with a warning
    log = _map(kampala_rgb, kampala_pois, tiny_use_checkpoint, tmp_path / "old.tif", WINDOW=0, OVERLAP=-1)
    assert "Window 256 px: the model card's window" in log
    assert "WINDOW=0 is the old way" in log and "Fix: leave WINDOW not set" in log
    assert "OVERLAP=-1 is the old way" in log and "Fix: leave OVERLAP not set" in log
    import rasterio

    with rasterio.open(tmp_path / "auto.tif") as auto, rasterio.open(tmp_path / "old.tif") as old:
        assert (auto.read() == old.read()).all()


def test_other_negative_overlap_and_tiny_window_are_refused_by_name(provider, kampala_rgb, kampala_pois,
                                                                     tiny_use_checkpoint, tmp_path):
    from qgis.core import QgsProcessingException

    for extra, named in (({"OVERLAP": -2}, "OVERLAP"), ({"WINDOW": 4}, "WINDOW")):
        with pytest.raises(QgsProcessingException) as err:
            _map(kampala_rgb, kampala_pois, tiny_use_checkpoint, tmp_path / "x.tif", **extra)
        assert named in str(err.value) and "Fix:" in str(err.value), str(err.value)
    assert not (tmp_path / "x.tif").exists()


def test_a_missing_field_is_named_with_the_fields_there(provider, kampala_rgb, kampala_pois, tiny_use_checkpoint,
                                                        tmp_path):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException) as err:
        _map(kampala_rgb, kampala_pois, tiny_use_checkpoint, tmp_path / "y.tif", CATEGORY_FIELD="no_such_field")
    assert "no_such_field" in str(err.value) and "other_tags" in str(err.value)


def test_device_is_picked_from_a_list_and_a_bad_name_refused(provider, kampala_rgb, kampala_pois,
                                                             tiny_use_checkpoint, tmp_path):
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingException
    from qgis.gui import QgsGui, QgsProcessingGui
    from qgis.PyQt.QtWidgets import QComboBox

    d = QgsApplication.processingRegistry().algorithmById("edifice:mapbuildinguse").parameterDefinition("DEVICE")
    for kind in (QgsProcessingGui.Standard, QgsProcessingGui.Modeler):
        widget = QgsGui.processingGuiRegistry().createParameterWidgetWrapper(d, kind).createWrappedWidget(
            QgsProcessingContext())
        assert isinstance(widget, QComboBox) and not widget.isEditable()
        assert {"auto", "cpu", "cuda", "mps"} <= {widget.itemText(i) for i in range(widget.count())}
    with pytest.raises(QgsProcessingException) as err:  # qgis_process and scripts give text: checked
        _map(kampala_rgb, kampala_pois, tiny_use_checkpoint, tmp_path / "z.tif", DEVICE="gpu")
    assert "DEVICE" in str(err.value) and "auto, cpu, cuda" in str(err.value)


def test_a_field_left_out_takes_its_default(provider, kampala_rgb, kampala_pois, tmp_path):
    """QGIS 3.22 refuses a left-out field parameter although it has a default ("Incorrect parameter
    value"): what made earlier sessions keep field names as text. Such a parameter is flagged optional."""
    import processing

    out = tmp_path / "poi.tif"
    processing.run("edifice:poiprobability", {"INPUT": str(kampala_pois), "REFERENCE": str(kampala_rgb),
                                              "OUTPUT": str(out)})  # CATEGORY_FIELD left out: other_tags
    assert out.exists()
