"""Tile-grid math shared by XYZ/TMS, WMTS and (virtual tiles of) WMS services.

A :class:`TileMatrixSet` is a pyramid of :class:`TileMatrix` levels in one CRS
(coarsest first). A level's tiles are numbered (col, row) from its top-left
corner, rows growing downwards, as in OGC WMTS; an XYZ ``{x}/{y}`` pair is
(col, row) of the Web Mercator set. Coordinates are in the set's CRS units.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from pyproj import CRS, Geod, Transformer

#: Half the width of the Web Mercator (EPSG:3857) world square, metres.
WEB_MERCATOR_HALF = 20037508.342789244
#: Metres per pixel of OGC's "standardized rendering pixel" (0.28 mm): resolution = scale denominator x this.
OGC_PIXEL_M = 0.00028
_GEOD = Geod(ellps="WGS84")


@dataclass(frozen=True)
class TileMatrix:
    """One level: ``resolution`` CRS units per pixel, ``top_left`` (x, y) corner of tile (0, 0),
    tiles of ``tile_width`` x ``tile_height`` pixels, ``matrix_width`` x ``matrix_height`` tiles."""

    identifier: str
    resolution: float
    top_left: tuple[float, float]
    tile_width: int = 256
    tile_height: int = 256
    matrix_width: int = 1
    matrix_height: int = 1

    @property
    def tile_span(self) -> tuple[float, float]:
        """Width and height of one tile in CRS units."""
        return self.tile_width * self.resolution, self.tile_height * self.resolution

    def tile_bounds(self, col: int, row: int) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of tile (col, row) in CRS units."""
        sx, sy = self.tile_span
        x0, y0 = self.top_left
        return x0 + col * sx, y0 - (row + 1) * sy, x0 + (col + 1) * sx, y0 - row * sy

    def tile_range(self, bounds: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
        """(col0, row0, col1, row1), end-exclusive, of the tiles that overlap ``bounds``
        (CRS units), clipped to the matrix; empty (col1 <= col0) when outside it."""
        sx, sy = self.tile_span
        x0, y0 = self.top_left
        xmin, ymin, xmax, ymax = bounds
        col0 = max(int(math.floor((xmin - x0) / sx)), 0)
        col1 = min(int(math.ceil((xmax - x0) / sx)), self.matrix_width)
        row0 = max(int(math.floor((y0 - ymax) / sy)), 0)
        row1 = min(int(math.ceil((y0 - ymin) / sy)), self.matrix_height)
        return col0, row0, max(col1, col0), max(row1, row0)


@dataclass(frozen=True)
class TileMatrixSet:
    """A pyramid of levels in ``crs`` (any pyproj-readable text), coarsest first."""

    crs: str
    matrices: tuple[TileMatrix, ...]
    identifier: str = ""


def web_mercator_set(min_zoom: int = 0, max_zoom: int = 19, tile_size: int = 256) -> TileMatrixSet:
    """The XYZ ("Google") tiling of EPSG:3857: zoom z has 2^z x 2^z tiles; identifiers are the zooms."""
    levels = []
    for z in range(min_zoom, max_zoom + 1):
        n = 2 ** z
        levels.append(TileMatrix(str(z), 2 * WEB_MERCATOR_HALF / (tile_size * n),
                                 (-WEB_MERCATOR_HALF, WEB_MERCATOR_HALF), tile_size, tile_size, n, n))
    return TileMatrixSet("EPSG:3857", tuple(levels), "GoogleMapsCompatible")


@functools.lru_cache(maxsize=16)
def transformer(src_crs: str, dst_crs: str) -> Transformer:
    """pyproj's (x, y)-ordered transformer from ``src_crs`` to ``dst_crs`` (any pyproj-readable
    text), made once: making one costs milliseconds (PROJ database look-ups)."""
    return Transformer.from_crs(CRS.from_user_input(src_crs), CRS.from_user_input(dst_crs), always_xy=True)


@functools.lru_cache(maxsize=16)
def _is_geographic(crs: str) -> bool:
    return CRS.from_user_input(crs).is_geographic


def ground_metres_per_unit(crs: str, lon: float, lat: float) -> float:
    """Ground distance (metres, on the WGS84 ellipsoid) of one CRS unit along x at (lon, lat) degrees."""
    x, y = transformer("EPSG:4326", crs).transform(lon, lat)
    step = 1e-6 if _is_geographic(crs) else 1.0
    lon2, lat2 = transformer(crs, "EPSG:4326").transform(x + step, y)
    _, _, dist = _GEOD.inv(lon, lat, lon2, lat2)
    return dist / step


def choose_level(tms: TileMatrixSet, gsd_m: float, lon: float, lat: float) -> tuple[int, float, bool]:
    """Index of the coarsest level whose ground pixel size at (lon, lat) is at most ``gsd_m`` (1 %
    tolerance), that pixel size in metres, and whether the deepest level was coarser than asked."""
    per_unit = ground_metres_per_unit(tms.crs, lon, lat)
    sizes = [m.resolution * per_unit for m in tms.matrices]
    for i, size in enumerate(sizes):
        if size <= gsd_m * 1.01:
            return i, size, False
    return len(sizes) - 1, sizes[-1], True


def quadkey(col: int, row: int, zoom: int) -> str:
    """Bing Maps quadkey of XYZ tile (col, row) at ``zoom``."""
    digits = []
    for i in range(zoom, 0, -1):
        mask = 1 << (i - 1)
        digits.append(str((1 if col & mask else 0) + (2 if row & mask else 0)))
    return "".join(digits)
