"""The one vector reader of core (pyogrio + shapely, no GeoPandas, no qgis).

:func:`read_vector` opens any OGR-readable layer (GeoPackage, GeoJSON, Shapefile,
.osm.pbf …) and returns its geometries, its fields and its CRS, or raises an
:class:`InputError` that names the parameter and the fix.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

#: Creation options of the GeoPackages core writes: version 1.3, which every GDAL QGIS links reads
#: without "This version of GeoPackage ... may only be partially supported" (pyogrio's GDAL writes 1.4).
GPKG_CREATION = {"VERSION": "1.3"}


@dataclass
class VectorLayer:
    """Geometries (shapely array), fields (name -> array, in layer order), CRS as WKT, the layer's
    declared geometry type (e.g. ``"Point"``, ``"MultiPolygon"``, ``"Unknown"``) and the geometries
    as read (WKB, to write them back unchanged)."""

    geoms: np.ndarray | None
    fields: dict
    crs_wkt: str | None
    geometry_type: str
    wkb: np.ndarray | None

    def records(self) -> list[dict]:
        """One ``{field: value}`` dict per feature."""
        names = list(self.fields)
        cols = [self.fields[n] for n in names]
        n = len(cols[0]) if cols else (0 if self.geoms is None else len(self.geoms))
        return [{k: c[i] for k, c in zip(names, cols)} for i in range(n)]


def resolve_fields(available, wanted, name: str, path: str) -> list[str]:
    """The layer's names for the ``wanted`` fields, matched exactly, else ignoring case;
    a field the layer lacks is an :class:`InputError` that lists the fields it has."""
    lower = {a.lower(): a for a in available}
    out = []
    for w in wanted:
        real = w if w in available else lower.get(str(w).lower())
        if real is None:
            raise InputError(name, f"'{path}' has no field '{w}'.",
                             f"use one of: {', '.join(available) or '(no fields)'}.")
        out.append(real)
    return out


def _only_data_layer(path: str) -> str | None:
    """The one data layer of a file that also holds QGIS's ``layer_styles`` table (Edifice's own
    GeoPackages carry their default style there); None to let the reader pick as usual."""
    import pyogrio

    try:
        names = [str(n) for n, _ in pyogrio.list_layers(path)]
    except Exception:  # noqa: BLE001 - unreadable files are reported by the reader with the parameter name
        return None
    data = [n for n in names if n != "layer_styles"]
    return data[0] if len(data) == 1 and len(names) > 1 else None


def read_vector(path: str, name: str = "INPUT", layer: str | None = None, columns: list[str] | None = None,
                what: str = "a GeoPackage, GeoJSON or Shapefile", kind: str | None = None,
                geometry: bool = True, fields_name: str | None = None) -> VectorLayer:
    """Read ``layer`` of ``path``; ``columns`` limits the fields read (``[]``: none) and
    matches names ignoring case (the returned ``fields`` are keyed by the requested names).
    ``name`` is the parameter named in errors (``fields_name`` in missing-field errors),
    ``what`` the kind of file suggested as a fix; ``kind`` (``"Point"`` or ``"Polygon"``)
    refuses layers declared with another geometry type. ``geometry=False`` reads attributes
    only (a CSV or any table; ``geoms``/``wkb`` are None and no CRS is required)."""
    import os

    import pyogrio
    import pyogrio.raw
    import shapely
    from pyproj import CRS

    path = str(path)
    if not os.path.exists(path) and "://" not in path and not path.startswith("/vsi"):
        raise InputError(name, f"file '{path}' does not exist.", "check the path.")
    layer = layer if layer is not None else _only_data_layer(path)
    try:
        info = pyogrio.read_info(path, layer=layer)
        real = None if columns is None else resolve_fields([str(f) for f in info["fields"]], columns,
                                                           fields_name or name, path)
        meta, _, wkb, data = pyogrio.raw.read(path, layer=layer, read_geometry=geometry,
                                              columns=None if real is None else list(dict.fromkeys(real)))
    except InputError:
        raise
    except Exception as exc:  # pyogrio raises several error types
        raise InputError(name, f"'{path}' could not be read as a vector layer ({exc}).", f"give {what}.") from exc
    names = [str(n) for n in meta["fields"]]
    if real is None:
        fields = dict(zip(names, data))
    else:
        fields = {w: data[names.index(r)] for w, r in zip(columns, real)}
    gtype = str(meta.get("geometry_type") or info.get("geometry_type") or "Unknown")
    if not geometry:
        crs = meta.get("crs") or info.get("crs")
        return VectorLayer(None, fields, CRS.from_user_input(crs).to_wkt() if crs else None, gtype, None)
    if wkb is None or info.get("geometry_type") in (None, "None"):
        raise InputError(name, f"'{path}' has no geometries.", f"give {what}.")
    crs = meta.get("crs") or info.get("crs")
    if not crs:
        raise InputError(name, f"'{path}' has no CRS.", "assign the layer's CRS first.")
    if kind and kind not in gtype and gtype != "Unknown":
        raise InputError(name, f"'{path}' holds {gtype} geometries, not {kind.lower()}s.", f"give {what}.")
    try:
        geoms = shapely.from_wkb(wkb)
    except Exception as exc:  # GEOS raises on broken geometries
        raise InputError(name, f"'{path}' holds invalid geometries ({exc}).",
                         "repair them (Vector > Geometry Tools > Fix Geometries).") from exc
    return VectorLayer(geoms, fields, CRS.from_user_input(crs).to_wkt(), gtype, wkb)
