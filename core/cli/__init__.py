"""Command-line interface: ``edifice <tool> ...`` runs the same core functions
as the QGIS Processing algorithms. Errors print one line and exit non-zero:
2 for bad input and I/O errors (``edifice: error: ...``), 130 when cancelled."""
from __future__ import annotations

import argparse
import json
import os
import sys

from ..errors import Cancelled, EdificeError
from ..progress import TerminalProgress


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers")


def _cmd_retinex(a) -> dict:
    from ..use.retinex import RetinexSettings, retinex

    s = RetinexSettings(sigmas=a.sigmas, mode=a.mode, clip_percent=a.clip_percent)
    run, extra = retinex, {}
    if a.cluster:
        from ..cluster.retinex import retinex_on_cluster

        run, extra = retinex_on_cluster, {"cluster": a.cluster}
    return run(a.input, a.output, s, output_dtype=a.output_type, block_size=a.block_size,
               progress=TerminalProgress(), **extra)


def _cmd_poi(a) -> dict:
    from pyproj import CRS

    from ..grid import Grid
    from ..use.poi_probability import poi_probability, reference_grid
    from ..use.poi_sources import classify_pois, load_poi_mapping, read_point_file
    from .options import point_columns

    progress = TerminalProgress()
    mapping = load_poi_mapping(a.preset, a.mapping_file)
    xs, ys, recs, crs = read_point_file(a.input, a.layer, a.category_field, **point_columns(a))
    classified = classify_pois(xs, ys, recs, a.category_field, mapping, crs)
    progress.info(classified.summary())
    if a.reference:
        grid = reference_grid(a.reference)
    else:
        if not (a.extent and a.pixel_size and a.crs):
            raise EdificeError("REFERENCE: give --reference, or --extent, --pixel-size and --crs.")
        if len(a.extent) != 4:
            raise EdificeError("EXTENT: give four numbers xmin,ymin,xmax,ymax.")
        grid = Grid.from_extent(*a.extent, a.pixel_size, CRS.from_user_input(a.crs).to_wkt())
    run, extra = poi_probability, {}
    if a.cluster:
        from ..cluster.poi import poi_probability_on_cluster

        run, extra = poi_probability_on_cluster, {"cluster": a.cluster}
    out = run(classified.pois, grid, a.output, a.max_distances, a.reference, block_size=a.block_size,
              progress=progress, **extra)
    out["unmapped"] = classified.unmapped
    return out


def build_parser() -> argparse.ArgumentParser:
    from .inference import add_cluster_option

    p = argparse.ArgumentParser(prog="edifice", description="Building use, height and footprint mapping.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("retinex", help="multi-scale Retinex illumination correction")
    r.add_argument("input")
    r.add_argument("output")
    r.add_argument("--sigmas", type=_floats, default=[15.0, 80.0, 250.0], help="scales in pixels (15,80,250)")
    r.add_argument("--mode", choices=["luminance", "bands"], default="luminance")
    r.add_argument("--output-type", choices=["uint8", "uint16", "float32"], default=None)
    r.add_argument("--clip-percent", type=float, default=1.0)
    r.add_argument("--block-size", type=int, default=2048)
    add_cluster_option(r)  # one Dask task per block of --block-size px
    r.set_defaults(func=_cmd_retinex)

    q = sub.add_parser("poi-probability", help="POI probability maps (R, C, I)")
    q.add_argument("input", help="point file (GeoPackage, GeoJSON, .osm.pbf, ...) or a CSV with coordinate columns")
    q.add_argument("output")
    q.add_argument("--layer", default=None, help="layer name (e.g. 'points' for .osm.pbf)")
    q.add_argument("--category-field", default="other_tags")
    q.add_argument("--preset", default="osm", choices=["osm", "gbt35648", "overture", "google_places", "csv"])
    q.add_argument("--mapping-file", default=None)
    q.add_argument("--reference", default=None, help="raster whose grid the maps use")
    q.add_argument("--extent", type=_floats, default=None, help="xmin,ymin,xmax,ymax in --crs units")
    q.add_argument("--pixel-size", type=float, default=None)
    q.add_argument("--crs", default=None, help="e.g. EPSG:3067")
    q.add_argument("--max-distances", default="500,500,1500", help="d_max in metres, R,C,I")
    q.add_argument("--block-size", type=int, default=512, help="pixels along a block's side (512)")
    add_cluster_option(q)  # one Dask task per block
    from .options import add_point_column_arguments
    add_point_column_arguments(q)
    q.set_defaults(func=_cmd_poi)
    from .evaluation import add_commands; add_commands(sub)  # noqa: E702 - evaluate-* subcommands
    from .training import add_commands as add_training_commands; add_training_commands(sub)  # noqa: E702
    from .height import add_commands; add_commands(sub)  # noqa: E702 height/footprint tools
    from .inference import add_commands; add_commands(sub)  # noqa: E702 - inference tools
    from .gapfill import add_commands; add_commands(sub)  # noqa: E702 - cloud-gap-fill
    from .buildingsense import add_commands; add_commands(sub)  # noqa: E702 - building function (LLM)
    from .osm import add_commands; add_commands(sub)  # noqa: E702 - osm-download
    from .imagery import add_commands; add_commands(sub)  # noqa: E702 - imagery download
    from .acquire import add_commands; add_commands(sub)  # noqa: E702 - data acquisition tools
    from ..diagnostics import add_command; add_command(sub)  # noqa: E702 - diagnostics
    return p


def main(argv: list[str] | None = None) -> int:
    from ..host_tuning import quiet_cpu_threads

    quiet_cpu_threads()  # before anything imports torch (OpenMP reads it then)
    rc = _run(argv)
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        # A torchrun worker whose work is done and whose process group is destroyed leaves
        # at once: the C++ teardown at interpreter exit (gloo threads, stores) aborted 1 run
        # in 10 on 2 cores ("terminate called without an active exception").
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


def _io_errors() -> tuple[type[BaseException], ...]:
    """Expected I/O errors (reported in one line, no traceback): OSError and the
    errors of the raster and vector libraries when they are installed."""
    errors: list[type[BaseException]] = [OSError]
    try:
        from rasterio.errors import RasterioError
        errors.append(RasterioError)
    except ImportError:
        pass
    try:
        from pyogrio.errors import DataLayerError, DataSourceError
        errors += [DataSourceError, DataLayerError]
    except ImportError:
        pass
    return tuple(errors)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        text = f"{exc.strerror}: '{exc.filename}'"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _run(argv: list[str] | None) -> int:
    from ..outputs import Terminated, install_termination_handler

    args = build_parser().parse_args(argv)
    install_termination_handler()
    try:
        result = args.func(args)
    except Terminated:
        print("edifice: terminated (SIGTERM); no output was written.", file=sys.stderr)
        return 143
    except Cancelled as exc:
        print(f"edifice: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("edifice: interrupted; no output was written.", file=sys.stderr)
        return 130
    except EdificeError as exc:
        print(f"edifice: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError as exc:
        print(f"edifice: error: out of memory ({_one_line(exc) or 'MemoryError'}); nothing was written. Fix: "
              "work on a smaller extent or block size, or on a machine with more memory.", file=sys.stderr)
        return 2
    except _io_errors() as exc:  # evaluated only when an exception gets here
        print(f"edifice: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    if result is not None:  # None: a torchrun rank other than 0
        print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
