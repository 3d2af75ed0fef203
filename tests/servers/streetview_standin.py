"""A stand-in street-view image API (Google Street View Static style) for the sample tests.

``GET /streetview?size=WxH&location=LAT,LON&heading=H&pitch=P&fov=F&key=K`` answers a small PNG whose
pixel values encode nothing but its size; it answers 400 when a parameter is missing or not a number,
403 when ``--key K`` is given and the key differs. Anything else: 404."""
from __future__ import annotations

import argparse
import struct
import zlib

_cfg = argparse.Namespace(key=None)


def setup(args, state_dir):
    global _cfg
    p = argparse.ArgumentParser()
    p.add_argument("--key", default=None)
    _cfg = p.parse_args(args)


def png(width: int, height: int, value: int = 128) -> bytes:
    """A grey 8-bit PNG made with the standard library."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes([value]) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def handle(method, path, query, headers, body):
    if method != "GET" or path != "/streetview":
        return 404, {"Content-Type": "text/plain"}, b"not found"
    if _cfg.key and query.get("key") != _cfg.key:
        return 403, {"Content-Type": "text/plain"}, b"The provided API key is invalid."
    try:
        w, h = (int(v) for v in query["size"].split("x"))
        lat, lon = (float(v) for v in query["location"].split(","))
        heading, pitch, fov = float(query["heading"]), float(query["pitch"]), float(query["fov"])
    except (KeyError, ValueError):
        return 400, {"Content-Type": "text/plain"}, b"bad parameters"
    if not (-90 <= lat <= 90 and -180 <= lon <= 180 and 0 <= heading <= 360 and -90 <= pitch <= 90 and fov > 0):
        return 400, {"Content-Type": "text/plain"}, b"parameters out of range"
    return 200, {"Content-Type": "image/png"}, png(min(w, 64), min(h, 64), int(heading) % 256)
