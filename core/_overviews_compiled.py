"""Compiled (numba) halving of unsigned integer tiles for :mod:`core.tile_overviews`: GDAL's ``AVERAGE`` of 2 x 2
blocks with no nodata pixel, ``(sum + 2) >> 2``, in one pass that also says whether a nodata pixel was met (then
the caller does the exact numpy halving with holes). Half the time of the numpy passes on a tile that is no longer
in the CPU caches (issue 17).

Optional: :data:`AVAILABLE` is False when numba is not installed. Compiled code is cached on disk
(``cache=True``); ``nogil``: the writer thread leaves the GIL to the reader and model threads meanwhile.
"""
from __future__ import annotations

import numpy as np

try:  # pragma: no cover - exercised when numba is installed
    import numba
except ImportError:  # pragma: no cover
    numba = None

AVAILABLE = numba is not None
#: the types halved here (their sum of four fits uint32)
TYPES = (np.dtype("uint8"), np.dtype("uint16"))


def halve_whole(x: np.ndarray, nodata) -> np.ndarray | None:
    """(count, h/2, w/2) ``(a + b + c + d + 2) >> 2`` of each 2 x 2 block of ``x`` (count, h, w) uint8/uint16 (h, w
    even), or None when a pixel of ``x`` is ``nodata`` (None: no nodata)."""
    c, h, w = x.shape
    out = np.empty((c, h // 2, w // 2), x.dtype)
    # a nodata the type cannot hold (fractional, negative, too large) equals no pixel: nothing to check
    check = nodata is not None and float(nodata).is_integer() and 0 <= nodata <= np.iinfo(x.dtype).max
    found = _kernel(x, x.dtype.type(nodata if check else 0), check, out)
    return None if found else out


if AVAILABLE:  # pragma: no cover - exercised when numba is installed
    @numba.njit(cache=True, nogil=True)
    def _kernel(x, nodata, check, out):
        c, h, w = x.shape
        found = False
        for b in range(c):
            for i in range(h // 2):
                r0, r1 = x[b, 2 * i], x[b, 2 * i + 1]
                for j in range(w // 2):
                    a0, a1, a2, a3 = r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]
                    if check:
                        found |= (a0 == nodata) | (a1 == nodata) | (a2 == nodata) | (a3 == nodata)
                    s = np.uint32(a0) + np.uint32(a1) + np.uint32(a2) + np.uint32(a3) + np.uint32(2)
                    out[b, i, j] = s >> np.uint32(2)
        return found
else:  # pragma: no cover
    _kernel = None
