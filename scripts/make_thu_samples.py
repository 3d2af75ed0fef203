"""Crop the SHAFTS test case's real Sentinel-1 and SRTM rasters (../shared/data/thu, not in the repo)
into samples/thu/ (each file < 1.5 MB). Run once by a maintainer; the crops are committed.

    python scripts/make_thu_samples.py /path/to/thu   # folder holding THU_2020_sentinel_1_50pt.tif, THU_srtm.tif

S-1: a central 470 x 470 pixel window, values unchanged (float32 dB, VV and VH), deflate + predictor 3.
SRTM: the pixels covering the S-1 crop plus 4 pixels on every side, values unchanged (int16 metres).
"""
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "samples" / "thu"
N = 470


def main(src_dir: str) -> int:
    src = Path(src_dir)
    OUT.mkdir(parents=True, exist_ok=True)
    with rasterio.open(src / "THU_2020_sentinel_1_50pt.tif") as ds:
        win = Window((ds.width - N) // 2, (ds.height - N) // 2, N, N)
        data = ds.read(window=win)
        prof = dict(ds.profile, width=N, height=N, transform=ds.window_transform(win), compress="deflate",
                    predictor=3, zlevel=9, tiled=False)
        prof.pop("blockxsize", None), prof.pop("blockysize", None)
        descriptions = ds.descriptions
        with rasterio.open(OUT / "thu_s1_2020.tif", "w", **prof) as dst:
            dst.write(data)
            for i, d in enumerate(descriptions, 1):
                dst.set_band_description(i, d or "")
        left, bottom, right, top = rasterio.windows.bounds(win, ds.transform)
    with rasterio.open(src / "THU_srtm.tif") as ds:
        t = ds.transform
        c0 = int(np.floor((left - t.c) / t.a)) - 4
        c1 = int(np.ceil((right - t.c) / t.a)) + 4
        r0 = int(np.floor((top - t.f) / t.e)) - 4
        r1 = int(np.ceil((bottom - t.f) / t.e)) + 4
        win = Window(c0, r0, c1 - c0, r1 - r0)
        data = ds.read(window=win)
        prof = dict(ds.profile, width=c1 - c0, height=r1 - r0, transform=ds.window_transform(win),
                    compress="deflate", predictor=2, tiled=False)
        prof.pop("blockxsize", None), prof.pop("blockysize", None)
        with rasterio.open(OUT / "thu_srtm.tif", "w", **prof) as dst:
            dst.write(data)
            dst.set_band_description(1, "elevation")
    for p in sorted(OUT.glob("*.tif")):
        print(f"{p.relative_to(ROOT)}: {p.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else str(ROOT.parent / "shared" / "data" / "thu")))
