"""Make the SYNTHETIC Sentinel-2 raster of the THU sample (samples/thu/thu_s2_synthetic.tif).

The SHAFTS test case's real Sentinel-2 file is lost, so this writes a stand-in on the exact grid of
samples/thu/thu_s1_2020.tif: four uint16 bands R (B4), G (B3), B (B2), NIR (B8) as reflectance x 1e4,
derived from the real Sentinel-1 VV backscatter (bright, built-up pixels get grey urban spectra;
dark ones vegetation spectra) plus seeded noise. It is deterministic (same numbers on every run) and
has no physical meaning beyond "plausible reflectance ranges that follow the S-1 texture".

    python scripts/make_thu_s2.py [OUT.tif]
"""
import sys
from pathlib import Path

import numpy as np
import rasterio
from scipy.ndimage import gaussian_filter

ROOT = Path(__file__).resolve().parents[1]
S1 = ROOT / "samples" / "thu" / "thu_s1_2020.tif"
DEFAULT_OUT = ROOT / "samples" / "thu" / "thu_s2_synthetic.tif"
SEED = 2020

# reflectance x 1e4 of an "urban" (u = 1) and a "vegetated" (u = 0) pixel, per band R, G, B, NIR
URBAN = np.array([1500.0, 1350.0, 1200.0, 2000.0])
VEGETATION = np.array([500.0, 800.0, 450.0, 3300.0])


def make(out=DEFAULT_OUT) -> Path:
    with rasterio.open(S1) as ds:
        vv = ds.read(1).astype(np.float64)
        profile = ds.profile
    vv = np.where(np.isfinite(vv), vv, np.nanmedian(vv))
    smooth = gaussian_filter(vv, 2.0)
    lo, hi = np.percentile(smooth, [5, 95])
    u = np.clip((smooth - lo) / (hi - lo), 0, 1)                     # built-up index 0-1
    rng = np.random.default_rng(SEED)
    bands = []
    for k in range(4):
        noise = gaussian_filter(rng.normal(0.0, 1.0, u.shape), 1.0) * 120.0
        v = VEGETATION[k] + (URBAN[k] - VEGETATION[k]) * u + noise
        bands.append(np.clip(np.rint(v), 1, 10000).astype(np.uint16))
    profile.update(count=4, dtype="uint16", nodata=0, compress="deflate", predictor=2, zlevel=9)
    out = Path(out)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(np.stack(bands))
        for i, name in enumerate(("B4 (R) synthetic", "B3 (G) synthetic", "B2 (B) synthetic",
                                  "B8 (NIR) synthetic"), 1):
            dst.set_band_description(i, name)
        dst.update_tags(SYNTHETIC="yes", SOURCE="scripts/make_thu_s2.py from thu_s1_2020.tif VV, seed 2020")
    return out


if __name__ == "__main__":
    p = make(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT)
    print(f"wrote {p} ({p.stat().st_size / 1e6:.2f} MB, synthetic)")
