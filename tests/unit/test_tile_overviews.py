"""Overviews built from the tiles as the engine writes them (core/tile_overviews.py): pixel for pixel what GDAL
builds from the finished base image (``AVERAGE`` with nodata holes, ``NEAREST`` for palette rasters), without
GDAL re-reading the base; levels that do not halve exactly are GDAL's from the level below; odd sizes: GDAL from
the base."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling

import edifice.core.sliding_window as sw
from edifice.core.grid import Grid
from edifice.core.tile_overviews import halve_mean, halve_nearest, tile_levels
from edifice.core.use.building_use_map import _Reader
from edifice.core.sliding_window import RasterOutput, WindowLayout, run_sliding_window

H, W = 256, 1536  # divisible by 4: overview factors 2 and 4, each level exactly half the one below
LAYOUT = WindowLayout(128, 16)  # stride 96 (a multiple of 4): 3 x 16 tiles


def _grid(h, w):
    return Grid(Affine(0.5, 0, 1000, 0, -0.5, 2000), w, h, "EPSG:32636")


def _scene(folder, h, w, holes: bool = True):
    """A 2-band float32 GeoTIFF with nodata (-9) holes (``holes``; else none): the path."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:h, 0:w]
    data = np.stack([np.sin(xx / 37.0) * np.cos(yy / 23.0), rng.normal(size=(h, w))]).astype(np.float32)
    if holes:
        data[:, 10:71, 201:333] = -9.0   # overview blocks that mix valid and nodata pixels
        data[:, rng.random((h, w)) < 0.05] = -9.0
        data[:, :, w - 37:] = -9.0       # all-nodata overview pixels at the border
    path = folder / f"in_{h}_{w}_{holes}.tif"
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=2, dtype="float32", nodata=-9.0,
                       crs="EPSG:32636", transform=_grid(h, w).transform) as ds:
        ds.write(data)
    return str(path)


def predictor(x):
    return np.stack([1 / (1 + np.exp(-x[:, 0])), np.tanh(x[:, 0] * x[:, 1]) / 2 + 0.5], axis=1).astype(np.float32)


def _run(folder, scene, grid, **kwargs):
    outs = [RasterOutput(str(folder / "p.tif"), 2, "float32", -1.0),
            RasterOutput(str(folder / "c.tif"), 1, "uint8", 255, colormap={0: (0, 0, 0, 0), 1: (200, 30, 30, 255),
                                                                           255: (0, 0, 0, 0)})]
    run_sliding_window(grid, LAYOUT, lambda: _Reader(scene, grid, [1.0, 1.0], [0.0, 0.0], None, None), predictor,
                       outs, lambda v, ok: [v, (v[0:1] > 0.5).astype(np.uint8)], batch_size=3, **kwargs)
    return outs


def _levels(path) -> list[np.ndarray]:
    with rasterio.open(path) as ds:
        n = len(ds.overviews(1))
    out = []
    for k in range(n):
        with rasterio.open(path, overview_level=k) as ds:
            out.append(ds.read())
    return out


def _gdal_levels(o: RasterOutput, folder) -> list[np.ndarray]:
    """GDAL's overviews of ``o``'s base image, built in a copy."""
    with rasterio.open(o.path) as ds:
        base, profile, factors = ds.read(), dict(ds.profile), ds.overviews(1)
        colormap = ds.colormap(1) if o.colormap else None
    ref = folder / ("ref_" + o.path.rsplit("/", 1)[-1])
    with rasterio.open(ref, "w", **profile) as dst:
        dst.write(base)
        if colormap:
            dst.write_colormap(1, colormap)
    with rasterio.open(ref, "r+") as dst:
        dst.build_overviews(factors, Resampling.nearest if colormap else Resampling.average)
    return _levels(ref)


def _no_gdal_overviews(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("GDAL was asked to build the overviews from the base image")

    monkeypatch.setattr(sw, "build_internal_overviews", refuse)


@pytest.mark.parametrize("flush_seconds", [sw.FLUSH_SECONDS, 0.0])
def test_tile_overviews_equal_gdals_without_rereading_the_base(tmp_path, monkeypatch, flush_seconds):
    """flush 0: the files are closed and reopened after every tile row (another GDAL handle each time)."""
    _no_gdal_overviews(monkeypatch)
    grid = _grid(H, W)
    (tmp_path / "run").mkdir()
    for o in _run(tmp_path / "run", _scene(tmp_path, H, W), grid, flush_seconds=flush_seconds):
        got, want = _levels(o.path), _gdal_levels(o, tmp_path)
        assert [g.shape for g in got] == [(o.count, H // 2, W // 2), (o.count, H // 4, W // 4)]
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
        assert (got[0] == o.nodata).any() and (got[0] != o.nodata).any()


@pytest.mark.parametrize("ptype", ["uint8", "uint16"])
@pytest.mark.parametrize("holes", [True, False])
def test_integer_tile_overviews_equal_gdals(tmp_path, monkeypatch, ptype, holes):
    """Scaled integer probabilities (PROBABILITY_TYPE uint8/uint16): GDAL averages integers rounding half up;
    the levels built from the tiles are GDAL's, with and without nodata holes."""
    from edifice.core.use.probability_type import probability_encoding, quantise

    _no_gdal_overviews(monkeypatch)
    grid = _grid(H, W)
    scene = _scene(tmp_path, H, W, holes)
    dtype, nodata, scale = probability_encoding(ptype)
    o = RasterOutput(str(tmp_path / "q.tif"), 2, dtype, nodata, scale=scale)
    run_sliding_window(grid, LAYOUT, lambda: _Reader(scene, grid, [1.0, 1.0], [0.0, 0.0], None, None), predictor,
                       [o], lambda v, ok: [quantise(v, ptype)], batch_size=3)
    got, want = _levels(o.path), _gdal_levels(o, tmp_path)
    assert len(got) == 2
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert ((got[0] == nodata).any() and (got[0] != nodata).any()) == holes
    with rasterio.open(o.path) as ds:
        assert ds.scales == (scale, scale) and ds.offsets == (0.0, 0.0) and ds.nodata == nodata
        assert ds.dtypes[0] == ptype


def test_integer_halving_by_hand():
    """Half up: (sum + n // 2) // n of the valid pixels."""
    x = np.array([[[1, 2, 5, 255], [2, 255, 255, 255]]], np.uint8)      # 5/3 -> 2 (1.67), 5 -> 5
    np.testing.assert_array_equal(halve_mean(x, 255), [[[2, 5]]])
    y = np.array([[[1, 2, 1, 1], [2, 2, 1, 2]]], np.uint16)             # 7/4 = 1.75 -> 2, 5/4 = 1.25 -> 1
    np.testing.assert_array_equal(halve_mean(y, 65535), [[[2, 1]]])
    z = np.array([[[1, 2, 0, 1], [255, 255, 0, 0]]], np.uint8)          # 3/2 = 1.5 -> 2 (ties up), 1/4 -> 0
    np.testing.assert_array_equal(halve_mean(z, 255), [[[2, 0]]])
    big = np.full((1, 2, 2), 65534, np.uint16)                          # no overflow of the sum
    np.testing.assert_array_equal(halve_mean(big, 65535), [[[65534]]])


def _gdal_run(folder, scene, grid, monkeypatch) -> list[RasterOutput]:
    """The same run with every overview built by GDAL from the finished base (as before tile overviews)."""
    with monkeypatch.context() as m:
        m.setattr(sw, "tile_levels", lambda *a: 0)
        folder.mkdir()
        return _run(folder, scene, grid)


@pytest.mark.parametrize("h, w", [(250, 1530), (256, 2052)])
def test_levels_not_halving_exactly_are_gdals_from_the_level_below(tmp_path, monkeypatch, h, w):
    """1530 px: level 2 would be 382.5 px wide, GDAL weights fractional pixels there; 2052 = 4 x 513: levels 1
    and 2 from the tiles, level 3 (513 -> 257 px) by GDAL. The base is not read; the outputs are those of GDAL's
    overviews of the finished base."""
    scene, grid = _scene(tmp_path, h, w), _grid(h, w)
    refs = _gdal_run(tmp_path / "ref", scene, grid, monkeypatch)
    _no_gdal_overviews(monkeypatch)
    (tmp_path / "run").mkdir()
    for o, r in zip(_run(tmp_path / "run", scene, grid), refs):
        got, want = _levels(o.path), _levels(r.path)
        assert len(got) == len(want) == (2 if w == 1530 else 3)
        for g, ref in zip(got, want):
            np.testing.assert_array_equal(g, ref)
        with rasterio.open(o.path) as a, rasterio.open(r.path) as b:
            np.testing.assert_array_equal(a.read(), b.read())


def test_odd_sizes_fall_back_to_gdal(tmp_path, monkeypatch):
    calls = []
    real = sw.build_internal_overviews
    monkeypatch.setattr(sw, "build_internal_overviews", lambda *a: calls.append(1) or real(*a))
    h, w = 250, 1531
    (tmp_path / "run").mkdir()
    outs = _run(tmp_path / "run", _scene(tmp_path, h, w), _grid(h, w))
    assert len(calls) == len(outs)
    for g, ref in zip(_levels(outs[0].path), _gdal_levels(outs[0], tmp_path)):
        np.testing.assert_array_equal(g, ref)


def test_tile_levels():
    assert tile_levels(1536, 256, [2, 4], 96, "float32", -1.0) == 2
    assert tile_levels(1530, 256, [2, 4], 96, "float32", -1.0) == 1    # width not a multiple of 4
    assert tile_levels(1531, 256, [2, 4], 96, "float32", -1.0) == 0    # odd width
    assert tile_levels(1536, 256, [2, 4], 90, "float32", -1.0) == 1    # tiles not on multiples of 4
    assert tile_levels(1536, 256, [2, 4], 96, "float32", float("nan")) == 0
    assert tile_levels(1536, 256, [], 96, "uint8", 255) == 0
    assert tile_levels(1536, 256, [2, 4], 0, "uint8", 255) == 0


def test_halving_by_hand():
    x = np.array([[[1, 2, 5, -1], [3, -1, -1, -1]]], np.float32)
    np.testing.assert_array_equal(halve_mean(x, -1.0), np.array([[[2.0, 5.0]]], np.float32))
    np.testing.assert_array_equal(halve_mean(np.full((1, 2, 2), -1, np.float32), -1.0), [[[-1.0]]])
    np.testing.assert_array_equal(halve_mean(x, None), np.array([[[1.25, 0.5]]], np.float32))
    np.testing.assert_array_equal(halve_nearest(np.arange(16, dtype=np.uint8).reshape(1, 4, 4)), [[[0, 2], [8, 10]]])


def test_without_the_gdal_handle_gdal_builds_them_from_the_base(tmp_path, monkeypatch):
    """When the dataset's GDAL handle cannot be found, the run still ends with GDAL's overviews."""
    from edifice.core.tile_overviews import GdalOverviewWriter

    with pytest.raises(LookupError):
        GdalOverviewWriter(str(tmp_path / "not_open.tif"), 1, [2])

    def missing(path, count, factors):
        raise LookupError("no such dataset")

    calls = []
    real = sw.build_internal_overviews
    monkeypatch.setattr(sw, "GdalOverviewWriter", missing)
    monkeypatch.setattr(sw, "build_internal_overviews", lambda *a: calls.append(1) or real(*a))
    grid = _grid(H, W)
    (tmp_path / "run").mkdir()
    outs = _run(tmp_path / "run", _scene(tmp_path, H, W), grid)
    assert len(calls) == len(outs)
    for o in outs:
        for g, w in zip(_levels(o.path), _gdal_levels(o, tmp_path)):
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
@pytest.mark.parametrize("nodata", [None, 0, 255, 255.0, -1.0, 2.5])
def test_compiled_whole_block_halving_gives_the_numpy_values(dtype, nodata):
    """The compiled pass over tiles without nodata (core/_overviews_compiled.py) gives the numpy halving's values
    (rounding half up, no overflow at the type's top), hands tiles with a nodata pixel back (None) and ignores a
    nodata the type cannot hold."""
    compiled = pytest.importorskip("edifice.core._overviews_compiled")
    if not compiled.AVAILABLE:
        pytest.skip("numba is not installed")
    import edifice.core.tile_overviews as to

    top = np.iinfo(dtype).max
    rng = np.random.default_rng(3)
    x = rng.integers(1, top, (3, 6, 10), endpoint=False).astype(dtype)
    x[0, :2, :2] = top - 1                      # the largest sums
    x[1, 2:4, 2:4] = [[1, 2], [2, 2]]           # 7/4 = 1.75 -> 2 ; below: 5/4 -> 1, ties (6/4) up
    x[1, 2:4, 4:6] = [[1, 1], [1, 2]]
    x[1, 2:4, 6:8] = [[1, 1], [2, 2]]
    if nodata not in (None, 255, 255.0) or dtype == "uint16":
        x[x == 255] = 254                         # 255 present only where it is the nodata under test
    fits = nodata is not None and float(nodata).is_integer() and 0 <= nodata <= top
    clean = compiled.halve_whole(x, nodata)
    want = to._WIDER[np.dtype(dtype)]
    sums = x[:, 0::2, 0::2].astype(want) + x[:, 0::2, 1::2] + x[:, 1::2, 0::2] + x[:, 1::2, 1::2]
    np.testing.assert_array_equal(clean, ((sums + 2) >> 2).astype(dtype))
    assert clean.dtype == np.dtype(dtype)
    assert (clean[1, 1, 1], clean[1, 1, 2], clean[1, 1, 3]) == (2, 1, 2)
    if fits:
        holed = x.copy()
        holed[2, 3, 5] = nodata
        assert compiled.halve_whole(holed, nodata) is None
        with_numpy = to._halve_int(holed, nodata)          # the caller's exact path with the hole
        assert with_numpy[2, 1, 2] == (int(holed[2, 2, 4]) + int(holed[2, 2, 5]) + int(holed[2, 3, 4]) + 1) // 3
