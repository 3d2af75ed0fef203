"""A static STAC API and a COG file server for tests/servers/standin.py.

``--catalog DIR`` holds ``items.json`` (a list of STAC items whose asset hrefs start with ``{base}/files/``)
and the files under ``DIR/files/``. Served:

- ``GET /``: landing page (core, item-search, query conformance; ``search`` link), ``GET /collections``
  and ``/collections/<id>``;
- ``GET|POST /search``: items filtered by ``collections``, ``bbox``, ``datetime`` (interval) and ``query``
  (``lt``/``eq`` on properties), ``limit`` per page with a ``next`` link (``token`` = offset);
- ``GET|HEAD /files/<name>``: the file, honouring ``Range: bytes=a-b`` (206 with ``Content-Range``),
  as GDAL's /vsicurl/ needs; with ``--sas`` a file request without ``sig=<the current token>`` is 403;
- ``GET /api/sas/v1/token/<collection>``: a Planetary-Computer-style SAS token.
"""
from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

_CFG: dict = {}
SAS = "se=2099-01-01&sig=stand-in-sas-signature-7c1f"


def setup(args, state_dir):
    p = argparse.ArgumentParser()
    p.add_argument("--catalog", required=True)
    p.add_argument("--sas", action="store_true", help="require the SAS token on file requests")
    a = p.parse_args(args)
    root = Path(a.catalog)
    _CFG.update(root=root, sas=a.sas, items=json.loads((root / "items.json").read_text()))


def _json(status, obj, ctype="application/json"):
    return status, {"Content-Type": ctype}, json.dumps(obj).encode()


def _base(headers) -> str:
    return "http://" + headers.get("host", "127.0.0.1")


def _fill(obj, base: str):
    return json.loads(json.dumps(obj).replace("{base}", base))


def handle(method, path, query, headers, body):
    base = _base(headers)
    if path in ("", "/"):
        return _json(200, _landing(base))
    if path == "/collections":
        return _json(200, {"collections": [_collection(c, base) for c in _collections()], "links": []})
    if path.startswith("/collections/"):
        cid = path.split("/")[2]
        if cid not in _collections():
            return _json(404, {"code": "NotFound", "description": f"collection {cid} not found"})
        return _json(200, _collection(cid, base))
    if path == "/search":
        params = json.loads(body) if method == "POST" and body else _get_params(query)
        return _json(200, _search(params, base), "application/geo+json")
    if path.startswith("/api/sas/v1/token/"):
        return _json(200, {"msft:expiry": "2099-01-01T00:00:00Z", "token": SAS})
    if path.startswith("/files/"):
        if _CFG["sas"] and query.get("sig") != SAS.split("sig=")[1]:
            return 403, {"Content-Type": "application/xml"}, b"<Error>AuthenticationFailed</Error>"
        return _file(_CFG["root"] / "files" / path[len("/files/"):], headers)
    return _json(404, {"code": "NotFound", "description": path})


def _collections() -> list[str]:
    return sorted({it["collection"] for it in _CFG["items"]})


def _landing(base):
    return {"type": "Catalog", "id": "edifice-stand-in", "stac_version": "1.0.0", "description": "stand-in",
            "conformsTo": ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search",
                           "https://api.stacspec.org/v1.0.0/item-search#query",
                           "https://api.stacspec.org/v1.0.0/collections"],
            "links": [{"rel": "self", "href": base + "/", "type": "application/json"},
                      {"rel": "root", "href": base + "/", "type": "application/json"},
                      {"rel": "data", "href": base + "/collections", "type": "application/json"},
                      {"rel": "search", "href": base + "/search", "type": "application/geo+json", "method": "GET"},
                      {"rel": "search", "href": base + "/search", "type": "application/geo+json", "method": "POST"}]}


def _collection(cid, base):
    return {"type": "Collection", "id": cid, "stac_version": "1.0.0", "description": cid, "license": "proprietary",
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
            "links": [{"rel": "self", "href": f"{base}/collections/{cid}"}, {"rel": "root", "href": base + "/"}]}


def _get_params(query):
    p = dict(query)
    if "bbox" in p:
        p["bbox"] = [float(v) for v in p["bbox"].split(",")]
    if "collections" in p:
        p["collections"] = p["collections"].split(",")
    if "query" in p:
        p["query"] = json.loads(p["query"])
    return p


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _keep(item, p) -> bool:
    if p.get("collections") and item["collection"] not in p["collections"]:
        return False
    if p.get("bbox"):
        a, b = item["bbox"], p["bbox"]
        if not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]):
            return False
    if p.get("datetime"):
        start, _, end = p["datetime"].partition("/")
        t = _time(item["properties"]["datetime"])
        if (start not in ("", "..") and t < _time(start)) or (end not in ("", "..") and t > _time(end)):
            return False
    for prop, ops in (p.get("query") or {}).items():
        v = item["properties"].get(prop)
        for op, ref in ops.items():
            if v is None or (op == "lt" and not v < ref) or (op == "eq" and v != ref):
                return False
    return True


def _search(p, base):
    matched = [it for it in _CFG["items"] if _keep(it, p)]
    limit, start = int(p.get("limit", 10)), int(p.get("token", 0) or 0)
    page = matched[start:start + limit]
    links = []
    if start + limit < len(matched):
        links.append({"rel": "next", "href": base + "/search", "method": "POST", "type": "application/geo+json",
                      "body": {**p, "token": start + limit}, "merge": False})
    return {"type": "FeatureCollection", "features": [_fill(it, base) for it in page], "links": links,
            "numberMatched": len(matched), "numberReturned": len(page),
            "timeStamp": datetime.now(timezone.utc).isoformat()}


def _file(path: Path, headers):
    if not path.is_file():
        return 404, {"Content-Type": "text/plain"}, b"no such file"
    size = path.stat().st_size
    rng = headers.get("range", "")
    common = {"Content-Type": "image/tiff", "Accept-Ranges": "bytes"}
    if rng.startswith("bytes="):
        a, _, b = rng[6:].split(",")[0].partition("-")
        start = int(a)
        end = min(int(b) if b else size - 1, size - 1)
        if start >= size:
            return 416, {"Content-Range": f"bytes */{size}"}, b""
        with open(path, "rb") as f:          # only the range is read from disk
            f.seek(start)
            part = f.read(end - start + 1)
        return 206, {**common, "Content-Range": f"bytes {start}-{end}/{size}"}, part
    return 200, common, path.read_bytes()
