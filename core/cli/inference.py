"""CLI commands of the inference tools: ``edifice map-building-use``, ``edifice builtup-mask``,
``edifice assign-building-use`` (the same core functions as the Processing algorithms)."""
from __future__ import annotations

from ..progress import TerminalProgress


def _cmd_map(a) -> dict:
    from ..use.building_use_map import map_building_use
    from .options import point_columns

    options = dict(poi_maps=a.poi_maps, poi_points=a.poi_points, poi_columns=point_columns(a), poi_layer=a.poi_layer,
                   poi_category_field=a.category_field, poi_preset=a.preset, poi_mapping_file=a.mapping_file,
                   mask=a.mask, footprint_probability=a.footprint_probability, footprint_mask=a.footprint_mask,
                   use_class=a.use_class, use_probabilities=a.use_probabilities, polygons=a.polygons,
                   device=a.device, batch_size=a.batch_size, window=a.window, overlap=a.overlap, blend=a.blend,
                   threshold=a.threshold, workers=a.workers, precision=a.precision, compression=a.compression,
                   probability_type=a.probability_type, resume=not a.no_resume,
                   progress=TerminalProgress())
    if a.cluster:
        from ..cluster.building_use import map_building_use_on_cluster

        return map_building_use_on_cluster(a.imagery, a.checkpoint, cluster=a.cluster,
                                           block_windows=a.block_windows, **options)
    imagery = a.imagery
    anchor = next((p for p in (a.footprint_probability, a.footprint_mask, a.use_class, a.use_probabilities,
                               a.polygons) if p), None)
    if anchor:
        from ..cluster.mosaic import tile_paths

        if tile_paths(imagery):
            from ..cluster.building_use import imagery_from_tiles

            imagery = imagery_from_tiles(imagery, anchor, options["progress"])
    return map_building_use(imagery, a.checkpoint, **options)


def _cmd_mask(a) -> dict:
    from ..use.builtup_mask import builtup_mask

    rasters = []
    for item in a.raster or []:
        path, _, values = item.partition("=")
        rasters.append((path, values or "1"))
    return builtup_mask(a.reference, a.output, rasters=rasters, polygons=a.polygons or [],
                        progress=TerminalProgress())


def _cmd_assign(a) -> dict:
    from ..use.building_use_map import assign_building_use

    return assign_building_use(a.buildings, a.probabilities, a.output, layer=a.layer, progress=TerminalProgress())


def add_cluster_option(parser) -> None:
    """``--cluster`` (runs on a Dask cluster, see core.cluster)."""
    parser.add_argument("--cluster", default=None, metavar="ADDRESS",
                        help="run on a Dask cluster: tcp://HOST:PORT of a `dask scheduler`, or local:N for N local "
                             "worker processes. Raster outputs ending in .vrt get a VRT of the blocks, others a VRT "
                             "beside them plus a COG mosaic")


def add_cluster_arguments(parser) -> None:
    """``--cluster`` and ``--block-windows`` (runs on a Dask cluster, see core.cluster)."""
    from ..cluster import BLOCK_WINDOWS  # the package's __init__ imports nothing

    add_cluster_option(parser)
    parser.add_argument("--block-windows", type=int, default=BLOCK_WINDOWS, metavar="N",
                        help=f"with --cluster: windows along a block's side (one Dask task per block; default "
                             f"{BLOCK_WINDOWS})")


def add_commands(subparsers) -> None:
    m = subparsers.add_parser("map-building-use", help="sliding-window building-use mapping with a checkpoint")
    m.add_argument("imagery", help="a raster, a VRT, or a folder (or comma-separated list) of image tiles")
    m.add_argument("checkpoint")
    m.add_argument("--poi-maps", default=None, help="3-band POI probability raster (R, C, I)")
    m.add_argument("--poi-points", default=None, help="POI point file (maps computed on the imagery grid)")
    m.add_argument("--poi-layer", default=None)
    from .options import add_point_column_arguments
    add_point_column_arguments(m, "poi-")
    m.add_argument("--category-field", default="other_tags")
    m.add_argument("--preset", default="osm", choices=["osm", "gbt35648", "overture", "google_places", "csv"])
    m.add_argument("--mapping-file", default=None)
    m.add_argument("--mask", default=None, help="built-up mask raster (1 = process)")
    m.add_argument("--footprint-probability", default=None, metavar="TIF")
    m.add_argument("--footprint-mask", default=None, metavar="TIF")
    m.add_argument("--use-class", default=None, metavar="TIF")
    m.add_argument("--use-probabilities", default=None, metavar="TIF")
    m.add_argument("--polygons", default=None, metavar="GPKG")
    m.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    m.add_argument("--batch-size", type=int, default=4)
    m.add_argument("--window", type=int, default=None, help="window size in px (default: the model card's)")
    m.add_argument("--overlap", type=int, default=None,
                   help="margin discarded on each side of a window (px; default window / 8)")
    m.add_argument("--blend", action="store_true", help="cross-fade neighbouring windows")
    m.add_argument("--threshold", type=float, default=0.5)
    m.add_argument("--workers", type=int, default=1, help="reader threads")
    m.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto: bf16 (else fp16) on CUDA, fp32 on the CPU; bf16 on a CPU with AVX-512 BF16/AMX is "
                        "about twice as fast as fp32 (the largest difference from fp32 is reported)")
    m.add_argument("--compression", default=None, metavar="METHOD[:LEVEL]",
                   help="raster outputs: zstd, deflate, lzw or none, optionally with a level (default zstd:1)")
    m.add_argument("--probability-type", default=None, metavar="TYPE",
                   help="probability rasters: uint8 (default: DN = round(p x 250), p = DN x 0.004, within 0.002, "
                        "nodata 255), uint16 (DN = round(p x 50000), p = DN x 0.00002, nodata 65535) or float32 (exact, "
                        "nodata -1); the scale is written as GDAL band scale metadata")
    m.add_argument("--no-resume", action="store_true", help="discard partial results of an interrupted run")
    add_cluster_arguments(m)
    m.set_defaults(func=_cmd_map)

    b = subparsers.add_parser("builtup-mask", help="union of built-up reference layers on a raster's grid")
    b.add_argument("reference", help="raster whose grid the mask uses (the imagery)")
    b.add_argument("output")
    b.add_argument("--raster", action="append", metavar="PATH=VALUES", help="class raster and built-up values, "
                   "e.g. wsf.tif=255 or clcd.tif=8 (repeatable)")
    b.add_argument("--polygons", action="append", metavar="PATH", help="polygon layer (repeatable)")
    b.set_defaults(func=_cmd_mask)

    s = subparsers.add_parser("assign-building-use", help="use of existing footprints from probability rasters")
    s.add_argument("buildings")
    s.add_argument("probabilities", help="3-band use probabilities from map-building-use")
    s.add_argument("output", help="GeoPackage")
    s.add_argument("--layer", default=None)
    s.set_defaults(func=_cmd_assign)
