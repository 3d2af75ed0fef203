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

Where the output grid is nearly aligned with the source's (UTM and Web Mercator over a block:
:func:`separable_applies`), :func:`_separable_kernel` does the same in two passes, along x then
along y, at half the cost; it is within 1 DN of the one-pass kernel (max 1 DN, mean 0.0024 DN
against gdalwarp on the benchmark's 600 m of Kampala, as the one-pass kernel: 1 DN, 0.0021).

Optional: :data:`AVAILABLE` is False when numba is not installed (the caller then uses GDAL's
warp). Compiled code is cached on disk (numba ``cache=True``): the first run in a new
environment spends a few seconds compiling. ``nogil``: blocks warp in parallel threads.
"""
from __future__ import annotations

import math

import numpy as np

from ._warp_grid import (GRID_STEP, MAX_SOURCE_PIXELS_PER_OUTPUT_PIXEL, SEPARABLE_MAX_SHIFT,
                         four_sample_bilinear_applies, grid_error, separable_applies, source_pixel_grid)

try:  # pragma: no cover - exercised when numba is installed
    import numba
except ImportError:  # pragma: no cover
    numba = None

AVAILABLE = numba is not None
#: Source rows resampled along x that :func:`_separable_kernel` keeps (a row reads two or three).
SEPARABLE_SLOTS = 4
__all__ = ["AVAILABLE", "GRID_STEP", "MAX_SOURCE_PIXELS_PER_OUTPUT_PIXEL", "SEPARABLE_MAX_SHIFT",
           "four_sample_bilinear_applies", "grid_error", "separable_applies", "source_pixel_grid", "warm_up",
           "warp_binary_alpha"]


def warp_binary_alpha(src: np.ndarray, rows: np.ndarray, cols: np.ndarray, sx: np.ndarray, sy: np.ndarray,
                      shape: tuple[int, int], separable: bool | None = None) -> np.ndarray:
    """(3, rows, cols) uint8 RGB of ``src`` ((4, H, W) uint8 RGBA, alpha 0 or 255) warped
    bilinearly to the output pixels whose source coordinates the grid (``rows``, ``cols``,
    ``sx``, ``sy`` of :func:`source_pixel_grid`) gives: colours weighted by alpha, 0 where
    the interpolated alpha rounds below 128, at least 1 elsewhere. Outside ``src``: alpha 0.
    ``separable``: in two passes (:func:`_separable_kernel`, within 1 DN of the one-pass kernel);
    None: where :func:`separable_applies`."""
    out = np.empty((3, shape[0], shape[1]), np.uint8)
    if separable is None:
        separable = separable_applies(rows, sx, sy)
    (_separable_kernel if separable else _kernel)(np.ascontiguousarray(src), rows, cols, sx, sy, out)
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
    """Row by row: the row's source coordinates at the grid's columns (:func:`_interp_row`),
    then its pixels, cell by cell of the grid (coordinates step linearly within a cell). Each
    pixel's four weights are computed once for its three bands: GDAL's four-sample formula, the
    same products in the same order, so the same values. A pixel with a transparent or outside
    neighbour goes to :func:`_edge_sample`. Offsets into the flattened planes are unsigned
    (checked in range first): numba then drops its wrap-around test of negative indices."""
    height, width = src.shape[1], src.shape[2]
    planes = src.reshape(src.shape[0], height * width)
    red, green, blue, alpha = planes[0], planes[1], planes[2], planes[3]
    out_red, out_green, out_blue = out[0], out[1], out[2]
    row_x = np.empty(sx.shape[1])
    row_y = np.empty(sx.shape[1])
    one, below = np.uint64(1), np.uint64(width)
    for r in range(out.shape[1]):
        _interp_row(r, rows, sx, sy, row_x, row_y)
        for k in range(max(len(cols) - 1, 1)):
            c_start, c_end, dx, dy = _cell_span(cols, k, row_x, row_y, out.shape[2])
            for c in range(c_start, c_end):
                x = row_x[k] + (c - cols[k]) * dx - 0.5
                y = row_y[k] + (c - cols[k]) * dy - 0.5
                i, j = int(math.floor(x)), int(math.floor(y))
                fx, fy = x - i, y - j
                if not (0 <= i and i + 1 < width and 0 <= j and j + 1 < height):
                    _edge_sample(src, i, j, fx, fy, out, r, c)
                    continue
                o = np.uint64(j * width + i)
                if (alpha[o] & alpha[o + one] & alpha[o + below] & alpha[o + below + one]) != 255:
                    _edge_sample(src, i, j, fx, fy, out, r, c)
                    continue
                w00, w10, w01, w11 = (1.0 - fx) * (1.0 - fy), fx * (1.0 - fy), (1.0 - fx) * fy, fx * fy
                out_red[r, c] = _colour(w00 * red[o] + w10 * red[o + one] + w01 * red[o + below]
                                        + w11 * red[o + below + one])
                out_green[r, c] = _colour(w00 * green[o] + w10 * green[o + one] + w01 * green[o + below]
                                          + w11 * green[o + below + one])
                out_blue[r, c] = _colour(w00 * blue[o] + w10 * blue[o + one] + w01 * blue[o + below]
                                         + w11 * blue[o + below + one])


def _separable_kernel(src, rows, cols, sx, sy, out):
    """:func:`_kernel` in two passes, for grids nearly aligned with the source's (see
    :func:`separable_applies`), 2x faster: row by row, each source row the output row reads is
    resampled along x once (:func:`_horizontal_pass`, at this row's exact x positions) and kept
    in a ring of :data:`SEPARABLE_SLOTS` rows for the next output rows, which read it at their own
    exact y (:func:`_vertical_pass`); reused rows are off by the drift of x over a few rows.
    Pixels with a transparent or outside neighbour go to :func:`_edge_sample` at their exact
    position; so does a whole row that spans too many source rows (never, where it applies)."""
    n_cols = out.shape[2]
    row_x, row_y = np.empty(sx.shape[1]), np.empty(sx.shape[1])
    ix, iy, fx, fy = np.empty(n_cols, np.int64), np.empty(n_cols, np.int64), np.empty(n_cols), np.empty(n_cols)
    across_x = np.zeros((SEPARABLE_SLOTS, 3, n_cols))
    opaque = np.zeros((SEPARABLE_SLOTS, n_cols), np.uint8)
    held = np.full(SEPARABLE_SLOTS, -(2 ** 40), np.int64)  # the source row in each slot
    for r in range(out.shape[1]):
        _interp_row(r, rows, sx, sy, row_x, row_y)
        j_first, j_last = _row_positions(row_x, row_y, cols, ix, fx, iy, fy)
        if j_last + 1 - j_first >= SEPARABLE_SLOTS:
            for c in range(n_cols):
                _edge_sample(src, ix[c], iy[c], fx[c], fy[c], out, r, c)
            continue
        for j in range(j_first, j_last + 2):
            if held[j % SEPARABLE_SLOTS] != j:
                _horizontal_pass(src, j, ix, fx, across_x[j % SEPARABLE_SLOTS], opaque[j % SEPARABLE_SLOTS])
                held[j % SEPARABLE_SLOTS] = j
        _vertical_pass(src, across_x, opaque, ix, fx, iy, fy, out, r, j_first, j_last)


def _row_positions(row_x, row_y, cols, ix, fx, iy, fy):
    """Each output column's top-left source neighbour (``ix``, ``iy``) and fractions (``fx``,
    ``fy``) on a row whose coordinates at the grid's columns are ``row_x``, ``row_y``; returns
    the least and greatest ``iy``."""
    j_first, j_last = 2 ** 62, -(2 ** 62)
    for k in range(max(len(cols) - 1, 1)):
        c_start, c_end, dx, dy = _cell_span(cols, k, row_x, row_y, ix.shape[0])
        for c in range(c_start, c_end):
            x = row_x[k] + (c - cols[k]) * dx - 0.5
            y = row_y[k] + (c - cols[k]) * dy - 0.5
            floor_x, floor_y = math.floor(x), math.floor(y)
            ix[c], iy[c] = int(floor_x), int(floor_y)
            fx[c], fy[c] = x - floor_x, y - floor_y
            j_first, j_last = min(j_first, iy[c]), max(j_last, iy[c])
    return j_first, j_last


def _horizontal_pass(src, j, ix, fx, across_x, opaque):
    """Source row ``j`` resampled along x at each output column's (``ix``, ``fx``): ``across_x``
    (3, columns) float64 colours and ``opaque`` 255 where both neighbours are inside and opaque."""
    height, width = src.shape[1], src.shape[2]
    if j < 0 or j >= height:
        opaque[:] = 0
        return
    red, green, blue, alpha = src[0, j], src[1, j], src[2, j], src[3, j]
    out_red, out_green, out_blue = across_x[0], across_x[1], across_x[2]
    one = np.uint64(1)
    for c in range(ix.shape[0]):
        if ix[c] < 0 or ix[c] + 1 >= width:
            opaque[c] = 0
            continue
        i = np.uint64(ix[c])
        opaque[c] = alpha[i] & alpha[i + one]
        f, g = fx[c], 1.0 - fx[c]
        out_red[c] = g * red[i] + f * red[i + one]
        out_green[c] = g * green[i] + f * green[i + one]
        out_blue[c] = g * blue[i] + f * blue[i + one]


def _vertical_pass(src, across_x, opaque, ix, fx, iy, fy, out, r, j_first, j_last):
    """Output row ``r`` from the resampled source rows around each pixel's exact y (``iy`` from
    ``j_first`` to ``j_last``); where a row reads one source row pair (nearly always), band by
    band in plain loops (vectorised)."""
    n_cols = ix.shape[0]
    if j_first == j_last:
        top, bottom = j_first % SEPARABLE_SLOTS, (j_first + 1) % SEPARABLE_SLOTS
        for b in range(3):
            _blend_rows(across_x[top, b], across_x[bottom, b], fy, out[b, r])
        both = opaque[top] & opaque[bottom]
        for c in range(n_cols):
            if both[c] != 255:
                _edge_sample(src, ix[c], iy[c], fx[c], fy[c], out, r, c)
        return
    for c in range(n_cols):
        top, bottom = iy[c] % SEPARABLE_SLOTS, (iy[c] + 1) % SEPARABLE_SLOTS
        if (opaque[top, c] & opaque[bottom, c]) != 255:
            _edge_sample(src, ix[c], iy[c], fx[c], fy[c], out, r, c)
        else:
            for b in range(3):
                out[b, r, c] = _colour((1.0 - fy[c]) * across_x[top, b, c] + fy[c] * across_x[bottom, b, c])


def _blend_rows(top, bottom, fy, out):
    """``out`` = colours of ``top`` and ``bottom`` weighted by ``1 - fy`` and ``fy``."""
    for c in range(out.shape[0]):
        out[c] = _colour((1.0 - fy[c]) * top[c] + fy[c] * bottom[c])


def _cell_span(cols, k, row_x, row_y, n_cols):
    """First and end (exclusive) output column of the grid's cell ``k`` on a row, and the step
    of the source coordinates per output column there."""
    if len(cols) < 2:
        return 0, min(1, n_cols), 0.0, 0.0
    c_end = int(cols[k + 1]) + 1 if k == len(cols) - 2 else int(cols[k + 1])
    span = cols[k + 1] - cols[k]
    return int(cols[k]), min(c_end, n_cols), (row_x[k + 1] - row_x[k]) / span, (row_y[k + 1] - row_y[k]) / span


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
    _cell_span = numba.njit(cache=True, nogil=True, inline="always")(_cell_span)
    _edge_sample = numba.njit(cache=True, nogil=True)(_edge_sample)
    _kernel = numba.njit(cache=True, nogil=True, error_model="numpy")(_kernel)
    _row_positions = numba.njit(cache=True, nogil=True, error_model="numpy")(_row_positions)
    _horizontal_pass = numba.njit(cache=True, nogil=True, error_model="numpy")(_horizontal_pass)
    _blend_rows = numba.njit(cache=True, nogil=True, error_model="numpy")(_blend_rows)
    _vertical_pass = numba.njit(cache=True, nogil=True, error_model="numpy")(_vertical_pass)
    _separable_kernel = numba.njit(cache=True, nogil=True, error_model="numpy")(_separable_kernel)
