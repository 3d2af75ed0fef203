"""The output contract, as a hostile user meets it, through the CLI and qgis_process (issue: nothing
lost, nothing corrupt, nothing silent). For every case: the exit code, a clear message naming the
parameter, no file at the output path, no temporary left in the folder, the inputs unchanged."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

import edifice

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CLI_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(edifice.__file__).parent.parent),
                                                       os.environ.get("PYTHONPATH", "")]))
CLI_ENV.pop("WORLD_SIZE", None)


def md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def cli(*args, timeout=300, **kw):
    return subprocess.run([sys.executable, "-m", "edifice.core.cli", *map(str, args)], capture_output=True,
                          text=True, env=CLI_ENV, timeout=timeout, **kw)


def leftovers(folder) -> list[str]:
    """Hidden temporaries and scratch folders of Edifice in ``folder``."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith(".") and
                  (".partial" in p.name or p.name.startswith(".edifice-")))


def assert_refused(r, *words, front="cli"):
    """Non-zero exit, the words in the message, no traceback."""
    text = r.stderr + r.stdout
    assert r.returncode != 0, text
    assert "Traceback" not in text, text
    for w in words:
        assert w in text, text
    if front == "cli":  # info lines may precede it; the error is one line, the last
        lines = r.stderr.strip().splitlines()
        errors = [line for line in lines if line.startswith("edifice: error: ")]
        assert len(errors) == 1 and lines[-1] == errors[0], r.stderr


# ------------------------------------------------------------------ a small disk
@pytest.fixture
def small_disk(tmp_path):
    """A 400 KiB file system (tmpfs) as an output folder; where mounting is not allowed, a folder and a
    400 KiB file-size limit (RLIMIT_FSIZE) for the child process instead. Yields (folder, preexec_fn)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = shutil.which("mount") and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(folder)], capture_output=True).returncode == 0
    if mounted:
        yield folder, None
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
    else:
        import resource

        def limit():
            resource.setrlimit(resource.RLIMIT_FSIZE, (400 * 1024, 400 * 1024))
        yield folder, limit


def test_full_disk_cli_retinex_leaves_nothing(small_disk, kampala_rgb):
    folder, preexec = small_disk
    before = md5(kampala_rgb)
    r = cli("retinex", kampala_rgb, folder / "out.tif", preexec_fn=preexec)
    assert_refused(r, "OUTPUT", "full")
    assert not (folder / "out.tif").exists() and leftovers(folder) == []
    assert md5(kampala_rgb) == before


def test_full_disk_qgis_process_retinex_leaves_nothing(qp_env, small_disk, kampala_rgb):
    """qgis_process used to exit 0 with a truncated GeoTIFF: GDAL's write error at close went unseen."""
    folder, preexec = small_disk
    r = subprocess.run(["/usr/bin/qgis_process.bin", "run", "edifice:retinex", "--", f"INPUT={kampala_rgb}",
                        f"OUTPUT={folder / 'out.tif'}"], env=qp_env, capture_output=True, text=True,
                       timeout=300, preexec_fn=preexec)
    assert_refused(r, "OUTPUT", "full", front="qp")
    assert not (folder / "out.tif").exists() and leftovers(folder) == []


def test_full_disk_qgis_process_poi_maps_leave_nothing(qp_env, small_disk, kampala_rgb, kampala_pois):
    folder, preexec = small_disk
    r = subprocess.run(["/usr/bin/qgis_process.bin", "run", "edifice:poiprobability", "--",
                        f"INPUT={kampala_pois}", "CATEGORY_FIELD=other_tags", f"REFERENCE={kampala_rgb}",
                        f"OUTPUT={folder / 'poi.tif'}"], env=qp_env, capture_output=True, text=True,
                       timeout=300, preexec_fn=preexec)
    assert_refused(r, "OUTPUT", "full", front="qp")
    assert not (folder / "poi.tif").exists() and leftovers(folder) == []


def test_full_disk_qgis_process_map_building_use_leaves_nothing(qp_env, small_disk, kampala_rgb, kampala_pois,
                                                               tiny_use_checkpoint):
    folder, preexec = small_disk
    outs = {"FOOTPRINT_PROBABILITY": folder / "fp.tif", "USE_PROBABILITIES": folder / "up.tif"}
    r = subprocess.run(["/usr/bin/qgis_process.bin", "run", "edifice:mapbuildinguse", "--", f"IMAGERY={kampala_rgb}",
                        f"CHECKPOINT={tiny_use_checkpoint}", f"POI_LAYER={kampala_pois}",
                        *[f"{k}={v}" for k, v in outs.items()]], env=qp_env, capture_output=True, text=True,
                       timeout=300, preexec_fn=preexec)
    assert_refused(r, "full", front="qp")
    assert not any(p.exists() for p in outs.values()) and leftovers(folder) == []


# ------------------------------------------------------------------ output = input
def test_output_equal_to_input_is_refused_cli(tmp_path, kampala_rgb):
    before = md5(kampala_rgb)
    link = tmp_path / "link.tif"
    link.symlink_to(kampala_rgb)
    for out in (kampala_rgb, link):
        r = cli("retinex", kampala_rgb, out)
        assert_refused(r, "OUTPUT", "is also the input INPUT")
    assert md5(kampala_rgb) == before and leftovers(kampala_rgb.parent) == []


def test_output_equal_to_input_is_refused_qgis_process(qp, tmp_path, kampala_rgb, kampala_pois):
    before_rgb, before_pois = md5(kampala_rgb), md5(kampala_pois)
    r = qp("run", "edifice:retinex", "--", f"INPUT={kampala_rgb}", f"OUTPUT={kampala_rgb}")
    assert_refused(r, "OUTPUT", "is also the input INPUT", front="qp")
    r = qp("run", "edifice:assignbuildinguse", "--", f"INPUT={kampala_pois}", f"PROBABILITIES={kampala_rgb}",
           f"OUTPUT={kampala_pois}")
    assert_refused(r, "OUTPUT", "is also the input INPUT", front="qp")
    assert md5(kampala_rgb) == before_rgb and md5(kampala_pois) == before_pois


def test_ccap_output_equal_to_a_height_input_is_refused(tmp_path):
    h = tmp_path / "h.tif"
    with rasterio.open(h, "w", driver="GTiff", width=8, height=8, count=1, dtype="float32", crs="EPSG:4326",
                       transform=from_origin(116, 40, 0.001, 0.001)) as d:
        d.write(np.full((1, 8, 8), 10, np.float32))
    before = md5(h)
    r = cli("ccap", h, "--height", h, "--footprint", h)
    assert_refused(r, "is also the input HEIGHTS")
    assert md5(h) == before


# ------------------------------------------------------------------ signals
@pytest.fixture(scope="module")
def long_mapping_inputs(tmp_path_factory):
    """A 2,000 x 2,000 px random RGB image and a tiny imagery-only checkpoint: a run of a minute or more."""
    import importlib.util

    folder = tmp_path_factory.mktemp("long")
    spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "tests" / "conftest.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    ckpt = conf.make_tiny_use_checkpoint(folder / "ck.pt", variant="imagery_multitask", window=256)
    img = folder / "img.tif"
    data = (np.random.default_rng(0).random((3, 2000, 2000)) * 255).astype("uint8")
    with rasterio.open(img, "w", driver="GTiff", width=2000, height=2000, count=3, dtype="uint8",
                       crs="EPSG:32636", transform=from_origin(450000, 40000, 0.5, 0.5), tiled=True) as d:
        d.write(data)
    return img, ckpt


def _wait_for(predicate, timeout_s=240.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_ctrl_c_cancels_map_building_use_under_qgis_process(qp_env, tmp_path, long_mapping_inputs):
    """SIGINT reaches QGIS's feedback only through Qt's event loop on the main thread, which the run
    occupies: it used to go on to the end with exit 0."""
    img, ckpt = long_mapping_inputs
    out = tmp_path / "use.tif"
    proc = subprocess.Popen(["/usr/bin/qgis_process.bin", "run", "edifice:mapbuildinguse", "--", f"IMAGERY={img}",
                             f"CHECKPOINT={ckpt}", f"USE_CLASS={out}"], env=qp_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    started = _wait_for(lambda: any(p.name.endswith(".resume.json") for p in tmp_path.iterdir()))
    proc.send_signal(signal.SIGINT)
    text, _ = proc.communicate(timeout=120)
    assert started, text
    assert proc.returncode != 0 and "Cancelled" in text, text
    assert not out.exists()


@pytest.mark.parametrize("front", ["cli", "qp"])
def test_sigterm_leaves_no_temporary(qp_env, tmp_path, long_mapping_inputs, front):
    img, _ = long_mapping_inputs
    out = tmp_path / "rx.tif"
    cmd = ([sys.executable, "-m", "edifice.core.cli", "retinex", str(img), str(out)] if front == "cli" else
           ["/usr/bin/qgis_process.bin", "run", "edifice:retinex", "--", f"INPUT={img}", f"OUTPUT={out}"])
    proc = subprocess.Popen(cmd, env=CLI_ENV if front == "cli" else qp_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    started = _wait_for(lambda: leftovers(tmp_path) != [])
    proc.send_signal(signal.SIGTERM)
    text, _ = proc.communicate(timeout=120)
    assert started, text
    assert proc.returncode != 0 and "erminated" in text, text
    assert not out.exists() and leftovers(tmp_path) == []


def test_temporaries_of_killed_runs_are_swept(tmp_path, kampala_rgb):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_file = tmp_path / f".old.{dead.pid}-0123abcd.partial.tif"
    stale_dir = tmp_path / f".edifice-retinex-{dead.pid}-xyz"
    live_file = tmp_path / f".other.{os.getpid()}-0123abcd.partial.tif"  # a live process's: kept
    stale_file.write_bytes(b"x")
    stale_dir.mkdir()
    live_file.write_bytes(b"x")
    r = cli("retinex", kampala_rgb, tmp_path / "out.tif")
    assert r.returncode == 0, r.stderr
    assert not stale_file.exists() and not stale_dir.exists() and live_file.exists()


# ------------------------------------------------------------------ untrusted checkpoints
def _crafted_checkpoint(path, tiny, **card_changes):
    import torch

    raw = torch.load(tiny, weights_only=True)
    for key, value in card_changes.items():
        if key == "base_width":
            raw["card"]["architecture"]["params"]["base_width"] = value
        else:
            raw["card"][key] = value
    torch.save(raw, path)
    return path


@pytest.mark.parametrize("change, words", [
    ({"window": 10 ** 7}, ["CHECKPOINT", "'window' must be a whole number of pixels"]),
    ({"base_width": 10 ** 6}, ["CHECKPOINT", "does not fit the architecture"]),
    ({"bands": [{"name": "R", "scale": float("nan")}] * 3}, ["CHECKPOINT", "must be a finite number"]),
])
def test_model_card_numbers_are_checked_before_allocation(tmp_path, kampala_rgb, tiny_use_checkpoint, change, words):
    """A card is untrusted data: sizes that would make the tool allocate terabytes are refused first."""
    bad = _crafted_checkpoint(tmp_path / "bad.pt", tiny_use_checkpoint, **change)
    t0 = time.monotonic()
    r = cli("map-building-use", kampala_rgb, bad, "--use-class", tmp_path / "u.tif", timeout=120)
    assert_refused(r, *words)
    assert time.monotonic() - t0 < 120 and not (tmp_path / "u.tif").exists()


def test_pickle_checkpoint_refusal_gives_no_unsafe_advice(tmp_path, kampala_rgb):
    import pickle

    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps(os.system))  # a global that a weights-only load must refuse
    r = cli("map-building-use", kampala_rgb, bad, "--use-class", tmp_path / "u.tif")
    assert_refused(r, "CHECKPOINT", "never runs code from a checkpoint")
    assert "weights_only=False" not in r.stderr and "weights_only` to `False" not in r.stderr


# ------------------------------------------------------------------ reports: all or none
def test_evaluation_failing_on_html_keeps_no_json(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    ref = ROOT / "samples" / "eubucco"
    gpkg = sorted(ref.glob("*.gpkg"))[0]
    r = cli("evaluate-classification", gpkg, gpkg, "--reference-field", "type", "--prediction-field", "type",
            "--taxonomy", "eubucco_type", "--json", tmp_path / "m.json", "--html", blocker / "r.html")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "m.json").exists() and leftovers(tmp_path) == []


def test_full_disk_while_saving_a_trained_checkpoint_is_one_clear_line(small_disk, tmp_path):
    """Training used to end in a PyTorch writer traceback when the disk filled while saving."""
    import importlib.util

    from edifice.core.use.training_dataset import create_training_dataset

    folder, preexec = small_disk
    spec = importlib.util.spec_from_file_location("use_scene", ROOT / "tests" / "unit" / "_use_scene.py")
    scene_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scene_mod)
    scene = scene_mod.make_scene(tmp_path, size=256, seed=1)
    create_training_dataset(scene["imagery"], scene["buildings"], str(tmp_path / "ds"), "building", chip_size=64,
                            split_tile_m=64)
    r = cli("train-building-use", tmp_path / "ds", folder / "model.pt", "--variant", "imagery_single",
            "--encoder", "resnet18", "--base-width", "32", "--epochs", "1", "--batch-size", "4", "--device", "cpu",
            preexec_fn=preexec, timeout=600)
    assert_refused(r, "full")
    assert sorted(p.name for p in folder.iterdir()) == []  # no checkpoint, no temporary, no resume state


def test_read_only_folder_is_named_not_a_hidden_temporary(tmp_path, kampala_rgb):
    """A read-only output folder used to be reported by the path of a hidden temporary file."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: a read-only mount stands in for a folder without permission
        if not shutil.which("mount") or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs",
                                                        str(folder)], capture_output=True).returncode != 0:
            pytest.skip("running as root and mounting is not allowed here")
    else:
        folder.chmod(0o555)
    try:
        r = cli("retinex", kampala_rgb, folder / "out.tif")
        assert_refused(r, "OUTPUT", f"the folder '{folder}' is not writable")
        assert ".partial" not in r.stderr and not (folder / "out.tif").exists()
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        folder.chmod(0o755)
