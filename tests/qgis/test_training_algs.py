"""edifice:trainingdataset and edifice:trainbuildinguse in real QGIS (processing.run),
bad input, and the loss-curve dock fed offscreen."""
import importlib.util
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import shapely
from pyproj import Transformer

pytestmark = pytest.mark.qgis
ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("_use_scene", ROOT / "tests" / "unit" / "_use_scene.py")
S = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(S)

TINY = {"ENCODER": 0, "BASE_WIDTH": 4, "BATCH_SIZE": 4, "DEVICE": "cpu", "SEED": 5}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("scene")
    sc = S.make_scene(d, size=256, seed=1)
    sc["dir"] = d
    return sc


def _feedback():
    from qgis.core import QgsProcessingFeedback

    class Log(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.lines = []

        def pushInfo(self, info):  # noqa: N802
            self.lines.append(info)
            super().pushInfo(info)

    return Log()


def _dataset_params(sc, out, **kw):
    p = {"IMAGERY": sc["imagery"], "POI_POINTS": sc["pois"], "CATEGORY_FIELD": "shop", "PRESET": 0,
         "MAX_DISTANCES": "12,12,20", "BUILDINGS": sc["buildings"], "USE_FIELD": "building", "USE_PRESET": 0,
         "CHIP_SIZE": 64, "SPLIT_TILE": 64, "SEED": 0, "OUTPUT_FOLDER": str(out)}
    p.update(kw)
    return p


def test_provider_lists_training_algorithms(provider):
    ids = {a.id() for a in provider.algorithms()}
    assert {"edifice:trainingdataset", "edifice:trainbuildinguse"} <= ids
    alg = provider.algorithm("trainbuildinguse")
    assert alg.parameterDefinition("BATCH_SIZE").defaultValue() == 16
    assert alg.parameterDefinition("LEARNING_RATE").defaultValue() == pytest.approx(1e-3)
    assert alg.parameterDefinition("VARIANT").defaultValue() == 2
    assert alg.parameterDefinition("OUTPUT_CHECKPOINT").type() == "fileDestination"
    from qgis.core import QgsProcessingParameterDefinition
    for name, default in (("LAMBDA_FOOTPRINT", 1.0), ("LAMBDA_USE", -1.0), ("PATIENCE", 10)):  # λ_U -1 = auto
        d = alg.parameterDefinition(name)
        assert d.defaultValue() == default and d.flags() & QgsProcessingParameterDefinition.FlagAdvanced
    ds = provider.algorithm("trainingdataset")
    assert ds.parameterDefinition("USE_FIELD").type() == "field"  # a field of BUILDINGS, picked from a list
    assert ds.parameterDefinition("USE_FIELD").parentLayerParameterName() == "BUILDINGS"
    assert ds.parameterDefinition("OUTPUT_FOLDER").type() == "folderDestination"


def test_dataset_then_training(provider, scene, tmp_path):
    import processing

    from edifice.models.unet import load_model

    fb = _feedback()
    out = tmp_path / "ds"
    res = processing.run("edifice:trainingdataset", _dataset_params(scene, out), feedback=fb)
    assert res["OUTPUT_FOLDER"] == str(out) and res["MANIFEST"] == str(out / "manifest.json")
    m = json.loads((out / "manifest.json").read_text())
    truth = np.bincount(scene["classes"], minlength=4)
    subs = m["split"]["subsets"]
    for k, name in S.NAMES.items():
        assert sum(subs[s][name] for s in ("train", "val", "test")) == truth[k]
    assert res["TRAIN_BUILDINGS"] + res["VAL_BUILDINGS"] + res["TEST_BUILDINGS"] == len(scene["classes"])
    log = "\n".join(fb.lines)
    for s in ("train", "val", "test"):
        assert f"  {s}: {subs[s]['buildings']} buildings (residential {subs[s]['residential']}" in log
    assert [b["name"] for b in m["bands"]][-3:] == ["p_residential", "p_commercial", "p_industrial"]

    fb = _feedback()
    ck = tmp_path / "m.pt"
    res = processing.run("edifice:trainbuildinguse", {"DATASET": str(out), "EPOCHS": 2, "OUTPUT_CHECKPOINT": str(ck),
                                                      "LAMBDA_FOOTPRINT": 0.5, "LAMBDA_USE": 2.0, "PATIENCE": 3,
                                                      **TINY}, feedback=fb)
    assert res["OUTPUT_CHECKPOINT"] == str(ck) and res["DEVICE_USED"] == "cpu" and res["EPOCHS_RUN"] == 2
    epochs = [ln for ln in fb.lines if ln.startswith("epoch ")]
    assert [ln.split(":")[0] for ln in epochs] == ["epoch 1/2", "epoch 2/2"] and all("train loss" in ln for ln in epochs)
    metrics = json.loads(res["METRICS"])
    assert set(metrics) == {"validation", "test"}
    assert set(metrics["test"]["f1"]) == {"background", "residential", "commercial", "industrial"}
    assert res["TEST_MEAN_F1"] == pytest.approx(metrics["test"]["mean_f1_use"])
    model, card = load_model(ck)
    assert model.variant == "imagery_poi_multitask" and model.in_channels == 6
    assert card["training"]["device"] == "cpu" and len(card["training"]["history"]) == 2
    cfg = card["training"]["config"]
    assert (cfg["lambda_footprint"], cfg["lambda_use"], cfg["patience"]) == (0.5, 2.0, 3)
    assert any("λ_B 0.5, λ_U 2" in ln for ln in fb.lines)
    assert Path(res["RESUME_STATE"]).is_file()


def test_reprojected_and_repaired_polygons(provider, scene, tmp_path):
    """Polygons in EPSG:4326 with one self-intersecting (bow-tie) polygon: reprojected, repaired, counted."""
    import processing

    to_ll = Transformer.from_crs(S.CRS_UTM, S.CRS_LL, always_xy=True)
    ll = lambda g: shapely.transform(g, lambda xy: np.column_stack(to_ll.transform(xy[:, 0], xy[:, 1])))  # noqa: E731
    geoms, vals = [], []
    for i in range(4):
        for j in range(4):
            geoms.append(ll(shapely.box(S.X0 + 8 + 64 * j, S.Y0 - 24 - 64 * i, S.X0 + 24 + 64 * j, S.Y0 - 8 - 64 * i)))
            vals.append(["house", "retail", "warehouse"][(i + j) % 3])
    bow = shapely.Polygon([(0, 0), (12, 12), (12, 0), (0, 12), (0, 0)])
    geoms.append(ll(shapely.affinity.translate(bow, S.X0 + 40, S.Y0 - 52)))
    vals.append("house")
    S.write_polygons(tmp_path / "b.gpkg", geoms, {"building": vals}, S.CRS_LL)
    fb = _feedback()
    out = tmp_path / "ds"
    processing.run("edifice:trainingdataset", _dataset_params(scene, out, BUILDINGS=str(tmp_path / "b.gpkg"),
                                                              POI_POINTS=None), feedback=fb)
    m = json.loads((out / "manifest.json").read_text())
    assert m["buildings"]["repaired"] == 1 and m["buildings"]["kept"] == 17
    assert any("1 repaired" in ln for ln in fb.lines)
    assert len(m["bands"]) == 3  # no POI input: imagery only


def _only(tmp_path, *names):
    return sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


@pytest.mark.parametrize("case,match", [
    ("no_overlap", "BUILDINGS: no building overlaps the imagery"),
    ("unmapped", "USE_FIELD: no value of 'building' maps"),
    ("missing_field", "USE_FIELD: field 'use' is not in"),
    ("too_few", "too few for a train/val/test split"),
    ("csv_without_file", "MAPPING_FILE"),
    ("poi_field", "CATEGORY_FIELD"),
])
def test_dataset_bad_input(provider, scene, tmp_path, case, match):
    import processing
    from qgis.core import QgsProcessingException

    kw = {}
    if case == "no_overlap":
        S.write_polygons(tmp_path / "b.gpkg", [shapely.box(S.X0 + 5000, S.Y0, S.X0 + 5010, S.Y0 + 10)],
                         {"building": ["house"]})
        kw["BUILDINGS"] = str(tmp_path / "b.gpkg")
    elif case == "unmapped":
        kw["USE_PRESET"] = 1  # eubucco_type does not know OSM values such as 'house'
    elif case == "missing_field":
        kw["USE_FIELD"] = "use"
    elif case == "too_few":
        S.write_polygons(tmp_path / "b.gpkg", [shapely.box(S.X0 + 5, S.Y0 - 20, S.X0 + 20, S.Y0 - 5),
                                               shapely.box(S.X0 + 100, S.Y0 - 120, S.X0 + 120, S.Y0 - 100)],
                         {"building": ["house", "retail"]})
        kw["BUILDINGS"] = str(tmp_path / "b.gpkg")
    elif case == "csv_without_file":
        kw["USE_PRESET"] = 2
    elif case == "poi_field":
        kw["CATEGORY_FIELD"] = "nope"
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(QgsProcessingException, match=match):
        processing.run("edifice:trainingdataset", _dataset_params(scene, tmp_path / "ds", **kw))
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no partial folder


@pytest.fixture(scope="module")
def rgb_dataset(provider, scene, tmp_path_factory):
    import processing

    out = tmp_path_factory.mktemp("rgb") / "ds"
    processing.run("edifice:trainingdataset", _dataset_params(scene, out, POI_POINTS=None))
    return out


def test_training_bad_input(provider, rgb_dataset, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    from edifice.models.checkpoint import save_checkpoint

    ck = tmp_path / "m.pt"
    with pytest.raises(QgsProcessingException,
                       match=r"VARIANT: variant 'Imagery \+ POI, multi-task \(use \+ footprint\)' needs 3 POI "
                             r"bands.* train 'Imagery only, single-task \(use\)'"):
        processing.run("edifice:trainbuildinguse", {"DATASET": str(rgb_dataset), "EPOCHS": 1,
                                                    "OUTPUT_CHECKPOINT": str(ck), **TINY})
    other = tmp_path / "height.pt"
    save_checkpoint(other, {}, {"task": "height_footprint", "architecture": {"name": "se_resnet", "params": {}},
                                "bands": [{"name": "VV", "scale": 1.0, "offset": 0.0}], "gsd_m": 1.0, "window": 64,
                                "classes": [], "outputs": {}})
    with pytest.raises(QgsProcessingException, match="RESUME: .*not 'unet_resnet'"):
        processing.run("edifice:trainbuildinguse", {"DATASET": str(rgb_dataset), "EPOCHS": 1, "VARIANT": 0,
                                                    "RESUME": str(other), "OUTPUT_CHECKPOINT": str(ck), **TINY})
    with pytest.raises(QgsProcessingException, match="DATASET: .*holds no manifest.json"):
        processing.run("edifice:trainbuildinguse", {"DATASET": str(tmp_path), "EPOCHS": 1,
                                                    "OUTPUT_CHECKPOINT": str(ck), **TINY})
    with pytest.raises(QgsProcessingException, match="LAMBDA_USE: the loss would be zero .*no footprint head"):
        processing.run("edifice:trainbuildinguse", {"DATASET": str(rgb_dataset), "EPOCHS": 1, "VARIANT": 0,
                                                    "LAMBDA_USE": 0.0, "OUTPUT_CHECKPOINT": str(ck), **TINY})
    with pytest.raises(QgsProcessingException, match="DEVICE"):
        processing.run("edifice:trainbuildinguse", {"DATASET": str(rgb_dataset), "EPOCHS": 1, "VARIANT": 0,
                                                    "OUTPUT_CHECKPOINT": str(ck), **dict(TINY, DEVICE="tpu")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["height.pt"]


def test_loss_dock_offscreen(qgis_app):
    from edifice.qgis_plugin.training_dock import LossCurveDock

    dock = LossCurveDock()
    recs = [{"epoch": 1, "train_loss": 0.9, "val_loss": 0.95}, {"epoch": 2, "train_loss": 0.7, "val_loss": 0.8,
                                                                "improved": True}]
    for r in recs:
        dock.add_epoch(r)
    x, y = dock.train_curve.getData()
    assert list(x) == [1, 2] and list(y) == [0.9, 0.7]
    assert list(dock.val_curve.getData()[1]) == [0.95, 0.8]
    assert "epoch 2" in dock.status.text() and "best" in dock.status.text()
    dock.add_epoch({"epoch": 1, "train_loss": 0.5, "val_loss": 0.6})  # a new run restarts the curve
    assert list(dock.train_curve.getData()[1]) == [0.5]
    dock.deleteLater()


def test_dock_fed_from_a_worker_thread(qgis_app):
    """epoch_callback() called and emitted in a worker thread: the dock is created and
    filled in the GUI thread (queued signal), as during a Processing run in QGIS."""
    from qgis.PyQt.QtCore import QThread

    from edifice.qgis_plugin import training_dock

    class FakeIface:
        def __init__(self):
            self.docks, self.threads = [], []

        def addDockWidget(self, area, dock):  # noqa: N802
            self.docks.append(dock)
            self.threads.append(QThread.currentThread())

        def removeDockWidget(self, dock):  # noqa: N802
            self.docks.remove(dock)

    iface = FakeIface()
    training_dock.unload()

    def worker():
        cb = training_dock.epoch_callback(iface)
        for e in range(1, 4):
            cb({"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.1 / e})

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert iface.docks == []  # nothing touched a widget from the worker
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (not iface.docks or len(iface.docks[0].epochs) < 3):
        qgis_app.processEvents()
        time.sleep(0.01)
    assert len(iface.docks) == 1 and iface.threads[0] is qgis_app.thread()
    assert list(iface.docks[0].train_curve.getData()[1]) == pytest.approx([1.0, 0.5, 1 / 3])
    training_dock.unload()
    assert iface.docks == []


def test_plugin_import_does_not_import_pyqtgraph_or_torch(qgis_app):
    code = ("import sys\nimport edifice\nfrom edifice.qgis_plugin import plugin\n"
            "from edifice.processing_algs import provider, training_dataset_alg, train_building_use_alg\n"
            "from edifice.qgis_plugin import training_dock\n"
            "print(sorted(m for m in ('torch', 'pyqtgraph') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_cancel_then_resume(provider, scene, tmp_path):
    """Cancelling in QGIS stops after the running epoch with a clear message; the last
    epoch's state (<checkpoint>.resume.pt) continues the run through RESUME."""
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    ds = tmp_path / "ds"
    processing.run("edifice:trainingdataset", _dataset_params(scene, ds))

    class CancelAfterFirstEpoch(QgsProcessingFeedback):
        def pushInfo(self, info):  # noqa: N802
            super().pushInfo(info)
            if info.startswith("epoch 1/"):
                self.cancel()

    ck = tmp_path / "m.pt"
    params = {"DATASET": str(ds), "EPOCHS": 3, "OUTPUT_CHECKPOINT": str(ck), **TINY}
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.run("edifice:trainbuildinguse", params, feedback=CancelAfterFirstEpoch())
    state = Path(str(ck) + ".resume.pt")
    assert state.is_file()
    fb = _feedback()
    res = processing.run("edifice:trainbuildinguse", dict(params, RESUME=str(state)), feedback=fb)
    assert [ln.split(":")[0] for ln in fb.lines if ln.startswith("epoch ")] == ["epoch 2/3", "epoch 3/3"]
    assert res["EPOCHS_RUN"] == 3
