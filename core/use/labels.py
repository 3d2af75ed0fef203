"""Building polygons with a use attribute -> training masks (seed 000 §2.3.3, §2.4.3).

* mask A (footprint): 0 background, 1 building, 255 ignore
* mask B (use): 0 background, 1 residential, 2 commercial, 3 industrial,
  255 ignore (building of unknown use, or pixels excluded from the subset)

Polygons are reprojected to the imagery CRS (pyproj, always x/y order),
invalid geometries repaired with ``shapely.make_valid`` (polygonal parts kept)
or skipped and counted. The use attribute goes through a category mapping
preset (``taxonomies/building_use/*.csv``) or a user CSV.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from rasterio import features

from ..evaluation.category_mapping import IGNORED, CategoryMapping, list_presets, load_mapping
from ..errors import InputError

#: Class names a building-use mapping may use (``unknown``/``none``: use ignored).
LABEL_CLASSES = ("residential", "commercial", "industrial", "unknown")
USE_CLASSES = ("residential", "commercial", "industrial")
#: mask B values
BACKGROUND, IGNORE = 0, 255
USE_CODES = {"residential": 1, "commercial": 2, "industrial": 3}
PRESETS = ("osm_building", "eubucco_type", "csv")
#: Colours of the classes in cards and styles.
CLASS_COLOURS = {"background": "#000000", "residential": "#e8c547", "commercial": "#d7263d",
                 "industrial": "#6a4c93"}


def load_building_mapping(preset: str = "osm_building", mapping_file: str | None = None) -> CategoryMapping:
    """Mapping of a building use attribute to residential/commercial/industrial/unknown.
    ``preset`` is ``osm_building``, ``eubucco_type`` or ``csv`` (reads ``mapping_file``)."""
    return load_mapping("building_use", preset, PRESETS, mapping_file, LABEL_CLASSES, "USE_PRESET",
                        "residential, commercial, industrial or unknown")


@dataclass
class Buildings:
    """Polygons in ``crs_wkt`` with a mask B code each (1 R, 2 C, 3 I, 255 unknown use)."""

    geoms: np.ndarray
    codes: np.ndarray
    crs_wkt: str
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.geoms)

    def class_counts(self, index: np.ndarray | None = None) -> dict[str, int]:
        c = self.codes if index is None else self.codes[index]
        out = {name: int(np.sum(c == code)) for name, code in USE_CODES.items()}
        out["unknown"] = int(np.sum(c == IGNORE))
        return out


def _polygonal(g):
    """Polygonal part of a geometry (None if it has none)."""
    parts = [p for p in shapely.get_parts(g) if shapely.get_type_id(p) in (3, 6)]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else shapely.union_all(parts)


def prepare_buildings(geoms: Sequence, records: Sequence[dict], crs_wkt: str, use_field: str | None,
                      mapping: CategoryMapping, target_crs_wkt: str, name: str = "BUILDINGS") -> Buildings:
    """Classify, reproject (to ``target_crs_wkt``) and repair building polygons.

    ``records`` are the features' attributes ``{field: value}``; with an OSM-style
    (keyed) mapping every attribute is offered as a tag. Unmapped values and
    class ``unknown``/``none`` give code 255 (footprint kept, use ignored);
    ``use_field=None`` gives 255 for all (footprint-only labels).
    """
    if not crs_wkt:
        raise InputError(name, "the building layer has no CRS.", "assign the layer's CRS first.")
    geoms = np.asarray(geoms, dtype=object)
    if len(geoms) == 0:
        raise InputError(name, "the building layer has no feature.", "give a polygon layer of buildings.")
    geoms = _reprojected(geoms, crs_wkt, target_crs_wkt)
    stats = Counter()
    unmapped: Counter = Counter()
    out_g, out_c = [], []
    for g, rec in zip(geoms, records):
        g = _usable_polygon(g, stats)
        if g is None:
            continue
        k = _building_class(rec, use_field, mapping)
        if k is None:
            unmapped[str(rec.get(use_field))[:40]] += 1
        out_g.append(g)
        out_c.append(USE_CODES.get(k, IGNORE) if k not in (None, IGNORED) else IGNORE)
    if not out_g:
        raise InputError(name, f"none of the {len(geoms)} features is a usable polygon "
                         f"({dict(stats)}).", "give a polygon layer of building footprints.")
    b = Buildings(np.asarray(out_g, dtype=object), np.asarray(out_c, dtype=np.uint8), target_crs_wkt)
    b.stats = {"read": int(len(geoms)), "kept": len(out_g), **{k: int(v) for k, v in stats.items()},
               "unmapped": int(sum(unmapped.values())),
               "unmapped_examples": [[v, n] for v, n in unmapped.most_common(5)]}
    return b


def _reprojected(geoms: np.ndarray, crs_wkt: str, target_crs_wkt: str) -> np.ndarray:
    """``geoms`` transformed from ``crs_wkt`` to ``target_crs_wkt`` (x, y order); as they are when equal."""
    src, dst = CRS.from_user_input(crs_wkt), CRS.from_user_input(target_crs_wkt)
    if src == dst:
        return geoms
    tr = Transformer.from_crs(src, dst, always_xy=True)

    def fwd(xy):
        x, y = tr.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])
    return shapely.transform(geoms, fwd)


def _usable_polygon(g, stats: Counter):
    """``g`` as a (multi)polygon, repaired when invalid; None (counted in ``stats`` by reason) when it
    is empty, not polygonal, not transformable or beyond repair."""
    if g is None or shapely.is_empty(g):
        stats["skipped_empty"] += 1
        return None
    if shapely.get_type_id(g) not in (3, 6, 7):
        stats["skipped_not_polygon"] += 1
        return None
    if not np.all(np.isfinite(shapely.get_coordinates(g))):
        stats["skipped_not_transformable"] += 1
        return None
    if not shapely.is_valid(g):
        g = _polygonal(shapely.make_valid(g))
        if g is None or shapely.is_empty(g) or shapely.area(g) <= 0:
            stats["skipped_invalid"] += 1
            return None
        stats["repaired"] += 1
    elif shapely.get_type_id(g) == 7:
        g = _polygonal(g)
        if g is None:
            stats["skipped_not_polygon"] += 1
    return g


def _building_class(rec: dict, use_field: str | None, mapping: CategoryMapping):
    """The class a building's attributes map to (None: unmapped; IGNORED without a use field)."""
    if use_field is None:
        return IGNORED
    if mapping.keyed and use_field != "building" and "building" not in rec:
        rec = {**rec, "building": rec.get(use_field)}  # OSM presets read the use field as building=*
    return mapping.classify_record(rec, use_field)


def read_buildings(path: str, use_field: str | None, mapping: CategoryMapping, target_crs_wkt: str,
                   layer: str | None = None, name: str = "BUILDINGS") -> Buildings:
    """Read a polygon layer (GeoPackage, GeoJSON, Shapefile, …) with pyogrio and
    :func:`prepare_buildings` it. ``use_field`` must be a field of the layer."""
    from ..vector_io import read_vector

    lyr = read_vector(path, name, layer,
                      what="a GeoPackage, GeoJSON or Shapefile of building polygons "
                           "(convert GeoParquet with ogr2ogr if your GDAL cannot read it)")
    if use_field is not None and use_field not in lyr.fields:
        raise InputError("USE_FIELD", f"field '{use_field}' is not in '{path}'.",
                         f"use one of: {', '.join(lyr.fields) or '(the layer has no field)'}.")
    return prepare_buildings(lyr.geoms, lyr.records(), lyr.crs_wkt, use_field, mapping,
                             target_crs_wkt, name)


def rasterize_masks(buildings: Buildings, transform: Affine, shape: tuple[int, int],
                    own: np.ndarray, other: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Masks A and B (uint8, ``shape``) on the pixel grid ``transform``.

    ``own``: indices of buildings that are labelled; ``other``: indices whose
    pixels are set to 255 in both masks (e.g. buildings of another subset). A
    pixel is inside a polygon when its centre is (GDAL's default rule).
    """
    a = np.zeros(shape, np.uint8)
    b = np.zeros(shape, np.uint8)
    if other is not None and len(other):
        features.rasterize(((g, IGNORE) for g in buildings.geoms[other]), out=a, transform=transform)
        features.rasterize(((g, IGNORE) for g in buildings.geoms[other]), out=b, transform=transform)
    if len(own):
        features.rasterize(((g, 1) for g in buildings.geoms[own]), out=a, transform=transform)
        features.rasterize(((g, int(c)) for g, c in zip(buildings.geoms[own], buildings.codes[own])),
                           out=b, transform=transform)
    return a, b


__all__ = ["LABEL_CLASSES", "USE_CLASSES", "USE_CODES", "BACKGROUND", "IGNORE", "PRESETS", "CLASS_COLOURS",
           "Buildings", "load_building_mapping", "prepare_buildings", "read_buildings", "rasterize_masks",
           "list_presets"]
