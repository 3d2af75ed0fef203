"""Blocks of whole sliding windows: the unit of work of a cluster run.

A block is a rectangle of the engine's tile grid (:class:`core.sliding_window.WindowLayout`):
tile rows ``i0..i1`` and columns ``j0..j1`` (ends exclusive). Its pixels are the union of
those tiles, i.e. the window rows ``i0 * stride`` to ``i1 * stride`` (clipped to the grid),
so blocks meet exactly on tile seams and every window keeps the origin it has in a
single-machine run.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from rasterio.windows import Window

from ..errors import InputError
from ..grid import Block, Grid
from ..sliding_window import WindowLayout


@dataclass(frozen=True)
class ClusterBlock:
    """Tiles ``region`` = (i0, i1, j0, j1) of the tile grid; ``window`` its pixels on the grid."""

    region: tuple[int, int, int, int]
    window: Window

    @property
    def id(self) -> str:
        i0, _, j0, _ = self.region
        return f"b{i0:05d}_{j0:05d}"

    @property
    def windows(self) -> int:
        i0, i1, j0, j1 = self.region
        return (i1 - i0) * (j1 - j0)

    def area_km2(self, grid: Grid) -> float:
        """Area of the block's pixels in km²: grid units taken as metres, or on a geographic CRS
        (degrees) the area on a sphere of the mean Earth radius."""
        rx, ry = grid.res
        w, h = int(self.window.width), int(self.window.height)
        if not _is_geographic(grid.crs):
            return w * h * rx * ry / 1e6
        y1 = grid.transform.f - int(self.window.row_off) * ry
        lat0, lat1 = math.radians(max(y1 - h * ry, -90.0)), math.radians(min(y1, 90.0))
        return _EARTH_RADIUS_KM ** 2 * math.radians(w * rx) * abs(math.sin(lat1) - math.sin(lat0))


#: mean Earth radius (km), for block areas on geographic grids
_EARTH_RADIUS_KM = 6371.0088


@functools.lru_cache(maxsize=8)
def _is_geographic(crs_wkt: str | None) -> bool:
    if not crs_wkt:
        return False
    from pyproj import CRS

    return CRS.from_user_input(crs_wkt).is_geographic


def plan_blocks(grid: Grid, layout: WindowLayout, block_windows: int) -> list[ClusterBlock]:
    """Blocks of ``block_windows`` x ``block_windows`` windows (fewer at the right and bottom
    edges) covering ``grid``, in row-major order."""
    if block_windows < 1:
        raise InputError("BLOCK_WINDOWS", f"must be at least 1, got {block_windows}.",
                         "give the number of windows along a block's side, e.g. 8.")
    ni, nj = layout.shape(grid)
    blocks = []
    for i0 in range(0, ni, block_windows):
        for j0 in range(0, nj, block_windows):
            region = (i0, min(i0 + block_windows, ni), j0, min(j0 + block_windows, nj))
            blocks.append(ClusterBlock(region, layout.region_window(grid, region)))
    return blocks


def pixel_blocks(grid: Grid, block_size: int) -> list[ClusterBlock]:
    """Blocks of ``block_size`` x ``block_size`` pixels (fewer at the right and bottom edges),
    row-major, as :meth:`Grid.blocks` cuts them; ``region`` counts blocks, not windows."""
    return [ClusterBlock((int(b.window.row_off) // block_size, int(b.window.row_off) // block_size + 1,
                          int(b.window.col_off) // block_size, int(b.window.col_off) // block_size + 1), b.window)
            for b in grid.blocks(block_size, 0)]


def with_halo(grid: Grid, block: ClusterBlock, halo: int) -> Block:
    """The :class:`core.grid.Block` of ``block``: its window read with ``halo`` pixels around
    (clipped to the grid), as :meth:`Grid.blocks` gives it to the single-machine tools."""
    w = block.window
    r0, c0 = max(int(w.row_off) - halo, 0), max(int(w.col_off) - halo, 0)
    r1 = min(int(w.row_off + w.height) + halo, grid.height)
    c1 = min(int(w.col_off + w.width) + halo, grid.width)
    return Block(w, Window(c0, r0, c1 - c0, r1 - r0), 0)
