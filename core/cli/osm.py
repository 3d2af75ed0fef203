"""CLI commands of the open-data tools (same core functions as edifice:osmdownload and the
examples/open_data_building_use.model3 chain):

    edifice osm-download OUT.gpkg --extent xmin,ymin,xmax,ymax --extent-crs EPSG:3067 [--roads]
    edifice map-city OUT_DIR --extent ... --extent-crs ... --xyz 'https://.../{z}/{x}/{y}.png' [--epochs 20]

``osm-download`` writes the layers ``pois`` and ``buildings`` (and ``roads``) into OUT.gpkg. The Overpass
endpoint is ``--endpoint``, else ``$EDIFICE_OVERPASS_URL``, else the public instance.
"""
from __future__ import annotations

import os

from .height import _extent
from ..progress import TerminalProgress

ENDPOINT_ENV = "EDIFICE_OVERPASS_URL"


def default_endpoint() -> str:
    """``$EDIFICE_OVERPASS_URL`` or the public Overpass instance."""
    from ..acquire.overpass import DEFAULT_ENDPOINT

    return os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT


def _cmd_osm_download(a) -> dict:
    from ..acquire.osm import OsmRequest, download_osm

    layers = ["pois", "buildings"] + (["roads"] if a.roads else [])
    request = OsmRequest(extent=a.extent, extent_crs=a.extent_crs, outputs={n: a.output for n in layers},
                         endpoint=a.endpoint or default_endpoint(), output_crs=a.output_crs,
                         max_tile_km2=a.max_tile_km2, timeout_s=a.timeout, parallel=a.parallel,
                         cache_dir=a.cache_dir, use_cache=not a.no_cache)
    return download_osm(request, TerminalProgress())


def _cmd_map_city(a) -> dict:
    from ..acquire.map_city import MapCityRequest, map_city
    from .imagery import source_from_args
    from ..use.poi_probability import parse_max_distances

    request = MapCityRequest(
        extent=a.extent, extent_crs=a.extent_crs, output_dir=a.output, imagery=source_from_args(a),
        overpass_endpoint=a.endpoint or default_endpoint(), gsd_m=a.gsd, max_tile_km2=a.max_tile_km2,
        poi_max_distances=tuple(parse_max_distances(a.max_distances)), chip_size=a.chip_size,
        split_tile_m=a.split_tile or None, seed=a.seed, variant=a.variant, encoder=a.encoder,
        base_width=a.base_width, epochs=a.epochs, batch_size=a.batch_size, device=a.device,
        cache_dir=a.cache_dir, use_cache=not a.no_cache)
    return map_city(request, TerminalProgress())


def _add_common(p) -> None:
    """Options shared by ``osm-download`` and ``map-city``."""
    p.add_argument("--extent", type=_extent, required=True, help="xmin,ymin,xmax,ymax in --extent-crs units")
    p.add_argument("--extent-crs", default="EPSG:4326", help="CRS of --extent (default EPSG:4326)")
    p.add_argument("--endpoint", default=None, help=f"Overpass API URL (default ${ENDPOINT_ENV} or the public one)")
    p.add_argument("--max-tile-km2", type=float, default=25.0, help="largest area of one Overpass query (km²)")
    p.add_argument("--cache-dir", default=None, help="response cache (default $EDIFICE_CACHE_DIR or ~/.cache/edifice)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the response cache")


def add_commands(subparsers) -> None:
    from .imagery import add_source_arguments
    from .training import VARIANTS

    p = subparsers.add_parser("osm-download", help="OpenStreetMap POIs, buildings (and roads) from Overpass")
    p.add_argument("output", help="GeoPackage to write (layers pois, buildings[, roads])")
    _add_common(p)
    p.add_argument("--output-crs", default=None, help="CRS of the layers (default: --extent-crs)")
    p.add_argument("--roads", action="store_true", help="also fetch highway ways (layer roads)")
    p.add_argument("--timeout", type=int, default=180, help="Overpass query timeout (s)")
    p.add_argument("--parallel", type=int, default=1, help="queries at once (be kind to public servers: 1)")
    p.set_defaults(func=_cmd_osm_download)

    m = subparsers.add_parser("map-city", help="extent -> OSM + imagery -> training -> building-use map + evaluation")
    m.add_argument("output", help="folder for every output (new or empty)")
    _add_common(m)
    add_source_arguments(m)
    m.add_argument("--gsd", type=float, default=0.5, help="imagery pixel size in metres (0.5)")
    m.add_argument("--max-distances", default="500,500,1500", help="POI d_max in metres, R,C,I")
    m.add_argument("--chip-size", type=int, default=256)
    m.add_argument("--split-tile", type=float, default=0.0, help="split tile edge in metres (0 = 4 chips)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--variant", default="imagery_poi_multitask", choices=VARIANTS)
    m.add_argument("--encoder", default="resnet18", choices=["resnet18", "resnet34", "resnet50"])
    m.add_argument("--base-width", type=int, default=64)
    m.add_argument("--epochs", type=int, default=20)
    m.add_argument("--batch-size", type=int, default=16)
    m.add_argument("--device", default="auto")
    m.set_defaults(func=_cmd_map_city)
