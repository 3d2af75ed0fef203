"""Overpass API queries and answers (no HTTP here: :mod:`core.acquire.osm` sends them).

* :func:`wgs84_bbox` turns an extent in any CRS into a (south, west, north, east) box in degrees;
* :func:`split_bbox` cuts a box into equal tiles of at most ``max_km2`` square kilometres each;
* :func:`poi_query`, :func:`building_query`, :func:`road_query` write Overpass QL
  (``[out:json][timeout:N]``) for one tile;
* :func:`parse_answer` reads an Overpass JSON answer into an :class:`OsmElements` store
  (nodes, ways, relations, centres; merged across tiles, each element once).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from ..errors import EdificeError, InputError

#: The public Overpass API instance (a user setting in QGIS and on the CLI).
DEFAULT_ENDPOINT = "https://overpass-api.de/api/interpreter"
#: Area of one query tile in km²: the public instance answers ~50 km² of a dense city in well under its
#: default 180 s timeout; a user setting.
DEFAULT_MAX_TILE_KM2 = 25.0
#: Way and relation tags that are areas or places, not points of interest (buildings come in their own layer).
AREA_ONLY_KEYS = ("building", "landuse", "place")
EARTH_RADIUS_KM = 6371.0088


def wgs84_bbox(extent: tuple[float, float, float, float], crs) -> tuple[float, float, float, float]:
    """(south, west, north, east) in degrees (EPSG:4326) of ``extent`` = (xmin, ymin, xmax, ymax)
    in ``crs`` (anything pyproj reads): the box around the densified outline of the extent."""
    from pyproj import CRS, Transformer

    xmin, ymin, xmax, ymax = (float(v) for v in extent)
    if not (xmax > xmin and ymax > ymin):
        raise InputError("EXTENT", f"({xmin}, {ymin}, {xmax}, {ymax}) is empty.", "give xmin < xmax and ymin < ymax.")
    try:
        src = CRS.from_user_input(crs)
    except Exception as exc:  # pyproj raises CRSError
        raise InputError("EXTENT_CRS", f"'{crs}' is not a CRS ({exc}).", "give e.g. EPSG:3067.") from exc
    tr = Transformer.from_crs(src, CRS.from_epsg(4326), always_xy=True)
    w, s, e, n = tr.transform_bounds(xmin, ymin, xmax, ymax, densify_pts=21)
    if not all(math.isfinite(v) for v in (w, s, e, n)) or s < -90 or n > 90 or e - w > 360:
        raise InputError("EXTENT", "could not be transformed to longitude/latitude.",
                         "check the extent's CRS.")
    return (s, w, n, e)


def bbox_area_km2(bbox: tuple[float, float, float, float]) -> float:
    """Area in km² of a (south, west, north, east) box on the sphere."""
    s, w, n, e = bbox
    return (EARTH_RADIUS_KM ** 2) * math.radians(e - w) * (math.sin(math.radians(n)) - math.sin(math.radians(s)))


def split_bbox(bbox: tuple[float, float, float, float], max_km2: float) -> list[tuple[float, float, float, float]]:
    """Equal tiles (south, west, north, east), row by row from the south-west, each at most
    ``max_km2`` km², together covering ``bbox`` exactly."""
    if not max_km2 > 0:
        raise InputError("MAX_TILE_KM2", f"must be positive, got {max_km2}.", "give e.g. 25.")
    s, w, n, e = bbox
    area = bbox_area_km2(bbox)
    count = max(1, math.ceil(area / max_km2))
    height_km = math.radians(n - s) * EARTH_RADIUS_KM
    width_km = area / max(height_km, 1e-12)
    ny = max(1, round(math.sqrt(count * height_km / max(width_km, 1e-12))))
    nx = max(1, math.ceil(count / ny))
    while bbox_area_km2((s, w, s + (n - s) / ny, w + (e - w) / nx)) > max_km2 * (1 + 1e-9):
        nx, ny = (nx + 1, ny) if width_km / nx >= height_km / ny else (nx, ny + 1)
    lats = [s + (n - s) * i / ny for i in range(ny + 1)]
    lons = [w + (e - w) * j / nx for j in range(nx + 1)]
    lats[-1], lons[-1] = n, e
    return [(lats[i], lons[j], lats[i + 1], lons[j + 1]) for i in range(ny) for j in range(nx)]


def _bbox_text(bbox) -> str:
    return ",".join(f"{v:.7f}" for v in bbox)


def _key_regex(keys) -> str:
    return "^(" + "|".join(sorted(set(keys))) + ")$"


def poi_query(bbox, keys, timeout_s: int) -> str:
    """Nodes with any of ``keys``, and ways/relations with any of them except :data:`AREA_ONLY_KEYS`,
    as points (``out center``: ways and relations get their centre)."""
    b = _bbox_text(bbox)
    area_keys = [k for k in keys if k not in AREA_ONLY_KEYS]
    lines = [f"[out:json][timeout:{int(timeout_s)}];", "(",
             f'  node[~"{_key_regex(keys)}"~"."]({b});']
    if area_keys:
        lines += [f'  way[~"{_key_regex(area_keys)}"~"."]({b});',
                  f'  relation[~"{_key_regex(area_keys)}"~"."]({b});']
    return "\n".join(lines + [");", "out center;"])


def building_query(bbox, timeout_s: int) -> str:
    """Building ways and multipolygon relations with their member ways and nodes."""
    b = _bbox_text(bbox)
    return "\n".join([f"[out:json][timeout:{int(timeout_s)}];", "(",
                      f'  way["building"]({b});',
                      f'  relation["building"]["type"="multipolygon"]({b});',
                      ");", "out body;", ">;", "out skel qt;"])


def road_query(bbox, timeout_s: int) -> str:
    """Highway ways with their nodes."""
    b = _bbox_text(bbox)
    return "\n".join([f"[out:json][timeout:{int(timeout_s)}];", f'way["highway"]({b});',
                      "out body;", ">;", "out skel qt;"])


@dataclass
class OsmElements:
    """OSM elements of one or more Overpass answers, each kept once.

    ``nodes``: id -> (lon, lat); ``ways``: id -> node ids; ``relations``: id -> [(type, ref, role)];
    ``tags``: (type, id) -> tags; ``centres``: (type, id) -> (lon, lat) of ``out center`` answers;
    ``timestamp``: the newest ``osm3s.timestamp_osm_base`` seen (ISO 8601, UTC)."""

    nodes: dict = field(default_factory=dict)
    ways: dict = field(default_factory=dict)
    relations: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    centres: dict = field(default_factory=dict)
    timestamp: str | None = None

    def add(self, element: dict) -> None:
        """Add one element of an Overpass JSON answer (skeletons never erase tags)."""
        kind, eid = element.get("type"), element.get("id")
        if kind not in ("node", "way", "relation") or not isinstance(eid, int):
            raise ValueError(f"element without a type or an integer id: {str(element)[:120]}")
        if kind == "node" and "lat" in element:
            self.nodes[eid] = (float(element["lon"]), float(element["lat"]))
        elif kind == "way" and "nodes" in element:
            self.ways[eid] = [int(r) for r in element["nodes"]]
        elif kind == "relation" and "members" in element:
            self.relations[eid] = [(m["type"], int(m["ref"]), m.get("role") or "") for m in element["members"]]
        if "center" in element:
            self.centres[(kind, eid)] = (float(element["center"]["lon"]), float(element["center"]["lat"]))
        if element.get("tags"):
            self.tags[(kind, eid)] = {str(k): str(v) for k, v in element["tags"].items()}

    def update(self, other: "OsmElements") -> None:
        """Add every element of ``other`` (tags of a skeleton never erase tags already known)."""
        self.nodes.update(other.nodes)
        self.ways.update(other.ways)
        self.relations.update(other.relations)
        self.centres.update(other.centres)
        self.tags.update(other.tags)
        self.merge_timestamp(other.timestamp)

    def point_of(self, kind: str, eid: int) -> tuple[float, float] | None:
        """(lon, lat) of a node, or the centre Overpass gave a way or relation."""
        return self.nodes.get(eid) if kind == "node" else self.centres.get((kind, eid))

    def merge_timestamp(self, stamp: str | None) -> None:
        if stamp and (self.timestamp is None or stamp > self.timestamp):
            self.timestamp = stamp


class OverpassRuntimeError(EdificeError):
    """The server ran the query but gave up (timeout, memory): a smaller box may succeed."""


def quarter_bbox(bbox: tuple[float, float, float, float]) -> list[tuple[float, float, float, float]]:
    """The four quarters (south-west, south-east, north-west, north-east) of a (south, west, north, east) box."""
    s, w, n, e = bbox
    ms, mw = (s + n) / 2, (w + e) / 2
    return [(s, w, ms, mw), (s, mw, ms, e), (ms, w, n, mw), (ms, mw, n, e)]


def parse_answer(content: bytes, query_name: str) -> OsmElements:
    """The elements of one Overpass JSON answer.
    An answer that is not Overpass JSON, or that reports a runtime error (Overpass answers 200 with a
    ``remark`` when a query times out or runs out of memory: :class:`OverpassRuntimeError`), raises
    :class:`EdificeError`."""
    try:
        doc = json.loads(content.decode("utf-8"))
        elements = doc["elements"]
        if not isinstance(elements, list):
            raise TypeError("'elements' is not a list")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise EdificeError(f"Overpass: the answer to the {query_name} query is not Overpass JSON ({exc}); "
                           "check the endpoint URL.") from exc
    remark = str(doc.get("remark") or "")
    if "error" in remark.lower():
        raise OverpassRuntimeError(f"Overpass: the {query_name} query failed on the server ({remark.strip()[:200]}). "
                           "Fix: use a smaller MAX_TILE_KM2 or a longer timeout.")
    store = OsmElements()
    try:
        for el in elements:
            store.add(el)
    except (ValueError, KeyError, TypeError) as exc:
        raise EdificeError(f"Overpass: the answer to the {query_name} query holds a malformed element "
                           f"({exc}).") from exc
    store.merge_timestamp(_timestamp(doc))
    return store


def _timestamp(doc: dict) -> str | None:
    osm3s = doc.get("osm3s")
    return str(osm3s.get("timestamp_osm_base")) if isinstance(osm3s, dict) and osm3s.get("timestamp_osm_base") else None
