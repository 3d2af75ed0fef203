"""Stand-in imagery service for tests and benchmarks: real image tiles cut on request from a
georeferenced raster (default: the Kampala 7.5 cm drone mosaic, EPSG:3857) in XYZ, TMS, WMTS
(KVP, with a capabilities document) and WMS (1.1.1 and 1.3.0) form.

Routes (``key`` query parameter required everywhere when started with ``--key``):
  /xyz/{z}/{x}/{y}.png         XYZ tile (404 where the raster has no data)
  /tms/{z}/{x}/{y}.png         TMS tile (row counted from the bottom)
  /wmts?REQUEST=GetCapabilities | GetTile   (GoogleMapsCompatible set, zooms 0..--max-zoom)
  /wms?REQUEST=GetMap          any BBOX/CRS/WIDTH/HEIGHT (transparent where no data)
  /odd/{z}/{x}/{y}.png         tiles of the wrong size (200 x 200 pixels)
PNG tiles are RGBA: alpha 0 where the source pixel is 0,0,0 (the mosaic's "no data").
With ``--repeat`` the covered part of the mosaic at each zoom is repeated over the whole world
(benchmarks on extents larger than the mosaic); encoded tiles are then memoised.

Run by ``tests.servers.standin.start_standin(<this file>, state_dir, args=[...])`` or on its
own: ``python tests/servers/tile_server.py --port 8123 [--source R.tif] [--repeat]``.
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import re
import sys
import threading
import time
from urllib.parse import parse_qsl

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.io import MemoryFile
from rasterio.warp import reproject

HALF = 20037508.342789244
ATTRIBUTION = "Imagery: OpenAerialMap contributors (CC BY 4.0)"
_local = threading.local()
_OPTS = None


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--source", default=os.environ.get("EDIFICE_TILE_SOURCE", "/work/shared/data/kampala/"
                                                      "kampala_rgb_7p5cm_epsg3857.tif"))
    p.add_argument("--max-zoom", type=int, default=21)
    p.add_argument("--key", default=None, help="require ?key=KEY on every request")
    p.add_argument("--repeat", action="store_true", help="repeat the covered part of the source everywhere")
    p.add_argument("--latency-ms", type=float, default=0.0, help="wait this long before each tile or map answer")
    p.add_argument("--port", type=int, default=0)
    return p.parse_args(argv)


def options() -> argparse.Namespace:
    global _OPTS
    if _OPTS is None:
        _OPTS = parse_args(os.environ.get("EDIFICE_TILE_ARGS", "").split())
    return _OPTS


def configure(argv: list[str]) -> None:
    """Set the options (the harness or ``__main__`` calls this with the command-line arguments)."""
    global _OPTS
    _OPTS = parse_args(list(argv))


def setup(args: list[str], state_dir) -> None:
    """Called once by the stand-in harness with the arguments after ``--``."""
    configure(args)


def _dataset():
    if getattr(_local, "ds", None) is None:
        _local.ds = rasterio.open(options().source)
    return _local.ds


# -- rendering ------------------------------------------------------------------------------
def render(bounds: tuple[float, float, float, float], crs: CRS, width: int, height: int) -> np.ndarray:
    """(4, height, width) uint8 RGBA of the source over ``bounds`` in ``crs`` (average resampling
    when shrinking, bilinear otherwise); alpha 0 where the source is 0,0,0 or absent."""
    ds = _dataset()
    xmin, ymin, xmax, ymax = bounds
    transform = Affine((xmax - xmin) / width, 0, xmin, 0, -(ymax - ymin) / height, ymax)
    rgb = np.zeros((3, height, width), np.uint8)
    shrink = transform.a > 1.5 * ds.res[0] if crs == ds.crs else True
    reproject(rasterio.band(ds, [1, 2, 3]), rgb, dst_transform=transform, dst_crs=crs,
              resampling=Resampling.average if shrink else Resampling.bilinear, src_nodata=0, dst_nodata=0)
    alpha = np.where(rgb.any(axis=0), 255, 0).astype(np.uint8)
    return np.concatenate([rgb, alpha[None]])


def encode_png(rgba: np.ndarray) -> bytes:
    with MemoryFile() as mem:
        with mem.open(driver="PNG", width=rgba.shape[2], height=rgba.shape[1], count=4, dtype="uint8") as dst:
            dst.write(rgba)
        return mem.read()


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    span = 2 * HALF / 2 ** z
    return -HALF + x * span, HALF - (y + 1) * span, -HALF + (x + 1) * span, HALF - y * span


@functools.lru_cache(maxsize=64)
def _covered_tiles(z: int) -> tuple[int, int, int, int]:
    """(x0, y0, nx, ny): the tiles at zoom z inside a fully covered rectangle of the source (for the
    Kampala mosaic its top-right part): the longest covered run of columns in the best-covered row
    of a 64 x 64 overview, grown over the rows where that run is covered."""
    span = 2 * HALF / 2 ** z
    with rasterio.open(options().source) as src:
        b = src.bounds
        cov = src.read(1, out_shape=(64, 64)) > 0
    best = int(cov.sum(axis=1).argmax())
    c0, c1 = _longest_run(cov[best])
    r0, r1 = _longest_run(cov[:, c0:c1].all(axis=1), around=best)
    fx, fy = (b.right - b.left) / 64, (b.top - b.bottom) / 64
    # one overview pixel inside each edge that is not the raster's own edge
    left, right = b.left + (c0 + (c0 > 0)) * fx, b.left + (c1 - (c1 < 64)) * fx
    top, bottom = b.top - (r0 + (r0 > 0)) * fy, b.top - (r1 - (r1 < 64)) * fy
    x0, y0 = math.ceil((left + HALF) / span), math.ceil((HALF - top) / span)
    x1, y1 = math.floor((right + HALF) / span), math.floor((HALF - bottom) / span)
    return x0, y0, max(x1 - x0, 1), max(y1 - y0, 1)


def _longest_run(flags: np.ndarray, around: int | None = None) -> tuple[int, int]:
    """[start, end) of the longest run of True (the run containing ``around`` when given)."""
    runs, start = [], None
    for i, f in enumerate(list(flags) + [False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            runs.append((start, i))
            start = None
    if around is not None:
        runs = [r for r in runs if r[0] <= around < r[1]] or runs
    return max(runs, key=lambda r: r[1] - r[0])


@functools.lru_cache(maxsize=4096)
def _png_tile(z: int, x: int, y: int, size: int = 256) -> bytes | None:
    rgba = render(tile_bounds(z, x, y), CRS.from_epsg(3857), size, size)
    return encode_png(rgba) if rgba[3].any() else None


def xyz_tile(z: int, x: int, y: int, size: int = 256) -> bytes | None:
    """PNG of tile (z, x, y), or None where the source has no data (or z is out of range)."""
    n = 2 ** z
    if not (0 <= z <= options().max_zoom and 0 <= x < n and 0 <= y < n):
        return None
    if options().repeat:
        x0, y0, nx, ny = _covered_tiles(z)
        x, y = x0 + (x - x0) % nx, y0 + (y - y0) % ny
    return _png_tile(z, x, y, size)


# -- protocols ------------------------------------------------------------------------------
def capabilities(base_url: str) -> bytes:
    """A WMTS 1.0.0 capabilities document: one layer 'kampala', GoogleMapsCompatible, KVP GetTile."""
    matrices = []
    for z in range(options().max_zoom + 1):
        scale = 2 * HALF / 256 / 2 ** z / 0.00028
        matrices.append(f"""<TileMatrix><ows:Identifier>{z}</ows:Identifier>
<ScaleDenominator>{scale!r}</ScaleDenominator>
<TopLeftCorner>{-HALF!r} {HALF!r}</TopLeftCorner><TileWidth>256</TileWidth><TileHeight>256</TileHeight>
<MatrixWidth>{2 ** z}</MatrixWidth><MatrixHeight>{2 ** z}</MatrixHeight></TileMatrix>""")
    href = base_url.rstrip("/") + "/wmts?"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Capabilities xmlns="http://www.opengis.net/wmts/1.0" xmlns:ows="http://www.opengis.net/ows/1.1"
 xmlns:xlink="http://www.w3.org/1999/xlink" version="1.0.0">
<ows:ServiceIdentification><ows:Title>Kampala stand-in</ows:Title><ows:ServiceType>OGC WMTS</ows:ServiceType>
<ows:ServiceTypeVersion>1.0.0</ows:ServiceTypeVersion></ows:ServiceIdentification>
<ows:ServiceProvider><ows:ProviderName>{ATTRIBUTION}</ows:ProviderName></ows:ServiceProvider>
<ows:OperationsMetadata><ows:Operation name="GetTile"><ows:DCP><ows:HTTP><ows:Get xlink:href="{href}">
<ows:Constraint name="GetEncoding"><ows:AllowedValues><ows:Value>KVP</ows:Value></ows:AllowedValues></ows:Constraint>
</ows:Get></ows:HTTP></ows:DCP></ows:Operation></ows:OperationsMetadata>
<Contents><Layer><ows:Title>Kampala</ows:Title><ows:Identifier>kampala</ows:Identifier>
<Style isDefault="true"><ows:Identifier>default</ows:Identifier></Style><Format>image/png</Format>
<TileMatrixSetLink><TileMatrixSet>GoogleMapsCompatible</TileMatrixSet></TileMatrixSetLink></Layer>
<TileMatrixSet><ows:Identifier>GoogleMapsCompatible</ows:Identifier>
<ows:SupportedCRS>urn:ogc:def:crs:EPSG::3857</ows:SupportedCRS>{''.join(matrices)}</TileMatrixSet></Contents>
</Capabilities>""".encode()


def wms_getmap(q: dict) -> tuple[int, dict, bytes]:
    version = q.get("VERSION", "1.3.0")
    crs_text = q.get("CRS" if version == "1.3.0" else "SRS") or q.get("SRS") or q.get("CRS")
    try:
        crs = CRS.from_user_input(crs_text)
        bbox = [float(v) for v in q["BBOX"].split(",")]
        width, height = int(q["WIDTH"]), int(q["HEIGHT"])
    except Exception as exc:  # noqa: BLE001 - any bad parameter is a ServiceException
        return _service_exception(f"bad GetMap parameters: {exc}")
    if q.get("LAYERS") != "kampala":
        return _service_exception(f"LayerNotDefined: {q.get('LAYERS')}")
    if version == "1.3.0" and crs.is_geographic:  # EPSG:4326 in 1.3.0: latitude first
        bbox = [bbox[1], bbox[0], bbox[3], bbox[2]]
    return 200, {"Content-Type": "image/png"}, encode_png(render(tuple(bbox), crs, width, height))


def _service_exception(text: str) -> tuple[int, dict, bytes]:
    body = f'<?xml version="1.0"?><ServiceExceptionReport><ServiceException>{text}</ServiceException>' \
           '</ServiceExceptionReport>'
    return 200, {"Content-Type": "application/vnd.ogc.se_xml"}, body.encode()


def _png_or_404(png: bytes | None) -> tuple[int, dict, bytes]:
    if png is None:
        return 404, {"Content-Type": "text/plain"}, b"no tile here"
    return 200, {"Content-Type": "image/png"}, png


def handle(method: str, path: str, query, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
    """The stand-in's request handler (see the module docstring for the routes)."""
    q = dict(parse_qsl(query)) if isinstance(query, str) else {k: (v[0] if isinstance(v, list) else v)
                                                              for k, v in (query or {}).items()}
    if options().key is not None and q.get("key") != options().key:
        return 403, {"Content-Type": "text/plain"}, b"invalid or missing key"
    uq = {k.upper(): v for k, v in q.items() if k != "key"}
    if options().latency_ms and (path != "/wmts" or uq.get("REQUEST") == "GetTile"):
        time.sleep(options().latency_ms / 1000)  # a distant server's round trip
    m = re.fullmatch(r"/(xyz|tms|odd)/(\d+)/(\d+)/(\d+)\.png", path)
    if m:
        kind, z, x, y = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
        if kind == "tms":
            y = 2 ** z - 1 - y
        return _png_or_404(xyz_tile(z, x, y, 200 if kind == "odd" else 256))
    if path == "/wmts":
        if uq.get("REQUEST") == "GetCapabilities":
            host = headers.get("host") or headers.get("Host") or "127.0.0.1"
            return 200, {"Content-Type": "application/xml"}, capabilities(f"http://{host}")
        if uq.get("REQUEST") == "GetTile" and uq.get("TILEMATRIXSET") == "GoogleMapsCompatible":
            return _png_or_404(xyz_tile(int(uq["TILEMATRIX"]), int(uq["TILECOL"]), int(uq["TILEROW"])))
        return 400, {"Content-Type": "text/plain"}, b"bad WMTS request"
    if path == "/wms" and uq.get("REQUEST") == "GetMap":
        return wms_getmap(uq)
    return 404, {"Content-Type": "text/plain"}, b"not found"


def serve(port: int) -> None:
    """Serve on 127.0.0.1:``port`` with one thread per connection (standalone use)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802
            path, _, query = self.path.partition("?")
            status, hdrs, data = handle("GET", path, query, dict(self.headers), b"")
            self.send_response(status)
            for k, v in hdrs.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"http://127.0.0.1:{srv.server_address[1]}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    configure(sys.argv[1:])
    serve(options().port)
