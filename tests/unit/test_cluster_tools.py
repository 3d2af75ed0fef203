"""The other tools on a real Dask cluster (``dask scheduler`` + two ``dask worker`` processes on
127.0.0.1, started by the test) against their single-machine runs through the same CLI:
every block's pixels equal the single-machine pixels, the summed counts equal the
single-machine counts, and a rerun skips the finished blocks."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

_spec = importlib.util.spec_from_file_location("_cluster_scene", Path(__file__).with_name("_cluster_scene.py"))
_scene = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_scene)
_procs = _scene.procs

pytest.importorskip("distributed")


def _edifice(args: list[str]) -> dict:
    r = subprocess.run([sys.executable, "-m", "edifice.core.cli", *args], capture_output=True, text=True,
                       env=_procs.cli_env(), timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _read(path) -> tuple[np.ndarray, float | None]:
    with rasterio.open(path) as ds:
        return ds.read(), ds.nodata


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    procs = _procs.DaskProcs(tmp_path_factory.mktemp("dask_tools"))
    try:
        procs.add_worker("a")
        procs.add_worker("b")
        procs.wait_for_workers(2)
        yield procs
    finally:
        procs.stop()


@pytest.fixture(scope="module")
def cloudy(tmp_path_factory):
    """Round clouds in a mask, one of them on the corner of four 64 px blocks, one square whose
    inside is farther than the search radius from any clear pixel."""
    return _scene.cloudy_scene(tmp_path_factory.mktemp("cloudy"))


GAP_SETTINGS = [a for k, v in _scene.GAP_SETTINGS.items() for a in (f"--{k.lower().replace('_', '-')}", str(v))]


def test_cloud_gap_fill_on_cluster_equals_single_machine(cloudy, cluster, tmp_path):
    ref = _edifice(["cloud-gap-fill", cloudy["image"], str(tmp_path / "single.tif"), "--mask", cloudy["mask"],
                    *GAP_SETTINGS, "--variance", str(tmp_path / "single_var.tif")])
    args = ["cloud-gap-fill", cloudy["image"], str(tmp_path / "dist.tif"), "--mask", cloudy["mask"], *GAP_SETTINGS,
            "--variance", str(tmp_path / "dist_var.vrt"), "--block-size", "64", "--cluster", cluster.address]
    out = _edifice(args)
    assert out["blocks"] == 9 and out["blocks_run"] == 9  # 3 x 3 blocks of 64 px, on both workers
    done = json.loads((tmp_path / "dist_blocks" / "manifest.json").read_text())["done"]
    assert {v["worker"] for v in done.values()} == _worker_addresses(cluster)

    single, single_nd = _read(tmp_path / "single.tif")
    for path in (tmp_path / "dist.tif", tmp_path / "dist.vrt"):  # the COG and the VRT of the blocks
        dist, nd = _read(path)
        assert nd == single_nd
        np.testing.assert_array_equal(dist, single)
    np.testing.assert_array_equal(_read(tmp_path / "dist_var.vrt")[0], _read(tmp_path / "single_var.tif")[0])
    assert (single[:, ~cloudy["clouds"]] == cloudy["img"][:, ~cloudy["clouds"]]).all()  # a meaningful reference
    assert (single[:, cloudy["clouds"]] != cloudy["img"][:, cloudy["clouds"]]).any()
    for key in ("gap_pixels", "cloud_free_pixels", "unfilled_no_neighbour", "filled_per_band",
                "beyond_range_per_band"):
        assert out[key] == ref[key], key
    assert out["unfilled_no_neighbour"] > 0  # the big cloud's centre is beyond the search radius
    side = json.loads((tmp_path / "dist.variograms.json").read_text())
    assert side["bands"] == json.loads((tmp_path / "single.variograms.json").read_text())["bands"]

    again = _edifice(args)  # a rerun skips every finished block
    assert again["blocks_run"] == 0 and again["blocks_skipped"] == 9
    np.testing.assert_array_equal(_read(tmp_path / "dist.vrt")[0], single)


def _worker_addresses(procs) -> set[str]:
    from distributed import Client

    with Client(procs.address, timeout=30, set_as_default=False) as c:
        return set(c.scheduler_info()["workers"])


def test_cloud_gap_fill_unreachable_scheduler_is_a_clear_error(cloudy, tmp_path):
    with _procs.refused_port() as port:
        r = subprocess.run([sys.executable, "-m", "edifice.core.cli", "cloud-gap-fill", cloudy["image"],
                            str(tmp_path / "o.tif"), "--mask", cloudy["mask"], *GAP_SETTINGS,
                            "--cluster", f"tcp://127.0.0.1:{port}"], capture_output=True, text=True,
                           env=_procs.cli_env(), timeout=120)
    assert r.returncode != 0
    assert f"no Dask scheduler answers at tcp://127.0.0.1:{port}" in r.stderr
    assert not (tmp_path / "o.tif").exists()


@pytest.mark.parametrize("mode", ["luminance", "bands"])
def test_retinex_on_cluster_equals_single_machine(cloudy, cluster, tmp_path, mode):
    """Image-wide statistics (large-scale cell sums, one histogram stretch) computed as one machine
    does: 9 blocks of 64 px with a 60 px halo give the single machine's pixels, in both modes."""
    common = [cloudy["image"], "--sigmas", "15,80", "--mode", mode, "--output-type", "uint8"]
    ref = _edifice(["retinex", common[0], str(tmp_path / "single.tif"), *common[1:]])
    out = _edifice(["retinex", common[0], str(tmp_path / "dist.vrt"), *common[1:], "--block-size", "64",
                    "--cluster", cluster.address])
    assert out["blocks"] == 9 and out["blocks_run"] == 18  # two passes of 9 blocks
    assert (out["stretch_low"], out["stretch_high"], out["valid_pixels"]) == \
        (ref["stretch_low"], ref["stretch_high"], ref["valid_pixels"])
    single = _read(tmp_path / "single.tif")[0]
    np.testing.assert_array_equal(_read(tmp_path / "dist.vrt")[0], single)
    assert len(np.unique(single)) > 100  # a real stretch, not a constant
    again = _edifice(["retinex", common[0], str(tmp_path / "dist.vrt"), *common[1:], "--block-size", "64",
                      "--cluster", cluster.address])
    assert again["blocks_run"] == 0 and again["histogram_blocks_skipped"] == 9 and again["blocks_skipped"] == 9


def test_poi_probability_on_cluster_equals_single_machine(cluster, tmp_path, helsinki_pbf):
    """16 blocks of 64 px (2 m pixels over central Helsinki's OSM points), each given only its
    candidate POIs: the same pixels as one machine."""
    grid = ["--layer", "points", "--extent", "385000,6671500,385400,6671900", "--pixel-size", "2", "--crs", "EPSG:3067"]
    ref = _edifice(["poi-probability", str(helsinki_pbf), str(tmp_path / "single.tif"), *grid])
    out = _edifice(["poi-probability", str(helsinki_pbf), str(tmp_path / "dist.vrt"), *grid, "--block-size", "64",
                    "--cluster", cluster.address])
    assert out["blocks"] == out["blocks_run"] == 16 and out["poi_counts"] == ref["poi_counts"]
    single = _read(tmp_path / "single.tif")[0]
    np.testing.assert_array_equal(_read(tmp_path / "dist.vrt")[0], single)
    assert all(0 < (band > 0).mean() for band in single)  # every class reaches part of the grid
    assert ((single > 0) & (single < 1)).any()


def test_height_footprint_on_cluster_equals_single_machine(cluster, tmp_path, thu_dir, thu_checkpoint):
    """SHAFTS over the THU sample in 3 x 3 tiles of 0.006° (the cluster's blocks): the VRT and the
    COG have the single machine's pixels, both workers ran tiles, a rerun skips them all."""
    inputs = [str(thu_dir / f) for f in ("thu_s1_2020.tif", "thu_s2_synthetic.tif", "thu_srtm.tif")]
    common = [str(thu_checkpoint)]
    opts = ["--extent", "116.31,39.99,116.325,40.005", "--padding", "0.005", "--max-tile-deg", "0.006",
            "--device", "cpu", "--batch-size", "5"]
    ref = _edifice(["height-footprint", *inputs, *common, str(tmp_path / "h.tif"), str(tmp_path / "f.tif"), *opts])
    args = ["height-footprint", *inputs, *common, str(tmp_path / "dh.vrt"), str(tmp_path / "df.tif"), *opts,
            "--cluster", cluster.address]
    out = _edifice(args)
    assert out["blocks"] == out["blocks_run"] == 9 and out["valid_pixels"] == ref["valid_pixels"] > 250
    assert out["grid"] == ref["grid"]
    done = json.loads((tmp_path / "dh_blocks" / "manifest.json").read_text())["done"]
    assert {v["worker"] for v in done.values()} == _worker_addresses(cluster)
    for dist, single in (("dh.vrt", "h.tif"), ("df.tif", "f.tif"), ("df.vrt", "f.tif")):
        a, nd = _read(tmp_path / dist)
        b, single_nd = _read(tmp_path / single)
        assert nd == single_nd
        np.testing.assert_array_equal(a, b)
    assert len(np.unique(_read(tmp_path / "h.tif")[0])) > 20
    again = _edifice(args)
    assert again["blocks_run"] == 0 and again["blocks_skipped"] == 9


def _profilers_running(client) -> dict:
    return client.run(lambda dask_worker: dask_worker.periodic_callbacks["profile"].is_running())


def test_profiler_is_paused_while_registered_and_runs_again_after(cluster):
    """ProfilerPause (registered by the runner for the blocks of a run) stops Dask's 10 ms
    statistical profiler on every worker; unregistering it (the end of the run) starts it again."""
    from distributed import Client

    from edifice.core.cluster.client import PROFILER_PAUSE, ProfilerPause

    with Client(cluster.address, timeout=30, set_as_default=False) as c:
        assert set(_profilers_running(c).values()) == {True}
        c.register_plugin(ProfilerPause(), name=PROFILER_PAUSE)
        paused = _profilers_running(c)
        c.unregister_worker_plugin(PROFILER_PAUSE)
        assert len(paused) == 2 and set(paused.values()) == {False}
        assert set(_profilers_running(c).values()) == {True}
