"""Building-use mapping on a real Dask cluster (``dask scheduler`` + ``dask worker`` processes
on 127.0.0.1) over a mosaic of 6 image tiles cut from the Kampala sample, against the
single-machine run: same pixels, same building polygons; survives a killed worker and a
killed driver; clear errors for an unreachable scheduler, tiles in different CRSs and a
worker without torch.

Both runs use one math thread and batches of one window: the CPU convolutions give
results that differ in the last bits with the batch size or the thread count (true of
the single-machine engine alone), so equal settings are what makes the comparison exact."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.windows import Window

_spec = importlib.util.spec_from_file_location("_cluster_scene", Path(__file__).with_name("_cluster_scene.py"))
_scene = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_scene)
_procs = _scene.procs
DaskProcs, cli_env, refused_port, wait_until = _procs.DaskProcs, _procs.cli_env, _procs.refused_port, _procs.wait_until

pytest.importorskip("distributed")
ROOT = Path(__file__).resolve().parents[2]
KAMPALA = ROOT / "samples" / "kampala" / "kampala_rgb_50cm.tif"
GATE = str(Path(__file__).with_name("_cluster_gate.py"))
#: 1376 x 759 px at stride 192 -> 8 x 4 windows; 3 x 3 windows a block -> 6 blocks
#: float32 probabilities (not the uint8 default), compared bit for bit; uint8 on the cluster has its own test
COMMON = _scene.SETTINGS + ["--probability-type", "float32"]
BLOCKS = 6


def _cut_tiles(folder: Path, crs_of_last: str | None = None) -> Path:
    """6 tiles (2 rows x 3 columns, unequal sizes) of the Kampala sample."""
    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(KAMPALA) as src:
        rows, cols = [0, 380, src.height], [0, 460, 920, src.width]
        for a in range(2):
            for b in range(3):
                win = Window(cols[b], rows[a], cols[b + 1] - cols[b], rows[a + 1] - rows[a])
                prof = dict(src.profile, width=int(win.width), height=int(win.height),
                            transform=src.window_transform(win))
                if crs_of_last and (a, b) == (1, 2):
                    prof["crs"] = crs_of_last
                with rasterio.open(folder / f"tile_{a}{b}.tif", "w", **prof) as dst:
                    dst.write(src.read(window=win))
    return folder


def _edifice(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edifice.core.cli", *args], capture_output=True, text=True,
                          env=cli_env(), timeout=kw.pop("timeout", 600), **kw)


def _map_args(tiles, ck, out: Path, cluster: str | None) -> list[str]:
    a = ["map-building-use", str(tiles), str(ck), *COMMON, "--use-class", str(out / "use_class.vrt"),
         "--use-probabilities", str(out / "use_probs.tif"), "--polygons", str(out / "buildings.gpkg")]
    return a + (["--cluster", cluster, "--block-windows", "3"] if cluster else [])


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """Tiles, a tiny random-weights checkpoint (imagery only, with a footprint head) and the
    single-machine outputs (CLI, same settings)."""
    d = tmp_path_factory.mktemp("cluster_scene")
    tiles = _cut_tiles(d / "tiles")
    ck = _scene.tiny_checkpoint(d / "tiny.pt")
    ref = d / "single"
    ref.mkdir()
    args = ["map-building-use", str(tiles), str(ck), *COMMON, "--use-class", str(ref / "use_class.tif"),
            "--use-probabilities", str(ref / "use_probs.tif"), "--polygons", str(ref / "buildings.gpkg")]
    r = _edifice(args)
    assert r.returncode == 0, r.stderr
    return {"dir": d, "tiles": tiles, "ck": ck, "ref": ref}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    procs = DaskProcs(tmp_path_factory.mktemp("dask"))
    try:
        procs.add_worker("a")
        procs.add_worker("b")
        procs.wait_for_workers(2)
        yield procs
    finally:
        procs.stop()


@pytest.fixture
def own_cluster(tmp_path):
    procs = DaskProcs(tmp_path)
    yield procs
    procs.stop()


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.transform, ds.crs


def _buildings(path):
    info = pyogrio.read_info(str(path))
    _, _, wkb, fields = pyogrio.raw.read(str(path))
    return shapely.from_wkb(wkb), dict(zip(info["fields"], fields))


def assert_same_as_single(out: Path, ref: Path) -> None:
    """Pixels of the VRT (and COG) equal the single-machine rasters; the merged polygons equal
    the single-machine polygons (count, geometry, every attribute)."""
    for mine, theirs in (("use_class.vrt", "use_class.tif"), ("use_probs.vrt", "use_probs.tif"),
                         ("use_probs.tif", "use_probs.tif")):
        a, ta, ca = _read(out / mine)
        b, tb, cb = _read(ref / theirs)
        assert ta == tb and ca == cb and a.dtype == b.dtype
        assert np.array_equal(a, b), f"{mine}: {np.sum(a != b)} pixels differ"
    g1, f1 = _buildings(out / "buildings.gpkg")
    g2, f2 = _buildings(ref / "buildings.gpkg")
    assert len(g1) == len(g2) > 50
    tree = shapely.STRtree(g2)
    matched = set()
    for k, g in enumerate(g1):
        twins = [j for j in tree.query(g) if shapely.equals(g2[j], g)]
        assert len(twins) == 1, f"building {k} has no single twin"
        j = twins[0]
        matched.add(j)
        for name, values in f1.items():
            x, y = values[k], f2[name][j]
            assert x == y or (x != x and y != y), f"building {k}: {name} {x} != {y}"
    assert len(matched) == len(g2)


def _done_in_manifest(run_dir: Path) -> int:
    try:
        return len(json.loads((run_dir / "manifest.json").read_text())["done"])
    except (OSError, ValueError, KeyError):
        return 0


def test_cluster_run_equals_single_machine(scene, cluster, tmp_path):
    out = tmp_path / "out"
    r = _edifice(_map_args(scene["tiles"], scene["ck"], out, cluster.address))
    assert r.returncode == 0, r.stderr
    assert "6 block(s)" in r.stderr and "2 worker(s) ready" in r.stderr
    workers = {line.split(" done on ")[1].split(":")[0:3][-1] for line in r.stderr.splitlines() if " done on " in line}
    assert len(workers) == 2, "both workers took blocks"
    summary = json.loads(r.stdout)
    assert summary["polygons"]["merged_across_blocks"] > 0, "some building lies across a block border"
    assert_same_as_single(out, scene["ref"])
    blocks = sorted(p.name for p in (out / "use_class_blocks" / "use_class").iterdir())
    assert len(blocks) == BLOCKS and all(not n.startswith(".") for n in blocks), blocks
    # a rerun finds every block in the manifest and runs none
    r2 = _edifice(_map_args(scene["tiles"], scene["ck"], out, cluster.address))
    assert r2.returncode == 0, r2.stderr
    assert f"{BLOCKS} already done (skipped), 0 to run" in r2.stderr
    assert_same_as_single(out, scene["ref"])


def _gated_run(scene, procs: DaskProcs, tmp_path: Path, gated: str, other: str, **popen):
    """Workers ``gated`` (stops at its first tile write, see _cluster_gate.py) and ``other``, and a
    driver started on them: (gate folder, gated worker, driver, output folder)."""
    gate = tmp_path / "gate"
    gate.mkdir()
    worker = procs.add_worker(gated, preload=GATE, EDIFICE_TEST_GATE=gate)
    procs.add_worker(other)
    procs.wait_for_workers(2)
    out = tmp_path / "out"
    driver = subprocess.Popen([sys.executable, "-m", "edifice.core.cli",
                               *_map_args(scene["tiles"], scene["ck"], out, procs.address)], env=cli_env(), **popen)
    return gate, worker, driver, out


def test_worker_killed_mid_block_run_completes(scene, own_cluster, tmp_path):
    gate, victim, driver, out = _gated_run(scene, own_cluster, tmp_path, "victim", "survivor",
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reached = gate / f"reached.{victim.pid}"
    try:
        wait_until(reached.exists, what="the victim worker to start a block")
        os.kill(victim.pid, signal.SIGKILL)
        stdout, stderr = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, stderr
    done = json.loads((out / "use_class_blocks" / "manifest.json").read_text())["done"]
    assert len(done) == BLOCKS and reached.read_text() not in {d["worker"] for d in done.values()}
    assert_same_as_single(out, scene["ref"])
    leftovers = [p for p in (out / "use_class_blocks").rglob("*") if p.name.startswith(".")]
    assert leftovers == [], leftovers


def test_driver_killed_rerun_skips_finished_blocks(scene, own_cluster, tmp_path):
    gate, stuck, driver, out = _gated_run(scene, own_cluster, tmp_path, "stuck", "busy",
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = out / "use_class_blocks"
    try:
        wait_until(lambda: (gate / f"reached.{stuck.pid}").exists() and _done_in_manifest(run_dir) >= 1,
                   what="one finished block while another is stuck")
    finally:
        driver.kill()
        driver.wait()
    done = _done_in_manifest(run_dir)
    assert 1 <= done < BLOCKS
    assert not (out / "use_class.vrt").exists() and not (out / "buildings.gpkg").exists()
    # the stuck worker dies too (its block stays half-written as a hidden partial file); a new one joins
    os.kill(stuck.pid, signal.SIGKILL)
    own_cluster.add_worker("fresh")
    own_cluster.wait_for_workers(2)
    r = _edifice(_map_args(scene["tiles"], scene["ck"], out, own_cluster.address))
    assert r.returncode == 0, r.stderr
    assert f"{done} already done (skipped), {BLOCKS - done} to run" in r.stderr
    assert_same_as_single(out, scene["ref"])


def test_unreachable_scheduler_is_a_clear_error(scene, tmp_path):
    with refused_port() as port:
        address = f"tcp://127.0.0.1:{port}"
        r = _edifice(_map_args(scene["tiles"], scene["ck"], tmp_path / "out", address), timeout=120)
    assert r.returncode == 2
    assert f"CLUSTER: no Dask scheduler answers at {address}" in r.stderr and "Fix:" in r.stderr
    assert "Traceback" not in r.stderr


SILENT_SERVER = """
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
print(s.getsockname()[1], flush=True)
held = []
while True:
    held.append(s.accept()[0])  # accepts, reads nothing, answers nothing
"""


def test_a_port_where_no_scheduler_answers_is_a_clear_error(scene, tmp_path):
    """A server that accepts and stays silent (as a dashboard's HTTP port does to Dask's handshake) is an
    error within seconds, not a hang: distributed's own connect waits for the handshake forever."""
    server = subprocess.Popen([sys.executable, "-c", SILENT_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        address = f"tcp://127.0.0.1:{int(server.stdout.readline())}"
        r = _edifice(_map_args(scene["tiles"], scene["ck"], tmp_path / "out", address), timeout=300)
    finally:
        server.kill()
        server.wait()
    assert r.returncode == 2, r.stderr
    assert f"CLUSTER: something listens at {address} but no Dask scheduler answers there" in r.stderr
    assert "8786" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "use_class.vrt").exists()


def test_scheduler_without_workers_is_a_clear_error(scene, own_cluster, tmp_path):
    own_cluster.wait_for_workers(0)
    r = _edifice(_map_args(scene["tiles"], scene["ck"], tmp_path / "out", own_cluster.address), timeout=180)
    assert r.returncode == 2
    assert "CLUSTER: the scheduler has no worker" in r.stderr and "dask worker" in r.stderr


def test_tiles_in_different_crs_are_refused(scene, tmp_path):
    tiles = _cut_tiles(tmp_path / "tiles", crs_of_last="EPSG:32736")
    r = _edifice(_map_args(tiles, scene["ck"], tmp_path / "out", "local:1"), timeout=120)
    assert r.returncode == 2
    assert "IMAGERY: the tiles are in different CRSs" in r.stderr and "gdalwarp -t_srs EPSG:32636" in r.stderr
    assert not (tmp_path / "out" / "use_class.vrt").exists()


def test_worker_without_torch_is_named(scene, own_cluster, tmp_path):
    fake = tmp_path / "no_torch"
    fake.mkdir()
    (fake / "torch.py").write_text("raise ImportError('torch is not installed here (test fixture)')\n")
    own_cluster.add_worker("bare", PYTHONPATH=f"{fake}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    own_cluster.wait_for_workers(1)
    r = _edifice(_map_args(scene["tiles"], scene["ck"], tmp_path / "out", own_cluster.address), timeout=180)
    assert r.returncode == 2, r.stderr
    assert "torch cannot be imported on 1 worker(s): worker tcp://127.0.0.1:" in r.stderr
    assert "torch is not installed here" in r.stderr and "requirements.lock" in r.stderr


def test_cluster_run_at_uint8_scales_and_keeps_classes_and_polygons(scene, cluster, tmp_path):
    """--probability-type uint8 on the cluster: the VRT and the COG of the use probabilities carry the band scale and
    hold the single-machine float32 values rounded (DN = round(p x 250)); classes and polygons are the float32
    run's."""
    from edifice.core.use.probability_type import quantise

    out = tmp_path / "out"
    r = _edifice(_map_args(scene["tiles"], scene["ck"], out, cluster.address) + ["--probability-type", "uint8"])
    assert r.returncode == 0, r.stderr
    ref, _, _ = _read(scene["ref"] / "use_probs.tif")
    valid = ref != -1
    for name in ("use_probs.vrt", "use_probs.tif"):
        q, _, _ = _read(out / name)
        with rasterio.open(out / name) as ds:
            assert ds.dtypes[0] == "uint8" and ds.nodata == 255 and ds.scales == (0.004,) * 3, name
        assert np.array_equal(q[valid], quantise(ref[valid], "uint8")) and (q[~valid] == 255).all(), name
    a, _, _ = _read(out / "use_class.vrt")
    b, _, _ = _read(scene["ref"] / "use_class.tif")
    assert np.array_equal(a, b)
    g1, f1 = _buildings(out / "buildings.gpkg")
    g2, f2 = _buildings(scene["ref"] / "buildings.gpkg")
    assert len(g1) == len(g2) > 50 and sorted(f1["p_residential"]) == sorted(f2["p_residential"])
