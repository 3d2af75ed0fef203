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
import uuid
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import RasterioError

from .errors import InputError
from .grid import Grid

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


def bounded_gdal_cache():
    """Context in which GDAL's block cache is limited to :data:`GDAL_CACHE_BYTES`."""
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES)


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


def require_crs(ds, name: str = "INPUT") -> str:
    """The dataset's CRS as WKT, or :class:`InputError` if it has none."""
    if ds.crs is None:
        raise InputError(name, f"'{ds.name}' has no coordinate reference system.",
                         "assign one (Raster > Projections > Assign Projection, or gdal_edit.py -a_srs).")
    return ds.crs.to_wkt()


def read_masked(ds, window, name: str = "INPUT", bands: Sequence[int] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Read ``window`` of ``ds`` as (bands, rows, cols) values and a (rows, cols)
    boolean mask that is True where every band holds valid data (not nodata, not NaN)."""
    idx = list(bands) if bands is not None else list(range(1, ds.count + 1))
    try:
        data = ds.read(idx, window=window)
    except RasterioError as exc:
        raise InputError(name, f"'{ds.name}' could not be read ({exc}); the file may be truncated or corrupt.",
                         "re-export or re-download the raster.") from exc
    valid = np.ones(data.shape[1:], dtype=bool)
    for i, b in enumerate(idx):
        nd = ds.nodatavals[b - 1]
        if nd is not None and not (isinstance(nd, float) and np.isnan(nd)):
            valid &= data[i] != nd
        if data.dtype.kind == "f":
            valid &= np.isfinite(data[i])
    return data, valid


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A temporary file name in the same folder as ``path`` (so the final move is atomic)."""
    p = Path(path)
    return p.with_name(f".{p.stem}.{uuid.uuid4().hex[:8]}.partial{p.suffix or '.tif'}")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success it is moved onto ``path``, on any
    error (or cancellation) it is removed and ``path`` is left untouched."""
    final = Path(path)
    if final.parent and not final.parent.exists():
        final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        for leftover in (tmp, Path(str(tmp) + ".aux.xml"), Path(str(tmp) + ".ovr")):
            with contextlib.suppress(OSError):
                leftover.unlink()
        raise


@contextlib.contextmanager
def atomic_raster(path: str | os.PathLike, grid: Grid, count: int, dtype, nodata=None,
                  descriptions: Sequence[str] | None = None,
                  colormap: dict[int, tuple[int, ...]] | None = None,
                  overviews: bool = True, style: str | None = None, classes=None, **profile_overrides):
    """Open a tiled, compressed GeoTIFF for writing on ``grid``; it appears at
    ``path`` only if the ``with`` block completes. Overviews are built on close
    for rasters larger than 1024 pixels on a side. ``style`` (a QML of qgis_plugin/styles) or
    ``classes`` ([(value, rgba, label)]: palette, category names) is written next to it
    (core/styles.py) so that it looks right however it is opened."""
    dtype = np.dtype(dtype)
    profile = dict(GTIFF_PROFILE)
    profile.update(width=grid.width, height=grid.height, count=count, dtype=dtype.name,
                   crs=grid.crs, transform=grid.transform, nodata=nodata)
    profile["predictor"] = 3 if dtype.kind == "f" else 2
    if grid.width < 256 or grid.height < 256:
        profile.update(tiled=False)
        profile.pop("blockxsize"), profile.pop("blockysize")
    profile.update(profile_overrides)
    with atomic_output(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            if descriptions:
                for i, d in enumerate(descriptions, start=1):
                    dst.set_band_description(i, d)
            if colormap is not None:
                dst.write_colormap(1, colormap)
                dst.colorinterp = [ColorInterp.palette]
            yield dst
            if overviews and max(grid.width, grid.height) > 1024:
                factors = [f for f in (2, 4, 8, 16, 32, 64) if max(grid.width, grid.height) / f >= 256]
                if factors:
                    dst.build_overviews(factors, Resampling.nearest if colormap else Resampling.average)
    if style or classes:
        from .styles import write_raster_style

        write_raster_style(path, style, classes)
