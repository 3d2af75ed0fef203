"""CLI command of the imagery download (same core function as edifice:imagerydownload):

    edifice imagery-download OUT.tif --extent 32.594,0.350,32.596,0.3514 --xyz 'https://t.example/{z}/{x}/{y}.png'
    edifice imagery-download OUT.tif --extent ... --wmts 'https://s.example/wmts?REQUEST=GetCapabilities' --layer L
    edifice imagery-download OUT.tif --extent ... --wms https://s.example/wms --layer L --wms-crs EPSG:3857

A key for the service comes from an environment variable (``--key-env``, default EDIFICE_IMAGERY_KEY)
or a file (``--key-file``) and fills the URL's ``{key}`` placeholder, or the query parameter
named by ``--key-param``; it is never printed or written.
"""
from __future__ import annotations

import argparse

from ..errors import InputError
from ..progress import TerminalProgress

KEY_ENV = "EDIFICE_IMAGERY_KEY"


def _extent(text: str) -> tuple[float, float, float, float]:
    try:
        v = tuple(float(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not xmin,ymin,xmax,ymax")
    if len(v) != 4:
        raise argparse.ArgumentTypeError(f"'{text}' is not four numbers xmin,ymin,xmax,ymax")
    return v


def source_from_args(a):
    """The :class:`ImagerySource` the options describe, with its key read from env/file."""
    from ..acquire.credentials import secret_from_env_or_file
    from ..acquire.imagery_sources import ImagerySource, with_secret_param

    kinds = [(k, getattr(a, k)) for k in ("xyz", "wmts", "wms") if getattr(a, k)]
    if len(kinds) != 1:
        raise InputError("--xyz/--wmts/--wms", "give exactly one service.", "e.g. --xyz 'https://.../{z}/{x}/{y}.png'.")
    kind, url = kinds[0]
    secrets = {}
    name = a.key_param or "key"
    if a.key_param and "{" + name + "}" not in url:
        url = with_secret_param(url, name)
    if "{" + name + "}" in url:
        key = secret_from_env_or_file(a.key_env, a.key_file)
        if key is None:
            raise InputError("--key-env", f"the URL needs a key ({{{name}}}) and ${a.key_env} is not set.",
                             f"export {a.key_env}=... or give --key-file.")
        secrets[name] = key
    return ImagerySource(kind, url, layer=a.layer, style=a.style or "", image_format=a.format,
                         tile_matrix_set=a.tile_matrix_set, crs=a.wms_crs, version=a.wms_version,
                         min_zoom=a.min_zoom, max_zoom=a.max_zoom, attribution=a.attribution or "", secrets=secrets)


def _cmd_imagery_download(a) -> dict:
    from ..acquire.imagery import BLOCK_SIZE, download_imagery

    cache = False if a.no_cache else (a.cache_dir or True)
    return download_imagery(source_from_args(a), a.extent, a.extent_crs, a.output, gsd_m=a.gsd, crs=a.crs,
                            max_concurrency=a.max_concurrency, cache=cache, progress=TerminalProgress(),
                            block_size=a.block_size or BLOCK_SIZE)


def add_source_arguments(p) -> None:
    """The options that describe an imagery service (read by :func:`source_from_args`)."""
    src = p.add_argument_group("service (one of)")
    src.add_argument("--xyz", help="tile URL template with {z} {x} {y} ({-y} for TMS, {q} for a quadkey)")
    src.add_argument("--wmts", help="WMTS GetCapabilities URL")
    src.add_argument("--wms", help="WMS service URL")
    p.add_argument("--layer", default=None, help="WMTS/WMS layer name")
    p.add_argument("--style", default="")
    p.add_argument("--format", default="image/png", help="image format asked for (image/png, image/jpeg)")
    p.add_argument("--tile-matrix-set", default=None, help="WMTS tile matrix set (default: one in EPSG:3857)")
    p.add_argument("--wms-crs", default="EPSG:3857", help="CRS of the WMS requests")
    p.add_argument("--wms-version", default="1.3.0", choices=["1.1.1", "1.3.0"])
    p.add_argument("--min-zoom", type=int, default=0, help="XYZ: shallowest zoom served")
    p.add_argument("--max-zoom", type=int, default=19, help="XYZ: deepest zoom served")
    p.add_argument("--attribution", default=None, help="attribution written into the output's metadata")
    p.add_argument("--key-env", default=KEY_ENV, help=f"environment variable holding the key ({KEY_ENV})")
    p.add_argument("--key-file", default=None, help="file whose first line is the key")
    p.add_argument("--key-param", default=None, help="query parameter that carries the key (when the URL has no "
                                                     "{key} placeholder)")


def add_commands(sub) -> None:
    p = sub.add_parser("imagery-download", help="imagery for an extent from an XYZ/TMS, WMTS or WMS service")
    p.add_argument("output", help="GeoTIFF to write (RGB, nodata 0)")
    p.add_argument("--extent", type=_extent, required=True, help="xmin,ymin,xmax,ymax in --extent-crs")
    p.add_argument("--extent-crs", default="EPSG:4326")
    add_source_arguments(p)
    p.add_argument("--gsd", type=float, default=0.5, help="output pixel size in metres (0.5)")
    p.add_argument("--crs", default=None, help="output CRS (default: the extent's UTM zone)")
    p.add_argument("--max-concurrency", type=int, default=4, help="requests in flight at once (4)")
    p.add_argument("--cache-dir", default=None, help="response cache folder (default ~/.cache/edifice/imagery)")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--block-size", type=int, default=None, help="output block size in pixels (512)")
    p.set_defaults(func=_cmd_imagery_download)
