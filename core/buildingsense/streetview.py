"""Street-view sampling points (seed buildingsense-essd-2026 §3.1.2).

For every building: the nearest projection of its centroid onto the road network
(sidewalks, footways, cycleways and other non-road lines filtered out by their OSM
tags, as the seed does), the camera ``heading`` (degrees clockwise from true north,
towards the building centroid; the seed's Eqs. 2a/2b) and ``pitch`` (degrees above
the horizon, ``arctan(h / d)`` with h the building height and d the horizontal
distance, the seed's Eq. 1).

Distances and headings are geodesic (WGS84, pyproj ``Geod``) when the buildings'
CRS is geographic; in a projected CRS they are planar, in the CRS's units converted
to metres, and the planar (grid) heading is turned to true north by the meridian
convergence at the sampling point, so the heading is what a street-view service expects.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pyproj import CRS, Geod

from ..evaluation.category_mapping import parse_osm_tags
from ..errors import InputError
from ..outputs import refuse_input_as_output
from ..progress import Progress, ensure
from ._geo import building_ids, centre_lonlat, metric_crs, transform_geoms, transformer, unit_metres

#: ``highway`` values that are not streets a street-view car drives (seed: sidewalks and bicycle lanes removed).
EXCLUDED_HIGHWAYS = ("footway", "sidewalk", "cycleway", "path", "pedestrian", "steps", "bridleway", "corridor",
                     "elevator", "platform", "trail", "track", "construction", "proposed", "bus_stop", "via_ferrata")
#: ``other_tags`` values that mark a way as a sidewalk/crossing/cycle lane whatever its ``highway`` value.
EXCLUDED_SUBTAGS = {"footway": ("sidewalk", "crossing", "traffic_island"), "cycleway": ("lane", "track", "crossing")}
#: Output fields of the points layer (name -> OGR type by numpy dtype).
POINT_FIELDS = ("building_id", "heading", "pitch", "distance_m", "height_m", "road_fid")


@dataclass
class StreetViewSettings:
    """``max_distance_m``: buildings farther than this from any road get no point;
    ``default_height_m``: height used where the building has none; ``excluded_highways``:
    OSM ``highway`` values dropped from the road network (roads without a ``highway``
    field are all kept; lines of an OSM extract without a ``highway`` value are dropped)."""

    max_distance_m: float = 100.0
    default_height_m: float = 10.0
    excluded_highways: tuple[str, ...] = field(default=EXCLUDED_HIGHWAYS)


# ----------------------------------------------------------------------------- the seed's equations
def seed_heading(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Heading in degrees [0, 360) from the seed's Eqs. 2a/2b with planar offsets ``dx`` (east)
    and ``dy`` (north) from the sampling point to the building centre: θ = arctan(dy/dx),
    heading = 90° − θ if dx > 0 else 270° − θ. For dx = 0 the equations are undefined
    (they would give 180° for a building due north); the limit (0° north, 180° south) is used."""
    dx, dy = np.asarray(dx, float), np.asarray(dy, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = np.degrees(np.arctan(dy / dx))
    heading = np.where(dx > 0, 90.0 - theta, 270.0 - theta)
    heading = np.where(dx == 0, np.where(dy >= 0, 0.0, 180.0), heading)
    return np.mod(heading, 360.0)


def seed_pitch(height_m: np.ndarray, distance_m: np.ndarray) -> np.ndarray:
    """Pitch in degrees from the seed's Eq. 1, arctan(h / d); 90° where d = 0."""
    h, d = np.asarray(height_m, float), np.asarray(distance_m, float)
    return np.degrees(np.arctan2(h, d))


def true_north_offset(crs: CRS, x: np.ndarray, y: np.ndarray, step_deg: float = 1e-4) -> np.ndarray:
    """Angle in degrees, clockwise from grid north, of true north at points (x, y) of a
    projected ``crs`` (the meridian convergence): a grid heading minus it is a true heading."""
    to_ll = transformer(crs, "EPSG:4326")
    to_xy = transformer("EPSG:4326", crs)
    lon, lat = to_ll.transform(x, y)
    xn, yn = to_xy.transform(lon, np.asarray(lat) + step_deg)
    return np.degrees(np.arctan2(np.asarray(xn) - x, np.asarray(yn) - y))


# ----------------------------------------------------------------------------- roads
def road_keep_mask(fields: dict, excluded: tuple[str, ...] = EXCLUDED_HIGHWAYS) -> np.ndarray:
    """True for the lines that are streets: a ``highway`` value not in ``excluded`` and no
    sidewalk/crossing/cycle-lane tag in ``other_tags``. A layer without a ``highway`` field
    (any line layer of roads) keeps every line."""
    lower = {k.lower(): k for k in fields}
    if "highway" not in lower:
        n = len(next(iter(fields.values()))) if fields else 0
        return np.ones(n, bool)
    highway = fields[lower["highway"]]
    other = fields[lower["other_tags"]] if "other_tags" in lower else [None] * len(highway)
    excluded_set = {e.strip().lower() for e in excluded}
    keep = np.zeros(len(highway), bool)
    for i, (hw, tags) in enumerate(zip(highway, other)):
        if hw in (None, "") or str(hw).lower() in excluded_set:
            continue
        keep[i] = not any(v in EXCLUDED_SUBTAGS.get(k, ()) for k, v in parse_osm_tags(tags))
    return keep


def read_roads(path: str, layer: str | None, crs_wkt: str, excluded: tuple[str, ...]):
    """(road geometries in ``crs_wkt``, their feature indices in the layer) of the street lines."""
    import shapely

    from ..vector_io import read_vector

    lyr = read_vector(path, "ROADS", layer, what="a line layer of roads (e.g. the 'lines' layer of an .osm.pbf)")
    kinds = shapely.get_type_id(lyr.geoms)
    keep = road_keep_mask(lyr.fields, excluded) & np.isin(kinds, (1, 5))
    if not keep.any():
        raise InputError("ROADS", f"'{path}' holds no street lines after filtering "
                                  f"({len(lyr.geoms)} features; excluded highway values: {', '.join(excluded)}).",
                         "give a line layer of roads (e.g. the 'lines' layer of an .osm.pbf), or exclude fewer "
                         "highway values.")
    idx = np.flatnonzero(keep)
    return transform_geoms(lyr.geoms[idx], transformer(lyr.crs_wkt, crs_wkt)), idx


# ----------------------------------------------------------------------------- heights
def heights_from_field(fields: dict, height_field: str) -> np.ndarray:
    """Building heights (m) from ``height_field``; NaN where empty, non-numeric or not positive."""
    out = np.full(len(fields[height_field]), np.nan)
    for i, v in enumerate(fields[height_field]):
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if np.isfinite(f) and f > 0:
            out[i] = f
    return out


def heights_from_raster(path: str, xs: np.ndarray, ys: np.ndarray, crs_wkt: str) -> np.ndarray:
    """Height raster values (m) at points (``xs``, ``ys`` in ``crs_wkt``); NaN off the raster,
    at nodata or where not positive."""
    from ..raster_io import open_raster, require_crs

    with open_raster(path, "HEIGHT_RASTER") as ds:
        tr = transformer(crs_wkt, require_crs(ds, "HEIGHT_RASTER"))
        px, py = (xs, ys) if tr is None else tr.transform(xs, ys)
        rows, cols = ds.index(px, py)
        rows, cols = np.asarray(rows), np.asarray(cols)
        inside = (rows >= 0) & (rows < ds.height) & (cols >= 0) & (cols < ds.width)
        out = np.full(len(xs), np.nan)
        if inside.any():
            band = ds.read(1, masked=True)  # heights are small single-band rasters; read once
            vals = band[rows[inside], cols[inside]]
            out[inside] = np.ma.filled(vals.astype(float), np.nan)
    out[~(out > 0)] = np.nan
    return out


# ----------------------------------------------------------------------------- geometry
@dataclass
class NearestRoadPoints:
    """Per building that has a road within reach: its index, the sampling point (x, y in the
    buildings' CRS), heading and pitch (degrees), horizontal distance (m) and the road index."""

    building: np.ndarray
    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    distance_m: np.ndarray
    road: np.ndarray


def nearest_road_points(centroids: np.ndarray, roads: np.ndarray, crs_wkt: str,
                        max_distance_m: float) -> NearestRoadPoints:
    """Nearest projection of each centroid (shapely points in ``crs_wkt``) onto ``roads``
    (lines in ``crs_wkt``) within ``max_distance_m``, with the heading from it towards the
    centroid and the distance (geodesic in a geographic CRS, planar otherwise)."""
    import shapely

    crs = CRS.from_user_input(crs_wkt)
    lon0, lat0 = centre_lonlat(centroids, crs_wkt)
    work = metric_crs(crs_wkt, lon0, lat0)
    to_work = transformer(crs, work)
    c_w, r_w = transform_geoms(centroids, to_work), transform_geoms(roads, to_work)
    unit = 1.0 if crs.is_geographic else unit_metres(crs)
    # the search radius is padded: AEQD distances away from its centre are slightly off; exact check below
    reach = max_distance_m / unit * (1.01 if crs.is_geographic else 1.0)
    (b_idx, r_idx), _ = shapely.STRtree(r_w).query_nearest(c_w, max_distance=reach,
                                                            return_distance=True, all_matches=False)
    on_road = shapely.get_point(shapely.shortest_line(r_w[r_idx], c_w[b_idx]), 0)
    sx, sy = shapely.get_x(on_road), shapely.get_y(on_road)
    if to_work is not None:
        sx, sy = transformer(work, crs).transform(sx, sy)
    cx, cy = shapely.get_x(centroids[b_idx]), shapely.get_y(centroids[b_idx])
    if crs.is_geographic:
        az, _, dist = Geod(ellps="WGS84").inv(sx, sy, cx, cy)
        heading = np.mod(np.where(dist > 0, az, 0.0), 360.0)
    else:
        dx, dy = cx - sx, cy - sy
        dist = np.hypot(dx, dy) * unit
        heading = np.mod(seed_heading(dx, dy) - true_north_offset(crs, sx, sy), 360.0)
    ok = np.asarray(dist) <= max_distance_m
    return NearestRoadPoints(b_idx[ok], np.asarray(sx)[ok], np.asarray(sy)[ok], heading[ok],
                             np.asarray(dist, float)[ok], r_idx[ok])


# ----------------------------------------------------------------------------- the tool
def street_view_points(buildings: str, roads: str, output: str, *, buildings_layer: str | None = None,
                       roads_layer: str | None = None, id_field: str | None = None,
                       height_field: str | None = None, height_raster: str | None = None,
                       settings: StreetViewSettings | None = None, progress: Progress | None = None) -> dict:
    """Write one street-view sampling point per building to the GeoPackage ``output`` (layer
    ``street_view_points``, in the buildings' CRS) with fields building_id, heading (°, from
    true north towards the building centroid), pitch (°), distance_m, height_m and road_fid
    (0-based feature index in the roads layer). Returns counts for the log."""
    import shapely

    from ..vector_io import read_vector

    refuse_input_as_output({"OUTPUT": output}, {"BUILDINGS": buildings, "ROADS": roads, "HEIGHT_RASTER": height_raster})
    s = settings or StreetViewSettings()
    progress = ensure(progress)
    if s.max_distance_m <= 0:
        raise InputError("MAX_DISTANCE", f"{s.max_distance_m} m is not a positive distance.", "give e.g. 100.")
    wanted = [f for f in (id_field, height_field) if f]
    lyr = read_vector(buildings, "BUILDINGS", buildings_layer, columns=wanted, kind="Polygon",
                      what="a polygon layer of building footprints")
    ids = building_ids(lyr.fields, id_field, len(lyr.geoms))
    valid = ~(shapely.is_empty(lyr.geoms) | shapely.is_missing(lyr.geoms))
    centroids = shapely.centroid(lyr.geoms[valid])
    progress.set_fraction(0.1)
    road_geoms, road_fids = read_roads(roads, roads_layer, lyr.crs_wkt, tuple(s.excluded_highways))
    progress.info(f"{len(road_geoms)} street lines kept after filtering.")
    progress.check_cancelled()
    near = nearest_road_points(centroids, road_geoms, lyr.crs_wkt, s.max_distance_m)
    progress.set_fraction(0.7)
    b = np.flatnonzero(valid)[near.building]
    heights = _heights(lyr, height_field, height_raster, b, centroids[near.building])
    defaulted = int(np.isnan(heights).sum())
    heights = np.where(np.isnan(heights), s.default_height_m, heights)
    pitch = seed_pitch(heights, near.distance_m)
    progress.check_cancelled()
    data = [np.array([ids[i] for i in b], dtype=object), near.heading, pitch, near.distance_m, heights,
            road_fids[near.road].astype(np.int64)]
    _write_points(output, near.x, near.y, data, lyr.crs_wkt)
    progress.set_fraction(1.0)
    result = {"buildings": int(len(lyr.geoms)), "points": int(len(b)),
              "too_far": int(valid.sum() - len(b)), "empty_geometry": int((~valid).sum()),
              "default_height": defaulted, "roads": int(len(road_geoms)), "output": output}
    _log(progress, result, s)
    return result


def _heights(lyr, height_field, height_raster, rows: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Heights (m, NaN = unknown) of the buildings ``rows`` (layer indices) with these centroids."""
    import shapely

    if height_field:
        return heights_from_field(lyr.fields, height_field)[rows]
    if height_raster:
        return heights_from_raster(height_raster, shapely.get_x(centroids), shapely.get_y(centroids), lyr.crs_wkt)
    return np.full(len(rows), np.nan)


def _write_points(output: str, x: np.ndarray, y: np.ndarray, data: list, crs_wkt: str) -> None:
    import pyogrio.raw
    import shapely

    from ..raster_io import atomic_output

    if not str(output).lower().endswith(".gpkg"):
        raise InputError("OUTPUT", f"'{output}' is not a GeoPackage name.", "give a .gpkg file name.")
    wkb = shapely.to_wkb(shapely.points(x, y), output_dimension=2)
    with atomic_output(output) as tmp:
        pyogrio.raw.write(str(tmp), wkb, data, list(POINT_FIELDS), driver="GPKG", layer="street_view_points",
                          geometry_type="Point", crs=crs_wkt)


def _log(progress: Progress, r: dict, s: StreetViewSettings) -> None:
    progress.info(f"{r['points']} of {r['buildings']} buildings have a street-view point.")
    if r["too_far"]:
        progress.warning(f"{r['too_far']} building(s) are farther than {s.max_distance_m:g} m from any street "
                         "and got no point.")
    if r["empty_geometry"]:
        progress.warning(f"{r['empty_geometry']} building(s) have no geometry and were skipped.")
    if r["default_height"]:
        progress.info(f"{r['default_height']} building(s) without a height use {s.default_height_m:g} m for the pitch.")
