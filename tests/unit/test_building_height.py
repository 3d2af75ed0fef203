"""Issue 16 item 11: per-building height from a height raster (core of edifice:assignbuildingheight),
against hand computations: median over a fine raster, area-weighted over a coarse grid."""
import importlib.util
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely
from affine import Affine

from edifice.core.height.building_height import area_weighted_height, assign_building_height
from edifice.core.errors import InputError

_spec = importlib.util.spec_from_file_location("_eval_files", Path(__file__).with_name("_eval_files.py"))
_files = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_files)
X0, Y0 = 500_000.0, 4_000_000.0
CRS = "EPSG:32650"


def _read(path):
    meta, _, _, data = pyogrio.raw.read(str(path))
    return dict(zip(meta["fields"], data))


def test_median_on_a_fine_raster_is_robust(tmp_path):
    """1 m nDSM: a 6 x 6 m building at 12 m with one 40 m pixel (a mast) and ground (0 m) around it."""
    h = np.zeros((20, 20), np.float32)
    h[5:11, 5:11] = 12.0
    h[6, 6] = 40.0
    h[7, 7] = -9999.0                                  # nodata pixel inside: skipped
    ras = _files.write_raster(tmp_path / "ndsm.tif", h, Affine(1, 0, X0, 0, -1, Y0), CRS, nodata=-9999.0)
    b = _files.write_polys(tmp_path / "b.gpkg", [shapely.box(X0 + 5, Y0 - 11, X0 + 11, Y0 - 5),
                                                 shapely.box(X0 + 50, Y0 - 60, X0 + 55, Y0 - 55)],
                           {"name": ["a", "off the raster"]}, CRS)
    out = tmp_path / "out.gpkg"
    res = assign_building_height(b, ras, str(out))
    f = _read(out)
    assert f["name"].tolist() == ["a", "off the raster"]            # own fields kept
    assert f["height"][0] == pytest.approx(12.0) and f["height_pixels"][0] == 35
    assert f["height_source"][0] == "ndsm.tif:median" and np.isnan(f["height"][1]) and f["height_source"][1] is None
    assert res == {"output": str(out), "buildings": 2, "with_height": 1, "without_height": 1, "median": 1,
                   "area_weighted": 0}
    info = pyogrio.read_info(out)
    assert dict(zip(info["fields"], info["dtypes"]))["height"] == "float64"


def test_area_weighted_on_a_coarse_grid(tmp_path):
    """100 m grid (SHAFTS): a 40 x 20 m building straddling two cells, 30 m by 10 m in each."""
    grid = np.array([[10.0, 20.0], [30.0, -9999.0]], np.float32)
    ras = _files.write_raster(tmp_path / "shafts.tif", grid, Affine(100, 0, X0, 0, -100, Y0), CRS, nodata=-9999.0)
    g = shapely.box(X0 + 70, Y0 - 50, X0 + 110, Y0 - 30)        # 30 m in cell (0,0), 10 m in (0,1)
    b = _files.write_polys(tmp_path / "b.gpkg", [g], {"id": [1]}, CRS)
    out = tmp_path / "out.gpkg"
    assign_building_height(b, ras, str(out))
    f = _read(out)
    assert f["height"][0] == pytest.approx((600 * 10.0 + 200 * 20.0) / 800)
    assert f["height_source"][0] == "shafts.tif:area_weighted" and f["height_pixels"][0] == 2
    # by hand, without the files; an invalid cell does not count
    valid = np.array([[True, False]])
    h, n = area_weighted_height(g, np.array([[10.0, 20.0]]), valid, Affine(100, 0, X0, 0, -100, Y0))
    assert (h, n) == (pytest.approx(10.0), 1)


def test_errors(tmp_path):
    ras = _files.write_raster(tmp_path / "h.tif", np.ones((4, 4), np.float32), Affine(1, 0, X0, 0, -1, Y0), CRS)
    b = _files.write_polys(tmp_path / "b.gpkg", [shapely.box(X0, Y0 - 2, X0 + 2, Y0)], {"height": [3.0]}, CRS)
    with pytest.raises(InputError, match="already has field.*height"):
        assign_building_height(b, ras, str(tmp_path / "o.gpkg"))
    with pytest.raises(InputError, match="METHOD"):
        assign_building_height(b, ras, str(tmp_path / "o.gpkg"), method="mean", height_field="h")
    assert not (tmp_path / "o.gpkg").exists()


def test_cli(tmp_path):
    import subprocess
    import sys
    h = np.full((10, 10), 7.5, np.float32)
    ras = _files.write_raster(tmp_path / "h.tif", h, Affine(1, 0, X0, 0, -1, Y0), CRS)
    b = _files.write_polys(tmp_path / "b.gpkg", [shapely.box(X0 + 1, Y0 - 5, X0 + 5, Y0 - 1)], {"id": [1]}, CRS)
    out = tmp_path / "o.gpkg"
    r = subprocess.run([sys.executable, "-m", "edifice.core.cli", "assign-building-height", b, ras, str(out),
                        "--method", "area_weighted"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    f = _read(out)
    assert f["height"][0] == pytest.approx(7.5) and f["height_pixels"][0] == 16
    r = subprocess.run([sys.executable, "-m", "edifice.core.cli", "assign-building-height", b,
                        str(tmp_path / "missing.tif"), str(tmp_path / "o2.gpkg")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "edifice: error: HEIGHT" in r.stderr and not (tmp_path / "o2.gpkg").exists()
