"""The grid-walk neighbour search of core/gapfill/search.py finds exactly what a KD-tree finds."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from edifice.core.gapfill.kriging import TIE_BREAK_PX, pixel_xy, tie_break_xy

pytest.importorskip("numba")
from edifice.core.gapfill.search import PixelGridIndex, pixel_offsets  # noqa: E402


def _scene(shape, seed, holes):
    """Known pixels of a window: random speckle plus large holes (deep gap pixels) of given radii."""
    rng = np.random.default_rng(seed)
    known = rng.random(shape) > 0.15
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    for r in holes:
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        known &= (yy - cy) ** 2 + (xx - cx) ** 2 > r * r
    return known


@pytest.mark.parametrize("aspect", [1.0, 1.37])
@pytest.mark.parametrize("radius,n", [(3.0, 32), (5.5, 8), (40.0, 32), (40.0, 1), (1e6, 17)])
def test_grid_walk_equals_kd_tree(aspect, radius, n):
    """Same neighbours (indices), same order, same distances as cKDTree.query on the tie-broken
    coordinates, for gap pixels at window edges, in speckle and deep inside holes, with radii that
    leave some gap pixels with fewer than n or no neighbour, on a window offset in the raster."""
    shape, r0, c0, width = (70, 90), 13, 29, 500
    known = _scene(shape, seed=int(radius) + n, holes=(6, 12, 25))
    kr, kc = np.nonzero(known)
    gr, gc = np.nonzero(~known)
    kxy = tie_break_xy(kr + r0, kc + c0, width, aspect)
    targets = pixel_xy(gr + r0, gc + c0, aspect)
    bound = radius + 2 * TIE_BREAK_PX
    ref_d, ref_i = cKDTree(kxy).query(targets, k=n, distance_upper_bound=bound)
    got_d, got_i = PixelGridIndex(kr, kc, kxy, shape, r0, c0, aspect).query(targets, n, bound)
    np.testing.assert_array_equal(got_i, ref_i)
    np.testing.assert_allclose(got_d, ref_d, rtol=1e-14)
    missing = ~np.isfinite(ref_d)
    if radius < 10:  # the small radii leave partial neighbourhoods and pixels without neighbour
        assert missing.any() and (~missing).any()


def test_offsets_are_sorted_and_complete():
    dy, dx, d = pixel_offsets(3.0, 1.0, (100, 100))
    assert (np.diff(d) >= 0).all() and d[0] == 0
    # pixels within 3 px on a unit grid: (dx, dy) with dx^2 + dy^2 <= 9 -> 29 of them
    assert d.size == 29 and d.max() == 3.0
    assert pixel_offsets(1e6, 1.0, (4, 5))[2].size == 9 * 11  # clipped to the window


def test_empty_index_finds_nothing():
    idx = PixelGridIndex(np.array([], int), np.array([], int), np.empty((0, 2)), (5, 5), 0, 0)
    d, i = idx.query(pixel_xy(np.array([1, 2]), np.array([3, 4])), 4, 10.0)
    assert np.isinf(d).all() and (i == 0).all()


def test_tool_output_is_the_same_with_the_kd_tree(tmp_path, monkeypatch):
    """The whole tool (small blocks, so windows sit at offsets and edges; rectangular pixels) writes
    bit-identical predictions and variances whether its neighbours come from the grid walk or a KD-tree."""
    import rasterio
    from affine import Affine
    from pyproj import CRS
    from scipy import ndimage

    from edifice.core.gapfill import GapSpec, KrigingSettings, cloud_gap_fill, fill
    from edifice.core.grid import Grid
    from edifice.core.raster_io import atomic_raster

    rng = np.random.default_rng(7)
    img = ndimage.gaussian_filter(rng.normal(size=(2, 70, 90)), (0, 3, 3)).astype(np.float32) * 100
    gap = ~_scene((70, 90), seed=3, holes=(5, 9, 14))
    grid = Grid(Affine(10, 0, 450000, 0, -13.7, 40000), 90, 70, CRS.from_epsg(32636).to_wkt())
    for name, arr in (("img", img), ("mask", gap.astype(np.uint8)[None])):
        with atomic_raster(tmp_path / f"{name}.tif", grid, arr.shape[0], arr.dtype) as dst:
            dst.write(arr)
    out = {}
    for how in ("grid", "tree"):
        if how == "tree":
            monkeypatch.setattr(fill, "_neighbour_index", lambda kr, kc, xy, *a: cKDTree(xy))
        dst, var = tmp_path / f"{how}.tif", tmp_path / f"{how}_var.tif"
        cloud_gap_fill(str(tmp_path / "img.tif"), str(dst), GapSpec(mask_path=str(tmp_path / "mask.tif")),
                       KrigingSettings(search_radius=12, max_lag=10), variance_path=str(var), block_size=32)
        out[how] = [rasterio.open(p).read() for p in (dst, var)]
    assert np.isfinite(out["grid"][1][:, gap]).mean() > 0.9  # most gap pixels kriged
    for a, b in zip(out["grid"], out["tree"]):
        np.testing.assert_array_equal(a, b)
