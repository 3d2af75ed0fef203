"""Raster reading and writing shared by every raster tool.

Reading: :func:`open_raster` opens with a clear error, :func:`read_masked`
returns a block's values and its validity mask (nodata and NaN honoured).
Writing: :func:`atomic_raster` writes a tiled, compressed GeoTIFF under a
temporary name and moves it into place only when the block ends without error,
so a failed or cancelled run never leaves a half-written output.
"""
from __future__ import annotations

import contextlib
import os
from typing import Sequence

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import RasterioError

from rasterio.windows import Window

from .errors import InputError
from .grid import Grid
from .outputs import atomic_output, temporary_sibling  # noqa: F401 (the output contract; re-exported)

#: Default GeoTIFF creation profile: tiled, DEFLATE-compressed (fast level), BigTIFF when needed.
GTIFF_PROFILE = {
    "driver": "GTiff",
    "tiled": True,
    "blockxsize": 256,
    "blockysize": 256,
    "compress": "deflate",
    "zlevel": 1,  # with the predictor, level 1 is within ~2 % of level 6 in size and far cheaper to write
    "bigtiff": "if_safer",
}


#: GDAL block-cache limit (bytes) while Edifice reads and writes rasters: without it
#: GDAL keeps up to 5 % of RAM of written tiles, so peak memory grows with the raster.
GDAL_CACHE_BYTES = 64 * 2**20


def bounded_gdal_cache(nbytes: int = GDAL_CACHE_BYTES):
    """Context in which GDAL's block cache is limited to ``nbytes`` (default :data:`GDAL_CACHE_BYTES`)."""
    return rasterio.Env(GDAL_CACHEMAX=int(nbytes))


def open_raster(path: str | os.PathLike, name: str = "INPUT"):
    """Open a raster for reading or raise :class:`InputError` naming ``name``."""
    p = str(path)
    if not os.path.exists(p) and "://" not in p and not p.startswith("/vsi"):
        raise InputError(name, f"file '{p}' does not exist.", "check the path.")
    try:
        ds = rasterio.open(p)
    except RasterioError as exc:
        raise InputError(name, f"'{p}' is not a readable raster, or is truncated or corrupt ({exc}).",
                         "give a GeoTIFF or another GDAL-readable raster.") from exc
    if ds.width == 0 or ds.height == 0:
        ds.close()
        raise InputError(name, f"'{p}' has zero size.")
    return ds


def require_real(ds, name: str = "INPUT") -> None:
    """:class:`InputError` for complex-valued rasters (e.g. SAR SLC), which hold no image values."""
    if any(np.dtype(d).kind == "c" for d in ds.dtypes):
        raise InputError(name, f"'{ds.name}' holds complex numbers ({ds.dtypes[0]}), not image values.",
                         "give a real-valued raster (e.g. its amplitude, abs() in the Raster Calculator).")


def require_band_count(ds, name: str, count: int, what: str) -> None:
    """:class:`InputError` unless ``ds`` has exactly ``count`` bands (``what`` says what they hold)."""
    if ds.count != count:
        raise InputError(name, f"'{ds.name}' has {ds.count} band(s); {what} has {count}.",
                         f"give a {count}-band raster of {what} (or extract the band first).")


def available_memory_bytes() -> int | None:
    """Memory the system can still give (Linux ``MemAvailable``); None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def require_memory(name: str, need_bytes: int, what: str, fix: str) -> None:
    """:class:`InputError` before a whole-raster tool allocates more than the system has."""
    have = available_memory_bytes()
    if have is not None and need_bytes > have:
        raise InputError(name, f"{what} needs about {need_bytes / 2**30:.1f} GiB of memory; "
                               f"{have / 2**30:.1f} GiB are available.", fix)


def require_crs(ds, name: str = "INPUT") -> str:
    """The dataset's CRS as WKT, or :class:`InputError` if it has none."""
    if ds.crs is None:
        raise InputError(name, f"'{ds.name}' has no coordinate reference system.",
                         "assign one (Raster > Projections > Assign Projection, or gdal_edit.py -a_srs).")
    return ds.crs.to_wkt()


def read_masked(ds, window, name: str = "INPUT", bands: Sequence[int] | None = None, out: np.ndarray | None = None,
                valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read ``window`` of ``ds`` as (bands, rows, cols) values and a (rows, cols)
    boolean mask that is True where every band holds valid data (not nodata, not NaN).
    ``out``: an array to read into, C-contiguous or a view with contiguous rows (GDAL converts to
    its type; nodata is compared after the conversion, so give a type that holds the file's values
    exactly); ``valid``: a mask to AND the validity into (in place)."""
    idx = list(bands) if bands is not None else list(range(1, ds.count + 1))
    wrong = [b for b in idx if not 1 <= int(b) <= ds.count]
    if wrong:
        raise InputError(name, f"band {wrong[0]} does not exist: '{ds.name}' has {ds.count} band(s).",
                         f"choose a band from 1 to {ds.count}.")
    try:
        data = ds.read(idx, window=window, out=out)
    except RasterioError as exc:
        raise InputError(name, f"'{ds.name}' could not be read ({exc}); the file may be truncated or corrupt.",
                         "re-export or re-download the raster.") from exc
    if valid is None:
        valid = np.ones(data.shape[1:], dtype=bool)
    for i, b in enumerate(idx):
        nd = ds.nodatavals[b - 1]
        if _all_valid(data[i], nd, np.dtype(ds.dtypes[b - 1]).kind in "iub"):
            continue
        if nd is not None and not (isinstance(nd, float) and np.isnan(nd)):
            valid &= data[i] != nd
        # integers read as floats are finite; a band whose sum is finite holds no NaN or infinity (one fast
        # reduction instead of a mask per band; a sum that overflows only costs the full check)
        if data.dtype.kind == "f" and np.dtype(ds.dtypes[b - 1]).kind in "fc" and not _finite_sum(data[i]):
            valid &= np.isfinite(data[i])
    return data, valid


def _all_valid(x: np.ndarray, nd, integer_source: bool = False) -> bool:
    """True when floating-point band ``x`` certainly holds no NaN, no infinity and no ``nd`` (nodata or None):
    its minimum and maximum are finite and ``nd`` (in ``x``'s type, as the comparison with it casts it) lies
    outside them (two reductions instead of a comparison and a mask per band; one where ``nd`` is below the
    minimum of a band read from integers, ``integer_source``, whose values are all finite); False: check every
    pixel."""
    if x.dtype.kind != "f" or x.size == 0:
        return False
    if integer_source:
        return _integers_all_valid(x, nd)
    lo, hi = x.min(), x.max()
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return False
    if nd is None or (isinstance(nd, float) and np.isnan(nd)):
        return True
    with np.errstate(over="ignore"):
        ndt = x.dtype.type(nd)
    return float(ndt) == nd and not lo <= ndt <= hi


def _integers_all_valid(x: np.ndarray, nd) -> bool:
    """:func:`_all_valid` of a float band read from integers (finite): ``nd`` below its minimum (the usual nodata
    0 of imagery, one reduction) or above its maximum."""
    if nd is None or (isinstance(nd, float) and np.isnan(nd)):
        return True
    with np.errstate(over="ignore"):
        ndt = x.dtype.type(nd)
    if float(ndt) != nd:
        return False
    return bool(ndt < x.min() or ndt > x.max())


def _finite_sum(x: np.ndarray) -> bool:
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(x.sum()))


def verify_raster(path: str | os.PathLike) -> None:
    """Reopen a just-written raster and read the first and last pixel of every band (so the first and
    last blocks are decoded): a file that a failed write left truncated raises here."""
    with rasterio.open(path) as ds:
        last = Window(max(ds.width - 1, 0), max(ds.height - 1, 0), 1, 1)
        for band in range(1, ds.count + 1):
            ds.read(band, window=Window(0, 0, 1, 1))
            ds.read(band, window=last)


def overview_factors(width: int, height: int) -> list[int]:
    """Overview decimation factors of a ``width`` x ``height`` px output: none up to 1024 px on the longer
    side, else 2, 4, ... 64 while the level keeps at least 256 px on that side."""
    side = max(width, height)
    if side <= 1024:
        return []
    return [f for f in (2, 4, 8, 16, 32, 64) if side / f >= 256]


def overview_compression_env(profile: dict) -> dict:
    """GDAL configuration under which internal overviews are compressed at the level of the base image
    (``profile``: its creation options). Without it GDAL writes them at its own default level (ZSTD 9,
    DEFLATE 6), whatever the base's level: 2-4x the CPU time of level 1 for the same pixel values."""
    env = {}
    if profile.get("zstd_level"):
        env["ZSTD_LEVEL_OVERVIEW"] = str(profile["zstd_level"])
    if profile.get("zlevel"):
        env["ZLEVEL_OVERVIEW"] = str(profile["zlevel"])
    return env


def build_internal_overviews(ds, resampling: Resampling, profile: dict) -> list[int]:
    """Internal overviews of the dataset ``ds`` (open for writing) at :func:`overview_factors`, compressed as its
    base (``profile``, see :func:`overview_compression_env`), computed on every core (the same pixels as on one:
    GDAL splits the levels into rows of blocks); returns the factors built."""
    factors = overview_factors(ds.width, ds.height)
    if factors:
        with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS", **overview_compression_env(profile)):
            ds.build_overviews(factors, resampling)
    return factors


@contextlib.contextmanager
def atomic_raster(path: str | os.PathLike, grid: Grid, count: int, dtype, nodata=None,
                  descriptions: Sequence[str] | None = None,
                  colormap: dict[int, tuple[int, ...]] | None = None,
                  overviews: bool = True, name: str = "OUTPUT", inputs=None, style: str | None = None,
                  classes=None, **profile_overrides):
    """Open a tiled, compressed GeoTIFF for writing on ``grid``; it appears at
    ``path`` only if the ``with`` block completes and the written file reads back
    (:func:`verify_raster`). Overviews are built on close for rasters larger than
    1024 pixels on a side. ``name``/``inputs``: see :func:`.outputs.atomic_output`.
    ``style`` (a QML of qgis_plugin/styles) or ``classes`` ([(value, rgba, label)]: palette,
    category names) is written next to it (core/styles.py) so that it looks right however it is opened."""
    dtype = np.dtype(dtype)
    profile = dict(GTIFF_PROFILE)
    profile.update(width=grid.width, height=grid.height, count=count, dtype=dtype.name,
                   crs=grid.crs, transform=grid.transform, nodata=nodata)
    profile["predictor"] = 3 if dtype.kind == "f" else 2
    if grid.width < 256 or grid.height < 256:
        profile.update(tiled=False)
        profile.pop("blockxsize"), profile.pop("blockysize")
    profile.update(profile_overrides)
    need = grid.width * grid.height * count * dtype.itemsize // 20  # DEFLATE rarely beats 20:1 on imagery
    with atomic_output(path, name, inputs, verify=verify_raster, need_bytes=need) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            if descriptions:
                for i, d in enumerate(descriptions, start=1):
                    dst.set_band_description(i, d)
            if colormap is not None:
                dst.write_colormap(1, colormap)
                dst.colorinterp = [ColorInterp.palette]
            yield dst
            if overviews:
                build_internal_overviews(dst, Resampling.nearest if colormap else Resampling.average, profile)
    if style or classes:
        from .styles import write_raster_style

        write_raster_style(path, style, classes)
