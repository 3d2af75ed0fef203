"""edifice osm-download / core.acquire.osm against the Overpass stand-in (a real process on 127.0.0.1)
serving the real Helsinki extract; multipolygon assembly against a hand-made case and GDAL's OSM driver."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import shapely
from pyproj import Transformer

from edifice.core.acquire.osm import OsmRequest, download_osm
from edifice.core.acquire.osm_geometry import join_rings, relation_multipolygon
from edifice.core.acquire.overpass import (OsmElements, bbox_area_km2, parse_answer, split_bbox, wgs84_bbox)
from edifice.core.errors import Cancelled, EdificeError, InputError
from edifice.core.progress import Progress
PBF = Path(__file__).resolve().parents[2] / "samples" / "helsinki" / "Helsinki.osm.pbf"


class Log(Progress):
    def __init__(self, cancel_after_queries: int | None = None):
        self.lines, self.warnings, self.fractions = [], [], []
        self.cancel_after = cancel_after_queries

    def info(self, message):
        self.lines.append(message)

    def warning(self, message):
        self.warnings.append(message)

    def set_fraction(self, fraction):
        self.fractions.append(fraction)

    def is_cancelled(self):
        return self.cancel_after is not None and len(self.fractions) >= self.cancel_after


def _request(server, tmp_path, extent, out="osm.gpkg", **kw) -> OsmRequest:
    layers = kw.pop("layers", ("pois", "buildings"))
    kw.setdefault("max_tile_km2", 0.2)
    return OsmRequest(extent=extent, extent_crs="EPSG:3067", outputs={n: str(tmp_path / out) for n in layers},
                      endpoint=server.url + "/api/interpreter", cache_dir=str(tmp_path / "cache"),
                      max_retries=3, **kw)


def _ids(path, layer, kind=None) -> set[int]:
    _, _, _, (types, ids) = pyogrio.raw.read(str(path), layer=layer, columns=["osm_type", "osm_id"],
                                            read_geometry=False)
    return {int(i) for t, i in zip(types, ids) if kind is None or t == kind}


def _served(server) -> list[dict]:
    return [r for r in server.requests() if r["path"].endswith("/interpreter")]


# ---------------------------------------------------------------- queries and tiles
def test_split_bbox_tiles_cover_the_box_and_respect_the_area_limit():
    box = (60.10, 24.80, 60.25, 25.10)           # ~ 16.7 km x 16.6 km
    tiles = split_bbox(box, 25.0)
    assert all(bbox_area_km2(t) <= 25.0 * (1 + 1e-9) for t in tiles)
    assert len(tiles) >= math.ceil(bbox_area_km2(box) / 25.0)
    assert math.isclose(sum(bbox_area_km2(t) for t in tiles), bbox_area_km2(box), rel_tol=1e-9)
    union = shapely.union_all([shapely.box(t[1], t[0], t[3], t[2]) for t in tiles])
    assert union.equals(shapely.box(box[1], box[0], box[3], box[2]))
    assert split_bbox(box, 1e6) == [box]
    with pytest.raises(InputError, match="MAX_TILE_KM2"):
        split_bbox(box, 0)


def test_wgs84_bbox_of_a_projected_extent_contains_its_corners(helsinki_3067):
    s, w, n, e = wgs84_bbox(helsinki_3067, "EPSG:3067")
    tr = Transformer.from_crs(3067, 4326, always_xy=True)
    for x in helsinki_3067[::2]:
        for y in helsinki_3067[1::2]:
            lon, lat = tr.transform(x, y)
            assert w <= lon <= e and s <= lat <= n
    with pytest.raises(InputError, match="EXTENT"):
        wgs84_bbox((1, 1, 0, 2), "EPSG:3067")


# ---------------------------------------------------------------- multipolygons
def _store(nodes: dict, ways: dict, members: list) -> OsmElements:
    s = OsmElements()
    s.nodes = {k: tuple(map(float, v)) for k, v in nodes.items()}
    s.ways = ways
    s.relations = {1: members}
    return s


def test_multipolygon_joins_rings_from_several_ways_and_puts_holes_in_the_right_outer():
    # outer A: 0..10 square made of two ways, the second one drawn backwards;
    # inner: 2..8 courtyard; island: outer B 4..6 inside the courtyard; outer C: 20..22 separate square.
    nodes = {1: (0, 0), 2: (10, 0), 3: (10, 10), 4: (0, 10),
             11: (2, 2), 12: (8, 2), 13: (8, 8), 14: (2, 8),
             21: (4, 4), 22: (6, 4), 23: (6, 6), 24: (4, 6),
             31: (20, 0), 32: (22, 0), 33: (22, 2), 34: (20, 2)}
    ways = {100: [1, 2, 3], 101: [1, 4, 3], 102: [11, 12, 13, 14, 11], 103: [21, 22, 23, 24, 21],
            104: [31, 32, 33], 105: [33, 34, 31]}
    members = [("way", 100, "outer"), ("way", 102, "inner"), ("way", 101, "outer"), ("way", 103, "outer"),
               ("way", 104, "outer"), ("way", 105, "")]
    g = relation_multipolygon(_store(nodes, ways, members), 1)
    assert g.is_valid and g.geom_type == "MultiPolygon" and len(g.geoms) == 3
    assert g.area == pytest.approx(100 - 36 + 4 + 4)
    assert g.contains(shapely.Point(1, 1)) and not g.contains(shapely.Point(3, 3))
    assert g.contains(shapely.Point(5, 5)) and g.contains(shapely.Point(21, 1))


def test_multipolygon_with_a_missing_member_or_an_open_ring_is_not_built():
    nodes = {1: (0, 0), 2: (1, 0), 3: (1, 1), 4: (0, 1)}
    assert relation_multipolygon(_store(nodes, {100: [1, 2, 3]}, [("way", 100, "outer")]), 1) is None
    assert relation_multipolygon(_store(nodes, {100: [1, 2, 3, 4, 1]},
                                        [("way", 100, "outer"), ("way", 999, "outer")]), 1) is None
    rings, unclosed = join_rings([[1, 2], [3, 2], [3, 4], [5, 6]])
    assert rings == [] and unclosed == 4


def test_helsinki_building_multipolygons_match_gdal_osm_driver(overpass_db):
    """Every building relation that GDAL's OSM driver assembles into a valid geometry is the same
    shape here (an independent implementation of the same rules)."""
    store = parse_answer(overpass_db.read_bytes(), "recorded extract")
    _, _, wkb, (ids, building) = pyogrio.raw.read(str(PBF), layer="multipolygons", columns=["osm_id", "building"])
    compared = 0
    for osm_id, geom, b in zip(ids, shapely.from_wkb(wkb, on_invalid="ignore"), building):
        if osm_id is None or not b or geom is None or not geom.is_valid:
            continue
        ours = relation_multipolygon(store, int(osm_id))
        assert ours is not None, osm_id
        assert ours.symmetric_difference(geom).area <= 1e-9 * geom.area, osm_id
        compared += 1
    assert compared >= 50


def test_answer_that_is_not_overpass_json_is_refused():
    with pytest.raises(EdificeError, match="not Overpass JSON"):
        parse_answer(b"<html>busy</html>", "pois")
    with pytest.raises(EdificeError, match="timed out"):
        parse_answer(json.dumps({"elements": [], "remark": "runtime error: Query timed out"}).encode(), "pois")


# ---------------------------------------------------------------- through the stand-in
def test_download_writes_typed_layers_that_match_the_extract(overpass, overpass_db, tmp_path, helsinki_3067):
    log = Log()
    out = download_osm(_request(overpass, tmp_path, helsinki_3067, layers=("pois", "buildings", "roads")), log)
    path = tmp_path / "osm.gpkg"
    assert {n for n, _ in pyogrio.list_layers(path)} == {"pois", "buildings", "roads"}
    info = pyogrio.read_info(path, layer="buildings")
    types = dict(zip(info["fields"], info["dtypes"]))
    assert types["osm_id"] == "int64" and types["building:levels"] == "int32" and types["height"] == "float64"
    assert types["use"] == "object" and info["geometry_type"] == "MultiPolygon" and "3067" in info["crs"]
    assert pyogrio.read_info(path, layer="pois")["geometry_type"] == "Point"
    stamp = json.loads(overpass_db.read_text())["osm3s"]["timestamp_osm_base"]
    assert out["osm_timestamp"] == stamp
    _, _, _, (stamps,) = pyogrio.raw.read(str(path), layer="pois", columns=["osm_timestamp"], read_geometry=False)
    assert set(stamps) == {stamp}
    assert out["tiles"] >= 2 and out["queries"] == 3 * out["tiles"] and out["from_cache"] == 0
    assert any(line.startswith("buildings:") and "residential" in line for line in log.lines)
    # the building ways are those GDAL's OSM driver reads from the .pbf over the same extent, less the
    # ways the extract cut (GDAL draws them from the nodes it has; Overpass never answers such ways)
    db = parse_answer(overpass_db.read_bytes(), "recorded extract")
    _, _, wkb, (way_ids, b) = pyogrio.raw.read(str(PBF), layer="multipolygons", columns=["osm_way_id", "building"])
    tr = Transformer.from_crs(4326, 3067, always_xy=True)
    geoms = shapely.transform(shapely.from_wkb(wkb, on_invalid="ignore"),
                              lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    inside = shapely.intersects(geoms, shapely.box(*helsinki_3067))
    gdal_ways = {int(i) for i, bb, k in zip(way_ids, b, inside)
                 if i is not None and bb and k and all(n in db.nodes for n in db.ways[int(i)])}
    assert _ids(path, "buildings", "way") == gdal_ways
    assert out["buildings"]["total"] == len(_ids(path, "buildings")) > 20
    # POIs: nodes with a shop tag in the extent, from GDAL's points layer
    _, _, wkb, (node_ids, tags) = pyogrio.raw.read(str(PBF), layer="points", columns=["osm_id", "other_tags"])
    pts = shapely.transform(shapely.from_wkb(wkb), lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    inside = shapely.intersects(pts, shapely.box(*helsinki_3067))
    shops = {int(i) for i, t, k in zip(node_ids, tags, inside) if k and t and '"shop"=>' in t}
    assert shops and shops <= _ids(path, "pois", "node")


def test_requests_are_polite_and_a_rerun_is_served_from_the_cache(overpass, tmp_path, helsinki_3067):
    first = download_osm(_request(overpass, tmp_path, helsinki_3067, out="a.gpkg"))
    served = _served(overpass)
    assert len(served) == first["queries"] > 0
    assert all("Edifice" in r["headers"]["user-agent"] for r in served)
    assert all("%5Bout%3Ajson%5D%5Btimeout%3A180%5D" in r["body"] for r in served)
    second = download_osm(_request(overpass, tmp_path, helsinki_3067, out="b.gpkg"))
    assert len(_served(overpass)) == len(served)        # nothing sent
    assert second["queries"] == 0 and second["from_cache"] == first["queries"]
    for layer in ("pois", "buildings"):
        assert _ids(tmp_path / "a.gpkg", layer) == _ids(tmp_path / "b.gpkg", layer)


@pytest.mark.parametrize("fault", [
    {"kind": "status", "status": 429, "retry_after": 1},
    {"kind": "status", "status": 504, "retry_after": 1},
    {"kind": "drop"},
    {"kind": "truncate"},
])
def test_transient_failures_are_retried(overpass, tmp_path, fault, helsinki_3067):
    overpass.set_faults([{**fault, "times": 1}])
    log = Log()
    out = download_osm(_request(overpass, tmp_path, helsinki_3067, max_tile_km2=10), log)
    served = _served(overpass)
    assert [r["fault"] for r in served][:2] == [fault["kind"], None]
    assert out["buildings"]["total"] > 20 and len(served) == out["queries"] + 1
    retries = [line for line in log.lines if "retrying in" in line]
    assert len(retries) == 1
    if fault["kind"] == "status":                       # the server's Retry-After is the wait
        assert f"HTTP {fault['status']}" in retries[0] and "retrying in 1.0 s" in retries[0]


@pytest.mark.parametrize("fault, message", [
    ({"kind": "content_type", "value": "text/html"}, "text/html"),
    ({"kind": "empty"}, "not Overpass JSON"),
])
def test_wrong_or_empty_answers_fail_clearly_and_write_nothing(overpass, tmp_path, fault, message, helsinki_3067):
    overpass.set_faults([{**fault, "times": 10}])
    with pytest.raises(EdificeError, match=message):
        download_osm(_request(overpass, tmp_path, helsinki_3067))
    assert not any(p.suffix == ".gpkg" for p in tmp_path.iterdir())


def test_runtime_error_answer_is_refused_after_splitting_and_not_cached(overpass, tmp_path, helsinki_3067):
    request = _request(overpass, tmp_path, helsinki_3067, timeout_s=1, max_tile_km2=10)
    with pytest.raises(EdificeError, match="timed out"):
        download_osm(request)
    asked = 1 + 1 + 1              # the box, its first quarter, that one's first quarter (MAX_SPLITS = 2)
    assert len(_served(overpass)) == asked
    with pytest.raises(EdificeError, match="timed out"):
        download_osm(request)
    assert len(_served(overpass)) == 2 * asked         # asked again: no bad answer was cached


def test_box_the_server_gives_up_on_is_asked_again_in_quarters(standin, overpass, overpass_db, tmp_path,
                                                              helsinki_3067):
    small = standin(Path(__file__).resolve().parents[1] / "servers" / "overpass_standin.py", overpass_db,
                    "--max-area-km2", "0.15")
    log = Log()
    out = download_osm(_request(small, tmp_path, helsinki_3067, out="split.gpkg", max_tile_km2=10), log)
    assert out["tiles"] == 1 and out["queries"] == 2 * (1 + 4)    # per layer: the 0.36 km² box, then quarters
    assert sum("Asking again in four smaller boxes" in line for line in log.lines) == 2
    download_osm(_request(overpass, tmp_path, helsinki_3067, out="whole.gpkg", max_tile_km2=10))
    for layer in ("pois", "buildings"):
        assert _ids(tmp_path / "split.gpkg", layer) == _ids(tmp_path / "whole.gpkg", layer)


def test_extent_with_no_data_gives_empty_layers_and_a_warning(overpass, tmp_path, helsinki_3067):
    log = Log()
    far = (500000.0, 6900000.0, 500500.0, 6900500.0)    # central Finland, outside the extract
    out = download_osm(_request(overpass, tmp_path, far), log)
    assert out["pois"]["total"] == 0 and out["buildings"]["total"] == 0
    assert pyogrio.read_info(tmp_path / "osm.gpkg", layer="buildings")["features"] == 0
    assert any("No buildings" in w for w in log.warnings)


def test_cancel_stops_between_queries_and_writes_nothing(overpass, tmp_path, helsinki_3067):
    with pytest.raises(Cancelled):
        download_osm(_request(overpass, tmp_path, helsinki_3067, max_tile_km2=0.05), Log(cancel_after_queries=2))
    assert len(_served(overpass)) < 8
    assert not any(p.suffix == ".gpkg" for p in tmp_path.iterdir())


def test_bad_settings_are_refused_before_any_request(overpass, tmp_path, helsinki_3067):
    with pytest.raises(InputError, match="ENDPOINT"):
        download_osm(OsmRequest(helsinki_3067, "EPSG:3067", {"pois": str(tmp_path / "x.gpkg")}, endpoint="ftp://x"))
    with pytest.raises(InputError, match="OUTPUT"):
        download_osm(OsmRequest(helsinki_3067, "EPSG:3067", {}))
    assert _served(overpass) == []


# ---------------------------------------------------------------- the layers feed the building-use tools
def test_pois_feed_poi_probability_and_buildings_feed_training_dataset(overpass, tmp_path, helsinki_3067):
    import rasterio
    from rasterio.transform import from_origin

    from edifice.core.grid import Grid
    from edifice.core.use.poi_probability import poi_probability
    from edifice.core.use.poi_sources import classify_pois, load_poi_mapping, read_point_file
    from edifice.core.use.training_dataset import create_training_dataset

    out = download_osm(_request(overpass, tmp_path, helsinki_3067))
    path = str(tmp_path / "osm.gpkg")
    xs, ys, recs, crs = read_point_file(path, "pois", "other_tags")
    classified = classify_pois(xs, ys, recs, "other_tags", load_poi_mapping("osm"), crs)
    assert classified.counts == {c: out["pois"][c] for c in ("residential", "commercial", "industrial")}
    grid = Grid.from_extent(*helsinki_3067, 5.0, crs)
    maps = poi_probability(classified.pois, grid, str(tmp_path / "poi.tif"), [500, 500, 1500])
    assert maps["width"] == 120

    imagery = tmp_path / "img.tif"
    rng = np.random.default_rng(0)
    with rasterio.open(imagery, "w", driver="GTiff", width=300, height=300, count=3, dtype="uint8",
                       crs="EPSG:3067", transform=from_origin(helsinki_3067[0], helsinki_3067[3], 2.0, 2.0)) as ds:
        ds.write(rng.integers(0, 255, (3, 300, 300), dtype=np.uint8))
    manifest = create_training_dataset(str(imagery), path, str(tmp_path / "ds"), "building",
                                       use_preset="osm_building", buildings_layer="buildings",
                                       poi_points_path=path, poi_layer="pois", poi_category_field="other_tags",
                                       chip_size=64)
    got = manifest["buildings"]
    _, _, _, (use,) = pyogrio.raw.read(path, layer="buildings", columns=["use"], read_geometry=False)
    for cls in ("residential", "commercial", "industrial"):
        assert got[cls] == int(np.sum(use == cls))
    assert got["residential"] + got["commercial"] > 0
    # the held-back labelled buildings: the test subset's buildings of known use
    test = manifest["split"]["subsets"]["test"]
    _, _, _, (held,) = pyogrio.raw.read(str(tmp_path / "ds" / manifest["test_buildings"]), columns=["use"],
                                        read_geometry=False)
    for cls in ("residential", "commercial", "industrial"):
        assert int(np.sum(held == cls)) == test[cls]
