"""Table reading and CRS helpers for evaluation (over :mod:`core.vector_io`).

Geometries come back as numpy arrays of shapely geometries in the layer's CRS
(or reprojected with pyproj to a target CRS); attributes as numpy arrays.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import shapely
from pyproj import CRS, Transformer

from ..errors import InputError
from ..vector_io import read_vector


def read_table(path, fields: Sequence[str], layer=None, what: str = "INPUT",
               geometry: bool = False):
    """Read ``fields`` (case-insensitive names) of a vector layer or a CSV.

    Returns ``(columns, geoms, crs)``: ``columns`` {requested name: ndarray},
    ``geoms`` an ndarray of shapely geometries (made valid) or None, ``crs`` the
    layer's CRS as WKT (None if it has none or ``geometry`` is False)."""
    lyr = read_vector(path, what, layer, columns=list(fields), geometry=geometry,
                      what="a GeoPackage, shapefile, GeoJSON or CSV")
    columns = {w: np.asarray(v) for w, v in lyr.fields.items()}
    if not geometry:
        return columns, None, None
    geoms = lyr.geoms
    bad = ~shapely.is_valid(geoms) & ~shapely.is_missing(geoms)
    if bad.any():
        geoms[bad] = shapely.make_valid(geoms[bad])
    return columns, geoms, lyr.crs_wkt


def same_crs(a, b) -> bool:
    """True when both CRSs are equal (either may be WKT, 'EPSG:n' or a rasterio CRS)."""
    if a is None or b is None:
        return a is None and b is None
    return CRS.from_user_input(_crs_text(a)) == CRS.from_user_input(_crs_text(b))


def _crs_text(crs) -> str:
    return crs.to_wkt() if hasattr(crs, "to_wkt") else str(crs)


def reproject_geoms(geoms: np.ndarray, src, dst, what: str = "INPUT") -> np.ndarray:
    """Geometries reprojected from CRS ``src`` to ``dst`` (no-op if equal).
    A missing CRS on one side only is an :class:`InputError`."""
    if src is None and dst is None:
        return geoms
    if src is None or dst is None:
        raise InputError(what, "one input has a coordinate reference system and the other has none.",
                         "assign the right CRS to the layer without one (Layer Properties > Source).")
    if same_crs(src, dst):
        return geoms
    tr = Transformer.from_crs(CRS.from_user_input(_crs_text(src)), CRS.from_user_input(_crs_text(dst)),
                              always_xy=True)

    def _apply(xy: np.ndarray) -> np.ndarray:
        x, y = tr.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    out = shapely.transform(geoms, _apply)
    if not np.all(np.isfinite(shapely.bounds(out[~shapely.is_empty(out)]))):
        raise InputError(what, "some geometries could not be reprojected (outside the target CRS's area).",
                         "clip the layers to the area of interest first.")
    return out


def as_str_labels(values: np.ndarray) -> list[str]:
    """Attribute values as label strings; None/NaN become '' (missing).
    Whole floats print without '.0' (a 3.0 class code is '3')."""
    out = []
    for v in values.tolist():
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            out.append("")
        elif isinstance(v, float) and v.is_integer():
            out.append(str(int(v)))
        else:
            out.append(str(v).strip())
    return out


def as_float(values: np.ndarray, what: str, field: str) -> np.ndarray:
    """Numeric attribute as float64 (None/empty -> NaN); text that is not a number is an error."""
    try:
        return np.array([np.nan if (v is None or v == "") else float(v) for v in values.tolist()],
                        dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(what, f"field '{field}' holds values that are not numbers ({exc}).",
                         "choose a numeric field (heights in metres).") from exc


__all__ = ["read_table", "reproject_geoms", "same_crs", "as_str_labels", "as_float"]
