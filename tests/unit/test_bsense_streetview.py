"""edifice:streetviewpoints core: nearest road point, heading and pitch (seed BuildingSense §3.1.2)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import shapely
from pyproj import Transformer

from edifice.core.buildingsense.streetview import (StreetViewSettings, road_keep_mask, seed_heading, seed_pitch,
                                                   street_view_points)
from edifice.core.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
PBF = ROOT / "samples" / "helsinki" / "Helsinki.osm.pbf"
UTM = "EPSG:32633"  # central meridian 15° E: at x = 500 000 grid north is true north
X0, N0 = 500000.0, 5540000.0

# (id, centre x, centre y, height m, expected heading °, expected distance m) -- worked out by hand:
# A is 30 m north of the east-west street, B 20 m south of it, C and D sit on either side of a
# diagonal street (perpendicular feet at 45°/225°), E is 30 m west of a north-south street, F has a
# footway 10 m away (filtered out) and the east-west street 60 m south, G is 400 m from any street.
BUILDINGS = [
    ("A", X0, N0 + 30, 30.0, 0.0, 30.0),
    ("B", X0 + 40, N0 - 20, 10.0, 180.0, 20.0),
    ("C", X0 - 280, N0 + 220, 12.0, 45.0, 20 * math.sqrt(2)),
    ("D", X0 - 285, N0 + 155, 8.0, 225.0, 15 * math.sqrt(2)),
    ("E", X0 + 270, N0 + 50, 30.0, 270.0, 30.0),
    ("F", X0 + 80, N0 + 60, 6.0, 0.0, 60.0),
    ("G", X0 + 2000, N0 + 2000, 10.0, None, None),
]
ROADS = [  # (coordinates, highway, other_tags)
    ([(X0 - 100, N0), (X0 + 100, N0)], "residential", None),
    ([(X0 - 350, N0 + 250), (X0 - 250, N0 + 150)], "tertiary", None),
    ([(X0 + 300, N0 - 100), (X0 + 300, N0 + 100)], "primary", None),
    ([(X0 + 60, N0 + 50), (X0 + 100, N0 + 50)], "footway", '"footway"=>"sidewalk"'),
    ([(X0 + 60, N0 + 55), (X0 + 100, N0 + 55)], "residential", '"footway"=>"sidewalk","lit"=>"yes"'),
    ([(X0 + 60, N0 + 65), (X0 + 100, N0 + 65)], "cycleway", None),
    ([(X0 + 60, N0 + 70), (X0 + 100, N0 + 70)], None, None),  # e.g. a railway line of an OSM extract
]


def _square(x, y, half=5.0):
    return shapely.box(x - half, y - half, x + half, y + half)


def write_scene(folder: Path, crs: str = UTM) -> tuple[str, str]:
    """The synthetic street scene as two GeoPackages in ``crs``."""
    tr = Transformer.from_crs(UTM, crs, always_xy=True)

    def move(g):
        return shapely.transform(g, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))

    b = folder / "buildings.gpkg"
    geoms = [move(_square(x, y)) for _, x, y, *_ in BUILDINGS]
    pyogrio.raw.write(str(b), shapely.to_wkb(geoms), [np.array([r[0] for r in BUILDINGS], object),
                                                       np.array([r[3] for r in BUILDINGS])],
                      ["bid", "height"], driver="GPKG", geometry_type="Polygon", crs=crs)
    r = folder / "roads.gpkg"
    lines = [move(shapely.LineString(c)) for c, *_ in ROADS]
    pyogrio.raw.write(str(r), shapely.to_wkb(lines), [np.array([h for _, h, _ in ROADS], object),
                                                      np.array([t for *_, t in ROADS], object)],
                      ["highway", "other_tags"], driver="GPKG", geometry_type="LineString", crs=crs)
    return str(b), str(r)


def read_points(path):
    meta, _, wkb, data = pyogrio.raw.read(path)
    rec = {n: d for n, d in zip(meta["fields"], data)}
    return shapely.from_wkb(wkb), rec


def test_seed_equations_by_hand():
    # east, north-east, north, north-west, west, south-west, south, south-east
    dx = np.array([1, 1, 0, -1, -1, -1, 0, 1.0])
    dy = np.array([0, 1, 1, 1, 0, -1, -1, -1.0])
    np.testing.assert_allclose(seed_heading(dx, dy), [90, 45, 0, 315, 270, 225, 180, 135])
    np.testing.assert_allclose(seed_pitch([10, 30, 5], [10, 30 * math.sqrt(3), 0]), [45, 30, 90])


@pytest.mark.parametrize("crs", [UTM, "EPSG:4326"])
def test_synthetic_street_headings_pitches(tmp_path, crs):
    b, r = write_scene(tmp_path, crs)
    out = str(tmp_path / "points.gpkg")
    res = street_view_points(b, r, out, id_field="bid", height_field="height",
                             settings=StreetViewSettings(max_distance_m=100))
    assert res["points"] == 6 and res["too_far"] == 1
    pts, rec = read_points(out)
    got = {k: i for i, k in enumerate(rec["building_id"])}
    assert set(got) == {"A", "B", "C", "D", "E", "F"}
    rel = 1e-9 if crs == UTM else 1e-3  # geodesic vs UTM grid distance: scale factor 0.9996
    for bid, x, y, h, heading, dist in BUILDINGS[:-1]:
        i = got[bid]
        assert rec["heading"][i] == pytest.approx(heading, abs=0.02), bid
        assert rec["distance_m"][i] == pytest.approx(dist, rel=rel), bid
        assert rec["pitch"][i] == pytest.approx(math.degrees(math.atan(h / dist)), abs=0.02), bid
        assert rec["height_m"][i] == h
    # F's point is on the east-west street, not on the footway/sidewalk/cycleway 5-10 m away
    assert rec["road_fid"][got["F"]] == 0
    if crs == UTM:
        np.testing.assert_allclose([pts[got["F"]].x, pts[got["F"]].y], [X0 + 80, N0], atol=1e-6)


def test_default_height_and_far_buildings_logged(tmp_path):
    b, r = write_scene(tmp_path)
    messages = []

    class P:
        def set_fraction(self, f): pass
        def check_cancelled(self): pass
        def info(self, m): messages.append(m)
        def warning(self, m): messages.append("W:" + m)
        def span(self, a, b): return self

    res = street_view_points(b, r, str(tmp_path / "p.gpkg"), settings=StreetViewSettings(50, 15.0), progress=P())
    assert res["default_height"] == res["points"] == 5  # F (60 m) and G are beyond 50 m
    assert res["too_far"] == 2
    assert any(m.startswith("W:2 building(s) are farther than 50 m") for m in messages)
    _, rec = read_points(str(tmp_path / "p.gpkg"))
    assert set(rec["building_id"]) == {"1", "2", "3", "4", "5"}  # no id field: feature numbers
    np.testing.assert_allclose(rec["height_m"], 15.0)


def test_road_filter_tags():
    keep = road_keep_mask({"highway": np.array(["residential", "footway", None, "service", "primary"], object),
                           "other_tags": np.array([None, None, None, '"cycleway"=>"lane"', '"lit"=>"yes"'], object)})
    assert keep.tolist() == [True, False, False, False, True]
    assert road_keep_mask({"name": np.array(["a", "b"], object)}).tolist() == [True, True]


def test_errors(tmp_path):
    b, r = write_scene(tmp_path)
    with pytest.raises(InputError, match="ROADS: .*no street lines"):
        street_view_points(b, r, str(tmp_path / "p.gpkg"),
                           settings=StreetViewSettings(excluded_highways=("residential", "tertiary", "primary",
                                                                             "footway", "cycleway")))
    with pytest.raises(InputError, match="BUILDINGS"):
        street_view_points(r, r, str(tmp_path / "p.gpkg"))
    with pytest.raises(InputError, match="OUTPUT"):
        street_view_points(b, r, str(tmp_path / "p.shp"))
    with pytest.raises(InputError, match="ID_FIELD: .*no field 'nope'|BUILDINGS: .*no field 'nope'"):
        street_view_points(b, r, str(tmp_path / "p.gpkg"), id_field="nope")
    assert not list(tmp_path.glob("p.*"))


def _helsinki_buildings(tmp_path: Path, crs: str) -> str:
    meta, _, wkb, data = pyogrio.raw.read(str(PBF), layer="multipolygons", columns=["osm_way_id", "building"])
    geoms = shapely.from_wkb(wkb, on_invalid="ignore")  # the extract has a few unclosed rings
    keep = np.array([v is not None and w is not None for v, w in zip(data[1], data[0])]) & (geoms != None)  # noqa: E711
    geoms = geoms[keep]
    tr = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    geoms = shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    out = tmp_path / f"buildings_{crs.replace(':', '')}.gpkg"
    pyogrio.raw.write(str(out), shapely.to_wkb(geoms), [data[0][keep]], ["osm_way_id"], driver="GPKG",
                      geometry_type="MultiPolygon", crs=crs)
    return str(out)


def _spherical_bearing(lon1, lat1, lon2, lat2):
    """Initial great-circle bearing (°) on a sphere: an independent check of the heading."""
    p1, p2, dl = np.radians(lat1), np.radians(lat2), np.radians(lon2 - lon1)
    y = np.sin(dl) * np.cos(p2)
    x = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
    return np.mod(np.degrees(np.arctan2(y, x)), 360)


def test_helsinki_osm_against_independent_geodesy(tmp_path):
    """Real OSM buildings and streets: the geographic (geodesic) run and the EPSG:3067 run (planar +
    meridian convergence, 1.8° in Helsinki) agree with a spherical bearing, and every point's distance
    is the brute-force nearest distance to the kept streets."""
    res = {}
    for crs in ("EPSG:4326", "EPSG:3067"):
        b = _helsinki_buildings(tmp_path, crs)
        out = str(tmp_path / f"p_{crs.replace(':', '')}.gpkg")
        r = street_view_points(b, str(PBF), out, roads_layer="lines", id_field="osm_way_id",
                               settings=StreetViewSettings(max_distance_m=80))
        assert r["points"] > 300, r
        pts, rec = read_points(out)
        lyr = pyogrio.raw.read(b)
        bid = {v: i for i, v in enumerate(lyr[3][0])}
        cent = shapely.centroid(shapely.from_wkb(lyr[2]))[[bid[i] for i in rec["building_id"]]]
        to_ll = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        plon, plat = to_ll.transform(shapely.get_x(pts), shapely.get_y(pts))
        clon, clat = to_ll.transform(shapely.get_x(cent), shapely.get_y(cent))
        far = rec["distance_m"] > 2  # bearings to a centroid a metre away are ill-conditioned
        diff = np.abs((rec["heading"] - _spherical_bearing(plon, plat, clon, clat) + 180) % 360 - 180)
        assert diff[far].max() < 0.15, diff[far].max()
        res[crs] = dict(zip(rec["building_id"], rec["distance_m"]))
    # nearest by brute force over the kept streets, in EPSG:3067 (scale factor within 0.1 % here)
    meta, _, wkb, data = pyogrio.raw.read(str(PBF), layer="lines", columns=["highway", "other_tags"])
    streets = shapely.from_wkb(wkb[road_keep_mask({"highway": data[0], "other_tags": data[1]})])
    tr = Transformer.from_crs("EPSG:4326", "EPSG:3067", always_xy=True)
    streets = shapely.transform(streets, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    lyr = pyogrio.raw.read(_helsinki_buildings(tmp_path, "EPSG:3067"))
    cents = dict(zip(lyr[3][0], shapely.centroid(shapely.from_wkb(lyr[2]))))
    common = sorted(set(res["EPSG:4326"]) & set(res["EPSG:3067"]))
    assert len(common) > 300
    for k in common[::7]:
        brute = shapely.distance(cents[k], streets).min()
        assert res["EPSG:3067"][k] == pytest.approx(brute, abs=1e-6)
        assert res["EPSG:4326"][k] == pytest.approx(brute, rel=2e-3, abs=0.05)
