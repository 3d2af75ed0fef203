"""The plugin in the real QGIS desktop (under Xvfb): loaded by the GUI, provider
registered through initGui, algorithm and batch dialogs open, a two-row batch runs
through the Batch Processing dialog, and training epochs reach the loss-curve dock."""
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import rasterio

from edifice.core.use.training_dataset import create_training_dataset
from edifice.models.checkpoint import load_checkpoint

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _tiny_dataset(folder: Path) -> str:
    spec = importlib.util.spec_from_file_location("_use_scene", ROOT / "tests" / "unit" / "_use_scene.py")
    scene = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scene)
    folder.mkdir()
    sc = scene.make_scene(folder, size=256, seed=3)
    create_training_dataset(sc["imagery"], sc["buildings"], str(folder / "ds"), "building", chip_size=64,
                            split_tile_m=64)
    return str(folder / "ds")


def test_plugin_loads_in_qgis_desktop(qp_env, kampala_rgb, tmp_path):
    if shutil.which("xvfb-run") is None:
        pytest.fail("xvfb-run is missing: run scripts/setup.sh")
    env = {k: v for k, v in qp_env.items() if k != "QT_QPA_PLATFORM"}  # a real (virtual) display
    env["EDIFICE_GUI_RESULT"] = str(tmp_path / "gui.json")
    batch_out = [str(tmp_path / "batch1.tif"), str(tmp_path / "batch2.tif")]
    ckpt = tmp_path / "gui_model.pt"
    (tmp_path / "inputs.json").write_text(json.dumps({
        "image": str(kampala_rgb), "batch_outputs": batch_out, "dataset": _tiny_dataset(tmp_path / "scene"),
        "checkpoint": str(ckpt)}))
    env["EDIFICE_GUI_INPUTS"] = str(tmp_path / "inputs.json")
    r = subprocess.run(["xvfb-run", "-a", "qgis", "--nologo", "--noversioncheck", "--code",
                        str(ROOT / "tests" / "data" / "gui_check.py")],
                       env=env, capture_output=True, text=True, timeout=240)
    assert (tmp_path / "gui.json").exists(), r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads((tmp_path / "gui.json").read_text())
    assert res["plugin_loaded"] and res["iface"]
    assert {"edifice:retinex", "edifice:poiprobability"} <= set(res["algs"])
    assert "error" not in res, res.get("error")
    assert all(res["dialogs"].values()), res["dialogs"]

    # the batch dialog ran both rows, each with its own settings
    assert "batch_error" not in res, res.get("batch_error")
    assert res["batch_rows"] == 2
    with rasterio.open(kampala_rgb) as src:
        shape = (src.count, src.height, src.width)
    arrays = []
    for p in batch_out:
        with rasterio.open(p) as ds:
            assert (ds.count, ds.height, ds.width) == shape
            arrays.append(ds.read())
    assert (arrays[0] != arrays[1]).any()  # sigmas 5,20 vs 8
    # the training's epochs reached the loss-curve dock, with the losses the checkpoint records
    assert "training_error" not in res, res.get("training_error")
    assert res["epochs_run"] == 2 and res["dock"] is not None and res["dock"]["visible"]
    history = load_checkpoint(ckpt)[1]["training"]["history"]
    assert res["dock"]["epochs"] == [1.0, 2.0]
    assert res["dock"]["train"] == pytest.approx([h["train_loss"] for h in history])
    assert res["dock"]["val"] == pytest.approx([h["val_loss"] for h in history])
    # the Edifice menu: dependency manager, diagnostics, docks, example models; the dock reopens from it
    assert {"Install dependencies…", "Diagnostics…", "Training loss", "Evaluation results",
            "Add example models to the Toolbox"} <= set(res["menu"]), res["menu"]
    assert res["dock_reopened"]
