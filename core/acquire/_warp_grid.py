"""The coarse grid of source coordinates on which :mod:`._warp_compiled` interpolates: exact
(pyproj) source coordinates of the output pixel centres every :data:`GRID_STEP` pixels. No numba
here: the PROJ half is done ahead, in the thread that submits the blocks (pyproj makes its
transformer again in each new thread, ~4 ms of PROJ database look-ups), while numba is still
being imported in the background."""
from __future__ import annotations

import numpy as np

from .tiles import transformer

#: Output pixels between exactly transformed points of the coordinate grid.
GRID_STEP = 32
#: Source pixels per output pixel (along each axis) up to which GDAL's bilinear warp uses its
#: four-sample formula (its scale >= 0.95); beyond, GDAL widens the kernel, and so is used.
MAX_SOURCE_PIXELS_PER_OUTPUT_PIXEL = 1 / 0.95
#: Largest shift (source pixels) of the x positions at which the two-pass (separable) warp reads a
#: source row resampled for an earlier output row: 1e-3 pixel moves a value by at most 0.26 DN
#: (a 255 DN step between neighbours), so the result is within 1 DN of the one-pass kernel.
SEPARABLE_MAX_SHIFT = 1e-3


def _knots(n: int, step: int) -> np.ndarray:
    """Output pixel indices 0, step, 2 step, ..., n - 1 (the last always included)."""
    knots = np.arange(0, n, step, dtype=np.float64)
    return knots if knots[-1] == n - 1 else np.append(knots, float(n - 1))


def source_pixel_grid(dst_transform, dst_crs: str, src_transform, src_crs: str, shape: tuple[int, int],
                      step: int = GRID_STEP) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row knots, column knots (output pixel indices) and the source (column, row) pixel
    coordinates, corner-origin, of the output pixel centres at those knots: two
    (len(rows), len(cols)) float64 arrays. ``shape``: output (rows, cols)."""
    rows, cols, x, y = source_coordinate_grid(dst_transform, dst_crs, src_crs, shape, step)
    sx, sy = source_pixels(src_transform, x, y)
    return rows, cols, sx, sy


def source_coordinate_grid(dst_transform, dst_crs: str, src_crs: str, shape: tuple[int, int],
                           step: int = GRID_STEP) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row knots, column knots (output pixel indices) and the coordinates in ``src_crs`` of the
    output pixel centres at those knots (the PROJ half of :func:`source_pixel_grid`)."""
    rows, cols = _knots(shape[0], step), _knots(shape[1], step)
    cc, rr = np.meshgrid(cols + 0.5, rows + 0.5)
    x, y = _source_coordinates(dst_transform, dst_crs, src_crs, cc, rr)
    return rows, cols, x, y


def source_pixels(src_transform, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source (column, row) pixel coordinates, corner-origin, of source-CRS coordinates ``x``, ``y``."""
    sx, sy = _affine(~src_transform, x, y)
    return np.ascontiguousarray(sx), np.ascontiguousarray(sy)


def _source_coordinates(dst_transform, dst_crs: str, src_crs: str, cols: np.ndarray,
                        rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in ``src_crs`` of output pixel coordinates (``cols``, ``rows``)."""
    x, y = _affine(dst_transform, cols, rows)
    if dst_crs != src_crs:
        x, y = transformer(dst_crs, src_crs).transform(x, y)
    return np.asarray(x, np.float64), np.asarray(y, np.float64)


def _affine(t, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f


def grid_error(dst_transform, dst_crs: str, src_transform, src_crs: str, shape: tuple[int, int],
               step: int = GRID_STEP) -> float:
    """Largest distance (source pixels) between the interpolated and the exact source
    coordinates at the centres of the coarse grid's cells (where interpolation is worst)."""
    rows, cols, sx, sy = source_pixel_grid(dst_transform, dst_crs, src_transform, src_crs, shape, step)
    if len(rows) < 2 or len(cols) < 2:
        return 0.0
    mid_r, mid_c = (rows[:-1] + rows[1:]) / 2, (cols[:-1] + cols[1:]) / 2
    cc, rr = np.meshgrid(mid_c + 0.5, mid_r + 0.5)
    ex, ey = source_pixels(src_transform, *_source_coordinates(dst_transform, dst_crs, src_crs, cc, rr))
    ix = (sx[:-1, :-1] + sx[1:, :-1] + sx[:-1, 1:] + sx[1:, 1:]) / 4
    iy = (sy[:-1, :-1] + sy[1:, :-1] + sy[:-1, 1:] + sy[1:, 1:]) / 4
    return float(np.hypot(ix - ex, iy - ey).max())


def four_sample_bilinear_applies(sx: np.ndarray, sy: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> bool:
    """Whether output pixels span at most :data:`MAX_SOURCE_PIXELS_PER_OUTPUT_PIXEL` source
    pixels along each axis (GDAL's condition for its four-sample bilinear formula)."""
    if len(rows) < 2 and len(cols) < 2:
        return True
    span = 0.0
    if len(cols) >= 2:
        span = max(span, float(np.max(np.hypot(np.diff(sx, axis=1), np.diff(sy, axis=1)) / np.diff(cols))))
    if len(rows) >= 2:
        span = max(span, float(np.max(np.hypot(np.diff(sx, axis=0), np.diff(sy, axis=0)) / np.diff(rows)[:, None])))
    return span <= MAX_SOURCE_PIXELS_PER_OUTPUT_PIXEL


def separable_applies(rows: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> bool:
    """Whether the two-pass warp of :mod:`._warp_compiled` applies to the coarse grid (``rows``:
    its knots; ``sx``, ``sy``: source pixel coordinates): a source row is read by output rows
    at most a few rows apart, over which x drifts by at most :data:`SEPARABLE_MAX_SHIFT`
    source pixels, and an output row spans less than one source row of y (grids nearly aligned
    with the source's, as UTM and Web Mercator over a block)."""
    if len(rows) < 2:
        return sx.shape[1] < 2 or float(np.ptp(sy)) < 1.0
    steps = np.diff(rows)[:, None]
    dx_per_row = float(np.max(np.abs(np.diff(sx, axis=0)) / steps))
    dy_per_row = float(np.min(np.diff(sy, axis=0) / steps))
    if dy_per_row <= 0:
        return False
    rows_per_source_row = int(np.ceil(1.0 / dy_per_row)) + 1
    return dx_per_row * rows_per_source_row <= SEPARABLE_MAX_SHIFT and float(np.max(np.ptp(sy, axis=1))) < 1.0
