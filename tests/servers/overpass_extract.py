"""A recorded Overpass database made from a real OSM extract (tests only; needs the ``osmium``
package): ``write_extract(pbf, json_path)`` writes every node, way and relation of the .osm.pbf
as Overpass JSON elements, plus ``osm3s.timestamp_osm_base`` = the newest element timestamp.

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


def write_extract(pbf: str, json_path: str) -> str:
    elements, stamp = read_elements(pbf)
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump({"osm3s": {"timestamp_osm_base": stamp}, "elements": elements}, f)
    return json_path


if __name__ == "__main__":
    write_extract(sys.argv[1], sys.argv[2])
