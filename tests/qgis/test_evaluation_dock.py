"""The evaluation dock (pyqtgraph), built headless (QT_QPA_PLATFORM=offscreen):
the plotted items hold the numbers of the result; the plugin creates it only
with an iface and skips it (logged) without pyqtgraph."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.qgis
ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "eubucco"


@pytest.fixture(scope="module")
def use_result(tmp_path_factory):
    from edifice.core.evaluation.runs import evaluate_classification

    path = tmp_path_factory.mktemp("dock") / "use.json"
    evaluate_classification("building", SAMPLES / "buildings_gov.gpkg", SAMPLES / "buildings_osm.gpkg", "type",
                            "type", taxonomy="eubucco_type", levels="rci,type", min_overlap=0.5, n_boot=0,
                            json_path=path)
    return path


@pytest.fixture(scope="module")
def height_result(tmp_path_factory):
    from edifice.core.evaluation.runs import evaluate_regression

    path = tmp_path_factory.mktemp("dock") / "height.json"
    evaluate_regression(SAMPLES / "buildings_gov.gpkg", SAMPLES / "buildings_osm.gpkg", "height", "height",
                        min_overlap=0.5, json_path=path)
    return path


def test_dock_plots_confusion_matrix_and_per_class_bars(qgis_app, use_result):
    from edifice.qgis_plugin.evaluation_dock import EvaluationDock

    result = json.loads(use_result.read_text())
    dock = EvaluationDock()
    assert dock.show_json(str(use_result))
    for level in ("rci", "type"):
        dock.level_box.setCurrentText(level)
        s = result["by_level"][level]
        cm = np.array(s["confusion_matrix"], dtype=float)
        items = dock.items
        assert items["level"] == level and items["classes"] == s["classes"]
        # image: first reference class on top (last image row), colour = share of the reference row
        img = items["matrix"].image
        assert img.shape == cm.shape
        np.testing.assert_allclose(img[::-1], cm / cm.sum(axis=1, keepdims=True))
        assert [t.toPlainText() for t in items["cell_texts"]] == [str(int(v)) for v in cm.ravel()]
        for key in ("precision", "recall", "f1"):
            heights = items["bars"][key].opts["height"]
            np.testing.assert_allclose(heights, [s["per_class"][c][key] for c in s["classes"]])
    assert "0.973" in dock.summary.text() and "matched 1725" in dock.summary.text()
    # the matrix fills the plot (no aspect lock) and the dock is wide enough for it
    (x0, x1), _ = dock.plot_main.getViewBox().viewRange()
    k = len(result["by_level"]["type"]["classes"])
    assert not dock.plot_main.getViewBox().state["aspectLocked"] and x0 <= 0 and x1 >= k
    assert dock.minimumWidth() >= 460
    dock.deleteLater()


def test_dock_plots_scatter_and_bias_per_bin(qgis_app, height_result):
    from edifice.qgis_plugin.evaluation_dock import EvaluationDock

    result = json.loads(height_result.read_text())
    dock = EvaluationDock()
    dock.show_result(result)
    x, y = dock.items["scatter"].getData()
    np.testing.assert_allclose(x, result["sample"]["reference"])
    np.testing.assert_allclose(y, result["sample"]["prediction"])
    bins = [b for b in result["bins"] if b["n"]]
    np.testing.assert_allclose(dock.items["bias"].opts["height"], [b["me"] for b in bins])
    lx, ly = dock.items["one_to_one"].getData()
    np.testing.assert_allclose(lx, ly)
    assert f"RMSE {result['rmse']:.3f}" in dock.summary.text()
    # axes span the data (not widened by an aspect lock) and carry the unit
    lo = min(min(x), min(y))
    hi = max(max(x), max(y))
    (x0, x1), (y0, y1) = dock.plot_main.getViewBox().viewRange()
    pad = 0.05 * (hi - lo)
    assert x0 == pytest.approx(lo - pad) and x1 == pytest.approx(hi + pad)
    assert y0 == pytest.approx(lo - pad) and y1 == pytest.approx(hi + pad)
    assert dock.plot_main.getAxis("bottom").labelText == "reference (m)"
    dock.deleteLater()


def test_plugin_dock_follows_evaluation_runs(qgis_app, qgis_iface, qgis_processing, tmp_path):
    import processing
    from qgis.core import QgsApplication

    from edifice import classFactory

    plugin = classFactory(qgis_iface)
    if QgsApplication.processingRegistry().providerById("edifice") is not None:
        plugin.provider = QgsApplication.processingRegistry().providerById("edifice")  # registered by another test
    plugin.initGui()
    dock = plugin.evaluation_dock
    assert dock is not None and dock.result is None
    out = tmp_path / "r.json"
    processing.run("edifice:evaluateregression", {
        "PREDICTION": str(SAMPLES / "buildings_osm.gpkg"), "PREDICTION_FIELD": "height",
        "REFERENCE": str(SAMPLES / "buildings_gov.gpkg"), "REFERENCE_FIELD": "height", "OUTPUT_JSON": str(out),
        "OUTPUT_HTML": str(tmp_path / "r.html"), "OUTPUT_TABLE": "TEMPORARY_OUTPUT"})
    assert dock.path == str(out) and dock.result["kind"] == "regression"
    assert dock.items["scatter"].getData()[0].size == dock.result["n"]
    plugin.provider = None  # leave the provider registered for other tests
    plugin.unload()
    assert plugin.evaluation_dock is None


def test_dock_is_skipped_with_a_log_message_without_pyqtgraph(qgis_app, qgis_iface, monkeypatch):
    from qgis.core import QgsApplication

    from edifice.qgis_plugin import evaluation_dock

    messages = []
    QgsApplication.messageLog().messageReceived.connect(lambda msg, tag, level: messages.append((tag, msg)))
    monkeypatch.setitem(sys.modules, "pyqtgraph", None)  # import pyqtgraph -> ImportError
    assert evaluation_dock.add_to_interface(qgis_iface) is None
    assert any(tag == "Edifice" and "evaluation dock is not available" in msg for tag, msg in messages)


def test_importing_the_plugin_imports_neither_pyqtgraph_nor_torch():
    code = ("import sys; import edifice; from edifice.qgis_plugin import plugin; "
            "from edifice.processing_algs import provider; p = edifice.classFactory(None); "
            "print(sorted(m for m in ('pyqtgraph', 'torch') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
