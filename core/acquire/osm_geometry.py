"""Geometries of OSM ways and multipolygon relations (lon/lat, EPSG:4326) from an
:class:`~core.acquire.overpass.OsmElements` store.

Multipolygons follow the OSM rules: member ways are joined end to end into closed rings (a ring
may be made of several ways, in any direction), rings of role ``outer`` (or no role) make polygons,
rings of role ``inner`` become the holes of the outer ring that contains them. Relations whose
rings cannot be closed (members missing from the answer) give None and are counted by the caller.
"""
from __future__ import annotations

import shapely

from .overpass import OsmElements


def _coords(store: OsmElements, refs) -> list[tuple[float, float]] | None:
    out = [store.nodes.get(r) for r in refs]
    return None if any(c is None for c in out) else out


def way_line(store: OsmElements, way_id: int):
    """LineString of a way, or None when a node is missing or it has fewer than two nodes."""
    refs = store.ways.get(way_id)
    pts = _coords(store, refs or [])
    return shapely.LineString(pts) if pts and len(pts) >= 2 else None


def way_polygon(store: OsmElements, way_id: int):
    """Polygon of a closed way (repaired when invalid), or None when it is open or incomplete."""
    refs = store.ways.get(way_id) or []
    if len(refs) < 4 or refs[0] != refs[-1]:
        return None
    pts = _coords(store, refs)
    return None if pts is None else _valid(shapely.Polygon(pts))


def join_rings(node_lists: list[list[int]]) -> tuple[list[list[int]], int]:
    """Join node-id sequences end to end into closed rings.
    Returns (rings, number of sequences left in rings that could not be closed)."""
    pending = [list(s) for s in node_lists if len(s) >= 2]
    rings, unclosed = [], 0
    while pending:
        ring = pending.pop(0)
        used = 1
        while ring[0] != ring[-1]:
            nxt = _take_next(pending, ring[-1])
            if nxt is None:
                break
            ring.extend(nxt[1:])
            used += 1
        if ring[0] == ring[-1] and len(ring) >= 4:
            rings.append(ring)
        else:
            unclosed += used
    return rings, unclosed


def _take_next(pending: list[list[int]], end: int) -> list[int] | None:
    """Remove and return the first sequence that starts (or, reversed, ends) at node ``end``."""
    for i, seq in enumerate(pending):
        if seq[0] == end:
            return pending.pop(i)
        if seq[-1] == end:
            return list(reversed(pending.pop(i)))
    return None


def relation_multipolygon(store: OsmElements, rel_id: int):
    """(Multi)Polygon of a multipolygon relation, or None when its outer rings cannot be built."""
    members = store.relations.get(rel_id) or []
    by_role: dict[str, list[list[int]]] = {"outer": [], "inner": []}
    for kind, ref, role in members:
        if kind != "way":
            continue
        refs = store.ways.get(ref)
        if refs is None:
            return None  # a member way is missing from the answer
        by_role["inner" if role == "inner" else "outer"].append(refs)
    outers, bad_o = join_rings(by_role["outer"])
    inners, _ = join_rings(by_role["inner"])
    if not outers or bad_o:
        return None
    outer_polys = [shapely.Polygon(pts) for pts in (_coords(store, r) for r in outers) if pts]
    inner_polys = [shapely.Polygon(pts) for pts in (_coords(store, r) for r in inners) if pts]
    if len(outer_polys) != len(outers):
        return None
    return _valid(_with_holes(outer_polys, inner_polys))


def _with_holes(outers: list, inners: list):
    """Each outer polygon minus the inner rings inside it (an inner ring goes to the smallest outer
    ring that covers it; an island inside a courtyard is smaller than the courtyard, so never
    takes its hole)."""
    holes: list[list] = [[] for _ in outers]
    order = sorted(range(len(outers)), key=lambda i: outers[i].area)
    for inner in inners:
        for i in order:
            if outers[i].covers(inner):
                holes[i].append(inner.exterior.coords)
                break
    polys = [shapely.Polygon(o.exterior.coords, h) for o, h in zip(outers, holes)]
    return polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)


def _valid(geom):
    """``geom`` if valid, else its polygonal part after ``make_valid`` (None if nothing is left)."""
    if geom.is_valid:
        return geom
    fixed = shapely.make_valid(geom)
    parts = [p for p in shapely.get_parts(fixed) if p.geom_type in ("Polygon", "MultiPolygon") and p.area > 0]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else shapely.union_all(parts)
