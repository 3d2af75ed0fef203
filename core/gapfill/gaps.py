"""Which pixels are gaps (cloud, shadow): a mask raster on the image grid (non-zero =
gap), the image's nodata, and/or band value ranges, optionally dilated by a disk
of ``dilation`` pixels. Gaps are per pixel (every band is filled where a pixel is a gap).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window
from scipy import ndimage

from ..errors import InputError
from ..grid import Grid
from ..raster_io import open_raster, read_masked


@dataclass(frozen=True)
class BandRange:
    """Gap where ``low <= value <= high`` in band ``band`` (1-based)."""

    band: int
    low: float
    high: float


def parse_ranges(text: str) -> tuple[BandRange, ...]:
    """``"band:low:high[,band:low:high...]"`` (``;`` also separates) as :class:`BandRange` s."""
    out = []
    for part in text.replace(";", ",").split(","):
        if not part.strip():
            continue
        bits = part.split(":")
        try:
            band, lo, hi = int(bits[0]), float(bits[1]), float(bits[2])
            if len(bits) != 3:
                raise ValueError
        except (ValueError, IndexError):
            raise InputError("RANGES", f"'{part.strip()}' is not band:low:high.",
                             "write e.g. 3:200:255 (band 3 from 200 to 255), several separated by commas.") from None
        out.append(BandRange(band, lo, hi))
    return tuple(out)


@dataclass(frozen=True)
class GapSpec:
    """The gap definition: any of ``mask_path`` (non-zero = gap; its nodata counts as clear),
    ``use_nodata`` (the image's nodata pixels are gaps, filled like clouds) and ``ranges``;
    a pixel is a gap when any of them says so. The mask and the ranges mark only pixels that hold
    data: the image's nodata stays nodata unless ``use_nodata``. ``dilation`` grows the gaps (pixels)."""

    mask_path: str | None = None
    use_nodata: bool = False
    ranges: tuple[BandRange, ...] = ()
    dilation: int = 0

    def check(self, band_count: int) -> None:
        if not (self.mask_path or self.use_nodata or self.ranges):
            raise InputError("MASK", "no gap definition was given.",
                             "give a cloud mask raster, choose the image's nodata as gaps, or give band ranges.")
        if self.dilation < 0:
            raise InputError("DILATION", f"must be 0 or more pixels, got {self.dilation}.")
        for r in self.ranges:
            if not 1 <= r.band <= band_count:
                raise InputError("RANGES", f"band {r.band} does not exist; the image has {band_count} band(s).")
            if r.low > r.high:
                raise InputError("RANGES", f"band {r.band}: low {r.low:g} is above high {r.high:g}.")


def _same_grid(a: Grid, b: Grid) -> bool:
    tol = 1e-6 * min(a.res)
    same_crs = a.crs is None or b.crs is None or _crs_equal(a.crs, b.crs)
    return (a.width, a.height) == (b.width, b.height) and same_crs and all(
        abs(x - y) <= tol for x, y in zip(a.transform[:6], b.transform[:6]))


def _crs_equal(wkt_a: str, wkt_b: str) -> bool:
    from rasterio.crs import CRS

    return CRS.from_wkt(wkt_a) == CRS.from_wkt(wkt_b)


def open_mask(path: str, grid: Grid):
    """Open the mask raster and check that it lies on ``grid`` (the image's), else a clear error."""
    ds = open_raster(path, "MASK")
    g = Grid.from_dataset(ds)
    if not _same_grid(g, grid):
        ds.close()
        xmin, ymin, xmax, ymax = grid.bounds
        raise InputError("MASK", f"'{path}' is on another grid ({g.width} x {g.height} px, pixel {g.res[0]:g}, "
                                 f"origin {g.transform.c:g}, {g.transform.f:g}) than the image ({grid.width} x "
                                 f"{grid.height} px, pixel {grid.res[0]:g}, origin {grid.transform.c:g}, "
                                 f"{grid.transform.f:g}).",
                         f"warp it onto the image grid, e.g. gdalwarp -r near -te {xmin!r} {ymin!r} {xmax!r} "
                         f"{ymax!r} -ts {grid.width} {grid.height} [-t_srs <image CRS>] mask.tif mask_on_grid.tif "
                         "(or Raster > Align Rasters).")
    return ds


def _grow(window: Window, by: int, grid: Grid) -> Window:
    r0, c0 = max(int(window.row_off) - by, 0), max(int(window.col_off) - by, 0)
    r1 = min(int(window.row_off + window.height) + by, grid.height)
    c1 = min(int(window.col_off + window.width) + by, grid.width)
    return Window(c0, r0, c1 - c0, r1 - r0)


def _disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius + 1e-9


class GapReader:
    """Reads image blocks with their gap mask. ``image`` and ``mask`` are open datasets
    (``mask`` may be None) on the same ``grid``."""

    def __init__(self, image, mask, spec: GapSpec, grid: Grid):
        self.image, self.mask, self.spec, self.grid = image, mask, spec, grid

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(data (bands, rows, cols), valid, gap) over ``window``: ``valid`` is the image's
        own validity (no band nodata / NaN), ``gap`` the dilated gap mask."""
        d = self.spec.dilation
        outer = _grow(window, d, self.grid)
        data, valid = read_masked(self.image, outer, "INPUT")
        gap = self._raw_gaps(outer, data, valid)
        if d > 0 and gap.any():
            gap = ndimage.binary_dilation(gap, structure=_disk(d))
            if not self.spec.use_nodata:
                gap &= valid  # grown clouds do not reach into the image's nodata
        r0, c0 = int(window.row_off - outer.row_off), int(window.col_off - outer.col_off)
        inner = (slice(r0, r0 + int(window.height)), slice(c0, c0 + int(window.width)))
        return data[(slice(None),) + inner], valid[inner], gap[inner]

    def _raw_gaps(self, window: Window, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
        gap = np.zeros(valid.shape, dtype=bool)
        if self.mask is not None:
            m, m_valid = read_masked(self.mask, window, "MASK", bands=[1])
            gap |= (m[0] != 0) & m_valid & valid
        if self.spec.use_nodata:
            gap |= ~valid
        for r in self.spec.ranges:
            band = data[r.band - 1]
            gap |= valid & (band >= r.low) & (band <= r.high)
        return gap


def halo_for(radius: float) -> int:
    """Pixels of context a block needs so that every neighbour within ``radius`` is read."""
    return int(math.ceil(radius)) + 1
