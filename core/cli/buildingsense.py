"""``edifice street-view-points``, ``edifice building-samples`` and ``edifice classify-building-function``:
the same core runs as ``edifice:streetviewpoints``, ``edifice:buildingsamples`` and
``edifice:classifybuildingfunction`` (:mod:`edifice.core.buildingsense`)."""
from __future__ import annotations

from ..buildingsense import KEY_ENV
from ..progress import TerminalProgress


def _cmd_points(a) -> dict:
    from ..buildingsense.streetview import EXCLUDED_HIGHWAYS, StreetViewSettings, street_view_points

    excluded = tuple(x.strip() for x in a.exclude_highways.split(",") if x.strip()) if a.exclude_highways \
        is not None else EXCLUDED_HIGHWAYS
    s = StreetViewSettings(a.max_distance, a.default_height, excluded)
    return street_view_points(a.buildings, a.roads, a.output, buildings_layer=a.buildings_layer,
                              roads_layer=a.roads_layer, id_field=a.id_field, height_field=a.height_field,
                              height_raster=a.height_raster, settings=s, progress=TerminalProgress())


def _cmd_samples(a) -> dict:
    from ..acquire.credentials import secret_from_env_or_file
    from ..buildingsense.samples import PoiSource, SampleSettings, building_samples
    from ..buildingsense.streetview_fetch import STREET_VIEW_KEY_ENV, StreetViewApi

    pois = PoiSource(a.pois, a.pois_layer, a.poi_name_field, a.poi_category_field) if a.pois else None
    api = StreetViewApi(a.street_view_url, secret_from_env_or_file(STREET_VIEW_KEY_ENV, a.street_view_key_file),
                        a.street_view_key_param, a.street_view_size, a.street_view_fov) if a.street_view_url else None
    s = SampleSettings(a.buffer, a.chip_max_px, a.image_format, a.poi_near, a.max_pois)
    return building_samples(a.buildings, a.output_folder, buildings_layer=a.buildings_layer, id_field=a.id_field,
                            imagery=a.imagery, street_view_folder=a.street_view_folder,
                            street_view_points=a.street_view_points, pois=pois,
                            attribute_fields=[x for x in (a.attributes or "").split(",") if x.strip()],
                            street_view_api=api, settings=s, progress=TerminalProgress())


def _cmd_classify(a) -> dict:
    from ..acquire.credentials import secret_from_env_or_file
    from ..buildingsense.classify import LlmSettings, classify_building_function

    key = secret_from_env_or_file(KEY_ENV, a.api_key_file)
    s = LlmSettings(a.url, a.model, a.combination, a.template, a.taxonomy, a.category_level, a.concurrency,
                    a.temperature, a.max_tokens, a.timeout, a.max_retries, price_input_per_mtok=a.price_input,
                    price_output_per_mtok=a.price_output, cache_dir=a.cache_dir, use_cache=not a.no_cache)
    return classify_building_function(a.samples, a.output, s, api_key=key, progress=TerminalProgress())


def add_commands(subparsers) -> None:
    """Add the BuildingSense subcommands to ``edifice``'s subparsers."""
    p = subparsers.add_parser("street-view-points", help="street-view sampling points (heading, pitch) per building")
    p.add_argument("buildings", help="building polygons")
    p.add_argument("roads", help="road lines (e.g. an .osm.pbf with --roads-layer lines)")
    p.add_argument("output", help="output GeoPackage of points")
    p.add_argument("--buildings-layer", default=None)
    p.add_argument("--roads-layer", default=None)
    p.add_argument("--id-field", default=None, help="building id field (default: feature number)")
    p.add_argument("--height-field", default=None, help="building height field (m)")
    p.add_argument("--height-raster", default=None, help="building height raster (m), sampled at the centroid")
    p.add_argument("--max-distance", type=float, default=100.0, help="farthest street (m)")
    p.add_argument("--default-height", type=float, default=10.0, help="height (m) where none is known")
    p.add_argument("--exclude-highways", default=None, help="highway values dropped (comma-separated; default: "
                                                              "footways, sidewalks, cycleways, paths, steps ...)")
    p.set_defaults(func=_cmd_points)

    s = subparsers.add_parser("building-samples", help="per-building image chips, street views, POIs, manifest")
    s.add_argument("buildings", help="building polygons")
    s.add_argument("output_folder")
    s.add_argument("--buildings-layer", default=None)
    s.add_argument("--id-field", default=None)
    s.add_argument("--imagery", default=None, help="imagery raster for rooftop and buffer chips")
    s.add_argument("--street-view-folder", default=None, help="street-view images named by building id")
    s.add_argument("--street-view-points", default=None, help="output of street-view-points (heading, pitch)")
    s.add_argument("--pois", default=None, help="POI points (e.g. an .osm.pbf with --pois-layer points)")
    s.add_argument("--pois-layer", default=None)
    s.add_argument("--poi-name-field", default="name")
    s.add_argument("--poi-category-field", default="other_tags")
    s.add_argument("--attributes", default=None, help="building fields for the text, e.g. height,year,address")
    s.add_argument("--buffer", type=float, default=60.96, help="buffer zone (m)")
    s.add_argument("--chip-max-px", type=int, default=512)
    s.add_argument("--image-format", choices=["png", "jpeg"], default="png")
    s.add_argument("--poi-near", type=float, default=30.0, help="POIs this close (m) are listed as near")
    s.add_argument("--max-pois", type=int, default=20)
    s.add_argument("--street-view-url", default=None,
                   help="fetch street views: URL template with {lat} {lon} {heading} {pitch} {fov} {size} "
                        "(key from $EDIFICE_STREETVIEW_API_KEY or --street-view-key-file)")
    s.add_argument("--street-view-key-file", default=None)
    s.add_argument("--street-view-key-param", default="key", help="query parameter carrying the key")
    s.add_argument("--street-view-size", default="640x640")
    s.add_argument("--street-view-fov", type=float, default=90.0)
    s.set_defaults(func=_cmd_samples)

    c = subparsers.add_parser("classify-building-function",
                              help="building function by a multimodal model (OpenAI-compatible endpoint)",
                              description=f"The API key comes from ${KEY_ENV} or --api-key-file (never a flag).")
    c.add_argument("samples", help="samples folder (or its manifest.json) from building-samples")
    c.add_argument("output", help="output GeoPackage")
    c.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8080/v1")
    c.add_argument("--model", required=True)
    c.add_argument("--combination", default="RST", help="T, R, S, RT, ST, RS or RST")
    c.add_argument("--template", default=None, help="prompt template: shipped name or .toml path")
    c.add_argument("--taxonomy", default="buildingsense_template", help="shipped taxonomy name or CSV path")
    c.add_argument("--category-level", type=int, default=0, help="taxonomy level the model answers at (0 = finest)")
    c.add_argument("--concurrency", type=int, default=4)
    c.add_argument("--temperature", type=float, default=0.0)
    c.add_argument("--max-tokens", type=int, default=2048)
    c.add_argument("--timeout", type=float, default=180.0, help="seconds per request")
    c.add_argument("--max-retries", type=int, default=5, help="retries on 429/5xx/dropped connections")
    c.add_argument("--price-input", type=float, default=0.0, help="price per million prompt tokens")
    c.add_argument("--price-output", type=float, default=0.0, help="price per million completion tokens")
    c.add_argument("--cache-dir", default=None, help="answer cache (default: $EDIFICE_CACHE_DIR/llm)")
    c.add_argument("--no-cache", action="store_true")
    c.add_argument("--api-key-file", default=None, help=f"file holding the API key (else ${KEY_ENV})")
    c.set_defaults(func=_cmd_classify)
