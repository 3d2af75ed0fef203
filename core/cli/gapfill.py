"""CLI command of the cloud gap filling tool (same core function as edifice:cloudgapfill):

    edifice cloud-gap-fill IMAGE.tif FILLED.tif --mask CLOUDS.tif [--dilation 2] [--variance VAR.tif]
    edifice cloud-gap-fill IMAGE.tif FILLED.tif --nodata-gaps --ranges 3:200:255 --report R.html
"""
from __future__ import annotations

from ..errors import InputError
from ..progress import TerminalProgress

#: Processing parameter name -> CLI option, for error messages.
_OPTIONS = {"MASK": "--mask", "RANGES": "--ranges", "DILATION": "--dilation", "NEIGHBOURS": "--neighbours",
            "SEARCH_RADIUS": "--search-radius", "MODEL": "--model", "MAX_LAG": "--max-lag",
            "BEYOND_RANGE": "--beyond-range", "SAMPLE_WINDOWS": "--sample-windows",
            "OUTPUT_VARIANCE": "--variance", "OUTPUT_HTML": "--report"}


def _cmd_cloud_gap_fill(a) -> dict:
    from ..gapfill import GapSpec, KrigingSettings, cloud_gap_fill, parse_ranges

    try:
        gaps = GapSpec(mask_path=a.mask, use_nodata=a.nodata_gaps, ranges=parse_ranges(a.ranges or ""),
                       dilation=a.dilation)
        settings = KrigingSettings(n_neighbours=a.neighbours, search_radius=a.search_radius, model=a.model,
                                   max_lag=a.max_lag, beyond_range=a.beyond_range, seed=a.seed,
                                   sample_windows=a.sample_windows)
        run, extra = cloud_gap_fill, {}
        if a.cluster:
            from ..cluster.gapfill import cloud_gap_fill_on_cluster

            run, extra = cloud_gap_fill_on_cluster, {"cluster": a.cluster}
        out = run(a.input, a.output, gaps, settings, variance_path=a.variance, report_path=a.report,
                  block_size=a.block_size, progress=TerminalProgress(), **extra)
    except InputError as exc:  # name the CLI option, not the Processing parameter
        opt = _OPTIONS.get(exc.name)
        if opt is None:
            raise
        raise InputError(opt, exc.problem, exc.fix) from exc
    out.pop("bands")  # in the sidecar
    return out


def add_commands(sub) -> None:
    g = sub.add_parser("cloud-gap-fill", help="fill cloud/shadow gaps by ordinary kriging")
    g.add_argument("input", help="image (GeoTIFF or any GDAL raster)")
    g.add_argument("output", help="filled image (same type and grid); a .variograms.json sidecar is written beside it")
    g.add_argument("--mask", default=None, help="cloud/shadow mask on the image grid (non-zero = gap)")
    g.add_argument("--nodata-gaps", action="store_true", help="the image's nodata pixels are gaps too")
    g.add_argument("--ranges", default=None, help="gap value ranges band:low:high[,...], e.g. 3:200:255")
    g.add_argument("--dilation", type=int, default=0, help="grow the gaps by this many pixels")
    g.add_argument("--neighbours", type=int, default=32, help="nearest cloud-free pixels per gap pixel (32)")
    g.add_argument("--search-radius", type=float, default=256.0, help="pixels (256); also the block halo")
    g.add_argument("--model", default="auto", choices=["auto", "spherical", "exponential", "gaussian"])
    g.add_argument("--max-lag", type=int, default=100, help="largest lag of the empirical semivariogram, px")
    g.add_argument("--sample-windows", type=int, default=8, help="windows sampled for the semivariogram")
    g.add_argument("--beyond-range", default="fill", choices=["fill", "nodata"],
                   help="gap pixels farther than the variogram range from any cloud-free pixel")
    g.add_argument("--variance", default=None, help="kriging-variance raster (float32)")
    g.add_argument("--report", default=None, help="HTML report with the semivariogram plots")
    g.add_argument("--block-size", type=int, default=1024)
    g.add_argument("--seed", type=int, default=0, help="seed of the semivariogram sample")
    from .inference import add_cluster_option

    add_cluster_option(g)  # one Dask task per block of --block-size px
    g.set_defaults(func=_cmd_cloud_gap_fill)
