"""Image chips of one building from an imagery raster: the footprint (rooftop) and its
buffer zone, masked outside the polygon (the seed's "masking technique", §3.1.3), as
8-bit PNG or JPEG bytes."""
from __future__ import annotations

import contextlib
import struct
import warnings
import zlib

import numpy as np
import rasterio
from rasterio import features
from rasterio.io import MemoryFile
from rasterio.transform import Affine
from rasterio.windows import Window

from ..raster_io import read_masked

#: GDAL drivers and file extensions of the chip formats.
FORMATS = {"png": ("PNG", "png"), "jpeg": ("JPEG", "jpg")}


class ChipReader:
    """Reads 8-bit RGB (or grey) chips of polygons in the raster's CRS. Rasters that are not 8-bit
    are stretched linearly between their 2nd and 98th percentiles (per band, over the whole raster)."""

    def __init__(self, ds, max_px: int = 512, image_format: str = "png"):
        self.ds = ds
        self.max_px = int(max_px)
        self.driver, self.ext = FORMATS[image_format]
        self.bands = [1, 2, 3] if ds.count >= 3 else [1]
        self.scale = None if ds.dtypes[0] == "uint8" else _percentile_stretch(ds, self.bands)

    def chip(self, polygon) -> bytes | None:
        """Encoded chip of ``polygon`` (shapely, raster CRS) masked outside it; None off the raster."""
        win, out_shape = self._window(polygon)
        if win is None:
            return None
        data, valid = self._read(win, out_shape)
        transform = self.ds.window_transform(win) @ Affine.scale(win.width / out_shape[1], win.height / out_shape[0])
        inside = features.geometry_mask([polygon], out_shape, transform, invert=True, all_touched=True)
        keep = inside & valid
        if not keep.any():
            return None
        img = self._to_uint8(data)
        img[:, ~keep] = 0
        return encode(img, self.driver)

    def _window(self, polygon):
        """The pixel window covering ``polygon`` (whole pixels, may reach off the raster) and the
        output shape (at most ``max_px`` on the longer side)."""
        inv = ~self.ds.transform
        xmin, ymin, xmax, ymax = polygon.bounds
        cols, rows = zip(*(inv @ (x, y) for x, y in ((xmin, ymin), (xmax, ymax))))
        c0, c1 = int(np.floor(min(cols))), int(np.ceil(max(cols)))
        r0, r1 = int(np.floor(min(rows))), int(np.ceil(max(rows)))
        if c1 <= 0 or r1 <= 0 or c0 >= self.ds.width or r0 >= self.ds.height:
            return None, None
        w, h = max(c1 - c0, 1), max(r1 - r0, 1)
        f = min(1.0, self.max_px / max(w, h))
        return Window(c0, r0, w, h), (max(1, round(h * f)), max(1, round(w * f)))

    def _read(self, win: Window, out_shape) -> tuple[np.ndarray, np.ndarray]:
        """Values and validity of ``win`` (zero and invalid off the raster) at ``out_shape``."""
        ds = self.ds
        inner = win.intersection(Window(0, 0, ds.width, ds.height))
        data = np.zeros((len(self.bands), int(win.height), int(win.width)), ds.dtypes[0])
        valid = np.zeros((int(win.height), int(win.width)), bool)
        r, c = int(inner.row_off - win.row_off), int(inner.col_off - win.col_off)
        d, v = read_masked(ds, inner, "IMAGERY", self.bands)
        data[:, r:r + d.shape[1], c:c + d.shape[2]] = d
        valid[r:r + d.shape[1], c:c + d.shape[2]] = v
        if out_shape != valid.shape:  # nearest-neighbour decimation of large footprints / buffers
            ri = (np.arange(out_shape[0]) * valid.shape[0] // out_shape[0])
            ci = (np.arange(out_shape[1]) * valid.shape[1] // out_shape[1])
            data, valid = data[:, ri][:, :, ci], valid[ri][:, ci]
        return data, valid

    def _to_uint8(self, data: np.ndarray) -> np.ndarray:
        if self.scale is None:
            return data.astype(np.uint8, copy=True)
        lo, hi = self.scale
        out = (data.astype(np.float64) - lo[:, None, None]) / (hi - lo)[:, None, None] * 255.0
        return np.clip(np.nan_to_num(out), 0, 255).astype(np.uint8)


def _percentile_stretch(ds, bands: list[int], size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Per-band 2nd and 98th percentiles of the valid pixels of a decimated read of ``ds``."""
    f = min(1.0, size / max(ds.width, ds.height))
    shape = (len(bands), max(1, int(ds.height * f)), max(1, int(ds.width * f)))
    data = ds.read(bands, out_shape=shape, masked=True).astype(np.float64)
    lo, hi = np.zeros(len(bands)), np.ones(len(bands))
    for i in range(len(bands)):
        vals = data[i].compressed()
        vals = vals[np.isfinite(vals)]
        if vals.size:
            lo[i], hi[i] = np.percentile(vals, [2, 98])
            hi[i] = hi[i] if hi[i] > lo[i] else lo[i] + 1
    return lo, hi


def encode(img: np.ndarray, driver: str = "PNG") -> bytes:
    """(bands, rows, cols) uint8 array as PNG (1 or 3 bands) or JPEG bytes (no georeferencing)."""
    if driver == "PNG" and img.shape[0] in (1, 3):
        return png_bytes(img)
    count, h, w = img.shape
    with warnings.catch_warnings(), rasterio.Env(GDAL_PAM_ENABLED="NO"):
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with MemoryFile() as mem:
            with mem.open(driver=driver, width=w, height=h, count=count, dtype="uint8",
                          **({"QUALITY": 90} if driver == "JPEG" else {})) as dst:
                dst.write(img)
            return mem.read()


def png_bytes(img: np.ndarray, level: int = 1) -> bytes:
    """A (1 or 3, rows, cols) uint8 array as an 8-bit grey or RGB PNG (zlib at ``level``; no GDAL
    dataset per chip, several times faster for small images)."""
    count, h, w = img.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    pixels = np.moveaxis(img, 0, -1).reshape(h, w * count)
    rows = np.empty((h, 1 + w * count), np.uint8)
    rows[:, 0] = 2  # filter type 2 ("Up": difference to the row above), cheap and good on imagery
    rows[0, 1:] = pixels[0]
    np.subtract(pixels[1:], pixels[:-1], out=rows[1:, 1:])  # uint8 arithmetic wraps modulo 256 as PNG wants
    header = struct.pack(">IIBBBBB", w, h, 8, 2 if count == 3 else 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), level))
            + chunk(b"IEND", b""))


@contextlib.contextmanager
def open_imagery(path: str | None, max_px: int, image_format: str):
    """A :class:`ChipReader` over ``path`` (None when no imagery is given), closed on exit."""
    if not path:
        yield None
        return
    from ..raster_io import open_raster, require_crs

    with open_raster(path, "IMAGERY") as ds:
        require_crs(ds, "IMAGERY")
        yield ChipReader(ds, max_px, image_format)
