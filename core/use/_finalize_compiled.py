"""Compiled (numba) finalisation of one merged tile of a building-use run: in one pass over the pixels, the
footprint mask, the use class and (scaled PROBABILITY_TYPEs) the quantised footprint and use probabilities,
the same values as the numpy functions (:func:`..building_use_map.use_classes`,
:func:`.probability_type.quantise`), which do it in about ten passes.

The pass is branch-free (selects the compiler vectorises: a third of the time of a pass with a branch per value,
issue 17) and says whether it met a NaN; a tile with one is done again by the exact NaN rules of
:func:`_kernel` (argmax's first NaN, ``nodata``), which the branch-free pass does not follow.

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
    args = (use, pb, np.float32(threshold), np.float32(steps or 0))
    if _kernel_without_nan(*args, steps is not None, mask, cls, qpb, quse):
        _kernel(*args, np.float32(nodata if steps is not None else 0), steps is not None, mask, cls, qpb, quse)
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
    @numba.njit(cache=True, nogil=True, inline="always")
    def _quantise_finite(p, steps, top):
        """:func:`_quantise` of a value that is not NaN, branch-free."""
        q = p * steps + np.float32(0.5)
        q = top if q > top else q
        return np.float32(0.0) if q < np.float32(0.0) else q

    @numba.njit(cache=True, nogil=True)
    def _kernel_without_nan(use, pb, threshold, steps, scaled, mask, cls, qpb, quse):
        """:func:`_kernel`'s values where no value is NaN, without a branch per pixel; returns whether a NaN was met
        (then the outputs are to be computed again by :func:`_kernel`)."""
        h, w = pb.shape
        top = steps + np.float32(0.5)
        nan = False
        for i in range(h):
            for j in range(w):
                p = pb[i, j]
                u0, u1, u2 = use[0, i, j], use[1, i, j], use[2, i, j]
                nan |= (p != p) | (u0 != u0) | (u1 != u1) | (u2 != u2)
                b = p > threshold
                mask[i, j] = np.uint8(b)
                k = np.uint8(2) if u1 > u0 else np.uint8(1)
                c = np.uint8(3) if u2 > (u1 if u1 > u0 else u0) else k
                cls[i, j] = c if b else np.uint8(0)
                if scaled:
                    qpb[i, j] = _quantise_finite(p, steps, top)
                    quse[0, i, j] = _quantise_finite(u0, steps, top)
                    quse[1, i, j] = _quantise_finite(u1, steps, top)
                    quse[2, i, j] = _quantise_finite(u2, steps, top)
        return nan
else:  # pragma: no cover
    _kernel = _kernel_without_nan = None
