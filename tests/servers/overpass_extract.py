"""A recorded Overpass database made from a real OSM extract (tests only; needs the ``osmium``
package): ``write_extract(pbf, json_path)`` writes every node, way and relation of the .osm.pbf
as Overpass JSON elements, plus ``osm3s.timestamp_osm_base`` = the newest element timestamp.

``elements_from_layers`` does the same for the GeoPackages of a synthetic scene (known truth).

Run as a script: ``python tests/servers/overpass_extract.py samples/helsinki/Helsinki.osm.pbf out.json``.
"""
from __future__ import annotations

import json
import sys


def read_elements(pbf: str) -> tuple[list[dict], str]:
    """(Overpass JSON elements, newest timestamp ISO 8601 UTC) of an .osm.pbf."""
    import osmium

    elements: list[dict] = []
    newest = ""
    for obj in osmium.FileProcessor(str(pbf)):
        stamp = obj.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ") if obj.timestamp else ""
        newest = max(newest, stamp)
        tags = {t.k: t.v for t in obj.tags}
        if obj.is_node():
            if not obj.location.valid():
                continue
            el = {"type": "node", "id": obj.id, "lat": obj.location.lat, "lon": obj.location.lon}
        elif obj.is_way():
            el = {"type": "way", "id": obj.id, "nodes": [n.ref for n in obj.nodes]}
        elif obj.is_relation():
            el = {"type": "relation", "id": obj.id,
                  "members": [{"type": {"n": "node", "w": "way", "r": "relation"}[m.type], "ref": m.ref,
                               "role": m.role} for m in obj.members]}
        else:
            continue
        if tags:
            el["tags"] = tags
        elements.append(el)
    return elements, newest or "2020-01-01T00:00:00Z"


def elements_from_layers(buildings_gpkg: str, pois_gpkg: str, unlabelled_every: int = 0) -> list[dict]:
    """Overpass JSON elements of a building polygon layer (field ``building``: closed ways, one node per
    vertex; every ``unlabelled_every``-th building tagged ``building=yes``) and a point layer (its non-empty
    fields are the tags of one node each), for synthetic scenes whose truth is known."""
    import pyogrio.raw
    import shapely
    from pyproj import Transformer

    elements, next_id = [], iter(range(1, 10 ** 9))
    for path, is_building in ((buildings_gpkg, True), (pois_gpkg, False)):
        meta, _, wkb, data = pyogrio.raw.read(str(path))
        tr = Transformer.from_crs(meta["crs"], "EPSG:4326", always_xy=True)
        for i, geom in enumerate(shapely.from_wkb(wkb)):
            tags = {str(k): str(col[i]) for k, col in zip(meta["fields"], data) if col[i] not in (None, "")}
            coords = shapely.get_coordinates(shapely.get_exterior_ring(geom) if is_building else geom)
            refs = []
            for lon, lat in zip(*tr.transform(coords[:, 0], coords[:, 1])):
                refs.append(next(next_id))
                elements.append({"type": "node", "id": refs[-1], "lat": lat, "lon": lon})
            if is_building:
                if unlabelled_every and i % unlabelled_every == 0:
                    tags["building"] = "yes"
                refs[-1] = refs[0]
                elements.pop()
                elements.append({"type": "way", "id": next(next_id), "nodes": refs, "tags": tags})
            else:
                elements[-1]["tags"] = tags
    return elements


def write_elements(elements: list[dict], timestamp: str, json_path: str) -> str:
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump({"osm3s": {"timestamp_osm_base": timestamp}, "elements": elements}, f)
    return json_path


def write_extract(pbf: str, json_path: str) -> str:
    elements, stamp = read_elements(pbf)
    return write_elements(elements, stamp, json_path)


if __name__ == "__main__":
    write_extract(sys.argv[1], sys.argv[2])
