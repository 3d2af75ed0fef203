"""The one grid/window abstraction: a georeferenced pixel grid and the blocks
(with optional halos) that every raster tool iterates over.

Pixel coordinates are (row, col) with row 0 at the top; a pixel's centre is at
(col + 0.5, row + 0.5) in the grid's affine transform. Units of the transform
are those of the CRS (metres for projected CRSs, degrees for geographic ones).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from affine import Affine
from rasterio.windows import Window

from .errors import InputError


def apply_affine(transform: Affine, other):
    """``transform`` applied to another Affine or an (x, y) pair: ``@`` where affine has it (3.x;
    its ``*`` warns PendingDeprecationWarning), ``*`` on affine 2.x."""
    return transform @ other if hasattr(Affine, "__matmul__") else transform * other


@dataclass(frozen=True)
class Block:
    """One unit of block-wise work.

    ``window`` is the part of the grid this block produces; ``read_window`` is
    ``window`` grown by the halo and clipped to the grid; ``inner`` are the
    slices of an array read over ``read_window`` that cover ``window``.
    """

    window: Window
    read_window: Window
    index: int

    @property
    def inner(self) -> tuple[slice, slice]:
        r0 = int(self.window.row_off - self.read_window.row_off)
        c0 = int(self.window.col_off - self.read_window.col_off)
        return slice(r0, r0 + int(self.window.height)), slice(c0, c0 + int(self.window.width))


@dataclass(frozen=True)
class Grid:
    """A north-up pixel grid: ``crs`` as WKT (or None), affine ``transform``,
    ``width`` x ``height`` pixels."""

    transform: Affine
    width: int
    height: int
    crs: str | None = None

    def __post_init__(self):
        if self.width <= 0 or self.height <= 0:
            raise InputError("grid", f"has zero size ({self.width} x {self.height} pixels).",
                             "choose an extent larger than one pixel.")
        if self.transform.b != 0 or self.transform.d != 0:
            raise InputError("grid", "is rotated or sheared, which is not supported.",
                             "warp the raster to a north-up grid first (gdalwarp).")

    # -- construction -------------------------------------------------------
    @classmethod
    def from_dataset(cls, ds) -> "Grid":
        """Grid of an open rasterio dataset."""
        return cls(ds.transform, ds.width, ds.height, ds.crs.to_wkt() if ds.crs else None)

    @classmethod
    def from_extent(cls, xmin: float, ymin: float, xmax: float, ymax: float,
                    pixel_size: float, crs: str | None) -> "Grid":
        """Grid covering the extent (CRS units) with square pixels of
        ``pixel_size`` CRS units; the grid is anchored at (xmin, ymax) and may
        extend past xmax and ymin by less than one pixel."""
        if not (pixel_size > 0):
            raise InputError("PIXEL_SIZE", f"must be positive, got {pixel_size}.")
        if not (xmax > xmin and ymax > ymin):
            raise InputError("EXTENT", f"is empty ({xmin}, {ymin}, {xmax}, {ymax}).",
                             "give an extent with xmax > xmin and ymax > ymin.")
        width = int(math.ceil(round((xmax - xmin) / pixel_size, 9)))
        height = int(math.ceil(round((ymax - ymin) / pixel_size, 9)))
        return cls(Affine(pixel_size, 0, xmin, 0, -pixel_size, ymax), width, height, crs)

    # -- geometry -----------------------------------------------------------
    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units, both positive."""
        return abs(self.transform.a), abs(self.transform.e)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) in CRS units."""
        t = self.transform
        x0, y0 = t.c, t.f
        x1, y1 = t.c + t.a * self.width, t.f + t.e * self.height
        return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def full_window(self) -> Window:
        return Window(0, 0, self.width, self.height)

    def window_transform(self, window: Window) -> Affine:
        return apply_affine(self.transform, Affine.translation(window.col_off, window.row_off))

    def pixel_centres(self, window: Window | None = None) -> tuple[np.ndarray, np.ndarray]:
        """x and y (CRS units) of the pixel centres of ``window``, as 2-D
        float64 arrays of the window's shape."""
        w = window or self.full_window()
        cols = np.arange(int(w.col_off), int(w.col_off + w.width), dtype=np.float64) + 0.5
        rows = np.arange(int(w.row_off), int(w.row_off + w.height), dtype=np.float64) + 0.5
        t = self.transform
        xs = t.c + t.a * cols
        ys = t.f + t.e * rows
        return np.broadcast_to(xs[None, :], (len(rows), len(cols))), np.broadcast_to(ys[:, None], (len(rows), len(cols)))

    # -- iteration ----------------------------------------------------------
    def blocks(self, block_size: int = 1024, halo: int = 0, block_cols: int | None = None) -> Iterator[Block]:
        """Blocks of at most ``block_size`` rows x ``block_cols`` (default ``block_size``) columns in
        row-major order, each with a read window grown by ``halo`` pixels (clipped to the grid)."""
        block_cols = block_size if block_cols is None else block_cols
        if block_size <= 0 or block_cols <= 0:
            raise ValueError("block_size must be positive")
        index = 0
        for r in range(0, self.height, block_size):
            h = min(block_size, self.height - r)
            for c in range(0, self.width, block_cols):
                w = min(block_cols, self.width - c)
                r0, c0 = max(r - halo, 0), max(c - halo, 0)
                r1, c1 = min(r + h + halo, self.height), min(c + w + halo, self.width)
                yield Block(Window(c, r, w, h), Window(c0, r0, c1 - c0, r1 - r0), index)
                index += 1

    def block_count(self, block_size: int = 1024) -> int:
        return math.ceil(self.height / block_size) * math.ceil(self.width / block_size)
