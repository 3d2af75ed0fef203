"""Overpass API stand-in (a module for ``tests/servers/standin.py``): answers the Overpass QL
that Edifice sends, for the bounding boxes in the query, from a recorded Overpass database
(JSON of all elements of a real extract, see ``overpass_extract.py``).

The data file is the first harness argument. Understood QL:
``[out:json][timeout:N];``, unions ``( ... );``, queries ``node|way|relation`` with filters
``["k"]``, ``["k"="v"]``, ``[~"key regex"~"value regex"]`` and a ``(south,west,north,east)``
box, ``>;`` (recurse down: the members and nodes replace the set), ``out [body|skel|center]
[qt];``. A way is in a box when one of its segments touches it, a relation when one of its
member nodes or ways is. Anything else is answered 400 like Overpass's static errors; a
``[timeout:1]`` (or 0) query, or with ``--max-area-km2 X`` a box larger than X km², gets Overpass's
200 answer with a "runtime error" remark.
"""
from __future__ import annotations

import json
import math
import re
from urllib.parse import parse_qs

_DB = None
#: With ``--max-area-km2 X``: a query box larger than X km² gets Overpass's "out of memory" runtime error.
_MAX_AREA_KM2 = None


def setup(args, state_dir) -> None:
    """Harness hook: ``args[0]`` is the recorded database (JSON), loaded once; ``--max-area-km2 X``."""
    global _DB, _MAX_AREA_KM2
    _DB = _Db(args[0])
    if "--max-area-km2" in args:
        _MAX_AREA_KM2 = float(args[args.index("--max-area-km2") + 1])


def _box_km2(box) -> float:
    s, w, n, e = box
    return 6371.0088 ** 2 * math.radians(e - w) * (math.sin(math.radians(n)) - math.sin(math.radians(s)))


def _runtime_error(db: _Db, text: str) -> bytes:
    return json.dumps({"version": 0.6, "osm3s": {"timestamp_osm_base": db.timestamp}, "elements": [],
                       "remark": f"runtime error: {text}"}).encode()


class _Db:
    def __init__(self, path: str):
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        self.timestamp = doc["osm3s"]["timestamp_osm_base"]
        self.el = {(e["type"], e["id"]): e for e in doc["elements"]}
        self.nodes = {i: (e["lon"], e["lat"]) for (t, i), e in self.el.items() if t == "node"}
        self.way_bounds = {i: self._bounds(e["nodes"]) for (t, i), e in self.el.items() if t == "way"}

    def _bounds(self, refs):
        pts = [self.nodes[r] for r in refs if r in self.nodes]
        if not pts:
            return None
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        return (min(xs), min(ys), max(xs), max(ys))

    def node_in(self, nid, box) -> bool:
        p = self.nodes.get(nid)
        s, w, n, e = box
        return p is not None and w <= p[0] <= e and s <= p[1] <= n

    def way_in(self, wid, box) -> bool:
        b = self.way_bounds.get(wid)
        s, w, n, e = box
        if b is None or b[0] > e or b[2] < w or b[1] > n or b[3] < s:
            return False
        refs = self.el[("way", wid)]["nodes"]
        if any(self.node_in(r, box) for r in refs):
            return True
        import shapely
        pts = [self.nodes[r] for r in refs if r in self.nodes]
        return len(pts) >= 2 and shapely.LineString(pts).intersects(shapely.box(w, s, e, n))

    def relation_in(self, rid, box) -> bool:
        for m in self.el[("relation", rid)]["members"]:
            if (m["type"] == "node" and self.node_in(m["ref"], box)) or \
               (m["type"] == "way" and ("way", m["ref"]) in self.el and self.way_in(m["ref"], box)):
                return True
        return False


_QUERY = re.compile(r'^(node|way|relation)((?:\[[^\]]*\])*)\(([-\d.,\s]+)\)$')
_FILTER = re.compile(r'\[\s*(?:"([^"]*)"(?:\s*=\s*"([^"]*)")?|~"([^"]*)"\s*~\s*"([^"]*)")\s*\]')


class QlError(ValueError):
    pass


def _filters(text: str):
    out, pos = [], 0
    for m in _FILTER.finditer(text):
        if m.start() != pos:
            raise QlError(f"bad filter near '{text[pos:pos + 30]}'")
        out.append(m.groups())
        pos = m.end()
    if pos != len(text):
        raise QlError(f"bad filter near '{text[pos:pos + 30]}'")
    return out


def _tags_match(tags: dict, filters) -> bool:
    for key, value, key_re, value_re in filters:
        if key is not None:
            if key not in tags or (value is not None and tags[key] != value):
                return False
        elif not any(re.search(key_re, k) and re.search(value_re, v) for k, v in tags.items()):
            return False
    return True


def _select(db: _Db, kind: str, filters, box) -> list:
    inside = {"node": db.node_in, "way": db.way_in, "relation": db.relation_in}[kind]
    return [k for k, e in db.el.items()
            if k[0] == kind and _tags_match(e.get("tags", {}), filters) and inside(k[1], box)]


def _down(db: _Db, keys) -> list:
    """Members of relations, ways of relations and nodes of ways (Overpass ``>``)."""
    out, seen = [], set()

    def add(k):
        if k in db.el and k not in seen:
            seen.add(k)
            out.append(k)
    for k in keys:
        e = db.el[k]
        if k[0] == "relation":
            for m in e["members"]:
                add((m["type"], m["ref"]))
                if m["type"] == "way" and ("way", m["ref"]) in db.el:
                    for r in db.el[("way", m["ref"])]["nodes"]:
                        add(("node", r))
        elif k[0] == "way":
            for r in e["nodes"]:
                add(("node", r))
    return out


def _centre(db: _Db, k):
    if k[0] == "node":
        return None
    refs = db.el[k]["nodes"] if k[0] == "way" else [r for t, r in _down(db, [k]) if t == "node"]
    pts = [db.nodes[r] for r in refs if r in db.nodes]
    if not pts:
        return None
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return {"lat": (min(ys) + max(ys)) / 2, "lon": (min(xs) + max(xs)) / 2}


def _render(db: _Db, keys, mode: str) -> list:
    out = []
    for k in keys:
        e = dict(db.el[k])
        if "skel" in mode:
            e.pop("tags", None)
        if "center" in mode:
            c = _centre(db, k)
            if c:
                e["center"] = c
        out.append(e)
    return out


def run_query(db: _Db, ql: str) -> list:
    """Elements printed by the ``out`` statements of ``ql``."""
    current, union, printed = [], None, []
    for raw in ql.split(";"):
        st = " ".join(raw.split())
        if not st or st.startswith("[out:"):
            continue
        if st.startswith("("):
            union, st = [], st[1:].strip()
            if not st:
                continue
        if st == ")":
            current, union = union or [], None
            continue
        if st == ">":
            current = _down(db, current)
        elif st.startswith("out"):
            printed += _render(db, current, st)
        else:
            m = _QUERY.match(st)
            if not m:
                raise QlError(f"cannot parse '{st[:60]}'")
            box = tuple(float(v) for v in m.group(3).split(","))
            found = _select(db, m.group(1), _filters(m.group(2)), box)
            if union is not None:
                seen = set(union)
                union += [k for k in found if k not in seen]
            else:
                current = found
    return printed


def handle(method, path, query, headers, body):
    """Overpass's ``/api/interpreter``: the QL in the form field ``data`` (POST body or GET query)."""
    if not path.rstrip("/").endswith("/interpreter"):
        return 404, {"Content-Type": "text/plain"}, b"not found"
    form = parse_qs(body.decode("utf-8")) if method == "POST" and body else {}
    ql = (form.get("data") or [query.get("data", "")])[0]
    db = _DB
    timeout = re.search(r"\[timeout:(\d+)\]", ql)
    if timeout and int(timeout.group(1)) <= 1:  # as Overpass does when a query runs out of time
        return 200, {"Content-Type": "application/json"}, _runtime_error(
            db, 'Query timed out in "query" at line 3 after 1 seconds.')
    boxes = [tuple(map(float, b)) for b in re.findall(r"\(([-\d.]+),([-\d.]+),([-\d.]+),([-\d.]+)\)", ql)]
    if _MAX_AREA_KM2 is not None and any(_box_km2(b) > _MAX_AREA_KM2 for b in boxes):
        return 200, {"Content-Type": "application/json"}, _runtime_error(
            db, "Query run out of memory using about 2048 MB of RAM.")
    try:
        elements = run_query(db, ql)
    except QlError as exc:
        return 400, {"Content-Type": "text/html"}, f"<p><strong>Error</strong>: static error: {exc}</p>".encode()
    doc = {"version": 0.6, "generator": "Overpass API stand-in (Edifice tests)",
           "osm3s": {"timestamp_osm_base": db.timestamp,
                     "copyright": "The data included in this document is from www.openstreetmap.org. "
                                  "The data is made available under ODbL."},
           "elements": elements}
    return 200, {"Content-Type": "application/json"}, json.dumps(doc).encode()
