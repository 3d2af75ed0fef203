"""A stand-in service for the HTTP client's own tests: deterministic bodies by path.

- ``/bytes/<n>``: n bytes (``application/octet-stream``), the pattern 0..255 repeated;
- ``/json``: ``{"ok": true, "query": {...}}`` echoing the query;
- ``/echo``: the request body back, with the request's User-Agent in ``X-Seen-User-Agent``;
- ``/status/<code>``: that status, a short text body;
- ``/redirect/<n>``: a 302 to ``/bytes/<n>``; ``/loop``: a 302 to itself;
- ``/gzip/<n>``: ``/bytes/<n>`` gzip-compressed (``Content-Encoding: gzip``);
- anything else: 404."""
from __future__ import annotations

import gzip
import json


def handle(method, path, query, headers, body):
    parts = path.strip("/").split("/")
    if parts[0] == "bytes" and len(parts) == 2:
        n = int(parts[1])
        return 200, {"Content-Type": "application/octet-stream"}, bytes(i % 256 for i in range(n))
    if parts[0] == "json":
        return 200, {"Content-Type": "application/json"}, json.dumps({"ok": True, "query": query}).encode()
    if parts[0] == "echo":
        return 200, {"Content-Type": "application/octet-stream",
                     "X-Seen-User-Agent": headers.get("user-agent", "")}, body
    if parts[0] == "status" and len(parts) == 2:
        return int(parts[1]), {"Content-Type": "text/plain"}, f"status {parts[1]} for key={query.get('key', '')}".encode()
    if parts[0] == "redirect" and len(parts) == 2:
        return 302, {"Location": f"/bytes/{int(parts[1])}", "Content-Type": "text/plain"}, b"moved"
    if parts[0] == "loop":
        return 302, {"Location": "/loop", "Content-Type": "text/plain"}, b"moved"
    if parts[0] == "gzip" and len(parts) == 2:
        body = gzip.compress(bytes(i % 256 for i in range(int(parts[1]))))
        return 200, {"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"}, body
    return 404, {"Content-Type": "text/plain"}, b"not found"
