"""OpenStreetMap POIs, buildings and roads for an extent, from an Overpass API endpoint, as
GeoPackage layers (edifice:osmdownload, ``edifice osm-download``).

* ``pois`` (Point): nodes and the centres of ways/relations carrying a key that the ``osm`` POI
  preset reads, one text field per such key plus ``other_tags`` (GDAL's hstore form), so that
  ``edifice:poiprobability`` / ``edifice:trainingdataset`` take the layer as it is (``PRESET=osm``,
  ``CATEGORY_FIELD=other_tags``);
* ``buildings`` (MultiPolygon): building ways and multipolygon relations with their use tags,
  ``building:levels`` (integer), ``height`` (metres), ``start_date`` and the derived ``use``
  (``osm_building`` taxonomy: residential / commercial / industrial / unknown), for
  ``edifice:trainingdataset`` with ``USE_PRESET=osm_building``;
* ``roads`` (LineString, optional): highway ways.

Every layer has ``osm_type``, ``osm_id`` and ``osm_timestamp`` (the Overpass database's
``timestamp_osm_base``, UTC). The extent is split into tiles of at most ``max_tile_km2``; each
tile and layer is one query through :class:`core.acquire.http.HttpClient` (retries with backoff,
``Retry-After``, a timeout, a User-Agent naming Edifice, a response cache keyed by the query, so a
re-run sends nothing). A tile the server gives up on (a "runtime error" remark: timeout, memory)
is asked again in quarters, twice at most. Queries go one at a time unless ``parallel`` > 1.
Outputs are written to temporary files and moved into place only when every layer is complete.
"""
from __future__ import annotations

import contextlib
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely

from ..errors import InputError
from ..progress import Progress, ensure
from ..raster_io import atomic_output
from .osm_geometry import relation_multipolygon, way_line, way_polygon
from .overpass import (DEFAULT_ENDPOINT, DEFAULT_MAX_TILE_KM2, OsmElements, OverpassRuntimeError, building_query,
                       parse_answer, poi_query, quarter_bbox, road_query, split_bbox, wgs84_bbox)

LAYERS = ("pois", "buildings", "roads")
#: Building tags kept as text fields (besides building:levels, height, start_date, name).
BUILDING_TAGS = ("building", "building:use", "amenity", "shop", "office", "craft", "industrial")
ROAD_TAGS = ("highway", "name", "ref", "oneway", "maxspeed", "surface")
USE_CLASSES = ("residential", "commercial", "industrial", "unknown")
FEET_M = 0.3048
#: How many times a box the server gives up on is split in four before the error is reported.
MAX_SPLITS = 2


@dataclass
class OsmRequest:
    """What to fetch: ``extent`` (xmin, ymin, xmax, ymax) in ``extent_crs``; outputs as
    {layer: GeoPackage path} (several layers may share one file); ``output_crs`` (default: the
    extent's); ``max_tile_km2`` per query; ``timeout_s``: the Overpass ``[timeout:]`` (s), the
    HTTP timeout is 30 s longer."""

    extent: tuple
    extent_crs: str
    outputs: dict
    endpoint: str = DEFAULT_ENDPOINT
    output_crs: str | None = None
    max_tile_km2: float = DEFAULT_MAX_TILE_KM2
    timeout_s: int = 180
    parallel: int = 1
    max_retries: int = 5
    cache_dir: str | None = None
    use_cache: bool = True


def download_osm(request: OsmRequest, progress: Progress | None = None, client=None) -> dict:
    """Fetch the layers of ``request.outputs`` and write them; returns a summary
    (paths, counts per class, tiles, queries sent and answered from the cache, ``osm_timestamp``)."""
    progress = ensure(progress)
    layers = _check_request(request)
    bbox = wgs84_bbox(request.extent, request.extent_crs)
    tiles = split_bbox(bbox, request.max_tile_km2)
    progress.info(f"Extent: lat {bbox[0]:.5f}..{bbox[2]:.5f}, lon {bbox[1]:.5f}..{bbox[3]:.5f}; "
                  f"{len(tiles)} quer{'y' if len(tiles) == 1 else 'ies'} per layer "
                  f"(at most {request.max_tile_km2:g} km² each).")
    client = client or _client(request, progress)
    fetch = _Fetcher(client, request, tiles, len(layers), progress)
    stores = {name: fetch.layer(name) for name in layers}
    timestamp = max((s.timestamp for s in stores.values() if s.timestamp), default=None)
    clip = _ExtentClip(request)
    tables = {name: _TABLES[name](stores[name], clip, timestamp) for name in layers}
    summary = {"tiles": len(tiles), "queries": fetch.sent, "from_cache": fetch.cached,
               "osm_timestamp": timestamp, "endpoint": request.endpoint, "outputs": {}}
    for name, table in tables.items():
        summary[name] = table.counts
        progress.info(table.describe())
        if len(table.geoms) == 0:
            progress.warning(f"No {name} in the extent: the '{name}' layer is empty.")
    progress.check_cancelled()
    summary["outputs"] = _write_all(tables, request.outputs, clip.crs_wkt)
    progress.set_fraction(1.0)
    return summary


def _check_request(request: OsmRequest) -> list[str]:
    layers = [n for n in LAYERS if request.outputs.get(n)]
    unknown = set(request.outputs) - set(LAYERS)
    if unknown:
        raise InputError("OUTPUT", f"unknown layer(s) {', '.join(sorted(unknown))}.", f"use {', '.join(LAYERS)}.")
    if not layers:
        raise InputError("OUTPUT", "no output layer was asked for.", "give a path for pois, buildings or roads.")
    if not re.match(r"^https?://", request.endpoint or ""):
        raise InputError("ENDPOINT", f"'{request.endpoint}' is not an http(s) URL.", f"use e.g. {DEFAULT_ENDPOINT}.")
    if request.timeout_s < 1 or request.parallel < 1:
        raise InputError("TIMEOUT", "timeout and parallel queries must be at least 1.")
    return layers


def _client(request: OsmRequest, progress: Progress):
    from .http import HttpClient, ResponseCache, default_cache_dir

    cache = None
    if request.use_cache:
        cache = ResponseCache(str(Path(request.cache_dir or default_cache_dir()) / "overpass"))
    return HttpClient("Overpass", timeout_s=request.timeout_s + 30, max_retries=request.max_retries,
                      cache=cache, progress=progress)


def layer_queries(layer: str, tiles, timeout_s: int) -> list[str]:
    """The Overpass QL of ``layer`` (pois, buildings or roads) for each tile (south, west, north, east)."""
    if layer == "pois":
        from ..use.poi_sources import load_poi_mapping

        keys = sorted({r.key for r in load_poi_mapping("osm").rules if r.key})
        return [poi_query(b, keys, timeout_s) for b in tiles]
    make = {"buildings": building_query, "roads": road_query}[layer]
    return [make(b, timeout_s) for b in tiles]


class _Fetcher:
    """Sends the queries of one layer (one per tile) and merges the answers. A tile the server gives up
    on (timeout, memory) is split in four, down to :data:`MAX_SPLITS` times."""

    def __init__(self, client, request: OsmRequest, tiles, n_layers: int, progress: Progress):
        self.client, self.request, self.tiles, self.progress = client, request, tiles, progress
        self.total = max(1, len(tiles) * n_layers)
        self.sent = self.cached = self.done = 0

    def layer(self, name: str) -> OsmElements:
        """Every tile's answer to the ``name`` query, merged."""
        from .http import run_bounded

        store = OsmElements()
        tiles = [(f"tile {i + 1} of {len(self.tiles)}", b) for i, b in enumerate(self.tiles)]
        for _, (sent, cached, answer) in run_bounded(lambda t: self._ask(name, *t), tiles,
                                                     self.request.parallel, self.progress):
            store.update(answer)
            self.sent += sent
            self.cached += cached
            self.done += 1
            self.progress.set_fraction(0.9 * self.done / self.total)
        return store

    def _ask(self, name: str, label: str, bbox, depth: int = 0) -> tuple[int, int, OsmElements]:
        """(queries sent, answers from the cache, merged answer) for one box; an answer that is not valid
        Overpass JSON raises before it is cached; one the server gave up on is asked again in quarters."""
        what = f"{name} ({label})"
        try:
            from_cache, store = self._post(layer_queries(name, [bbox], self.request.timeout_s)[0], what)
            return int(not from_cache), int(from_cache), store
        except OverpassRuntimeError as exc:
            if depth >= MAX_SPLITS:
                raise
            self.progress.info(f"{exc} Asking again in four smaller boxes.")
        sent, cached, merged = 1, 0, OsmElements()
        for k, quarter in enumerate(quarter_bbox(bbox)):
            s, c, part = self._ask(name, f"{label}, quarter {k + 1}", quarter, depth + 1)
            sent, cached = sent + s, cached + c
            merged.update(part)
        return sent, cached, merged

    def _post(self, query: str, what: str) -> tuple[bool, OsmElements]:
        parsed = {}

        def check(resp):
            parsed["store"] = parse_answer(resp.content, what)
        self.progress.check_cancelled()
        resp = self.client.post(self.request.endpoint, data={"data": query}, use_cache=self.request.use_cache,
                                accept=("application/json",), validate=check)
        return resp.from_cache, parsed.get("store") or parse_answer(resp.content, what)


class _ExtentClip:
    """Keeps features that touch the extent; reprojects lon/lat to the output CRS."""

    def __init__(self, request: OsmRequest):
        from pyproj import CRS, Transformer

        src = CRS.from_epsg(4326)
        ext_crs = CRS.from_user_input(request.extent_crs)
        out_crs = CRS.from_user_input(request.output_crs) if request.output_crs else ext_crs
        self.crs_wkt = out_crs.to_wkt()
        self._to_ext = Transformer.from_crs(src, ext_crs, always_xy=True)
        self._to_out = Transformer.from_crs(src, out_crs, always_xy=True)
        self.box = shapely.box(*request.extent)

    @staticmethod
    def _apply(tr, geoms):
        return shapely.transform(np.asarray(geoms, dtype=object),
                                 lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))

    def keep(self, geoms) -> np.ndarray:
        """Boolean mask of the lon/lat ``geoms`` that intersect the extent."""
        if len(geoms) == 0:
            return np.zeros(0, bool)
        return shapely.intersects(self._apply(self._to_ext, geoms), self.box)

    def to_output(self, geoms) -> np.ndarray:
        return self._apply(self._to_out, geoms) if len(geoms) else np.asarray(geoms, dtype=object)


@dataclass
class _Table:
    """One output layer: geometries (output CRS), typed columns, counts for the log."""

    layer: str
    geometry_type: str
    geoms: np.ndarray
    columns: dict          # name -> numpy array (object for text, with None for missing)
    counts: dict

    def describe(self) -> str:
        per = ", ".join(f"{v} {k}" for k, v in self.counts.items() if k != "total")
        return f"{self.layer}: {self.counts['total']} features" + (f" ({per})." if per else ".")


def _classifier(mapping):
    """``classify(tags) -> class or None`` of a keyed mapping: only the tags whose keys a rule names are
    offered (the same answer, as each rule names its key), and answers are remembered per tag set."""
    keys = {r.key for r in mapping.rules}
    memo: dict = {}

    def classify(tags: dict):
        offered = tuple(sorted((k, v) for k, v in tags.items() if k in keys))
        if offered not in memo:
            memo[offered] = mapping.classify(offered)
        return memo[offered]
    if "" in keys:  # a rule for any key: offer every tag
        return lambda tags: mapping.classify(tags.items())
    return classify


def _hstore(tags: dict) -> str | None:
    """Tags in GDAL's ``other_tags`` form: ``"k"=>"v","k2"=>"v2"``."""
    def q(s):
        return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'
    return ",".join(f"{q(k)}=>{q(v)}" for k, v in sorted(tags.items())) or None


def _text(values) -> np.ndarray:
    return np.asarray(list(values), dtype=object)


def _select(store: OsmElements, items, clip: _ExtentClip, make_geom):
    """(keys, lon/lat geometries) of ``items`` ((type, id) pairs) whose geometry exists and touches the extent."""
    keys, geoms = [], []
    for key in items:
        g = make_geom(*key)
        if g is not None:
            keys.append(key)
            geoms.append(g)
    mask = clip.keep(geoms)
    return [k for k, m in zip(keys, mask) if m], [g for g, m in zip(geoms, mask) if m], len(keys)


def _base_columns(keys, timestamp) -> dict:
    return {"osm_type": _text(k[0] for k in keys),
            "osm_id": np.asarray([k[1] for k in keys], dtype=np.int64),
            "osm_timestamp": _text(timestamp for _ in keys)}


def poi_table(store: OsmElements, clip: _ExtentClip, timestamp: str | None) -> _Table:
    """Points of POI elements: one text field per key of the ``osm`` POI preset, other tags in ``other_tags``."""
    from ..use.poi_sources import load_poi_mapping

    mapping = load_poi_mapping("osm")
    preset_keys = sorted({r.key for r in mapping.rules if r.key})
    items = sorted(k for k, tags in store.tags.items() if any(t in tags for t in preset_keys))
    located = [(k, p) for k, p in ((k, store.point_of(*k)) for k in items) if p is not None]
    points = shapely.points(np.asarray([p for _, p in located], dtype=np.float64).reshape(-1, 2))
    inside = clip.keep(points)
    keys, geoms = [k for (k, _), m in zip(located, inside) if m], points[inside]
    tags = [store.tags[k] for k in keys]
    cols = _base_columns(keys, timestamp)
    cols["name"] = _text(t.get("name") for t in tags)
    for key in preset_keys:
        cols[key] = _text(t.get(key) for t in tags)
    plain = set(preset_keys) | {"name"}
    cols["other_tags"] = _text(_hstore({k: v for k, v in t.items() if k not in plain}) for t in tags)
    classify = _classifier(mapping)
    classes = Counter((classify(t) or "unmapped") for t in tags)
    counts = {"total": len(keys), **{c: classes.get(c, 0) for c in ("residential", "commercial", "industrial")},
              "ignored": classes.get("none", 0), "unmapped": classes.get("unmapped", 0)}
    return _Table("pois", "Point", clip.to_output(geoms), cols, counts)


def _levels(text: str | None):
    """Whole number of storeys of a ``building:levels`` value (``3``, ``2.5``, ``3;4`` -> first), or None."""
    m = re.match(r"^\s*(\d+(?:[.,]\d+)?)", text or "")
    return None if m is None else int(float(m.group(1).replace(",", ".")))


def _height_m(text: str | None):
    """Metres of a ``height`` value (``12``, ``12.5 m``, ``40'`` or ``40 ft``), or None."""
    m = re.match(r"^\s*(\d+(?:[.,]\d+)?)\s*(m|meters?|metres?|ft|feet|'|)\s*$", text or "", re.IGNORECASE)
    if m is None:
        return None
    v = float(m.group(1).replace(",", "."))
    return v * FEET_M if m.group(2).lower() in ("ft", "feet", "'") else v


def building_table(store: OsmElements, clip: _ExtentClip, timestamp: str | None) -> _Table:
    """Building footprints with their use tags and the derived ``use`` (``osm_building`` taxonomy)."""
    from ..use.labels import load_building_mapping

    mapping = load_building_mapping("osm_building")
    items = sorted(k for k, tags in store.tags.items()
                   if "building" in tags and (k[0] == "way" or tags.get("type") == "multipolygon"))

    def polygon(kind, eid):
        return way_polygon(store, eid) if kind == "way" else relation_multipolygon(store, eid)
    keys, geoms, built = _select(store, items, clip, polygon)
    tags = [store.tags[k] for k in keys]
    classify = _classifier(mapping)
    uses = [_use(classify(t)) for t in tags]
    cols = _base_columns(keys, timestamp)
    cols["name"] = _text(t.get("name") for t in tags)
    for key in BUILDING_TAGS:
        cols[key] = _text(t.get(key) for t in tags)
    levels = [_levels(t.get("building:levels")) for t in tags]
    cols["building:levels"] = np.asarray([v or 0 for v in levels], dtype=np.int32)
    cols["building:levels"] = np.ma.masked_array(cols["building:levels"], mask=[v is None for v in levels])
    cols["height"] = np.asarray([np.nan if h is None else h for h in (_height_m(t.get("height")) for t in tags)],
                                dtype=np.float64)
    cols["start_date"] = _text(t.get("start_date") for t in tags)
    plain = set(BUILDING_TAGS) | {"name", "building:levels", "height", "start_date", "type"}
    cols["other_tags"] = _text(_hstore({k: v for k, v in t.items() if k not in plain}) for t in tags)
    cols["use"] = _text(uses)
    per = Counter(uses)
    counts = {"total": len(keys), **{c: per.get(c, 0) for c in USE_CLASSES},
              "not_assembled": len(items) - built}
    return _Table("buildings", "MultiPolygon", clip.to_output(geoms), cols, counts)


def _use(cls: str | None) -> str:
    return cls if cls in USE_CLASSES else "unknown"


def road_table(store: OsmElements, clip: _ExtentClip, timestamp: str | None) -> _Table:
    """Highway ways as lines."""
    items = sorted(k for k, tags in store.tags.items() if k[0] == "way" and "highway" in tags)
    keys, geoms, _ = _select(store, items, clip, lambda kind, eid: way_line(store, eid))
    tags = [store.tags[k] for k in keys]
    cols = _base_columns(keys, timestamp)
    for key in ROAD_TAGS:
        cols[key] = _text(t.get(key) for t in tags)
    per = Counter(t["highway"] for t in tags)
    counts = {"total": len(keys), **dict(per.most_common(6))}
    return _Table("roads", "LineString", clip.to_output(geoms), cols, counts)


_TABLES = {"pois": poi_table, "buildings": building_table, "roads": road_table}


def _write_all(tables: dict, outputs: dict, crs_wkt: str) -> dict:
    """Write each table through the output contract (temporary beside its destination, read back,
    moved into place only when every file is complete; layers sharing a file share its temporary)."""
    by_path: dict[str, list[str]] = {}
    for name in tables:
        by_path.setdefault(str(Path(outputs[name])), []).append(name)
    with contextlib.ExitStack() as stack:
        for path, names in by_path.items():
            tmp = stack.enter_context(atomic_output(path, names[0].upper()))
            for name in names:
                _write_table(str(tmp), tables[name], crs_wkt)
    return {name: f"{outputs[name]}|layername={name}" for name in tables}


def _write_table(path: str, table: _Table, crs_wkt: str) -> None:
    import pyogrio.raw

    names = list(table.columns)
    data, masks = [], []
    for n in names:
        col = table.columns[n]
        masks.append(np.ma.getmaskarray(col) if isinstance(col, np.ma.MaskedArray) else None)
        data.append(np.ma.getdata(col))
    wkb = shapely.to_wkb(table.geoms, output_dimension=2) if len(table.geoms) else np.zeros(0, object)
    pyogrio.raw.write(path, wkb, data, names, field_mask=masks if any(m is not None for m in masks) else None,
                      driver="GPKG", layer=table.layer, geometry_type=table.geometry_type, crs=crs_wkt,
                      promote_to_multi=table.geometry_type.startswith("Multi"), append=os.path.exists(path))
