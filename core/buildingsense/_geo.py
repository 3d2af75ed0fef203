"""Coordinate helpers shared by the BuildingSense tools: a metric working CRS,
transforms between CRSs, and the building id column."""
from __future__ import annotations

import re

import numpy as np
from pyproj import CRS, Transformer

from ..errors import InputError


def metric_crs(crs_wkt: str, lon: float, lat: float) -> CRS:
    """``crs_wkt`` itself when it is projected, else an azimuthal equidistant CRS (metres)
    centred on (``lon``, ``lat``) degrees, where distances from the centre are exact."""
    crs = CRS.from_user_input(crs_wkt)
    if not crs.is_geographic:
        return crs
    return CRS.from_proj4(f"+proj=aeqd +lat_0={lat:.8f} +lon_0={lon:.8f} +datum=WGS84 +units=m +no_defs")


def unit_metres(crs: CRS) -> float:
    """Metres per unit of the first axis of a projected ``crs`` (1 for metres, 0.3048... for US feet)."""
    info = crs.axis_info
    factor = info[0].unit_conversion_factor if info else None
    return float(factor or 1.0)


def transformer(src, dst) -> Transformer | None:
    """An x/y (lon/lat order) transformer from ``src`` to ``dst``; None when they are the same CRS."""
    a, b = CRS.from_user_input(src), CRS.from_user_input(dst)
    if a == b:
        return None
    return Transformer.from_crs(a, b, always_xy=True)


def transform_geoms(geoms: np.ndarray, tr: Transformer | None) -> np.ndarray:
    """Shapely geometries moved through ``tr`` (unchanged when ``tr`` is None)."""
    import shapely

    if tr is None:
        return geoms
    return shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def centre_lonlat(geoms: np.ndarray, crs_wkt: str) -> tuple[float, float]:
    """Longitude, latitude (degrees) of the centre of the geometries' bounding box."""
    import shapely

    xmin, ymin, xmax, ymax = shapely.total_bounds(geoms)
    tr = transformer(crs_wkt, "EPSG:4326")
    x, y = (xmin + xmax) / 2, (ymin + ymax) / 2
    return (x, y) if tr is None else tr.transform(x, y)


def building_ids(fields: dict, id_field: str | None, n: int, what: str = "ID_FIELD") -> list[str]:
    """One text id per building: ``id_field``'s values (which must be present and unique), or
    ``1..n`` (the feature order) when ``id_field`` is empty."""
    if not id_field:
        return [str(i + 1) for i in range(n)]
    values = ["" if v is None or (isinstance(v, float) and not np.isfinite(v)) else str(v).strip()
              for v in fields[id_field]]
    values = [v[:-2] if v.endswith(".0") and v[:-2].lstrip("-").isdigit() else v for v in values]
    empty = sum(1 for v in values if not v)
    if empty:
        raise InputError(what, f"field '{id_field}' is empty for {empty} building(s).",
                         "give a field with an id for every building, or leave it empty to number them.")
    seen: dict[str, int] = {}
    for v in values:
        seen[v] = seen.get(v, 0) + 1
    dup = [k for k, c in seen.items() if c > 1]
    if dup:
        raise InputError(what, f"field '{id_field}' repeats ids ({', '.join(dup[:5])}).",
                         "give a field whose values are unique.")
    return values


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(building_id: str) -> str:
    """A file-name-safe form of a building id (other characters become ``_``)."""
    s = _UNSAFE.sub("_", building_id).strip("._")
    return s or "_"
