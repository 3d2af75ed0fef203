"""Turn POI features into a :class:`PoiSet`: category -> class via a mapping
preset, with counts of what could not be mapped. Also reads point files
for the CLI (through pyogrio; the QGIS adapter passes features itself)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from ..evaluation.category_mapping import IGNORED, CategoryMapping, list_presets, load_mapping
from ..errors import InputError
from .poi_probability import CLASSES, PoiSet

PRESETS = ("osm", "gbt35648", "overture", "google_places", "csv")


def load_poi_mapping(preset: str, mapping_file: str | None = None) -> CategoryMapping:
    """The POI category mapping for ``preset`` (``csv`` reads ``mapping_file``)."""
    return load_mapping("poi", preset, PRESETS, mapping_file, CLASSES, "PRESET",
                        "class: residential, commercial or industrial")


@dataclass
class ClassifiedPois:
    pois: PoiSet
    counts: dict[str, int]
    unmapped: int
    ignored: int
    unmapped_examples: list[tuple[str, int]] = field(default_factory=list)

    def summary(self) -> str:
        parts = ", ".join(f"{self.counts[c]} {c}" for c in CLASSES)
        text = f"POIs mapped: {parts}; {self.ignored} ignored by the mapping, {self.unmapped} unmapped."
        if self.unmapped_examples:
            text += " Most frequent unmapped values: " + ", ".join(f"{v} ({n})" for v, n in self.unmapped_examples)
        return text


def classify_pois(xs: Sequence[float], ys: Sequence[float], records: Iterable[dict],
                  category_field: str, mapping: CategoryMapping, crs_wkt: str) -> ClassifiedPois:
    """Classify each point's record (``{field: value}``) with ``mapping``."""
    index = {c: i for i, c in enumerate(CLASSES)}
    cls = []
    unmapped: Counter = Counter()
    ignored = 0
    for rec in records:
        k = mapping.classify_record(rec, category_field)
        if k is None:
            unmapped[str(rec.get(category_field))[:60]] += 1
            cls.append(-1)
        elif k == IGNORED:
            ignored += 1
            cls.append(-1)
        else:
            cls.append(index[k])
    arr = np.asarray(cls, dtype=np.int64)
    counts = {c: int(np.sum(arr == i)) for i, c in enumerate(CLASSES)}
    return ClassifiedPois(PoiSet(np.asarray(xs, float), np.asarray(ys, float), arr, crs_wkt),
                          counts, int(sum(unmapped.values())), ignored, unmapped.most_common(5))


#: Column pairs recognised as point coordinates in a table without geometry (case ignored), and
#: whether they are longitude/latitude (then EPSG:4326 when no CRS is given).
COORDINATE_COLUMNS = (("x", "y", False), ("easting", "northing", False), ("lon", "lat", True),
                      ("lng", "lat", True), ("long", "lat", True), ("longitude", "latitude", True))


def coordinate_columns(names, x_field: str | None = None, y_field: str | None = None
                       ) -> tuple[str, str, bool] | None:
    """(x column, y column, lon/lat?) of a table: the named ones, else the first pair of
    :data:`COORDINATE_COLUMNS` it has; None when it has none."""
    lower = {str(n).lower(): str(n) for n in names}
    if x_field or y_field:
        if not (x_field and y_field):
            raise InputError("X_FIELD" if not x_field else "Y_FIELD", "both coordinate columns are needed.",
                             "name the x (or longitude) and the y (or latitude) column.")
        got = [lower.get(str(f).lower()) for f in (x_field, y_field)]
        if None in got:
            missing = x_field if got[0] is None else y_field
            raise InputError("X_FIELD" if got[0] is None else "Y_FIELD", f"the table has no column '{missing}'.",
                             f"use one of: {', '.join(map(str, names))}.")
        lonlat = any(p[2] and got[0].lower() == p[0] and got[1].lower() == p[1] for p in COORDINATE_COLUMNS)
        return got[0], got[1], lonlat
    for xn, yn, lonlat in COORDINATE_COLUMNS:
        if xn in lower and yn in lower:
            return lower[xn], lower[yn], lonlat
    return None


def _points_from_table(path: str, layer: str | None, category_field: str, x_field: str | None,
                       y_field: str | None, crs: str | None):
    """x, y, records, CRS WKT of a table (CSV, spreadsheet, attribute-only layer) whose points are
    two coordinate columns; rows without numeric coordinates are skipped."""
    from pyproj import CRS

    from ..vector_io import read_vector
    lyr = read_vector(path, "INPUT", layer, geometry=False, what="a table with coordinate columns")
    cols = coordinate_columns(list(lyr.fields), x_field, y_field)
    if cols is None:
        raise InputError("INPUT", f"'{path}' has no geometries and no coordinate columns (x/y, lon/lat, "
                         f"longitude/latitude; it has {', '.join(map(str, lyr.fields))}).",
                         "name the coordinate columns (--x-field/--y-field) and their CRS (--points-crs), "
                         "or give a point layer.")
    xc, yc, lonlat = cols
    if crs is None and lyr.crs_wkt is None and not lonlat:
        raise InputError("POINTS_CRS", f"the coordinates of '{path}' ({xc}, {yc}) come without a CRS.",
                         "give their CRS (--points-crs EPSG:xxxx), or use longitude/latitude columns (EPSG:4326).")
    crs_wkt = CRS.from_user_input(crs).to_wkt() if crs else (lyr.crs_wkt or CRS.from_epsg(4326).to_wkt())
    if category_field not in lyr.fields:
        raise InputError("CATEGORY_FIELD", f"field '{category_field}' is not in '{path}'.",
                         f"use one of: {', '.join(lyr.fields)}.")
    xs = _as_numbers(lyr.fields[xc])
    ys = _as_numbers(lyr.fields[yc])
    ok = np.isfinite(xs) & np.isfinite(ys)
    if not ok.any():
        raise InputError("INPUT", f"no row of '{path}' has numeric coordinates in '{xc}' and '{yc}'.",
                         "check the coordinate columns.")
    recs = [r for r, k in zip(lyr.records(), ok) if k]
    return xs[ok], ys[ok], recs, crs_wkt


def _as_numbers(values) -> np.ndarray:
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            pass
    return out


def _has_geometry(path: str, layer: str | None) -> bool:
    import pyogrio
    try:
        return pyogrio.read_info(str(path), layer=layer).get("geometry_type") not in (None, "None")
    except Exception:  # noqa: BLE001 - unreadable files are reported by the reader
        return True


def read_point_file(path: str, layer: str | None, category_field: str, x_field: str | None = None,
                    y_field: str | None = None, crs: str | None = None
                    ) -> tuple[np.ndarray, np.ndarray, list[dict], str]:
    """Read points of a vector file (GeoPackage, GeoJSON, OSM PBF's ``points``
    layer, …) with pyogrio: x, y, records, CRS WKT. Multipoints give one point
    per part; other geometry types are refused. A table without geometry (a CSV)
    gives its points from coordinate columns: ``x_field``/``y_field`` or, unnamed,
    x/y, easting/northing, lon/lat or longitude/latitude, in ``crs`` (default
    EPSG:4326 for longitude/latitude columns)."""
    from shapely import get_coordinates, get_type_id

    from ..vector_io import read_vector

    if x_field or y_field or not _has_geometry(path, layer):
        return _points_from_table(str(path), layer, category_field, x_field, y_field, crs)
    lyr = read_vector(path, "INPUT", layer, kind="Point",
                      what="a point layer (GeoPackage, GeoJSON, or the 'points' layer of an .osm.pbf), "
                           "or take centroids first")
    if category_field not in lyr.fields:
        raise InputError("CATEGORY_FIELD", f"field '{category_field}' is not in '{path}'.",
                         f"use one of: {', '.join(lyr.fields)}.")
    g = lyr.geoms
    if len(g) == 0:
        raise InputError("INPUT", f"'{path}' has no feature.", "give a layer with POI points.")
    if not np.all(np.isin(get_type_id(g), (0, 4))):  # Point, MultiPoint
        raise InputError("INPUT", f"'{path}' holds non-point geometries.",
                         "give a point layer (e.g. the 'points' layer of an .osm.pbf), or take centroids first.")
    xs, ys, recs = [], [], []
    for geom, rec in zip(g, lyr.records()):
        for x, y in get_coordinates(geom):
            xs.append(x)
            ys.append(y)
            recs.append(rec)
    return np.asarray(xs), np.asarray(ys), recs, lyr.crs_wkt


__all__ = ["PRESETS", "load_poi_mapping", "classify_pois", "read_point_file", "coordinate_columns",
           "ClassifiedPois", "list_presets"]
