"""Per-polygon zonal reads shared by the tools that give existing footprints raster values
(``edifice:assignbuildinguse``, ``edifice:assignbuildingheight``): polygons in the raster's CRS,
the pixels each polygon holds, and the output GeoPackage that keeps the layer's own fields."""
from __future__ import annotations

import numpy as np
import shapely
from rasterio import features
from rasterio.windows import Window

from .errors import InputError
from .grid import Grid


def polygon_pixels(geom, grid: Grid) -> tuple[Window, np.ndarray] | None:
    """(window of ``grid``, boolean mask of the pixels whose centres ``geom`` holds); the pixel
    under the polygon's representative point when it holds no centre; None for a polygon off the
    grid, empty, or not polygonal. ``geom`` in the grid's CRS."""
    if geom is None or shapely.is_empty(geom) or shapely.get_type_id(geom) not in (3, 6):
        return None
    win = bounds_window(shapely.bounds(geom), grid)
    if win is not None:
        inside = features.geometry_mask([geom], (int(win.height), int(win.width)), grid.window_transform(win),
                                        invert=True)
        if inside.any():
            return win, inside
    pt = shapely.point_on_surface(geom)
    cc, rr = ~grid.transform * (pt.x, pt.y)
    cc, rr = int(np.floor(cc)), int(np.floor(rr))
    if not (0 <= cc < grid.width and 0 <= rr < grid.height):
        return None
    return Window(cc, rr, 1, 1), np.ones((1, 1), bool)


def bounds_window(bounds, grid: Grid) -> Window | None:
    """The window of ``grid`` covering ``bounds`` (xmin, ymin, xmax, ymax; grid CRS), clipped to the
    grid; None when it misses the grid."""
    xmin, ymin, xmax, ymax = bounds
    t = grid.transform
    cs = sorted([(xmin - t.c) / t.a, (xmax - t.c) / t.a])
    rs = sorted([(ymax - t.f) / t.e, (ymin - t.f) / t.e])
    c0, c1 = max(int(np.floor(cs[0])), 0), min(int(np.ceil(cs[1])), grid.width)
    r0, r1 = max(int(np.floor(rs[0])), 0), min(int(np.ceil(rs[1])), grid.height)
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def refuse_field_clash(names, new_names, what: str = "INPUT") -> None:
    """The layer must not already hold a field the tool adds."""
    clash = sorted(set(names) & set(new_names))
    if clash:
        raise InputError(what, f"already has field(s) {', '.join(clash)}.", "rename or drop them first.")


def write_with_fields(output: str, lyr, new_fields: dict, style: str | None = None) -> None:
    """Write ``lyr`` (a :class:`core.vector_io.VectorLayer`) with its own fields plus ``new_fields``
    (name -> array) as layer ``buildings`` of a GeoPackage, atomically; ``style`` (a QML file of
    the plugin's styles) becomes the layer's default style."""
    import pyogrio.raw

    from .raster_io import atomic_output
    from .styles import write_gpkg_style
    from .vector_io import GPKG_CREATION

    names = list(lyr.fields) + list(new_fields)
    data = list(lyr.fields.values()) + list(new_fields.values())
    with atomic_output(output) as tmp:
        pyogrio.raw.write(str(tmp), lyr.wkb, data, names, driver="GPKG", layer="buildings",
                          geometry_type=lyr.geometry_type, crs=lyr.crs_wkt, dataset_options=GPKG_CREATION)
        if style:
            write_gpkg_style(tmp, "buildings", style)


__all__ = ["polygon_pixels", "bounds_window", "refuse_field_clash", "write_with_fields"]
