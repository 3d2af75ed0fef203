"""Internal GeoTIFF overviews built from the tiles as they are written, instead of by GDAL re-reading
(and decompressing) the whole finished raster.

GDAL builds the overview levels 2, 4, 8, ... as a cascade: each level from the one below, every pixel
the mean of the valid (not nodata) pixels of a 2 x 2 block, summed in float64 (``AVERAGE``; unsigned integers:
the integer mean rounded half up), or its top-left pixel (``NEAREST``). Where every level halves the one below exactly (the raster's width and
height divisible by the largest factor) and the tiles start on multiples of it, each tile holds whole
blocks of every level, so :class:`TileOverviews` computes them from the tile in the same order of
operations and the same float64 arithmetic. The coarser levels, where a level is not exactly half the
one below (GDAL then weights fractional source pixels), are left to GDAL at the end, each from the one
below (``GDALRegenerateOverviews``, as GDAL's own cascade does): it reads the last level built from the
tiles, not the base. So the overviews equal GDAL's pixel for pixel (``tests/unit/test_tile_overviews.py``
compares them); only a raster with an odd width or height (:func:`tile_levels` 0) has them built by GDAL
from the base, as before.

The levels are written into the overview IFDs of the very dataset the tiles go to, created empty at
the start (GDAL ``BuildOverviews`` with resampling ``NONE``, compressed as the base), through that
dataset's GDAL handle: rasterio has no call that writes an overview (nor builds ``NONE`` ones), so
:class:`GdalOverviewWriter` finds the handle among GDAL's open datasets (C API through ``ctypes``, in
the GDAL library rasterio itself uses). Every level is kept in memory only as strips one overview block
high, written (whole blocks) as soon as every tile over them has arrived: memory grows with the
raster's width, not its height.
"""
from __future__ import annotations

import ctypes
import errno
import threading
from functools import lru_cache

import numpy as np

__all__ = ["tile_levels", "halve_mean", "halve_nearest", "TileOverviews", "GdalOverviewWriter", "DATASET_CLOSE_LOCK"]

#: held while :class:`GdalOverviewWriter` looks through GDAL's open datasets, and by the engine's threads while
#: they close theirs (readers, outputs), so that no dataset is destroyed while its description is being read
DATASET_CLOSE_LOCK = threading.Lock()

#: GDAL data type codes of the numpy types the engine writes
_GDT = {"uint8": 1, "uint16": 2, "int16": 3, "uint32": 4, "int32": 5, "float32": 6, "float64": 7}


def tile_levels(width: int, height: int, factors: list[int], step: int, dtype, nodata) -> int:
    """How many of the overview levels ``factors`` (2, 4, ..., as :func:`core.raster_io.overview_factors`
    gives them) :class:`TileOverviews` builds from the tiles: those whose factor divides ``width``,
    ``height`` and the tile ``step`` (px), so that each level is exactly half the one below and every
    tile holds whole blocks of it (0: none; also for types GDAL is not written in here and NaN nodata)."""
    if not factors or factors != [2 ** k for k in range(1, len(factors) + 1)] or step <= 0:
        return 0
    if np.dtype(dtype).name not in _GDT or (isinstance(nodata, float) and np.isnan(nodata)):
        return 0
    return sum(1 for f in factors if width % f == 0 and height % f == 0 and step % f == 0)


def halve_mean(x: np.ndarray, nodata) -> np.ndarray:
    """(count, h/2, w/2) GDAL ``AVERAGE`` of (count, h, w) ``x`` (h, w even): the sum of the valid pixels of each
    2 x 2 block divided by their number, cast back to ``x``'s type (:func:`_halve_int` for unsigned integers);
    ``nodata`` where none is valid."""
    if x.dtype.kind == "u":
        return _halve_int(x, nodata)
    valid = None if nodata is None else x != nodata
    holes = valid is not None and not valid.all()
    z = np.where(valid, x, x.dtype.type(0)) if holes else x  # adding 0 is what skipping the pixel gives
    s = np.add(z[:, 0::2, 0::2], z[:, 0::2, 1::2], dtype=np.float64)  # GDAL's float64 sum, in its order
    s += z[:, 1::2, 0::2]
    s += z[:, 1::2, 1::2]
    if not holes:
        s /= 4
        return s.astype(x.dtype)
    n = _valid_counts(valid)
    s /= np.maximum(n, 1)
    s[n == 0] = nodata
    return s.astype(x.dtype)


def _valid_counts(valid: np.ndarray) -> np.ndarray:
    n = valid[:, 0::2, 0::2].astype(np.uint8)
    n += valid[:, 0::2, 1::2]
    n += valid[:, 1::2, 0::2]
    n += valid[:, 1::2, 1::2]
    return n


#: unsigned type wide enough for the sum of four values of each unsigned type halved
_WIDER = {np.dtype("uint8"): np.uint16, np.dtype("uint16"): np.uint32, np.dtype("uint32"): np.uint64}


def _halve_int(x: np.ndarray, nodata) -> np.ndarray:
    """GDAL 3.10's ``AVERAGE`` of unsigned integers: the integer mean of the valid pixels rounded half up,
    ``(sum + n // 2) // n`` (``(sum + 2) >> 2`` for a whole block), in integers (exact; checked against GDAL's
    overviews in tests/unit/test_tile_overviews.py)."""
    fast = _compiled_halving()
    if fast is not None and x.dtype in fast.TYPES:
        whole = fast.halve_whole(x, nodata)  # one compiled pass where no pixel is nodata (the usual tile)
        if whole is not None:
            return whole
    wide = _WIDER[x.dtype]
    top = np.iinfo(x.dtype).max
    # nodata at the type's top (as PROBABILITY_TYPE writes it): no nodata pixel when the maximum is below it,
    # one reduction instead of a mask
    maybe = nodata is not None and not (nodata == top and x.max() < top)
    valid = x != nodata if maybe else None
    holes = valid is not None and not valid.all()
    z = np.where(valid, x, x.dtype.type(0)) if holes else x
    rows = np.add(z[:, 0::2], z[:, 1::2], dtype=wide)  # whole rows first (exact: the order does not matter)
    s = rows[:, :, 0::2] + rows[:, :, 1::2]
    if not holes:
        s += 2
        s >>= 2
        return s.astype(x.dtype)
    n = _valid_counts(valid)
    s += n >> 1
    s //= np.maximum(n, 1)
    s[n == 0] = nodata
    return s.astype(x.dtype)


@lru_cache(maxsize=1)
def _compiled_halving():
    """:mod:`core._overviews_compiled` where numba is installed (imported on first use), else None."""
    try:
        from . import _overviews_compiled
    except ImportError:  # pragma: no cover
        return None
    return _overviews_compiled if _overviews_compiled.AVAILABLE else None


def halve_nearest(x: np.ndarray) -> np.ndarray:
    """GDAL ``NEAREST`` for a factor of 2: the top-left pixel of each 2 x 2 block."""
    return np.ascontiguousarray(x[:, ::2, ::2])


class TileOverviews:
    """The overview levels (``factors`` 2, 4, ...) of one output raster: the first ``levels`` computed tile by
    tile (:meth:`add`) and written through ``writer`` in strips of whole overview blocks, the others by GDAL
    from them (:meth:`finish`)."""

    def __init__(self, width: int, height: int, factors: list[int], levels: int, nodata, average: bool,
                 writer: "GdalOverviewWriter"):
        self.nodata, self.average, self.writer = nodata, average, writer
        self.factors = list(factors)
        self.sizes = [(width // f, height // f) for f in factors[:levels]]
        self.block_rows = [writer.block_height(k) for k in range(levels)]
        self.strips: list[dict[int, list]] = [{} for _ in range(levels)]

    def add(self, data: np.ndarray, col: int, row: int) -> None:
        """Tile ``data`` (count, h, w) written at (``col``, ``row``) of the raster (multiples of the largest
        factor): its block of every level."""
        x = data
        for k in range(len(self.sizes)):
            x = halve_mean(x, self.nodata) if self.average else halve_nearest(x)
            f = 2 ** (k + 1)
            self._place(k, x, col // f, row // f)

    def _place(self, k: int, patch: np.ndarray, col: int, row: int) -> None:
        width, height = self.sizes[k]
        bh = self.block_rows[k]
        h, w = patch.shape[1:]
        r = row
        while r < row + h:
            s = r // bh
            r1 = min((s + 1) * bh, row + h)
            strip = self.strips[k].get(s)
            if strip is None:
                rows = min(bh, height - s * bh)
                strip = self.strips[k][s] = [np.empty((patch.shape[0], rows, width), patch.dtype), 0]
            strip[0][:, r - s * bh:r1 - s * bh, col:col + w] = patch[:, r - row:r1 - row]
            strip[1] += (r1 - r) * w
            if strip[1] == strip[0].shape[1] * width:
                self.writer.write(k, strip[0], 0, s * bh)
                del self.strips[k][s]
            r = r1

    @property
    def complete(self) -> bool:
        """Every strip of every level built from the tiles written (all the tiles arrived)."""
        return not any(self.strips)

    def finish(self) -> None:
        """The levels not built from the tiles, by GDAL, each from the one below."""
        for k in range(len(self.sizes), len(self.factors)):
            self.writer.regenerate(k, "NEAREST" if not self.average else "AVERAGE")


@lru_cache(maxsize=1)
def _gdal():
    """rasterio's GDAL C library (``dlsym`` on rasterio's I/O extension finds the symbols of the GDAL it links)."""
    import rasterio._io

    lib = ctypes.CDLL(rasterio._io.__file__)
    vp, ci = ctypes.c_void_p, ctypes.c_int
    lib.GDALGetOpenDatasets.argtypes = [ctypes.POINTER(ctypes.POINTER(vp)), ctypes.POINTER(ci)]
    lib.GDALGetOpenDatasets.restype = None
    lib.GDALGetDescription.argtypes, lib.GDALGetDescription.restype = [vp], ctypes.c_char_p
    lib.GDALGetRasterBand.argtypes, lib.GDALGetRasterBand.restype = [vp, ci], vp
    lib.GDALGetOverview.argtypes, lib.GDALGetOverview.restype = [vp, ci], vp
    lib.GDALGetOverviewCount.argtypes, lib.GDALGetOverviewCount.restype = [vp], ci
    lib.GDALGetBandDataset.argtypes, lib.GDALGetBandDataset.restype = [vp], vp
    lib.GDALGetBlockSize.argtypes = [vp, ctypes.POINTER(ci), ctypes.POINTER(ci)]
    lib.GDALGetBlockSize.restype = None
    lib.GDALDatasetRasterIO.argtypes = [vp, ci, ci, ci, ci, ci, vp, ci, ci, ci, ci, ctypes.POINTER(ci), ci, ci, ci]
    lib.GDALDatasetRasterIO.restype = ci
    lib.GDALBuildOverviews.argtypes = [vp, ctypes.c_char_p, ci, ctypes.POINTER(ci), ci, vp, vp, vp]
    lib.GDALBuildOverviews.restype = ci
    lib.GDALRegenerateOverviews.argtypes = [vp, ci, ctypes.POINTER(vp), ctypes.c_char_p, vp, vp]
    lib.GDALRegenerateOverviews.restype = ci
    lib.CPLGetLastErrorMsg.argtypes, lib.CPLGetLastErrorMsg.restype = [], ctypes.c_char_p
    return lib


class GdalOverviewWriter:
    """Writes into the overview levels ``factors`` of the open GDAL dataset whose description is ``path`` (the
    dataset rasterio opened for writing; see the module docstring), creating them empty (GDAL ``NONE``) when it
    has none. Raises ``LookupError`` when there is no such dataset or its overviews are not ``factors``."""

    def __init__(self, path: str, count: int, factors: list[int]):
        lib = _gdal()
        arr, n = ctypes.POINTER(ctypes.c_void_p)(), ctypes.c_int()
        with DATASET_CLOSE_LOCK:
            lib.GDALGetOpenDatasets(ctypes.byref(arr), ctypes.byref(n))
            found = [arr[i] for i in range(n.value)
                     if (lib.GDALGetDescription(arr[i]) or b"").decode(errors="replace") == str(path)]
        if len(found) != 1:
            raise LookupError(f"{len(found)} open GDAL datasets are '{path}'")
        band = lib.GDALGetRasterBand(found[0], 1)
        levels = len(factors)
        if lib.GDALGetOverviewCount(band) == 0:
            fs = (ctypes.c_int * levels)(*factors)
            if lib.GDALBuildOverviews(found[0], b"NONE", levels, fs, 0, None, None, None):
                raise LookupError(f"GDAL could not add overviews to '{path}': {lib.CPLGetLastErrorMsg()!r}")
        if lib.GDALGetOverviewCount(band) != levels:
            raise LookupError(f"'{path}' has {lib.GDALGetOverviewCount(band)} overviews, not {levels}")
        self.lib, self.path, self.count = lib, str(path), count
        self.levels = [lib.GDALGetBandDataset(lib.GDALGetOverview(band, k)) for k in range(levels)]
        self.first_bands = [lib.GDALGetOverview(band, k) for k in range(levels)]
        self.bands = (ctypes.c_int * count)(*range(1, count + 1))

    def block_height(self, k: int) -> int:
        bx, by = ctypes.c_int(), ctypes.c_int()
        self.lib.GDALGetBlockSize(self.first_bands[k], ctypes.byref(bx), ctypes.byref(by))
        return int(by.value)

    def write(self, k: int, data: np.ndarray, col: int, row: int) -> None:
        """(count, h, w) C-contiguous ``data`` into overview level ``k`` at (``col``, ``row``)."""
        data = np.ascontiguousarray(data)
        c, h, w = data.shape
        item = data.dtype.itemsize
        err = self.lib.GDALDatasetRasterIO(self.levels[k], 1, col, row, w, h, data.ctypes.data, w, h,
                                           _GDT[data.dtype.name], c, self.bands, item, w * item, h * w * item)
        if err:
            self._fail(f"writing overview level {k + 1}")

    def regenerate(self, k: int, resampling: str) -> None:
        """Overview level ``k`` (>= 1) computed by GDAL from level ``k - 1``, band by band."""
        for b in range(1, self.count + 1):
            src = self.lib.GDALGetRasterBand(self.levels[k - 1], b)
            dst = (ctypes.c_void_p * 1)(self.lib.GDALGetRasterBand(self.levels[k], b))
            if self.lib.GDALRegenerateOverviews(src, 1, dst, resampling.encode(), None, None):
                self._fail(f"computing overview level {k + 1}")

    def _fail(self, what: str) -> None:
        msg = (self.lib.CPLGetLastErrorMsg() or b"").decode(errors="replace")
        code = errno.ENOSPC if "No space left" in msg else errno.EIO
        raise OSError(code, f"{what} of '{self.path}' failed: {msg}")
