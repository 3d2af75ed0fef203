"""Pieces of a cluster run without a cluster: blocks of whole windows reproduce the
whole-grid run on their pixels (hard seams and blended, reflection at the grid border),
the VRT of the blocks reads back as the whole raster, the manifest, tile mosaics and
their refusals, and building attributes that do not depend on where blocks cut."""
from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
import torch
from affine import Affine

from edifice.core.cluster.blocks import plan_blocks
from edifice.core.cluster.manifest import Manifest
from edifice.core.cluster.mosaic import VrtBands, mosaic_tiles, tile_paths, write_vrt
from edifice.core.errors import InputError
from edifice.core.grid import Grid
from edifice.core.progress import Progress
from edifice.core.sliding_window import Predictor, RasterOutput, WindowLayout, run_sliding_window
from edifice.core.use.vectorize import polygonize_buildings

H, W = 150, 217
GRID = Grid(Affine(0.5, 0, 1000, 0, -0.5, 2000), W, H, "EPSG:32636")


class Reader:
    def __init__(self, data):
        self.data = data

    def read(self, w):
        r, c = int(w.row_off), int(w.col_off)
        return self.data[:, r:r + int(w.height), c:c + int(w.width)].copy(), np.ones((int(w.height), int(w.width)), bool)

    def read_mask(self, w):
        return None

    def close(self):
        pass


class WindowContext(torch.nn.Module):
    """Output = band 0 + the mean of band 0 over the whole window: every pixel depends on
    where its window starts and on the reflection at the grid border."""

    def forward(self, x):
        return x[:, :1] + x[:, :1].mean(dim=(2, 3), keepdim=True)


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(1).normal(size=(1, H, W)).astype(np.float32)


def _run(path, data, layout, region=None):
    out = RasterOutput(str(path), 1, "float32", -9999.0)
    run_sliding_window(GRID, layout, lambda: Reader(data), Predictor(WindowContext(), "cpu"), [out],
                       lambda v, ok: [v], batch_size=1, region=region)
    with rasterio.open(path) as ds:
        return ds.read(1), ds.transform


@pytest.mark.parametrize("blend", [False, True])
def test_blocks_reproduce_the_whole_grid_run(tmp_path, data, blend):
    layout = WindowLayout(48, 8, blend)
    whole, _ = _run(tmp_path / "whole.tif", data, layout)
    blocks = plan_blocks(GRID, layout, 2)
    ni, nj = layout.shape(GRID)
    assert len(blocks) == -(-ni // 2) * -(-nj // 2)
    covered = np.zeros((H, W), int)
    for b in blocks:
        part, transform = _run(tmp_path / f"{b.id}.tif", data, layout, b.region)
        w = b.window
        r, c = int(w.row_off), int(w.col_off)
        assert int(w.row_off) % layout.stride == 0 and int(w.col_off) % layout.stride == 0
        assert transform == GRID.window_transform(w)
        assert np.array_equal(part, whole[r:r + part.shape[0], c:c + part.shape[1]]), b.id
        covered[r:r + part.shape[0], c:c + part.shape[1]] += 1
    assert (covered == 1).all()
    # the VRT of the blocks reads back as the whole raster
    vrt = tmp_path / "all.vrt"
    write_vrt(vrt, GRID, VrtBands(1, "float32", -9999.0), [(tmp_path / f"{b.id}.tif", b.window,
                                                            (int(b.window.width), int(b.window.height)))
                                                           for b in blocks])
    with rasterio.open(vrt) as ds:
        assert ds.transform == GRID.transform and np.array_equal(ds.read(1), whole)
    assert write_vrt(vrt, GRID, VrtBands(1, "float32", -9999.0), [(tmp_path / f"{b.id}.tif", b.window,
                     (int(b.window.width), int(b.window.height))) for b in blocks]) is False  # unchanged


def test_block_size_is_checked():
    with pytest.raises(InputError, match="BLOCK_WINDOWS"):
        plan_blocks(GRID, WindowLayout(48, 8), 0)


def test_manifest_keeps_blocks_of_the_same_run_only(tmp_path):
    folder = tmp_path / "run"
    m = Manifest(folder, {"a": 1}, True, Progress())
    (folder / "x.tif").write_text("block")
    m.mark_done("b1", {"windows_run": 4})
    assert Manifest(folder, {"a": 1}, True, Progress()).is_done("b1", [str(folder / "x.tif")])
    assert not Manifest(folder, {"a": 1}, True, Progress()).is_done("b1", [str(folder / "missing.tif")])
    other = Manifest(folder, {"a": 2}, True, Progress())
    assert other.done == {} and not (folder / "x.tif").exists()
    assert json.loads((folder / "manifest.json").read_text())["fingerprint"] == {"a": 2}


def _tile(path, col, row, crs="EPSG:32636", res=0.5, size=(20, 30)):
    t = Affine(res, 0, 1000 + col * 0.5, 0, -res, 2000 - row * 0.5)
    arr = np.full((1, *size), col + row + 1, np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=size[1], height=size[0], count=1, dtype="uint8", crs=crs,
                       transform=t, nodata=0) as ds:
        ds.write(arr)
    return str(path)


def test_tile_mosaic_and_its_refusals(tmp_path):
    a, b = _tile(tmp_path / "a.tif", 0, 0), _tile(tmp_path / "b.tif", 30, 20)
    assert tile_paths(str(tmp_path)) == [a, b] and tile_paths(f"{a},{b}") == [a, b] and tile_paths(a) is None
    vrt = mosaic_tiles([a, b], tmp_path / "m.vrt")
    with rasterio.open(vrt) as ds:
        x = ds.read(1)
        assert ds.shape == (40, 60) and ds.nodata == 0
    assert (x[:20, :30] == 1).all() and (x[20:, 30:] == 51).all() and (x[:20, 30:] == 0).all()
    other = _tile(tmp_path / "c.tif", 0, 40, crs="EPSG:32736")
    with pytest.raises(InputError, match="different CRSs.*gdalwarp -t_srs EPSG:32636"):
        mosaic_tiles([a, other], tmp_path / "bad.vrt")
    off = _tile(tmp_path / "d.tif", 0.5, 40)
    with pytest.raises(InputError, match="not on the pixel grid"):
        mosaic_tiles([a, off], tmp_path / "bad.vrt")
    coarse = _tile(tmp_path / "e.tif", 0, 40, res=1.0)
    with pytest.raises(InputError, match="pixels of 1 x 1"):
        mosaic_tiles([a, coarse], tmp_path / "bad.vrt")
    assert not (tmp_path / "bad.vrt").exists()


def test_building_attributes_do_not_depend_on_where_blocks_cut(tmp_path):
    rng = np.random.default_rng(3)
    mask = (rng.random((90, 130)) > 0.45).astype(np.uint8)
    probs = rng.random((3, 90, 130)).astype(np.float32)
    t = Affine(0.5, 0, 1000, 0, -0.5, 2000)
    for name, arr, dt in (("m.tif", mask[None], "uint8"), ("p.tif", probs, "float32")):
        with rasterio.open(tmp_path / name, "w", driver="GTiff", width=130, height=90, count=arr.shape[0], dtype=dt,
                           crs="EPSG:32636", transform=t) as ds:
            ds.write(arr)
    rows = {}
    for bs in (512, 17):
        out = tmp_path / f"b{bs}.gpkg"
        s = polygonize_buildings(str(tmp_path / "m.tif"), str(tmp_path / "p.tif"), str(out), 0.25, block_size=bs)
        info = pyogrio.read_info(str(out))
        _, _, wkb, f = pyogrio.raw.read(str(out))
        keys = [shapely.normalize(shapely.simplify(g, 0)).wkt for g in shapely.from_wkb(wkb)]  # no collinear points
        rows[bs] = dict(zip(keys, zip(*[list(x) for x in f])))
        assert list(info["fields"])[:2] == ["use_class", "use_name"]
        if bs == 17:
            assert s["merged_across_blocks"] > 0
    assert rows[512] == rows[17]  # same buildings, bit-identical attributes


def test_unreadable_partial_files_are_discarded_on_resume(tmp_path, data):
    """A worker killed before GDAL wrote its file's header leaves a partial file that cannot be
    opened: the next attempt starts the block afresh instead of failing."""
    from edifice.core.errors import Cancelled

    layout = WindowLayout(48, 8)
    whole, _ = _run(tmp_path / "whole.tif", data, layout)

    class StopAfterFirstRow(Progress):
        def __init__(self):
            self.n = 0

        def set_fraction(self, f):
            self.n += 1

        def is_cancelled(self):
            return self.n >= 6

    out = RasterOutput(str(tmp_path / "block.tif"), 1, "float32", -9999.0)
    with pytest.raises(Cancelled):
        run_sliding_window(GRID, layout, lambda: Reader(data), Predictor(WindowContext(), "cpu"), [out],
                           lambda v, ok: [v], batch_size=1, progress=StopAfterFirstRow())
    assert out.partial.exists()
    out.partial.write_bytes(b"II*\x00 truncated")
    again, _ = _run(tmp_path / "block.tif", data, layout)
    assert np.array_equal(again, whole) and not out.partial.exists()


try:  # imported at collection (a worktree folder named 'dask' shadows the package later in this session)
    import distributed
except ImportError:  # pragma: no cover - dask is pinned in requirements.lock
    distributed = None


def test_cluster_addresses_are_checked(monkeypatch):
    from edifice.core.cluster import client

    assert client.parse_cluster("local:3") == ("local", 3)
    assert client.parse_cluster("10.0.0.5:8786") == ("address", "tcp://10.0.0.5:8786")
    for bad in ("local:0", "local:x", "scheduler"):
        with pytest.raises(InputError, match="CLUSTER"):
            client.parse_cluster(bad)
    # local:N spawns workers with sys.executable: refused where that is not Python (a GUI binary)
    if distributed is None:
        pytest.skip("dask.distributed is not installed")
    monkeypatch.setattr(client.sys, "executable", "/usr/bin/qgis")
    with pytest.raises(InputError, match="local:N starts Python worker processes.*tcp://127.0.0.1:8786"):
        with client.connect("local:2", Progress()):
            pass


def test_a_changed_tile_invalidates_the_finished_blocks(tmp_path, monkeypatch):
    """The manifest fingerprint holds every tile: new pixels in one tile (same size and place, so the
    VRT of the tiles is unchanged) make a rerun discard the finished blocks."""
    from edifice.core.cluster import building_use as bu

    a, b = _tile(tmp_path / "a.tif", 0, 0), _tile(tmp_path / "b.tif", 30, 20)

    class FakePlan:
        fingerprint, paths, polygons = {"imagery": "x"}, {"use_class": "u"}, None

        class job:
            layout, grid = WindowLayout(48, 8), GRID

    first = bu._fingerprint(FakePlan, [a, b], 4)
    assert bu._fingerprint(FakePlan, [a, b], 4) == first
    import os
    os.utime(b, ns=(1, 1))
    assert bu._fingerprint(FakePlan, [a, b], 4) != first
