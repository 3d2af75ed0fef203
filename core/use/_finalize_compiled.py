"""Compiled (numba) finalisation of one merged tile of a building-use run: in one pass over the pixels, the
footprint mask, the use class and (scaled PROBABILITY_TYPEs) the quantised footprint and use probabilities,
the same values as the numpy functions (:func:`..building_use_map.use_classes`,
:func:`.probability_type.quantise`), which do it in about ten passes.

Optional: :data:`AVAILABLE` is False when numba is not installed (the caller then uses numpy). Compiled code
is cached on disk (numba ``cache=True``): the first run in a new environment spends a few seconds compiling.
``nogil``: the writer thread leaves the GIL to the reader and model threads meanwhile.
"""
from __future__ import annotations

import numpy as np

try:  # pragma: no cover - exercised when numba is installed
    import numba
except ImportError:  # pragma: no cover
    numba = None

AVAILABLE = numba is not None


def finalize_tile(use: np.ndarray, pb: np.ndarray, threshold: float, steps: int | None, nodata,
                  dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(mask (h, w) uint8: ``pb`` > ``threshold``; use class (h, w) uint8; ``pb`` quantised (h, w); ``use``
    quantised (3, h, w)) of the float32 use probabilities ``use`` (3, h, w) and footprint probability ``pb``
    (h, w); the quantised ones as ``dtype`` with ``steps`` DN per unit and ``nodata`` for NaN, None when
    ``steps`` is None (float32 outputs)."""
    h, w = pb.shape
    mask, cls = np.empty((h, w), np.uint8), np.empty((h, w), np.uint8)
    if steps is None:
        qpb, quse = np.empty((0, 0), np.uint8), np.empty((0, 0, 0), np.uint8)
    else:
        qpb, quse = np.empty((h, w), dtype), np.empty((3, h, w), dtype)
    _kernel(use, pb, np.float32(threshold), np.float32(steps or 0), np.float32(nodata if steps is not None else 0),
            steps is not None, mask, cls, qpb, quse)
    return mask, cls, (qpb if steps is not None else None), (quse if steps is not None else None)


if AVAILABLE:  # pragma: no cover - exercised when numba is installed
    @numba.njit(cache=True, nogil=True)
    def _quantise(p, steps, nodata):
        """:func:`.probability_type.quantise` of one value: floor(min(float32(p x steps) + 0.5, steps + 0.5)),
        0 below 0, ``nodata`` for NaN (float32 operations, as numpy does them)."""
        if np.isnan(p):
            return nodata
        q = p * steps
        q = q + np.float32(0.5)
        top = steps + np.float32(0.5)
        if q > top:
            q = top
        if q < np.float32(0.0):
            q = np.float32(0.0)
        return q

    @numba.njit(cache=True, nogil=True)
    def _class(u0, u1, u2):
        """1 + argmax of three (the first of equal values; the first NaN where there is one)."""
        if np.isnan(u0):
            return 1
        if np.isnan(u1):
            return 2
        if np.isnan(u2):
            return 3
        k = 2 if u1 > u0 else 1
        return 3 if u2 > max(u0, u1) else k

    @numba.njit(cache=True, nogil=True)
    def _kernel(use, pb, threshold, steps, nodata, scaled, mask, cls, qpb, quse):
        h, w = pb.shape
        for i in range(h):
            for j in range(w):
                p = pb[i, j]
                b = p > threshold
                mask[i, j] = 1 if b else 0
                u0, u1, u2 = use[0, i, j], use[1, i, j], use[2, i, j]
                cls[i, j] = _class(u0, u1, u2) if b else 0
                if scaled:
                    qpb[i, j] = _quantise(p, steps, nodata)
                    quse[0, i, j] = _quantise(u0, steps, nodata)
                    quse[1, i, j] = _quantise(u1, steps, nodata)
                    quse[2, i, j] = _quantise(u2, steps, nodata)
else:  # pragma: no cover
    _kernel = None
