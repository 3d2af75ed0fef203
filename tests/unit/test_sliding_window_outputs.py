"""How the sliding-window engine writes its outputs (issue 17): compressed at the COMPRESSION level for the
whole run (GeoTIFFs are not reopened after every tile row: GDAL writes a reopened file at its default level),
rows put on disk for resuming at most every ``flush_seconds``, and internal overviews identical to what GDAL
builds from the finished base image (``gdaladdo -r average``, ``nearest`` for palette rasters)."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling

import edifice.core.sliding_window as sw
from edifice.core.grid import Grid
from edifice.core.raster_io import overview_compression_env, overview_factors
from edifice.core.use.building_use_map import _Reader
from edifice.core.sliding_window import RasterOutput, WindowLayout, compression_options, run_sliding_window

H, W = 150, 1300  # wider than 1024 px: the outputs get overviews (factors 2 and 4)
GRID = Grid(Affine(0.5, 0, 1000, 0, -0.5, 2000), W, H, "EPSG:32636")
LAYOUT = WindowLayout(128, 16)  # stride 96: 2 x 14 tiles, ragged last ones


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 2-band float32 GeoTIFF on GRID with nodata (-9) holes: the path."""
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:H, 0:W]
    data = np.stack([np.sin(xx / 37.0) * np.cos(yy / 23.0), rng.normal(size=(H, W))]).astype(np.float32)
    data[:, 10:70, 200:333] = -9.0  # overview pixels that mix valid and nodata pixels
    data[:, :, 1291:] = -9.0        # and a nodata strip on the ragged border
    path = tmp_path_factory.mktemp("scene") / "in.tif"
    with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=2, dtype="float32", nodata=-9.0,
                       crs=GRID.crs, transform=GRID.transform) as ds:
        ds.write(data)
    return str(path)


def predictor(x):
    """Per pixel: a smooth probability and a noisy one (numpy, the same bits whatever the batch)."""
    return np.stack([1 / (1 + np.exp(-x[:, 0])), np.tanh(x[:, 0] * x[:, 1]) / 2 + 0.5], axis=1).astype(np.float32)


def _run(folder, scene, **kwargs):
    folder.mkdir(parents=True, exist_ok=True)
    outs = [RasterOutput(str(folder / "p.tif"), 2, "float32", -1.0),
            RasterOutput(str(folder / "c.tif"), 1, "uint8", 255, colormap={0: (0, 0, 0, 0), 1: (200, 30, 30, 255),
                                                                           255: (0, 0, 0, 0)})]
    run_sliding_window(GRID, LAYOUT, lambda: _Reader(scene, GRID, [1.0, 1.0], [0.0, 0.0], None, None), predictor, outs,
                       lambda v, ok: [v, (v[0:1] > 0.5).astype(np.uint8)], batch_size=3, **kwargs)
    return outs


def _levels(path) -> list[np.ndarray]:
    with rasterio.open(path) as ds:
        factors = ds.overviews(1)
    out = []
    for k in range(len(factors)):
        with rasterio.open(path, overview_level=k) as ds:
            out.append(ds.read())
    return out


def test_overviews_are_gdals_overviews_of_the_finished_base(tmp_path, scene):
    for o in _run(tmp_path / "run", scene):
        with rasterio.open(o.path) as ds:
            assert ds.overviews(1) == [2, 4]
            base, profile = ds.read(), dict(ds.profile)
            colormap = ds.colormap(1) if o.colormap else None
        ref = tmp_path / ("ref_" + o.path.rsplit("/", 1)[-1])
        with rasterio.open(ref, "w", **profile) as dst:  # the base alone, then GDAL's overviews of it
            dst.write(base)
            if colormap:
                dst.write_colormap(1, colormap)
        with rasterio.open(ref, "r+") as dst:
            dst.build_overviews([2, 4], Resampling.nearest if colormap else Resampling.average)
        got, want = _levels(o.path), _levels(ref)
        assert [g.shape for g in got] == [(o.count, 75, 650), (o.count, 38, 325)]
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
        assert (got[0] == o.nodata).any() and (got[0] != o.nodata).any()  # nodata handled on both sides


def test_outputs_stay_open_until_a_flush_is_due_and_give_the_same_values(tmp_path, scene, monkeypatch):
    modes = []
    real_open = sw.rasterio.open

    def spy(path, mode="r", *args, **kwargs):
        modes.append(mode)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(sw.rasterio, "open", spy)
    once = _run(tmp_path / "once", scene, flush_seconds=float("inf"))  # no flush due during the run
    assert modes.count("w") == 2 and "r+" not in modes
    modes.clear()
    every = _run(tmp_path / "every", scene, flush_seconds=0)  # every tile row put on disk
    assert modes.count("r+") == 2 * LAYOUT.shape(GRID)[0]
    monkeypatch.undo()
    for a, b in zip(once, every):
        with rasterio.open(a.path) as x, rasterio.open(b.path) as y:
            np.testing.assert_array_equal(x.read(), y.read())
            assert x.profile == y.profile


def test_overviews_are_compressed_at_the_base_level():
    assert overview_compression_env(compression_options("zstd:1")) == {"ZSTD_LEVEL_OVERVIEW": "1"}
    assert overview_compression_env(compression_options("deflate:6")) == {"ZLEVEL_OVERVIEW": "6"}
    assert overview_compression_env(compression_options("lzw")) == {}
    assert overview_factors(1024, 300) == [] and overview_factors(1025, 10) == [2, 4]
    assert overview_factors(20000, 20000) == [2, 4, 8, 16, 32, 64]
