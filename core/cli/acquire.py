"""CLI commands of the data-acquisition tools (same core functions as the Processing algorithms
edifice:sentinelcomposites and the example model sentinel_height_footprint):

    edifice sentinel-composites OUT_DIR --extent xmin,ymin,xmax,ymax --year 2020 --source earthengine \
        --project my-ee-project [--key-file key.json]
    edifice sentinel-composites OUT_DIR --extent ... --year 2020 --source stac --catalogue planetary-computer
    edifice sentinel-height-footprint OUT_DIR CKPT.pth --extent ... --year 2020 --project my-ee-project

Earth Engine credentials: ``--key-file`` (a service-account JSON key), else ``$EDIFICE_EE_KEY`` (the key
JSON itself or the path of the key file), else the credentials stored by ``earthengine authenticate``.
"""
from __future__ import annotations

import os
from pathlib import Path

from .height import RESOLUTIONS, _extent
from ..progress import TerminalProgress

#: Environment variable holding a service-account key (JSON text or a file path) for Earth Engine.
EE_KEY_ENV = "EDIFICE_EE_KEY"
#: Output file names in OUT_DIR.
COMPOSITE_FILES = {"S1": "s1_{year}.tif", "S2": "s2_{year}.tif", "DEM": "dem.tif"}


def _source(a, progress):
    """The composite source of the arguments; ``progress`` announces its retries and cancels its waits."""
    from ..acquire.composites import open_source
    from ..acquire.credentials import secret_from_env_or_file
    key = a.key_file or secret_from_env_or_file(EE_KEY_ENV)
    if a.source == "stac":
        return open_source("stac", a.year, url=a.stac_url, catalogue=a.catalogue, token_url=a.token_url,
                           progress=progress)
    return open_source(a.source, a.year, key=key, project=a.project, url=a.ee_url, max_retries=a.max_retries,
                       progress=progress)


def _options(a):
    from ..acquire.composites import DownloadOptions
    return DownloadOptions(workers=a.workers, max_request_bytes=a.max_request_mb * 2**20,
                           keep_chunks=a.keep_chunks)


def composite_paths(out_dir: str, year: int, products=("S1", "S2", "DEM")) -> dict[str, str]:
    return {k: str(Path(out_dir) / COMPOSITE_FILES[k].format(year=year)) for k in products}


def _cmd_composites(a) -> dict:
    from ..acquire.composites import make_composites
    os.makedirs(a.out_dir, exist_ok=True)
    progress = TerminalProgress()
    return make_composites(_source(a, progress), a.extent, composite_paths(a.out_dir, a.year, a.products),
                           resolution_m=a.resolution, padding=a.padding, options=_options(a), progress=progress)


def _cmd_chain(a) -> dict:
    from ..height.shafts_workflows import height_footprint_from_composites
    os.makedirs(a.out_dir, exist_ok=True)
    progress = TerminalProgress()
    return height_footprint_from_composites(
        _source(a, progress), a.extent, a.checkpoint, a.out_dir, composite_paths(a.out_dir, a.year),
        resolution_m=a.resolution, options=_options(a), device=a.device, h_min=a.h_min, progress=progress)


def _products(text: str) -> list[str]:
    return [p.strip().upper() for p in text.split(",") if p.strip()]


def _common(p) -> None:
    p.add_argument("--extent", type=_extent, required=True, help="xmin,ymin,xmax,ymax in degrees (EPSG:4326)")
    p.add_argument("--year", type=int, required=True, help="calendar year of the annual composites")
    p.add_argument("--resolution", type=int, choices=RESOLUTIONS, default=100,
                   help="height model resolution in metres; sets the padding the model needs (100)")
    p.add_argument("--source", choices=["earthengine", "stac"], default="earthengine")
    p.add_argument("--catalogue", choices=["earth-search", "planetary-computer"], default="earth-search",
                   help="STAC preset (earth-search: S-2 and DEM only; planetary-computer: S-1 RTC too)")
    p.add_argument("--stac-url", default=None, help="another STAC API with the preset's collections")
    p.add_argument("--token-url", default=None, help="SAS token endpoint of --stac-url ({collection} filled in)")
    p.add_argument("--project", default=None, help="Google Cloud project registered for Earth Engine")
    p.add_argument("--key-file", default=None, help=f"service-account JSON key (else ${EE_KEY_ENV}, else the "
                                                    "credentials of 'earthengine authenticate')")
    p.add_argument("--ee-url", default=None, help="another Earth Engine endpoint (tests)")
    p.add_argument("--workers", type=int, default=4, help="requests at a time (4)")
    p.add_argument("--max-request-mb", type=int, default=32, help="uncompressed size of the first chunks (32)")
    p.add_argument("--max-retries", type=int, default=5, help="retries of 429/5xx answers (5)")
    p.add_argument("--keep-chunks", action="store_true", help="keep the downloaded chunks after the mosaic")


def add_commands(subparsers) -> None:
    """Add sentinel-composites and sentinel-height-footprint to ``edifice``."""
    c = subparsers.add_parser("sentinel-composites", help="annual Sentinel-1/2 and DEM composites on SHAFTS's "
                                                          "grids, downloaded in resumable chunks")
    c.add_argument("out_dir", help="folder for s1_<year>.tif, s2_<year>.tif and dem.tif")
    _common(c)
    c.add_argument("--products", type=_products, default=["S1", "S2", "DEM"], help="subset of S1,S2,DEM")
    c.add_argument("--padding", type=float, default=None, help="degrees around the extent (default: what the "
                                                               "model of --resolution needs)")
    c.set_defaults(func=_cmd_composites)

    h = subparsers.add_parser("sentinel-height-footprint", help="extent + year -> composites -> height and "
                                                                "footprint -> CCAP urban mask")
    h.add_argument("out_dir", help="folder for the composites, height.tif, footprint.tif and ccap_mask.tif")
    h.add_argument("checkpoint", help="SHAFTS .pth or Edifice checkpoint of --resolution")
    _common(h)
    h.add_argument("--device", default="auto")
    h.add_argument("--h-min", type=float, default=2.0, help="minimum height (m) of urban pixels in CCAP (2)")
    h.set_defaults(func=_cmd_chain)
