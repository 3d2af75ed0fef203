"""``edifice:assignbuildingheight``: a height per existing building footprint from a height raster
(a SHAFTS 100 m grid, an nDSM, a lidar height-above-ground raster), so that use
(``edifice:assignbuildinguse``) and height can be combined per building.

Two ways to read a building's height, chosen per building (``method="auto"``) or for all:

* ``median`` (fine rasters: the building holds at least ``min_pixels`` pixel centres): the median
  of the valid pixels whose centres the footprint holds, robust to edge pixels on the ground, trees
  over the roof and lidar noise; ``height_pixels`` = those pixels.
* ``area_weighted`` (coarse grids: cells larger than the building, e.g. SHAFTS' 100 m average
  height): Σ a_c · H_c / Σ a_c over the valid cells c the footprint overlaps, a_c the footprint's
  area inside cell c (raster CRS units²); ``height_pixels`` = those cells.

Heights are in the raster's unit (metres for the Edifice/SHAFTS outputs); nodata pixels are
skipped; a building with no valid pixel gets NULL. ``height_source`` names the raster and the
method, e.g. ``ndsm.tif:median``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely

from ..errors import InputError
from ..grid import Grid
from ..progress import Progress, ensure
from ..raster_io import open_raster, read_masked, require_crs

METHODS = ("auto", "median", "area_weighted")
#: With ``auto``, buildings holding fewer pixel centres than this are read area-weighted.
MIN_PIXELS = 4


def median_height(values: np.ndarray, valid: np.ndarray, inside: np.ndarray) -> tuple[float, int]:
    """(median of the valid values inside, their count); NaN when none."""
    sel = inside & valid
    if not sel.any():
        return float("nan"), 0
    return float(np.median(values[sel].astype(np.float64))), int(sel.sum())


def area_weighted_height(geom, values: np.ndarray, valid: np.ndarray, window_transform) -> tuple[float, int]:
    """(Σ a_c H_c / Σ a_c over the valid cells the polygon overlaps, number of such cells); NaN when
    none. ``values``/``valid`` cover the window whose transform is ``window_transform``."""
    rows, cols = np.nonzero(valid)
    if rows.size == 0:
        return float("nan"), 0
    t = window_transform
    x0, y0 = t.c + cols * t.a, t.f + rows * t.e
    cells = shapely.box(np.minimum(x0, x0 + t.a), np.minimum(y0, y0 + t.e),
                        np.maximum(x0, x0 + t.a), np.maximum(y0, y0 + t.e))
    a = shapely.area(shapely.intersection(geom, cells))
    if a.sum() <= 0:
        return float("nan"), 0
    return float((a * values[rows, cols]).sum() / a.sum()), int((a > 0).sum())


def _building_height(geom, ds, grid: Grid, method: str, min_pixels: int, band: int):
    """(height, pixels, method used) of one polygon (raster CRS); (NaN, 0, None) off the raster."""
    from ..zonal import bounds_window, polygon_pixels

    got = polygon_pixels(geom, grid)
    if got is None:
        return float("nan"), 0, None
    win, inside = got
    use = method
    if method == "auto":
        use = "median" if int(inside.sum()) >= min_pixels and win.width * win.height > 1 else "area_weighted"
    if use == "median":
        data, valid = read_masked(ds, win, "HEIGHT", [band])
        h, n = median_height(data[0], valid, inside)
        return h, n, use
    win = bounds_window(shapely.bounds(geom), grid)
    if win is None:
        return float("nan"), 0, None
    data, valid = read_masked(ds, win, "HEIGHT", [band])
    h, n = area_weighted_height(geom, data[0].astype(np.float64), valid, grid.window_transform(win))
    return h, n, use


def assign_building_height(buildings: str, height_raster: str, output: str, layer: str | None = None,
                           method: str = "auto", min_pixels: int = MIN_PIXELS, band: int = 1,
                           height_field: str = "height", progress: Progress | None = None) -> dict:
    """Give each polygon of ``buildings`` a height from ``height_raster`` (see the module doc);
    writes a GeoPackage (layer ``buildings``) with the layer's own fields plus ``height_field``
    (float, the raster's unit; NULL without a valid pixel), ``height_source`` (text) and
    ``height_pixels`` (integer). Polygons are reprojected to the raster's CRS when they differ."""
    from ..evaluation.tables import reproject_geoms
    from ..vector_io import read_vector
    from ..zonal import refuse_field_clash, write_with_fields

    progress = ensure(progress)
    if method not in METHODS:
        raise InputError("METHOD", f"'{method}' is not a method.", f"use one of {', '.join(METHODS)}.")
    if min_pixels < 1:
        raise InputError("MIN_PIXELS", f"must be at least 1, got {min_pixels}.")
    lyr = read_vector(buildings, "INPUT", layer, kind="Polygon",
                      what="a GeoPackage, GeoJSON or Shapefile of building polygons")
    refuse_field_clash(lyr.fields, [height_field, "height_source", "height_pixels"])
    name = Path(height_raster).name
    with open_raster(height_raster, "HEIGHT") as ds:
        rcrs = require_crs(ds, "HEIGHT")
        if not 1 <= band <= ds.count:
            raise InputError("BAND", f"band {band} does not exist (the raster has {ds.count}).")
        grid = Grid.from_dataset(ds)
        g = reproject_geoms(lyr.geoms, lyr.crs_wkt, rcrs, "INPUT")
        n = len(g)
        heights, pixels = np.full(n, np.nan), np.zeros(n, np.int64)
        source = np.full(n, None, dtype=object)
        for k in range(n):
            if k % 200 == 0:
                progress.check_cancelled()
                progress.set_fraction(0.95 * k / max(n, 1))
            heights[k], pixels[k], used = _building_height(g[k], ds, grid, method, min_pixels, band)
            if used and pixels[k]:
                source[k] = f"{name}:{used}"
    progress.check_cancelled()
    # float64 NaN is stored as NULL in the GeoPackage (SQLite has no NaN)
    write_with_fields(output, lyr, {height_field: heights, "height_source": source, "height_pixels": pixels},
                      style="building_height.qml")
    progress.set_fraction(1.0)
    used = [s.rsplit(":", 1)[1] for s in source if s]
    return {"output": output, "buildings": n, "with_height": int(np.isfinite(heights).sum()),
            "without_height": int((~np.isfinite(heights)).sum()),
            "median": used.count("median"), "area_weighted": used.count("area_weighted")}


__all__ = ["assign_building_height", "median_height", "area_weighted_height", "METHODS"]
