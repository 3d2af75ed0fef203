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
from typing import Sequence

import numpy as np
import shapely

from .outputs import refuse_input_as_output
from .errors import InputError
from .grid import Grid
from .progress import Progress, ensure

H_AVE_MIN_M = 2.0
H_AVE_MAX_M = 500.0
SLIVER_HEIGHT_M = 20.0


def fishnet_grid(extent: tuple[float, float, float, float], resolution_m: float, crs: str | None = None) -> Grid:
    """Fishnet of ``resolution_m`` metre cells anchored at (xmin, ymax) of ``extent`` (projected CRS, metres)."""
    return Grid.from_extent(*extent, pixel_size=float(resolution_m), crs=crs)


def building_grids(geometries: Sequence, heights: Sequence[float], grid: Grid, chunk: int = 200_000,
                   progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(λp, H_ave) on ``grid`` (square cells, projected CRS in metres) from building polygons and
    heights (m). λp is 0 and H_ave NaN in cells without buildings. Buildings with a missing or
    non-finite height, or empty geometry, are skipped."""
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
    area = np.zeros(grid.shape)
    weighted = np.zeros(grid.shape)
    if geoms.size:
        t = grid.transform
        b = shapely.bounds(geoms)                               # xmin, ymin, xmax, ymax
        c0 = np.clip(np.floor((b[:, 0] - t.c) / t.a), 0, grid.width - 1).astype(np.int64)
        c1 = np.clip(np.floor((b[:, 2] - t.c) / t.a), 0, grid.width - 1).astype(np.int64)
        r0 = np.clip(np.floor((b[:, 3] - t.f) / t.e), 0, grid.height - 1).astype(np.int64)
        r1 = np.clip(np.floor((b[:, 1] - t.f) / t.e), 0, grid.height - 1).astype(np.int64)
        ncell = (c1 - c0 + 1) * (r1 - r0 + 1)
        starts = np.concatenate([[0], np.cumsum(ncell)])
        for s in range(0, geoms.size, max(1, chunk // max(1, int(ncell.mean())))):
            progress.check_cancelled()
            e = min(geoms.size, s + max(1, chunk // max(1, int(ncell.mean()))))
            idx = np.repeat(np.arange(s, e), ncell[s:e])
            local = np.arange(starts[s], starts[e]) - np.repeat(starts[s:e], ncell[s:e])
            w = c1[idx] - c0[idx] + 1
            rows = r0[idx] + local // w
            cols = c0[idx] + local % w
            x0 = t.c + cols * t.a
            y1 = t.f + rows * t.e
            boxes = shapely.box(x0, y1 + t.e, x0 + t.a, y1)
            a = shapely.area(shapely.intersection(geoms[idx], boxes))
            np.add.at(area, (rows, cols), a)
            np.add.at(weighted, (rows, cols), a * h[idx])
            progress.set_fraction(e / geoms.size)
    lam = area / (rx * ry)
    with np.errstate(invalid="ignore", divide="ignore"):
        have = np.where(area > 0, weighted / np.where(area > 0, area, 1), np.nan)
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
    sample filters are applied (rejected cells become nodata in both outputs)."""
    from pyproj import CRS

    from .raster_io import atomic_raster
    from .vector_io import read_vector
    refuse_input_as_output({"OUTPUT_FOOTPRINT": out_footprint, "OUTPUT_HEIGHT": out_height},
                           {"INPUT": buildings_path})
    progress = ensure(progress)
    lyr = read_vector(buildings_path, "BUILDINGS", layer, columns=[height_field], fields_name="HEIGHT_FIELD",
                      what="a GeoPackage, shapefile or another OGR-readable polygon layer")
    geoms, values = lyr.geoms, lyr.fields[height_field]
    h = np.array([np.nan if v is None else v for v in values], dtype=np.float64) \
        if values.dtype == object else np.asarray(values, dtype=np.float64)
    crs_wkt = lyr.crs_wkt
    if not CRS.from_user_input(crs_wkt).is_projected:
        raise InputError("BUILDINGS", "is not on a projected CRS in metres.",
                         "reproject it to a local UTM zone first (Vector > Data Management > Reproject Layer).")
    crs = CRS.from_user_input(crs_wkt)
    unit = crs.axis_info[0].unit_name if crs.axis_info else "metre"
    if unit not in ("metre", "meter"):
        raise InputError("BUILDINGS", f"CRS units are {unit}, not metres.", "reproject it to a metric CRS.")
    if extent is None:
        extent = tuple(shapely.total_bounds(geoms))
    grid = fishnet_grid(extent, resolution_m, crs.to_wkt())
    lam, have = building_grids(geoms, h, grid, progress=progress.span(0, 0.9))
    valid = np.isfinite(have)
    if patch_size is not None:
        valid &= sample_filter(lam, have, patch_size)
    with atomic_raster(out_footprint, grid, 1, "float32", nodata=nodata,
                       descriptions=["building footprint fraction (plan area index)"],
                       style="footprint_fraction.qml") as df_, \
            atomic_raster(out_height, grid, 1, "float32", nodata=nodata,
                          descriptions=["area-weighted mean building height (m)"], style="height_m.qml") as dh:
        lam_out = np.where(valid, lam, nodata) if patch_size is not None else lam
        df_.write(lam_out.astype(np.float32)[None])
        dh.write(np.where(valid, have, nodata).astype(np.float32)[None])
    progress.set_fraction(1.0)
    return {"grid": grid, "cells_with_buildings": int(np.isfinite(have).sum()), "samples": int(valid.sum())}

