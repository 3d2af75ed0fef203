"""The one vector reader of core (pyogrio + shapely, no GeoPandas, no qgis).

:func:`read_vector` opens any OGR-readable layer (GeoPackage, GeoJSON, Shapefile,
.osm.pbf …) and returns its geometries, its fields and its CRS, or raises an
:class:`InputError` that names the parameter and the fix.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError


@dataclass
class VectorLayer:
    """Geometries (shapely array), fields (name -> array, in layer order), CRS as WKT, the layer's
    declared geometry type (e.g. ``"Point"``, ``"MultiPolygon"``, ``"Unknown"``) and the geometries
    as read (WKB, to write them back unchanged)."""

    geoms: np.ndarray
    fields: dict
    crs_wkt: str
    geometry_type: str
    wkb: np.ndarray

    def records(self) -> list[dict]:
        """One ``{field: value}`` dict per feature."""
        names = list(self.fields)
        cols = [self.fields[n] for n in names]
        return [{n: c[i] for n, c in zip(names, cols)} for i in range(len(self.geoms))]


def read_vector(path: str, name: str = "INPUT", layer: str | None = None, columns: list[str] | None = None,
                what: str = "a GeoPackage, GeoJSON or Shapefile", kind: str | None = None) -> VectorLayer:
    """Read ``layer`` of ``path``; ``columns`` limits the fields read (``[]``: none).
    ``name`` is the parameter named in errors, ``what`` the kind of file suggested as a fix;
    ``kind`` (``"Point"`` or ``"Polygon"``) refuses layers declared with another geometry type."""
    import pyogrio
    import pyogrio.raw
    import shapely
    from pyproj import CRS

    try:
        info = pyogrio.read_info(path, layer=layer)
        meta, _, wkb, data = pyogrio.raw.read(path, layer=layer, columns=columns)
    except Exception as exc:  # pyogrio raises several error types
        raise InputError(name, f"'{path}' could not be read as a vector layer ({exc}).", f"give {what}.") from exc
    crs = meta.get("crs") or info.get("crs")
    if not crs:
        raise InputError(name, f"'{path}' has no CRS.", "assign the layer's CRS first.")
    gtype = str(meta.get("geometry_type") or "Unknown")
    if kind and kind not in gtype and gtype != "Unknown":
        raise InputError(name, f"'{path}' holds {gtype} geometries, not {kind.lower()}s.", f"give {what}.")
    try:
        geoms = shapely.from_wkb(wkb)
    except Exception as exc:  # GEOS raises on broken geometries
        raise InputError(name, f"'{path}' holds invalid geometries ({exc}).",
                         "repair them (Vector > Geometry Tools > Fix Geometries).") from exc
    names = [str(n) for n in meta["fields"]]
    return VectorLayer(geoms, dict(zip(names, data)), CRS.from_user_input(crs).to_wkt(), gtype, wkb)
