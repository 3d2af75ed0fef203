"""SHAFTS height/footprint on a Dask cluster, without Dask: the cluster's block is a tile of the
run, prepared from its own window of the inputs (its part of the extent plus the padding), and
gives the single-machine pixels exactly, whatever lies outside that window."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import rasterio
import torch

from edifice.core.cluster.blocks import pixel_blocks
from edifice.core.cluster.height import height_footprint_on_cluster, load_shafts_network
from edifice.core.errors import InputError
from edifice.core.grid import Grid
from edifice.core.height.shafts_inference import (plan_shafts_run, predict_height_footprint_shafts,
                                                  predict_tile)
from edifice.core.progress import RecordingProgress

EXTENT = (116.31, 39.99, 116.325, 40.005)  # 17 x 17 output pixels of 0.0009°
PAD = 0.005
TILE_DEG = 0.006                          # tiles of 6 x 6 output pixels: 3 x 3 tiles
KW = dict(padding=PAD, device="cpu", batch_size=5, max_tile_deg=TILE_DEG)


@pytest.fixture
def holed(thu_dir, tmp_path):
    """The THU sample with a hole (nodata) in Sentinel-2 under the middle tile, so that its
    nearest-neighbour fill runs."""
    for f in ("thu_s1_2020.tif", "thu_s2_synthetic.tif", "thu_srtm.tif"):
        shutil.copy(thu_dir / f, tmp_path / f)
    with rasterio.open(tmp_path / "thu_s2_synthetic.tif", "r+") as ds:
        a = ds.read()
        r, c = ds.index(116.3175, 39.9975)
        a[:, r - 8:r + 8, c - 5:c + 9] = ds.nodata
        ds.write(a)
    return {k: str(tmp_path / f) for k, f in (("s1", "thu_s1_2020.tif"), ("s2", "thu_s2_synthetic.tif"),
                                             ("dem", "thu_srtm.tif"))}


def _paths(d):
    return d["s1"], d["s2"], d["dem"]


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(1)


def _run(inputs, out, ck):
    return plan_shafts_run(*_paths(inputs), EXTENT, 100, "multi", out / "h.tif", out / "f.tif", padding=PAD, h_min=2.0,
                           h_max=1000.0, f_min=0.0, f_max=1.0, batch_size=5, chunk_rows=None, nodata=-9999.0,
                           s1_bands=(1, 2), s2_bands=(1, 2, 3, 4), dem_band=1, max_tile_deg=TILE_DEG,
                           precision="fp32", progress=RecordingProgress())


def _tile(run, window, network) -> dict:
    """One tile predicted on its own, as a cluster worker does it."""
    model, dev = network
    out = {k: np.full((int(window.height), int(window.width)), np.nan, np.float32) for k in run.outputs}

    def keep(k, v, chunk):
        out[k][int(chunk.row_off - window.row_off):int(chunk.row_off - window.row_off) + v.shape[0]] = v

    predict_tile(run, model, dev, window, keep, RecordingProgress())
    return out


def _window_of(a, window):
    return a[int(window.row_off):int(window.row_off + window.height),
             int(window.col_off):int(window.col_off + window.width)]


def test_each_tile_on_its_own_equals_the_whole_extent_run(holed, thu_checkpoint, tmp_path):
    torch.set_num_threads(1)
    single = predict_height_footprint_shafts(*_paths(holed), EXTENT, str(thu_checkpoint), 100, tmp_path / "h.tif",
                                             tmp_path / "f.tif", **KW)
    assert single["tiles"] == 9
    run = _run(holed, tmp_path, thu_checkpoint)
    blocks = pixel_blocks(run.grid, run.tile_px)  # the cluster's blocks are the run's own tiles
    assert [b.window for b in blocks] == [t.window for t in run.tiles()]
    network = load_shafts_network(str(thu_checkpoint), "cpu", "fp32", 100, None)  # as a worker loads it
    whole = {"height": _read(tmp_path / "h.tif"), "footprint": _read(tmp_path / "f.tif")}
    for b in reversed(blocks):  # another order than one machine's
        tile = _tile(run, b.window, network)
        for k in ("height", "footprint"):
            np.testing.assert_array_equal(tile[k], _window_of(whole[k], b.window))
    assert len(np.unique(whole["height"])) > 20  # a real prediction, not a constant
    assert 0 < (whole["height"] == -9999).sum() < 10  # the hole's centre pixels: no S-2 data there


def _scramble_outside(path, bounds, tmp_path, seed):
    """A copy of ``path`` whose pixels that do not touch ``bounds`` (degrees) are random."""
    out = tmp_path / f"scrambled_{seed}_{path.split('/')[-1]}"
    shutil.copy(path, out)
    with rasterio.open(out, "r+") as ds:
        a = ds.read()
        xmin, ymin, xmax, ymax = bounds
        r0, c0 = ds.index(xmin, ymax)
        r1, c1 = ds.index(xmax, ymin)
        keep = np.zeros(a.shape[1:], bool)
        keep[max(r0 - 1, 0):r1 + 2, max(c0 - 1, 0):c1 + 2] = True  # a pixel of margin: any pixel the clip touches
        rng = np.random.default_rng(seed)
        noise = rng.uniform(a.min(), a.max(), size=a.shape).astype(a.dtype)
        a[:, ~keep] = noise[:, ~keep]
        ds.write(a)
    return str(out)


def test_a_tile_reads_only_its_clip_and_the_padding_matters(holed, thu_checkpoint, tmp_path):
    """The middle tile is prepared from its clip (its part of the extent plus the padding) alone:
    scrambling every input pixel outside it changes nothing; scrambling the padding changes it."""
    torch.set_num_threads(1)
    run = _run(holed, tmp_path, thu_checkpoint)
    middle = run.tiles()[4].window
    network = load_shafts_network(str(thu_checkpoint), "cpu", "fp32", 100, None)
    ref = _tile(run, middle, network)
    bounds = run.tile_bounds(middle)
    scrambled = {k: _scramble_outside(p, bounds, tmp_path, i) for i, (k, p) in enumerate(holed.items())}
    moved = _run(scrambled, tmp_path, thu_checkpoint)
    same = _tile(moved, middle, network)
    for k in ref:
        np.testing.assert_array_equal(same[k], ref[k])
    xmin, ymin, xmax, ymax = bounds
    inner = (xmin + PAD, ymin + PAD, xmax - PAD, ymax - PAD)  # the tile without its padding
    no_pad = {k: _scramble_outside(p, inner, tmp_path, 10 + i) for i, (k, p) in enumerate(holed.items())}
    changed = _tile(_run(no_pad, tmp_path, thu_checkpoint), middle, network)
    assert not np.array_equal(changed["height"], ref["height"])


def test_cluster_run_refuses_a_loaded_model_and_checks_before_connecting(holed, thu_checkpoint, tmp_path):
    network, _ = load_shafts_network(str(thu_checkpoint), "cpu", "fp32", 100, None)
    with pytest.raises(InputError, match="CHECKPOINT: must be a checkpoint file"):
        height_footprint_on_cluster(*_paths(holed), EXTENT, network, 100, tmp_path / "h.vrt", tmp_path / "f.vrt",
                                    cluster="tcp://127.0.0.1:9")
    with pytest.raises(InputError, match="CLUSTER"):
        height_footprint_on_cluster(*_paths(holed), EXTENT, str(thu_checkpoint), 100, tmp_path / "h.vrt",
                                    tmp_path / "f.vrt", cluster="nowhere")
    with pytest.raises(InputError, match="S1: .* covers"):  # inputs checked on the driver, before any cluster
        height_footprint_on_cluster(*_paths(holed), (116.0, 39.0, 116.1, 39.1), str(thu_checkpoint), 100,
                                    tmp_path / "h.vrt", tmp_path / "f.vrt", cluster="tcp://127.0.0.1:9", padding=PAD)
    assert not list(tmp_path.glob("h*"))


def test_block_area_on_a_geographic_grid():
    from affine import Affine
    from pyproj import CRS

    deg = Grid(Affine(0.5, 0, 10.0, 0, -0.5, 1.0), 4, 4, CRS.from_epsg(4326).to_wkt())
    one_degree = [b for b in pixel_blocks(deg, 2) if b.window.row_off == 0][0]  # 10-11 °E, 0-1 °N
    assert one_degree.area_km2(deg) == pytest.approx(12363.9, rel=1e-4)  # R² · Δλ · Δsin φ, R = 6371.0088 km
    metres = Grid(Affine(10, 0, 0, 0, -10, 0), 100, 100, CRS.from_epsg(32636).to_wkt())
    assert pixel_blocks(metres, 100)[0].area_km2(metres) == pytest.approx(1.0)
