"""Turn POI features into a :class:`PoiSet`: category -> class via a mapping
preset, with counts of what could not be mapped. Also reads point files
for the CLI (through pyogrio; the QGIS adapter passes features itself)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from .category_mapping import IGNORED, CategoryMapping, list_presets, load_preset
from .errors import InputError
from .poi_probability import CLASSES, PoiSet

PRESETS = ("osm", "gbt35648", "overture", "google_places", "csv")


def load_poi_mapping(preset: str, mapping_file: str | None = None) -> CategoryMapping:
    """The POI category mapping for ``preset`` (``csv`` reads ``mapping_file``)."""
    if preset == "csv":
        if not mapping_file:
            raise InputError("MAPPING_FILE", "is required with PRESET=csv.",
                             "give a CSV with columns value,class (class: residential, commercial or industrial).")
        return CategoryMapping.from_csv(mapping_file, CLASSES, what="MAPPING_FILE")
    if preset not in PRESETS:
        raise InputError("PRESET", f"unknown preset '{preset}'.", f"use one of {', '.join(PRESETS)}.")
    return load_preset("poi", preset, CLASSES)


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


def read_point_file(path: str, layer: str | None, category_field: str) -> tuple[np.ndarray, np.ndarray, list[dict], str]:
    """Read points of a vector file (GeoPackage, GeoJSON, OSM PBF's ``points``
    layer, …) with pyogrio: x, y, records, CRS WKT. Multipoints give one point
    per part; other geometry types are refused."""
    from shapely import get_coordinates, get_type_id

    from .vector_io import read_vector

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


__all__ = ["PRESETS", "load_poi_mapping", "classify_pois", "read_point_file", "ClassifiedPois", "list_presets"]
