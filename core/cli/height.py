"""CLI commands of the SHAFTS-style height/footprint tools (same core functions as the Processing
algorithms edifice:heightfootprint, edifice:ccap, edifice:referencegrids, edifice:trainheightfootprint,
edifice:assignbuildingheight):

    edifice height-footprint S1.tif S2.tif DEM.tif CKPT.pth HEIGHT.tif FOOTPRINT.tif --extent xmin,ymin,xmax,ymax \
        [--cluster tcp://HOST:8786]
    edifice ccap --height H.tif --footprint F.tif [--height H2.tif --footprint F2.tif] MASK.tif
    edifice reference-grids BUILDINGS.gpkg FOOTPRINT.tif HEIGHT.tif --height-field height --resolution 100
    edifice train-height-footprint S1 S2 DEM REF_FOOTPRINT REF_HEIGHT OUT.pth --epochs 155
"""
from __future__ import annotations

import argparse

from ..errors import InputError
from ..progress import TerminalProgress

RESOLUTIONS = [100, 250, 500, 1000]


def _extent(text: str) -> tuple[float, float, float, float]:
    try:
        v = [float(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not xmin,ymin,xmax,ymax")
    if len(v) != 4:
        raise argparse.ArgumentTypeError(f"'{text}' is not four numbers xmin,ymin,xmax,ymax")
    return tuple(v)


def _cmd_height_footprint(a) -> dict:
    try:
        return _height_footprint(a)
    except InputError as exc:          # name the CLI option, not the Processing parameter
        opt = {"TARGET": "--target", "MAX_TILE_DEG": "--max-tile-deg", "PRECISION": "--precision"}.get(exc.name)
        if opt is None:
            raise
        raise InputError(opt, exc.problem, (exc.fix or "").replace("set TARGET", "set --target")) from exc


def _height_footprint(a) -> dict:
    from ..height.shafts_inference import predict_height_footprint_shafts
    run, extra = predict_height_footprint_shafts, {}
    if a.cluster:  # one Dask task per tile of --max-tile-deg
        from ..cluster.height import height_footprint_on_cluster

        run, extra = height_footprint_on_cluster, {"cluster": a.cluster}
    out = run(
        a.s1, a.s2, a.dem, a.extent, a.checkpoint, a.resolution, a.height, a.footprint, padding=a.padding,
        target=a.target, h_min=a.h_min, h_max=a.h_max, device=a.device, batch_size=a.batch_size,
        max_tile_deg=a.max_tile_deg, precision=a.precision, progress=TerminalProgress(), **extra)
    g = out.pop("grid")
    out["grid"] = {"width": g.width, "height": g.height, "transform": list(g.transform)[:6]}
    return out


def _cmd_ccap(a) -> dict:
    from pathlib import Path

    from ..height.ccap import ccap_files
    if len(a.height) != len(a.footprint):
        raise InputError("--footprint", f"{len(a.footprint)} footprint raster(s) for {len(a.height)} height raster(s).",
                         "give one --footprint per --height, in the same order.")
    masked = None
    if a.masked_height or a.masked_footprint:
        def numbered(p, k):
            if p is None or k == 0:
                return p
            q = Path(p)
            return str(q.with_name(f"{q.stem}_{k + 1}{q.suffix}"))
        masked = [(numbered(a.masked_height, k), numbered(a.masked_footprint, k)) for k in range(len(a.height))]
    return ccap_files(list(zip(a.height, a.footprint)), a.mask, masked, h_min=a.h_min, criterion=a.criterion,
                      ratio=a.ratio, progress=TerminalProgress())


def _cmd_reference_grids(a) -> dict:
    from ...models.shafts import PATCH_SIZE
    from ..height.reference_grids import reference_grids_from_file
    out = reference_grids_from_file(a.buildings, a.height_field, a.resolution, a.footprint, a.height,
                                    extent=a.extent, layer=a.layer,
                                    patch_size=None if a.no_filters else PATCH_SIZE[a.resolution],
                                    progress=TerminalProgress())
    g = out.pop("grid")
    out["grid"] = {"width": g.width, "height": g.height, "transform": list(g.transform)[:6]}
    return out


def _cmd_assign_height(a) -> dict:
    from ..height.building_height import assign_building_height
    return assign_building_height(a.buildings, a.height_raster, a.output, layer=a.layer, method=a.method,
                                  min_pixels=a.min_pixels, band=a.band, height_field=a.height_field,
                                  progress=TerminalProgress())


def _cmd_train(a) -> dict:
    from ..height.shafts_workflows import train_shafts_from_rasters
    out = train_shafts_from_rasters(a.s1, a.s2, a.dem, a.reference_footprint, a.reference_height, a.resolution,
                                    a.output, padding=a.padding, val_fraction=a.val_fraction,
                                    weighting=a.weighting, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                                    augment=not a.no_augment, device=a.device, seed=a.seed,
                                    init_checkpoint=a.init_checkpoint, task=a.task, threads=a.threads,
                                    progress=TerminalProgress())
    out.pop("history", None)
    return out


def add_commands(subparsers) -> None:
    """Add height-footprint, ccap, reference-grids and train-height-footprint to ``edifice``."""
    from .inference import add_cluster_option
    h = subparsers.add_parser("height-footprint", help="building height and footprint from Sentinel-1/2 + DEM "
                                                       "with a SHAFTS network")
    for name, text in (("s1", "Sentinel-1 GeoTIFF (VV, VH in dB; EPSG:4326)"),
                       ("s2", "Sentinel-2 GeoTIFF (R, G, B, NIR reflectance x 1e4)"), ("dem", "SRTM DEM (metres)"),
                       ("checkpoint", "SHAFTS .pth or Edifice checkpoint"), ("height", "output height GeoTIFF"),
                       ("footprint", "output footprint GeoTIFF")):
        h.add_argument(name, help=text)
    h.add_argument("--extent", type=_extent, required=True, help="xmin,ymin,xmax,ymax in degrees")
    h.add_argument("--resolution", type=int, choices=RESOLUTIONS, default=100, help="metres (100)")
    h.add_argument("--padding", type=float, default=0.03, help="degrees around the extent (0.03)")
    h.add_argument("--mode", choices=["shafts"], default="shafts")
    h.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    h.add_argument("--batch-size", type=int, default=None,
                   help="patches per network call (default: 64 on CPU, 512 on GPU)")
    h.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="network arithmetic: fp32 (SHAFTS's numbers) or bf16 (faster; differs from fp32, check it)")
    h.add_argument("--target", choices=["height", "footprint"], default=None,
                   help="what a single-task SHAFTS checkpoint predicts")
    h.add_argument("--h-min", type=float, default=2.0, help="heights below are set to 0 (m)")
    h.add_argument("--h-max", type=float, default=1000.0, help="heights above are capped (m)")
    h.add_argument("--max-tile-deg", type=float, default=0.5,
                   help="largest clip side in degrees; larger extents are tiled, each tile scaled on its own "
                        "(0.5; 0 = the whole extent as one clip, identical to one SHAFTS run); with --cluster, "
                        "one Dask task per tile")
    add_cluster_option(h)
    h.set_defaults(func=_cmd_height_footprint)

    c = subparsers.add_parser("ccap", help="CCAP urban mask from height/footprint predictions")
    c.add_argument("mask", help="output mask GeoTIFF (1 urban, 0 not, 255 nodata)")
    c.add_argument("--height", action="append", required=True, help="height raster (repeat for each prediction)")
    c.add_argument("--footprint", action="append", required=True, help="footprint raster (same order)")
    c.add_argument("--h-min", type=float, default=2.0, help="minimum urban height in metres (2; paper: 5)")
    c.add_argument("--criterion", choices=["entropy", "largest_cluster"], default="entropy")
    c.add_argument("--ratio", type=float, default=0.5, help="fusion ratio (0.5)")
    c.add_argument("--masked-height", default=None, help="output: height, urban only (_2, _3 … for more pairs)")
    c.add_argument("--masked-footprint", default=None, help="output: footprint, urban only")
    c.set_defaults(func=_cmd_ccap)

    r = subparsers.add_parser("reference-grids", help="footprint fraction and mean height grids from buildings")
    r.add_argument("buildings", help="building polygons on a projected CRS in metres (GeoPackage, shapefile …)")
    r.add_argument("footprint", help="output footprint fraction GeoTIFF")
    r.add_argument("height", help="output average height GeoTIFF")
    r.add_argument("--height-field", default="height")
    r.add_argument("--layer", default=None)
    r.add_argument("--resolution", type=int, choices=RESOLUTIONS, default=100, help="cell size in metres")
    r.add_argument("--extent", type=_extent, default=None, help="xmin,ymin,xmax,ymax in the layer's CRS")
    r.add_argument("--no-filters", action="store_true", help="keep every cell (no paper sample filters)")
    r.set_defaults(func=_cmd_reference_grids)

    b = subparsers.add_parser("assign-building-height", help="a height per building footprint from a height raster "
                                                             "(SHAFTS grid, nDSM, lidar height above ground)")
    b.add_argument("buildings", help="building polygons (GeoPackage, GeoJSON, shapefile …)")
    b.add_argument("height_raster", help="height raster (m)")
    b.add_argument("output", help="output GeoPackage (the layer's fields + height, height_source, height_pixels)")
    b.add_argument("--layer", default=None)
    b.add_argument("--method", choices=["auto", "median", "area_weighted"], default="auto",
                   help="median of the pixels inside (fine rasters), area-weighted mean of the cells overlapped "
                        "(coarse grids), or auto: median when the building holds --min-pixels pixel centres")
    b.add_argument("--min-pixels", type=int, default=4)
    b.add_argument("--band", type=int, default=1)
    b.add_argument("--height-field", default="height", help="name of the new height field")
    b.set_defaults(func=_cmd_assign_height)

    t = subparsers.add_parser("train-height-footprint", help="train a SHAFTS-architecture network")
    for name in ("s1", "s2", "dem", "reference_footprint", "reference_height", "output"):
        t.add_argument(name)
    t.add_argument("--resolution", type=int, choices=RESOLUTIONS, default=100)
    t.add_argument("--padding", type=float, default=0.03)
    t.add_argument("--val-fraction", type=float, default=0.2)
    t.add_argument("--task", choices=["multi", "height", "footprint"], default="multi",
                   help="multi (height and footprint) or one single task")
    t.add_argument("--weighting", choices=["uncertainty", "fixed"], default="uncertainty")
    t.add_argument("--epochs", type=int, default=155)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=0.01)
    t.add_argument("--no-augment", action="store_true")
    t.add_argument("--device", default="auto")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--init-checkpoint", default=None)
    t.add_argument("--threads", type=int, default=None,
                   help="intra-op CPU threads, fixed so that a seeded run is reproducible (4)")
    t.set_defaults(func=_cmd_train)
