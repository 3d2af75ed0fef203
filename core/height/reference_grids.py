"""Reference building footprint and height grids by fishnet analysis (SHAFTS paper, Eq. 1-2).

For each cell of a square fishnet of side r metres (projected CRS):
  λp    = Σ_i A_i / r²                 (A_i: area of building i inside the cell, m²)
  H_ave = Σ_i A_i h_i / Σ_i A_i        (h_i: height of building i, m)
Overlapping polygons are counted as the formula says (each with its own area).

Sample filters (paper Sect. 2.2.3): 2 m <= H_ave <= 500 m; λp > 1/s² (s: patch size in 10 m
pixels, 20/40/80/160 for 100/250/500/1000 m); cells with λp < 4/s² and H_ave > 20 m ("sliver
polygons") are discarded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import shapely

from ..outputs import refuse_input_as_output
from ..errors import InputError
from ..grid import Grid
from ..progress import Progress, ensure

H_AVE_MIN_M = 2.0
H_AVE_MAX_M = 500.0
SLIVER_HEIGHT_M = 20.0


def fishnet_grid(extent: tuple[float, float, float, float], resolution_m: float, crs: str | None = None) -> Grid:
    """Fishnet of ``resolution_m`` metre cells anchored at (xmin, ymax) of ``extent`` (projected CRS, metres)."""
    return Grid.from_extent(*extent, pixel_size=float(resolution_m), crs=crs)


@dataclass
class SparseCells:
    """Cells of a fishnet that hold buildings: row, column, building area inside (m²) and
    Σ area · height (m³), one entry per cell, sorted by (row, column). Memory grows with the
    number of buildings, not with the extent."""

    rows: np.ndarray
    cols: np.ndarray
    area: np.ndarray
    weighted: np.ndarray

    def h_ave(self) -> np.ndarray:
        return self.weighted / self.area


def _cells_of(geoms, grid: Grid):
    """First/last row and column of the cells each building's bounds touch."""
    t = grid.transform
    b = shapely.bounds(geoms)                               # xmin, ymin, xmax, ymax
    c0 = np.clip(np.floor((b[:, 0] - t.c) / t.a), 0, grid.width - 1).astype(np.int64)
    c1 = np.clip(np.floor((b[:, 2] - t.c) / t.a), 0, grid.width - 1).astype(np.int64)
    r0 = np.clip(np.floor((b[:, 3] - t.f) / t.e), 0, grid.height - 1).astype(np.int64)
    r1 = np.clip(np.floor((b[:, 1] - t.f) / t.e), 0, grid.height - 1).astype(np.int64)
    return r0, r1, c0, c1


def building_cells(geometries: Sequence, heights: Sequence[float], grid: Grid, chunk: int = 200_000,
                   progress: Progress | None = None) -> SparseCells:
    """Building area and area-weighted height per fishnet cell, for the cells that hold buildings
    only (see :class:`SparseCells`). Buildings with a missing or non-finite height, or empty
    geometry, are skipped. Square cells, projected CRS in metres."""
    progress = ensure(progress)
    geoms = np.asarray(geometries, dtype=object)
    h = np.asarray(heights, dtype=np.float64)
    if geoms.shape != h.shape:
        raise InputError("HEIGHT", f"{h.size} heights for {geoms.size} buildings.")
    rx, ry = grid.res
    if not math.isclose(rx, ry, rel_tol=1e-9):
        raise InputError("GRID", f"cells must be square, got {rx} x {ry}.")
    keep = np.isfinite(h) & ~shapely.is_empty(geoms) & ~shapely.is_missing(geoms)
    geoms, h = geoms[keep], h[keep]
    keys, areas, sums = [], [], []
    if geoms.size:
        t = grid.transform
        r0, r1, c0, c1 = _cells_of(geoms, grid)
        ncell = (c1 - c0 + 1) * (r1 - r0 + 1)
        starts = np.concatenate([[0], np.cumsum(ncell)])
        step = max(1, chunk // max(1, int(ncell.mean())))
        for s in range(0, geoms.size, step):
            progress.check_cancelled()
            e = min(geoms.size, s + step)
            idx = np.repeat(np.arange(s, e), ncell[s:e])
            local = np.arange(starts[s], starts[e]) - np.repeat(starts[s:e], ncell[s:e])
            w = c1[idx] - c0[idx] + 1
            rows = r0[idx] + local // w
            cols = c0[idx] + local % w
            x0 = t.c + cols * t.a
            y1 = t.f + rows * t.e
            a = shapely.area(shapely.intersection(geoms[idx], shapely.box(x0, y1 + t.e, x0 + t.a, y1)))
            keys.append(rows * grid.width + cols)
            areas.append(a)
            sums.append(a * h[idx])
            progress.set_fraction(e / geoms.size)
    key = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    uniq, inv = np.unique(key, return_inverse=True)
    area = np.bincount(inv, np.concatenate(areas) if areas else None, minlength=uniq.size)
    weighted = np.bincount(inv, np.concatenate(sums) if sums else None, minlength=uniq.size)
    has = area > 0
    uniq, area, weighted = uniq[has], area[has], weighted[has]
    return SparseCells(uniq // grid.width, uniq % grid.width, area, weighted)


def building_grids(geometries: Sequence, heights: Sequence[float], grid: Grid, chunk: int = 200_000,
                   progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(λp, H_ave) on ``grid`` (square cells, projected CRS in metres) from building polygons and
    heights (m), as dense arrays (for grids that fit in memory; files are written block by block
    by :func:`reference_grids_from_file`). λp is 0 and H_ave NaN in cells without buildings."""
    cells = building_cells(geometries, heights, grid, chunk, progress)
    lam = np.zeros(grid.shape)
    have = np.full(grid.shape, np.nan)
    lam[cells.rows, cells.cols] = cells.area / (grid.res[0] * grid.res[1])
    have[cells.rows, cells.cols] = cells.h_ave()
    return lam, have


def sample_filter(lambda_p: np.ndarray, h_ave: np.ndarray, patch_size: int,
                  h_min: float = H_AVE_MIN_M, h_max: float = H_AVE_MAX_M,
                  sliver_height: float = SLIVER_HEIGHT_M) -> np.ndarray:
    """True where a cell is kept as a training sample: h_min <= H_ave <= h_max, λp > 1/s², and not
    (λp < 4/s² and H_ave > sliver_height). ``patch_size`` s in input pixels (20/40/80/160)."""
    lam = np.asarray(lambda_p, dtype=np.float64)
    h = np.asarray(h_ave, dtype=np.float64)
    lmin = 1.0 / patch_size ** 2
    with np.errstate(invalid="ignore"):
        ok = (h >= h_min) & (h <= h_max) & (lam > lmin)
        sliver = (lam < 4 * lmin) & (h > sliver_height)
    return ok & ~sliver


def reference_grids_from_file(buildings_path, height_field: str, resolution_m: float,
                              out_footprint, out_height, extent=None, layer=None, patch_size: int | None = None,
                              nodata: float = -9999.0, progress: Progress | None = None) -> dict:
    """Fishnet λp and H_ave GeoTIFFs (float32, ``nodata``) from a building polygon file whose CRS is
    projected in metres. ``extent`` defaults to the layer's bounds; with ``patch_size`` the paper's
    sample filters are applied (rejected cells become nodata in both outputs).

    Memory is bounded whatever the extent (buildings spread over a continent): the sums are kept
    for the cells that hold buildings only, and the rasters are written block by block."""
    refuse_input_as_output({"OUTPUT_FOOTPRINT": out_footprint, "OUTPUT_HEIGHT": out_height},
                           {"INPUT": buildings_path})
    progress = ensure(progress)
    geoms, h, crs = _read_buildings(buildings_path, height_field, layer, progress)
    if extent is None:
        extent = tuple(shapely.total_bounds(geoms[~shapely.is_missing(geoms)]))
    grid = fishnet_grid(extent, resolution_m, crs.to_wkt())
    cells = building_cells(geoms, h, grid, progress=progress.span(0, 0.5))
    if not cells.rows.size:
        raise InputError("EXTENT", "holds no building of BUILDINGS with a height (the extent is elsewhere, or "
                                   "every height is null).", "give an extent that covers the buildings, or none.")
    lam = cells.area / (grid.res[0] * grid.res[1])
    have = cells.h_ave()
    valid = np.ones(lam.shape, bool) if patch_size is None else sample_filter(lam, have, patch_size)
    if cells.rows.size * 50 < grid.width * grid.height:
        progress.info(f"{cells.rows.size} of {grid.width} x {grid.height} cells hold buildings: the grids are "
                      "mostly empty (give EXTENT to map one area).")
    _write_sparse(out_footprint, out_height, grid, cells, lam, have, valid, patch_size is not None, nodata,
                  progress.span(0.5, 1.0))
    progress.set_fraction(1.0)
    return {"grid": grid, "cells_with_buildings": int(cells.rows.size), "samples": int(valid.sum())}


def _read_buildings(buildings_path, height_field: str, layer, progress: Progress | None = None):
    """(geometries, heights in m, CRS) of a polygon layer on a projected CRS in metres."""
    from pyproj import CRS

    from ..vector_io import read_vector
    lyr = read_vector(buildings_path, "BUILDINGS", layer, columns=[height_field], fields_name="HEIGHT_FIELD",
                      what="a GeoPackage, shapefile or another OGR-readable polygon layer", kind="Polygon")
    h = _heights(lyr.fields[height_field], height_field)
    present = ~(shapely.is_missing(lyr.geoms) | shapely.is_empty(lyr.geoms))
    if not present.any():
        raise InputError("BUILDINGS", "holds no building geometry (the layer is empty, or every feature has "
                                      "a null geometry).", "give a layer of building polygons.")
    geoms = np.where(present, lyr.geoms, None)
    broken = present & ~shapely.is_valid(np.where(present, geoms, shapely.Point()))
    if broken.any():
        geoms[broken] = shapely.make_valid(geoms[broken])
        if progress is not None:
            progress.warning(f"BUILDINGS: {int(broken.sum())} invalid polygon(s) were repaired (make_valid).")
    if not CRS.from_user_input(lyr.crs_wkt).is_projected:
        raise InputError("BUILDINGS", "is not on a projected CRS in metres.",
                         "reproject it to a local UTM zone first (Vector > Data Management > Reproject Layer).")
    crs = CRS.from_user_input(lyr.crs_wkt)
    unit = crs.axis_info[0].unit_name if crs.axis_info else "metre"
    if unit not in ("metre", "meter"):
        raise InputError("BUILDINGS", f"CRS units are {unit}, not metres.", "reproject it to a metric CRS.")
    return geoms, h, crs


def _heights(values, field: str) -> np.ndarray:
    """Building heights (m) as float64, NaN for nulls; a text field of non-numbers is refused by name."""
    if values.dtype != object:
        return np.asarray(values, dtype=np.float64)
    out = np.full(len(values), np.nan)
    for k, v in enumerate(values):
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            raise InputError("HEIGHT_FIELD", f"field '{field}' holds text that is not a number ('{str(v)[:30]}').",
                             "choose a numeric height field (metres), or convert it in the field calculator.") \
                from None
    return out


#: Cells of the fishnet written at a time (whole rows, at least one).
WRITE_CELLS = 1_000_000


def _write_sparse(out_footprint, out_height, grid: Grid, cells: SparseCells, lam, have, valid, filtered: bool,
                  nodata: float, progress: Progress) -> None:
    """Write λp (0 where no building, nodata where filtered out) and H_ave (nodata where no building
    or filtered out) strip by strip, so that no full-grid array is ever made."""
    from rasterio.windows import Window

    from ..raster_io import atomic_raster
    big = grid.width * grid.height > 64_000_000  # overviews of a huge, mostly empty grid cost more than they give
    with atomic_raster(out_footprint, grid, 1, "float32", nodata=nodata, overviews=not big,
                       descriptions=["building footprint fraction (plan area index)"],
                       style="footprint_fraction.qml") as df_, \
            atomic_raster(out_height, grid, 1, "float32", nodata=nodata, overviews=not big,
                          descriptions=["area-weighted mean building height (m)"], style="height_m.qml") as dh:
        strip = max(1, WRITE_CELLS // grid.width)
        for r in range(0, grid.height, strip):
            progress.check_cancelled()
            n = min(strip, grid.height - r)
            lo, hi = np.searchsorted(cells.rows, [r, r + n])
            rr, cc = cells.rows[lo:hi] - r, cells.cols[lo:hi]
            fp = np.zeros((n, grid.width), np.float32)
            ht = np.full((n, grid.width), nodata, np.float32)
            ok = valid[lo:hi]
            fp[rr, cc] = np.where(ok, lam[lo:hi], nodata) if filtered else lam[lo:hi]
            ht[rr, cc] = np.where(ok, have[lo:hi], nodata)
            if filtered:  # cells without buildings fail the filters too
                empty = np.ones((n, grid.width), bool)
                empty[rr, cc] = False
                fp[empty] = nodata
            win = Window(0, r, grid.width, n)
            df_.write(fp[None], window=win)
            dh.write(ht[None], window=win)
            progress.set_fraction((r + n) / grid.height)
