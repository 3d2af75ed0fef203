"""CLI command of the OpenStreetMap download (same core function as edifice:osmdownload):

    edifice osm-download OUT.gpkg --extent xmin,ymin,xmax,ymax --crs EPSG:3067 [--roads]

writes the layers ``pois`` and ``buildings`` (and ``roads``) into OUT.gpkg. The Overpass endpoint is
``--endpoint``, else ``$EDIFICE_OVERPASS_URL``, else the public instance.
"""
from __future__ import annotations

import os

from .cli_height import _extent
from .progress import TerminalProgress

ENDPOINT_ENV = "EDIFICE_OVERPASS_URL"


def default_endpoint() -> str:
    """``$EDIFICE_OVERPASS_URL`` or the public Overpass instance."""
    from .acquire.overpass import DEFAULT_ENDPOINT

    return os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT


def _cmd_osm_download(a) -> dict:
    from .acquire.osm import OsmRequest, download_osm

    layers = ["pois", "buildings"] + (["roads"] if a.roads else [])
    request = OsmRequest(extent=a.extent, extent_crs=a.crs, outputs={n: a.output for n in layers},
                         endpoint=a.endpoint or default_endpoint(), output_crs=a.output_crs,
                         max_tile_km2=a.max_tile_km2, timeout_s=a.timeout, parallel=a.parallel,
                         cache_dir=a.cache_dir, use_cache=not a.no_cache)
    return download_osm(request, TerminalProgress())


def add_osm_arguments(p, output: bool = True) -> None:
    """Options shared by ``osm-download`` and ``map-city``."""
    if output:
        p.add_argument("output", help="GeoPackage to write (layers pois, buildings[, roads])")
    p.add_argument("--extent", type=_extent, required=True, help="xmin,ymin,xmax,ymax in --crs units")
    p.add_argument("--crs", default="EPSG:4326", help="CRS of --extent (default EPSG:4326)")
    p.add_argument("--endpoint", default=None, help=f"Overpass API URL (default ${ENDPOINT_ENV} or the public one)")
    p.add_argument("--max-tile-km2", type=float, default=25.0, help="largest area of one query (km²)")
    p.add_argument("--timeout", type=int, default=180, help="Overpass query timeout (s)")
    p.add_argument("--parallel", type=int, default=1, help="queries at once (be kind to public servers: 1)")
    p.add_argument("--cache-dir", default=None, help="response cache (default $EDIFICE_CACHE_DIR or ~/.cache/edifice)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the response cache")


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("osm-download", help="OpenStreetMap POIs, buildings (and roads) from Overpass")
    add_osm_arguments(p)
    p.add_argument("--output-crs", default=None, help="CRS of the layers (default: --crs)")
    p.add_argument("--roads", action="store_true", help="also fetch highway ways (layer roads)")
    p.set_defaults(func=_cmd_osm_download)
