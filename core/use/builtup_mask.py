"""``edifice:builtupmask``: the built-up mask that limits inference (seed 000 §2.3.4).

The union of any number of reference layers — class rasters (WSF, CLCD, ESA WorldCover,
…) whose listed values mean built-up, and polygon layers (every polygon is built-up) —
on the grid of a reference raster (the imagery): uint8, 1 built-up, 0 not. Rasters are
read through a WarpedVRT onto that grid with nearest-neighbour resampling (class values
are never averaged); polygons are burnt with ``all_touched`` (a conservative mask).
Written block by block.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
from pyproj import CRS, Transformer
from rasterio import features
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from ..errors import InputError
from ..grid import Grid
from ..progress import Progress, ensure
from ..outputs import refuse_input_as_output
from ..raster_io import atomic_raster, open_raster, require_crs, require_real
from ..styles import BUILTUP_CLASSES


def parse_values(text: str | Sequence[int] | None, name: str = "VALUES") -> np.ndarray:
    """'1' / '80,190' / '10-20,50' → sorted unique integer class values."""
    if text is None or (isinstance(text, str) and not text.strip()):
        raise InputError(name, "no built-up class value was given.", "write e.g. 1 (WSF) or 80 (CLCD impervious).")
    if not isinstance(text, str):
        return np.unique(np.asarray(list(text), dtype=np.int64))
    out: list[int] = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                a, b = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
                lo, hi = int(float(a)), int(float(b))
                out.extend(range(min(lo, hi), max(lo, hi) + 1))
            else:
                out.append(int(float(part)))
        except ValueError as exc:
            raise InputError(name, f"'{text}' is not a list of class values.", "write e.g. 1 or 80,190 or 10-20.") from exc
    if not out:
        raise InputError(name, f"'{text}' holds no class value.", "write e.g. 1 or 80,190.")
    return np.unique(np.asarray(out, dtype=np.int64))


def _read_polygons(path: str, layer: str | None, crs_wkt: str):
    import shapely

    from ..vector_io import read_vector

    lyr = read_vector(path, "POLYGONS", layer, columns=[], what="a GeoPackage, GeoJSON or Shapefile of polygons",
                      kind="Polygon")
    crs = lyr.crs_wkt
    g = lyr.geoms
    g = g[~shapely.is_missing(g)]
    g = g[np.isin(shapely.get_type_id(g), (3, 6))]
    if CRS.from_user_input(crs) != CRS.from_user_input(crs_wkt):
        tr = Transformer.from_crs(CRS.from_user_input(crs), CRS.from_user_input(crs_wkt), always_xy=True)
        g = shapely.transform(g, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    g = shapely.make_valid(g)
    return g, shapely.STRtree(g)


def builtup_mask(reference: str, output: str, rasters: Sequence[tuple[str, str | Sequence[int]]] = (),
                 polygons: Sequence[str | tuple[str, str | None]] = (), block_size: int = 2048,
                 progress: Progress | None = None) -> dict:
    """Write the union mask on the grid of ``reference``. ``rasters``: (path, built-up
    values); ``polygons``: paths (or (path, layer)). Returns the built-up fraction."""
    refuse_input_as_output({"OUTPUT": output}, {"REFERENCE": reference, "RASTERS": [r[0] for r in rasters],
                                                "POLYGONS": [p if isinstance(p, str) else p[0] for p in polygons]})
    progress = ensure(progress)
    if not rasters and not polygons:
        raise InputError("LAYERS", "no reference layer was given.", "give at least one class raster or polygon layer.")
    with open_raster(reference, "REFERENCE") as ds:
        crs = require_crs(ds, "REFERENCE")
        grid = Grid.from_dataset(ds)
    with contextlib.ExitStack() as stack:
        srcs = []
        for k, (path, values) in enumerate(rasters):
            vals = parse_values(values, f"VALUES ({path})")
            src = stack.enter_context(open_raster(path, f"RASTERS[{k}]"))
            require_real(src, f"RASTERS[{k}]")
            if src.crs is None:
                raise InputError(f"RASTERS[{k}]", f"'{path}' has no CRS.", "assign its CRS first.")
            vrt = stack.enter_context(WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width,
                                                height=grid.height, resampling=Resampling.nearest))
            srcs.append((vrt, vals))
        polys = []
        for item in polygons:
            path, layer = (item, None) if isinstance(item, str) else item
            polys.append(_read_polygons(path, layer, crs))
        blocks = list(grid.blocks(block_size))
        n_built = 0
        with atomic_raster(output, grid, 1, np.uint8, nodata=None, descriptions=["builtup"],
                           colormap={v: c for v, c, _ in BUILTUP_CLASSES}, style="builtup_mask.qml",
                           classes=BUILTUP_CLASSES) as dst:
            for i, blk in enumerate(blocks):
                progress.check_cancelled()
                w = blk.window
                m = _block_mask(w, grid, srcs, polys)
                n_built += int(m.sum())
                dst.write(m.astype(np.uint8)[None], window=w)
                progress.set_fraction((i + 1) / len(blocks))
    frac = n_built / float(grid.width * grid.height)
    if n_built == 0:
        progress.warning("the built-up mask is empty: no reference layer marks any pixel of the grid as built-up.")
    progress.info(f"Built-up mask: {100 * frac:.1f} % of {grid.width} x {grid.height} px.")
    return {"output": output, "builtup_fraction": frac, "builtup_pixels": n_built}


def _block_mask(w, grid: Grid, srcs: list, polys: list) -> np.ndarray:
    """Built-up pixels of window ``w``: a listed value in any class raster (nodata excluded) or
    touched by any polygon."""
    m = np.zeros((int(w.height), int(w.width)), bool)
    for vrt, vals in srcs:
        a = vrt.read(1, window=w)
        hit = np.isin(a, vals)
        if vrt.nodata is not None:
            hit &= a != vrt.nodata
        m |= hit
    if polys:
        m |= _polygon_pixels(w, grid, polys)
    return m


def _polygon_pixels(w, grid: Grid, polys: list) -> np.ndarray:
    """Pixels of window ``w`` touched by a polygon (all_touched rasterisation, grid CRS)."""
    import shapely
    t = grid.window_transform(w)
    x0, y1 = t.c, t.f
    x1, y0 = t.c + t.a * int(w.width), t.f + t.e * int(w.height)
    box = shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    m = np.zeros((int(w.height), int(w.width)), bool)
    for g, tree in polys:
        idx = tree.query(box, predicate="intersects")
        if len(idx):
            m |= features.rasterize(((geom, 1) for geom in g[idx]), out_shape=m.shape, transform=t,
                                    all_touched=True, dtype=np.uint8).astype(bool)
    return m


__all__ = ["builtup_mask", "parse_values"]
