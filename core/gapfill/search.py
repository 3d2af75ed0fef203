"""Nearest known pixels of gap pixels by walking the pixel grid (no KD-tree).

Known pixels lie on a regular grid, so the ``n`` nearest known pixels of a gap pixel are found
by visiting pixel offsets in ascending distance — from the distance of its nearest known pixel
(an exact Euclidean distance transform) outwards — until ``n`` are found. Distances between
pixel centres are ``sqrt(dx^2 + (dy * aspect)^2)`` ("nominal"); the tie-breaking offsets of
:func:`.kriging.tie_break_xy` change them by less than ``sqrt(2) / 2 * TIE_BREAK_PX``, so the
walk goes on to ``2 * TIE_BREAK_PX`` beyond the n-th nominal distance found and keeps the
``n`` smallest true distances: the same neighbours, in the same order, as ``cKDTree.query``
on the tie-broken coordinates. Needs the compiled kernels (numba) of :mod:`._compiled`.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from scipy import ndimage

from .kriging import TIE_BREAK_PX

#: How far beyond the n-th nominal distance the walk goes (pixels): covers every tie-breaking change.
TOLERANCE_PX = 3 * TIE_BREAK_PX


@functools.lru_cache(maxsize=4)
def pixel_offsets(radius: float, aspect: float, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row offsets, col offsets, nominal distances in x pixels) of every pixel within
    ``radius + TOLERANCE_PX`` of a pixel and inside a window of ``shape``, in ascending
    distance (read-only arrays)."""
    reach = radius + TOLERANCE_PX
    hr, hc = min(int(math.floor(reach / aspect)), shape[0]), min(int(math.floor(reach)), shape[1])
    dy, dx = np.mgrid[-hr:hr + 1, -hc:hc + 1]
    d = np.sqrt(dx * dx + (dy * aspect) ** 2).ravel()
    keep = d <= reach
    order = np.argsort(d[keep], kind="stable")
    out = tuple(np.ascontiguousarray(a.ravel()[keep][order]) for a in (dy.astype(np.int64), dx.astype(np.int64), d))
    for a in out:
        a.setflags(write=False)
    return out


class PixelGridIndex:
    """The known pixels of a read window, searchable like ``scipy.spatial.cKDTree`` from pixel
    centres. ``known``: (rows, cols) bool of the window; ``rows``/``cols``: the known pixels the
    index holds (window coordinates; any outside them count as unknown), whose tie-broken
    coordinates are ``known_xy`` (x pixels, y scaled by ``aspect``); ``row_off``/``col_off``:
    the window's offset in the raster, in pixels."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, known_xy: np.ndarray, shape: tuple[int, int],
                 row_off: int, col_off: int, aspect: float = 1.0):
        self.known_xy = np.ascontiguousarray(known_xy, np.float64)
        self.index = np.full(shape, -1, np.int64)
        self.index[rows, cols] = np.arange(rows.size)
        self.row_off, self.col_off, self.aspect = row_off, col_off, aspect
        # distance (x pixels) from every pixel to its nearest known pixel; the walk starts there
        self.nearest = ndimage.distance_transform_edt(self.index < 0, sampling=(aspect, 1.0)) if rows.size else None

    def query(self, targets: np.ndarray, k: int, distance_upper_bound: float, workers: int = 1):
        """Distances (t, k) and indices (t, k) of the ``k`` nearest known pixels of ``targets``
        ((t, 2) pixel centres, as :func:`.kriging.pixel_xy`) closer than ``distance_upper_bound``
        (inf / ``len(known_xy)`` where missing), as ``cKDTree.query``. ``workers`` is ignored: the
        search runs on numba's threads."""
        from ._compiled import grid_search

        cols = np.rint(targets[:, 0] - 0.5).astype(np.int64) - self.col_off
        rows = np.rint(targets[:, 1] / self.aspect - 0.5).astype(np.int64) - self.row_off
        if self.nearest is None:
            return np.full((len(targets), k), np.inf), np.zeros((len(targets), k), np.int64)
        offsets = pixel_offsets(float(distance_upper_bound), float(self.aspect), self.index.shape)
        starts = np.searchsorted(offsets[2], self.nearest[rows, cols] - TOLERANCE_PX)
        d, i = grid_search(self.index, self.known_xy, rows, cols, targets, starts, offsets,
                           float(distance_upper_bound), TOLERANCE_PX, k)
        return (d[:, 0], i[:, 0]) if k == 1 else (d, i)
