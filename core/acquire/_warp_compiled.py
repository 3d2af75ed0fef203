"""Compiled (numba) bilinear warp of an RGBA tile mosaic whose alpha is 0 or 255: the four
bands read once per output pixel, the colours weighted by alpha, the valid mask and the
nodata rule applied in the same pass (GDAL's warp reads and writes each band separately,
then :func:`.imagery._rgb_where_valid` makes two more passes).

The kernel is GDAL's four-sample bilinear formula (``GWKBilinearResampleNoMasks4SampleT``:
pixel centres, weights ``1 - f`` and ``f``), which GDAL uses when the output pixels are at
most ~5 % larger than the source's (:data:`MAX_SOURCE_PIXELS_PER_OUTPUT_PIXEL`); wider ratios
are left to GDAL. Source coordinates are exact (pyproj) on a coarse grid of output pixels
(every :data:`GRID_STEP` pixels) and bilinearly interpolated between (GDAL's approximate
transformer interpolates along rows with a 0.125 pixel error threshold; between UTM and Web
Mercator the interpolation error here is below 1e-4 pixel, checked by :func:`grid_error`).

Optional: :data:`AVAILABLE` is False when numba is not installed (the caller then uses GDAL's
warp). Compiled code is cached on disk (numba ``cache=True``): the first run in a new
environment spends a few seconds compiling. ``nogil``: blocks warp in parallel threads.
"""
from __future__ import annotations

import math

import numpy as np

from ._warp_grid import (GRID_STEP, MAX_SOURCE_PIXELS_PER_OUTPUT_PIXEL, four_sample_bilinear_applies, grid_error,
                         source_pixel_grid)

try:  # pragma: no cover - exercised when numba is installed
    import numba
except ImportError:  # pragma: no cover
    numba = None

AVAILABLE = numba is not None
__all__ = ["AVAILABLE", "GRID_STEP", "MAX_SOURCE_PIXELS_PER_OUTPUT_PIXEL", "four_sample_bilinear_applies", "grid_error",
           "source_pixel_grid", "warm_up", "warp_binary_alpha"]


def warp_binary_alpha(src: np.ndarray, rows: np.ndarray, cols: np.ndarray, sx: np.ndarray, sy: np.ndarray,
                      shape: tuple[int, int]) -> np.ndarray:
    """(3, rows, cols) uint8 RGB of ``src`` ((4, H, W) uint8 RGBA, alpha 0 or 255) warped
    bilinearly to the output pixels whose source coordinates the grid (``rows``, ``cols``,
    ``sx``, ``sy`` of :func:`source_pixel_grid`) gives: colours weighted by alpha, 0 where
    the interpolated alpha rounds below 128, at least 1 elsewhere. Outside ``src``: alpha 0."""
    out = np.empty((3, shape[0], shape[1]), np.uint8)
    _kernel(np.ascontiguousarray(src), rows, cols, sx, sy, out)
    return out


def warm_up() -> None:
    """Compile or load the kernel (numba: ~1 s on first use in a process) on a tiny image."""
    if not AVAILABLE:
        return
    from affine import Affine

    rows, cols, sx, sy = source_pixel_grid(Affine.identity(), "EPSG:3857", Affine.identity(), "EPSG:3857", (2, 2))
    warp_binary_alpha(np.zeros((4, 2, 2), np.uint8), rows, cols, sx, sy, (2, 2))


def _interp_row(r, rows, sx, sy, row_x, row_y):
    """Source coordinates at the grid's columns, interpolated to output row ``r``."""
    i = 0
    while i < len(rows) - 2 and rows[i + 1] <= r:
        i += 1
    t = (r - rows[i]) / (rows[i + 1] - rows[i]) if len(rows) > 1 else 0.0
    j = min(i + 1, len(rows) - 1)
    for k in range(sx.shape[1]):
        row_x[k] = sx[i, k] + t * (sx[j, k] - sx[i, k])
        row_y[k] = sy[i, k] + t * (sy[j, k] - sy[i, k])


def _kernel(src, rows, cols, sx, sy, out):
    """Row by row: source positions and weights of the row's pixels first, then each band in its
    own pass (one source plane at a time: fewer cache lines in flight)."""
    height, width = src.shape[1], src.shape[2]
    n_rows, n_cols = out.shape[1], out.shape[2]
    row_x = np.empty(sx.shape[1])
    row_y = np.empty(sx.shape[1])
    ix = np.empty(n_cols, np.int64)
    iy = np.empty(n_cols, np.int64)
    fx = np.empty(n_cols)
    fy = np.empty(n_cols)
    opaque = np.empty(n_cols, np.bool_)
    planes = src.reshape(src.shape[0], height * width)
    for r in range(n_rows):
        _interp_row(r, rows, sx, sy, row_x, row_y)
        _row_positions(row_x, row_y, cols, n_cols, planes[3], height, width, ix, iy, fx, fy, opaque)
        for c in range(n_cols):
            if not opaque[c]:
                _edge_sample(src, ix[c], iy[c], fx[c], fy[c], out, r, c)
        for b in range(3):
            plane = planes[b]
            for c in range(n_cols):
                if opaque[c]:  # all four opaque and inside: GDAL's formula as it is
                    o = iy[c] * width + ix[c]
                    x = fx[c]
                    y = fy[c]
                    v = ((1.0 - x) * (1.0 - y) * plane[o] + x * (1.0 - y) * plane[o + 1]
                         + (1.0 - x) * y * plane[o + width] + x * y * plane[o + width + 1])
                    out[b, r, c] = _colour(v)


def _row_positions(row_x, row_y, cols, n_cols, alpha, height, width, ix, iy, fx, fy, opaque):
    """For each pixel of a row: its top-left source neighbour (``ix``, ``iy``), the fractions
    (``fx``, ``fy``) and whether its four neighbours are inside the source and opaque (``alpha``:
    the flattened alpha plane). Coordinates step linearly within a cell of the grid."""
    for k in range(max(len(cols) - 1, 1)):
        c_start = int(cols[k])
        c_end = int(cols[k + 1]) + 1 if k == len(cols) - 2 else (int(cols[k + 1]) if len(cols) > 1 else 1)
        span = cols[k + 1] - cols[k] if len(cols) > 1 else 1.0
        dx = (row_x[k + 1] - row_x[k]) / span if len(cols) > 1 else 0.0
        dy = (row_y[k + 1] - row_y[k]) / span if len(cols) > 1 else 0.0
        for c in range(c_start, min(c_end, n_cols)):
            t = c - cols[k]
            x = row_x[k] + t * dx - 0.5
            y = row_y[k] + t * dy - 0.5
            i = int(math.floor(x))
            j = int(math.floor(y))
            ix[c] = i
            iy[c] = j
            fx[c] = x - i
            fy[c] = y - j
            o = j * width + i
            opaque[c] = (0 <= i and i + 1 < width and 0 <= j and j + 1 < height
                         and (alpha[o] & alpha[o + 1] & alpha[o + width] & alpha[o + width + 1]) == 255)


def _edge_sample(src, ix, iy, fx, fy, out, r, c):
    """A pixel with a transparent or outside neighbour (top-left one ``ix``, ``iy``): colours
    weighted by alpha (neighbours outside the source count as transparent); nodata where the
    warped alpha rounds below 128."""
    height, width = src.shape[1], src.shape[2]
    a = 0.0
    c0 = 0.0
    c1 = 0.0
    c2 = 0.0
    for dy in range(2):
        yy = iy + dy
        if yy < 0 or yy >= height:
            continue
        wy = fy if dy else 1.0 - fy
        for dx in range(2):
            xx = ix + dx
            if xx < 0 or xx >= width or src[3, yy, xx] == 0:
                continue
            w = wy * (fx if dx else 1.0 - fx)
            a += w
            c0 += w * src[0, yy, xx]
            c1 += w * src[1, yy, xx]
            c2 += w * src[2, yy, xx]
    if a * 255.0 + 0.5 < 128.0:  # GDAL's warped alpha, rounded, below 128: nodata
        out[0, r, c] = 0
        out[1, r, c] = 0
        out[2, r, c] = 0
        return
    out[0, r, c] = _colour(c0 / a)
    out[1, r, c] = _colour(c1 / a)
    out[2, r, c] = _colour(c2 / a)


def _colour(v):
    """``v`` rounded (half up, as GDAL) into 1..255 (0 is nodata)."""
    q = int(v + 0.5)
    return 1 if q < 1 else (255 if q > 255 else q)


if AVAILABLE:  # pragma: no branch
    _interp_row = numba.njit(cache=True, nogil=True)(_interp_row)
    _colour = numba.njit(cache=True, nogil=True, inline="always")(_colour)
    _row_positions = numba.njit(cache=True, nogil=True)(_row_positions)
    _edge_sample = numba.njit(cache=True, nogil=True)(_edge_sample)
    _kernel = numba.njit(cache=True, nogil=True)(_kernel)
