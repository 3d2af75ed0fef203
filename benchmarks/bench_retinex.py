"""Benchmark: block-wise multi-scale Retinex (edifice.core.use.retinex) against a
whole-image exact-Gaussian reference.

Raster: synthetic 3-band uint8 texture (fine blurred noise x smooth coloured
illumination, nodata 0) with a nodata disc, EPSG:32636 at 0.5 m, written as a
tiled deflate GeoTIFF like the project's rasters. Sizes: 1x = N x N (default
1024), 16x = 4N x 4N. Settings: RetinexSettings() defaults (sigmas 15, 80,
250 px, equal weights, luminance mode, 1 % clip).

Reference (whole image in memory, scipy.ndimage.gaussian_filter, exact Gaussian,
truncate 4): R = mean_s [log(I + 1) - log(G_s * I + 1)] on the luminance I
(band mean), one percentile stretch (1-99 %) onto 1..255 (0 = nodata), then the
same MSRCP colour restoration as ours (every band times one gain per pixel, the
stretched / original luminance ratio, capped so the largest band does not clip). Two variants:
 * "plain"        G_s * I with mode='constant' (one filter per scale), the
                  textbook formula; timed only (it darkens edges and the hole);
 * "nodata-aware" G_s * (I m) / G_s * m (two filters per scale), the same
                  definition as ours, used for the accuracy comparison (c).
Ours includes reading the GeoTIFF, two passes (histogram, then write) and
writing a compressed GeoTIFF; the reference includes reading the raster only.

Peak memory: each size runs in a fresh subprocess (``--child``) that reports
its RSS after imports (baseline) and its RSS high-water mark VmHWM from /proc/self/status
(reset after imports via /proc/self/clear_refs) at the end.

    cd /work/main && source scripts/env.sh && python benchmarks/bench_retinex.py [--size 1024] [--with-64x]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIGMAS = (15.0, 80.0, 250.0)


def _proc_status_mb(key: str) -> float:
    """VmRSS / VmHWM of this process from /proc (MiB). ru_maxrss is not used: Linux
    carries it over fork + exec, so a child would inherit the parent's high-water mark."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{key} not in /proc/self/status")


def reset_high_water_mark() -> float:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); returns that RSS (MiB)."""
    base = _proc_status_mb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return base


def make_raster(path: str, n: int, seed: int = 0) -> None:
    """n x n 3-band uint8 synthetic scene with uneven illumination and a nodata disc."""
    import rasterio
    from affine import Affine
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    tex = gaussian_filter(rng.standard_normal((n, n), dtype=np.float32), 1.5)
    tex = 0.55 + 0.45 * np.tanh(tex / (tex.std() + 1e-6))                       # (0.1, 1)
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    # illumination varies over ~ the 80-1000 px scales Retinex is meant to remove
    ill = 0.25 + 0.75 * (0.5 + 0.25 * np.sin(x / 310.0) * np.cos(y / 270.0) + 0.25 * (x + y) / (2 * n))
    img = np.empty((3, n, n), np.uint8)
    for b, gain in enumerate((1.0, 0.85, 0.7)):
        img[b] = np.clip(np.rint(250 * gain * tex * ill) + 1, 1, 255).astype(np.uint8)
    hole = (x - 0.4 * n) ** 2 + (y - 0.6 * n) ** 2 < (0.1 * n) ** 2
    img[:, hole] = 0
    img[:, :, : n // 64] = 0                                                      # nodata strip on the left
    profile = dict(driver="GTiff", width=n, height=n, count=3, dtype="uint8", nodata=0,
                   crs="EPSG:32636", transform=Affine(0.5, 0, 454000.0, 0, -0.5, 40000.0),
                   tiled=True, blockxsize=256, blockysize=256, compress="deflate", predictor=2)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(img)


def reference(data: np.ndarray, sigmas=SIGMAS, clip: float = 1.0, nodata_aware: bool = True) -> np.ndarray:
    """Whole-image luminance MSR with exact Gaussians; uint8 output, 0 = nodata."""
    from scipy.ndimage import gaussian_filter

    valid = np.all(data != 0, axis=0)
    x = data.astype(np.float32)
    lum = x.mean(axis=0)
    m = valid.astype(np.float64)
    vm = np.where(valid, lum, 0).astype(np.float64)
    log_i = np.log(lum + 1.0)
    r = np.zeros(lum.shape, np.float32)
    for s in sigmas:
        g = gaussian_filter(vm, s, mode="constant", cval=0.0, truncate=4.0)
        if nodata_aware:
            g = g / np.maximum(gaussian_filter(m, s, mode="constant", cval=0.0, truncate=4.0), 1e-12)
        r += ((log_i - np.log(g + 1.0)) / len(sigmas)).astype(np.float32)
    lo, hi = np.percentile(r[valid], [clip, 100 - clip])
    out = 1.0 + (r - lo) * (254.0 / (hi - lo))
    # MSRCP colour restoration (Petro et al. 2014): one gain per pixel, capped so no band clips
    gain = np.minimum(out / (lum + 1.0), 255.0 / (x + 1.0).max(axis=0))
    out = np.rint(np.clip((x + 1.0) * gain, 1, 255)).astype(np.uint8)
    out[:, ~valid] = 0
    return out


def run_ours(src: str, dst: str, block_size: int) -> float:
    from edifice.core.use.retinex import RetinexSettings, retinex

    t = time.perf_counter()
    retinex(src, dst, RetinexSettings(), block_size=block_size)
    return time.perf_counter() - t


def child(src: str, dst: str, block_size: int) -> None:
    """Entry point for the memory runs: one retinex call in a fresh process."""
    import rasterio  # noqa: F401  (imports counted in the baseline)
    import scipy.ndimage  # noqa: F401
    import edifice.core.use.retinex  # noqa: F401

    base = reset_high_water_mark()
    sec = run_ours(src, dst, block_size)
    print(json.dumps({"base_mb": base, "peak_mb": _proc_status_mb("VmHWM"), "seconds": sec}))


def measure_memory(src: str, dst: str, block_size: int) -> dict:
    env = dict(os.environ)
    pkg_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", src, dst, str(block_size)],
                         check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024, help="1x raster side (px); 16x is 4x this side")
    ap.add_argument("--seam-block", type=int, default=256)
    ap.add_argument("--mem-block", type=int, default=512, help="block_size for both memory runs")
    ap.add_argument("--with-64x", action="store_true", help="also measure peak memory at 64x area (8x the side)")
    ap.add_argument("--child", nargs=3, metavar=("SRC", "DST", "BLOCK"))
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return

    import rasterio

    n = args.size
    with tempfile.TemporaryDirectory(prefix="bench_retinex_") as tmp:
        src1, src16 = f"{tmp}/in_1x.tif", f"{tmp}/in_16x.tif"
        make_raster(src1, n)
        make_raster(src16, 4 * n)
        mpx = n * n / 1e6

        # (a) throughput, ours (block 256 and one block) vs the reference, same raster
        t_ours_blk = run_ours(src1, f"{tmp}/ours_blk.tif", args.seam_block)
        t_ours_one = run_ours(src1, f"{tmp}/ours_one.tif", n)
        t = time.perf_counter()
        with rasterio.open(src1) as ds:
            data = ds.read()
        ref_plain = reference(data, nodata_aware=False)
        t_ref_plain = time.perf_counter() - t
        t = time.perf_counter()
        with rasterio.open(src1) as ds:
            data = ds.read()
        ref = reference(data, nodata_aware=True)
        t_ref = time.perf_counter() - t
        del ref_plain

        with rasterio.open(f"{tmp}/ours_blk.tif") as ds:
            o_blk = ds.read()
        with rasterio.open(f"{tmp}/ours_one.tif") as ds:
            o_one = ds.read()
        # (b) seams
        seam = int(np.abs(o_blk.astype(np.int16) - o_one.astype(np.int16)).max())
        # (c) vs exact Gaussian reference (valid pixels of either, all bands)
        valid = np.all(data != 0, axis=0)
        nod_agree = bool(np.array_equal(np.all(o_one != 0, axis=0), valid))
        diff = np.abs(o_one.astype(np.int16) - ref.astype(np.int16))[:, valid]
        dmax, dmean = int(diff.max()), float(diff.mean())
        p99 = float(np.percentile(diff, 99))
        frac_le1 = float(np.mean(diff <= 1))

        # (d) peak memory, fresh subprocess per size, same block size
        m1 = measure_memory(src1, f"{tmp}/mem_1x.tif", args.mem_block)
        m16 = measure_memory(src16, f"{tmp}/mem_16x.tif", args.mem_block)
        sizes = [("1x", m1, n), ("16x", m16, 4 * n)]
        if args.with_64x:
            src64 = f"{tmp}/in_64x.tif"
            make_raster(src64, 8 * n)
            sizes.append(("64x", measure_memory(src64, f"{tmp}/mem_64x.tif", args.mem_block), 8 * n))

    thr = lambda sec, mp=mpx: mp / sec  # noqa: E731
    print(f"Retinex benchmark: synthetic {n}x{n} 3-band uint8 ({mpx:.2f} Mpx, nodata disc + strip), "
          f"sigmas {SIGMAS} px, luminance mode, {os.cpu_count()} CPU(s)")
    print("(a) throughput                                 seconds    Mpx/s   speed-up t_ref/t_ours")
    print(f"    ours, block_size={args.seam_block:<5d} (file -> file)   {t_ours_blk:7.2f} {thr(t_ours_blk):8.3f}"
          f"   {t_ref / t_ours_blk:5.2f}x vs nodata-aware, {t_ref_plain / t_ours_blk:5.2f}x vs plain")
    print(f"    ours, one block ({n:5d} px, file -> file) {t_ours_one:7.2f} {thr(t_ours_one):8.3f}"
          f"   {t_ref / t_ours_one:5.2f}x vs nodata-aware, {t_ref_plain / t_ours_one:5.2f}x vs plain")
    print(f"    reference exact Gaussian, nodata-aware    {t_ref:7.2f} {thr(t_ref):8.3f}")
    print(f"    reference exact Gaussian, plain G*I       {t_ref_plain:7.2f} {thr(t_ref_plain):8.3f}")
    print(f"(b) seams: max |block {args.seam_block} - one block| = {seam} grey levels (all bands, all pixels)")
    print(f"(c) ours vs exact-Gaussian reference (nodata-aware), {int(valid.sum())} valid px x 3 bands:")
    print(f"    max |diff| {dmax} grey levels, mean {dmean:.3f}, 99th pct {p99:.0f}, "
          f"share <= 1 level {100 * frac_le1:.2f} %, nodata masks identical: {nod_agree}")
    r_peak = m16["peak_mb"] / m1["peak_mb"]
    inc1, inc16 = m1["peak_mb"] - m1["base_mb"], m16["peak_mb"] - m16["base_mb"]
    print(f"(d) peak RSS = VmHWM (fresh process per size, block_size={args.mem_block}; baseline = RSS after imports)")
    print("    raster              area   peak MiB  baseline MiB  peak-baseline MiB   seconds    Mpx/s")
    for label, mm, side in sizes:
        print(f"    {label:>3} {side}x{side:<10d} {side * side / 1e6:6.2f} {mm['peak_mb']:10.1f} {mm['base_mb']:13.1f}"
              f" {mm['peak_mb'] - mm['base_mb']:18.1f} {mm['seconds']:9.2f} {side * side / 1e6 / mm['seconds']:8.3f}")
    print(f"    ratio 16x/1x: peak {r_peak:.2f}x, peak-baseline {inc16 / inc1:.2f}x (area ratio 16x)")
    if args.with_64x:
        m64 = sizes[-1][1]
        print(f"    ratio 64x/16x: peak {m64['peak_mb'] / m16['peak_mb']:.2f}x (area ratio 4x)")
    print(f"SUMMARY retinex: {thr(t_ours_blk):.2f} Mpx/s (block {args.seam_block}) vs {thr(t_ref):.2f} Mpx/s exact "
          f"reference ({t_ref / t_ours_blk:.1f}x); seam max {seam} GL; vs exact Gaussian max {dmax} / mean {dmean:.2f} GL; "
          f"peak RSS 16x/1x area = {r_peak:.2f}x ({m1['peak_mb']:.0f} -> {m16['peak_mb']:.0f} MiB)")


if __name__ == "__main__":
    main()
