"""Fishnet reference grids (Eq. 1-2) and the paper's sample filters, with hand-computed squares."""
import numpy as np
import pytest
import rasterio
import shapely

from edifice.core.errors import InputError
from edifice.core.height.reference_grids import (building_grids, fishnet_grid, reference_grids_from_file,
                                          sample_filter)

BUILDINGS = [
    (shapely.box(50, 150, 150, 190), 10.0),   # 2000 m² in cell (0,0), 2000 m² in (0,1)
    (shapely.box(10, 110, 30, 130), 30.0),    # 400 m² in (0,0)
    (shapely.box(120, 20, 180, 80), 50.0),    # 3600 m² in (1,1)
    (shapely.box(90, 90, 110, 110), 6.0),     # 100 m² in each of the four cells
    (shapely.box(190, -20, 230, 10), 8.0),    # 100 m² inside (1,1), the rest outside the grid
    (shapely.box(20, 20, 40, 40), np.nan),    # no height: skipped
]
EXP_LAMBDA = np.array([[2500, 2100], [100, 3800]]) / 100 ** 2
EXP_H = np.array([[(20000 + 12000 + 600) / 2500, (20000 + 600) / 2100],
                  [6.0, (180000 + 600 + 800) / 3800]])


def test_hand_computed_squares():
    grid = fishnet_grid((0, 0, 200, 200), 100)
    lam, h = building_grids([g for g, _ in BUILDINGS], [v for _, v in BUILDINGS], grid)
    np.testing.assert_allclose(lam, EXP_LAMBDA, rtol=1e-12)
    np.testing.assert_allclose(h, EXP_H, rtol=1e-12)


def test_empty_cells_and_chunking():
    grid = fishnet_grid((0, 0, 400, 200), 100)
    lam, h = building_grids([g for g, _ in BUILDINGS], [v for _, v in BUILDINGS], grid, chunk=1)
    np.testing.assert_allclose(lam[:, :2], EXP_LAMBDA)
    # the building reaching past x=200 now also fills cell (1,2) with 30 x 10 m²
    assert lam[1, 2] == pytest.approx(0.03) and h[1, 2] == pytest.approx(8.0)
    assert lam[0, 2] == 0 and np.all(lam[:, 3] == 0) and np.isnan(h[0, 2]) and np.all(np.isnan(h[:, 3]))


def test_sample_filter_paper_rules():
    s = 20                                  # 100 m model: λp_min = 1/400
    lam = np.array([0.1, 0.1, 0.1, 0.002, 0.0025, 0.005, 0.005, 0.011])
    h = np.array([1.9, 2.0, 501, 10, 10, 20, 21, 21])
    np.testing.assert_array_equal(sample_filter(lam, h, s),
                                  [False, True, False, False, False, True, False, True])
    assert not sample_filter(np.array([0.2]), np.array([np.nan]), s)[0]


def test_from_file(tmp_path):
    pyogrio = pytest.importorskip("pyogrio")
    path = tmp_path / "b.gpkg"
    geoms = [g for g, _ in BUILDINGS]
    pyogrio.raw.write(str(path), shapely.to_wkb(geoms), [np.array([v for _, v in BUILDINGS])], ["height"],
                      crs="EPSG:32650", geometry_type="Polygon", driver="GPKG")
    out = reference_grids_from_file(path, "height", 100, tmp_path / "lp.tif", tmp_path / "h.tif",
                                    extent=(0, 0, 200, 200))
    with rasterio.open(tmp_path / "lp.tif") as d:
        np.testing.assert_allclose(d.read(1), EXP_LAMBDA, rtol=1e-6)
        assert d.crs.to_epsg() == 32650
    with rasterio.open(tmp_path / "h.tif") as d:
        np.testing.assert_allclose(d.read(1), EXP_H, rtol=1e-6)
    assert out["cells_with_buildings"] == 4
    out = reference_grids_from_file(path, "height", 100, tmp_path / "lp2.tif", tmp_path / "h2.tif",
                                    extent=(0, 0, 200, 200), patch_size=20)
    assert out["samples"] == 4
    with pytest.raises(InputError, match="HEIGHT_FIELD"):
        reference_grids_from_file(path, "hgt", 100, tmp_path / "x.tif", tmp_path / "y.tif")
    geo = tmp_path / "g.gpkg"
    pyogrio.raw.write(str(geo), shapely.to_wkb(geoms[:1]), [np.array([1.0])], ["height"],
                      crs="EPSG:4326", geometry_type="Polygon", driver="GPKG")
    with pytest.raises(InputError, match="projected"):
        reference_grids_from_file(geo, "height", 100, tmp_path / "x.tif", tmp_path / "y.tif")


def test_far_apart_buildings_in_bounded_memory(tmp_path):
    """Issue 16 item 5: buildings spread far apart (here 300 km, 3000 x 3000 cells of 100 m; EUBUCCO's
    20 countries make 33200 x 29231) are gridded without full-grid arrays: the numpy allocations stay
    a small fraction of one float64 grid (72 MB here; the old code made four), and the values are right."""
    import tracemalloc

    pyogrio = pytest.importorskip("pyogrio")
    path = tmp_path / "far.gpkg"
    geoms = [shapely.box(0, -40, 100, 0), shapely.box(299_850, -300_000, 299_950, -299_900)]
    pyogrio.raw.write(str(path), shapely.to_wkb(geoms), [np.array([10.0, 20.0])], ["height"],
                      crs="EPSG:3035", geometry_type="Polygon", driver="GPKG")
    tracemalloc.start()
    out = reference_grids_from_file(path, "height", 100, tmp_path / "lp.tif", tmp_path / "h.tif")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out["cells_with_buildings"] == 3 and (out["grid"].width, out["grid"].height) == (3000, 3000)
    assert peak < 3000 * 3000 * 8 / 4, f"{peak / 1e6:.0f} MB allocated"
    with rasterio.open(tmp_path / "lp.tif") as d:
        lam = d.read(1)
    with rasterio.open(tmp_path / "h.tif") as d:
        h = d.read(1, masked=True)
    assert lam[0, 0] == pytest.approx(0.4) and lam[0, 1] == pytest.approx(0.0)  # 4000 m² of 10000 in cell (0, 0)
    assert lam[-1, -1] == pytest.approx(0.5) and lam[-1, -2] == pytest.approx(0.5)  # 100 x 100 m over two cells
    assert h.count() == 3 and h[-1, -1] == pytest.approx(20.0) and lam.sum() == pytest.approx(0.4 + 1.0)
