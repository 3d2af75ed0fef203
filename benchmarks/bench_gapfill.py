"""Benchmark: cloud gap filling by kriging (edifice.core.gapfill) — accuracy on real imagery,
speed against PyKrige and GDAL FillNodata, peak memory at 1x and 16x image area.

(a) Accuracy. Synthetic cloud masks over real pixels: irregular blobs (each the union of three
    overlapping discs) of a given diameter in metres, dropped at random cloud-free places until
    ~20 % of the valid pixels are covered; the true pixels under them are the reference. Images:
    Kampala 0.5 m RGB (samples/kampala, uint8; 20 and 50 m blobs — its covered area, ~200 m
    across, holds no 100-200 m blob) and THU Sentinel-1 VV/VH dB (float32, ~10 m; 20-200 m blobs;
    /work/shared/data/thu when present, else samples/thu). RMSE over the gap pixels of
    kriging (defaults: auto model, 32 neighbours), GDAL FillNodata (rasterio.fill.fillnodata,
    inverse-distance, no smoothing) and nearest-neighbour fill (scipy EDT), same masks.
(b) Speed against PyKrige 1.7 (OrdinaryKriging, n_closest_points=32, backend='loop', the same
    variogram parameters) on a crop of the real Kampala 7.5 cm mosaic (kriging step only, one band,
    same known pixels and targets) with the largest prediction difference. PyKrige's moving-window
    mode still builds the n x n kriging matrix of *all* known points (8 bytes x n^2: a 1,000^2 crop
    with 80 % known pixels would need ~5 TB), so the crop is --pk-side px (default 80).
(c) Whole tool against FillNodata on the 16x image (3 bands, 20 % cloud): ours end to end from
    GeoTIFF to GeoTIFF in a fresh process; FillNodata in memory on the three bands (reading excluded),
    both with the search distance --radius (px).
(d) Peak memory (VmHWM, fresh process per size, block size --mem-block, search radius --radius) at
    1x and 16x area. The 1x image is a --side px (<= 438) crop of the fully covered part of the
    Kampala 7.5 cm mosaic; 16x mirrors it to 4x the side (real pixels, reflected). The 1x side should
    be at least block + 2 x (radius + 1), so that its blocks read as much as the 16x image's (else the
    1x run reads clipped halos and the ratio measures that, not growth with the image).
(full) ``--full``: only (c), on the issue's 10,000^2 px image (the 400^2 crop mirrored 25 x 25,
    3 bands, 20 % cloud): time and peak memory of ours (fresh process), and FillNodata in memory on
    the same image; ``--threads 1 0`` times ours single-threaded as well as on all cores.

(b) and (c) time both kriging engines in the same run: "auto" (the compiled numba kernel, on
numba's threads: NUMBA_NUM_THREADS, default all cores; JIT warm-up excluded in (b), the on-disk
cache makes (c)'s fresh process load it compiled) and "numpy" (stacked np.linalg.solve, the
engine before the kernel existed, single-threaded BLAS).

    source scripts/env.sh && nice python benchmarks/bench_gapfill.py --skip-accuracy [--threads 1 0] [--repeat 3]
    source scripts/env.sh && nice python benchmarks/bench_gapfill.py --full [--threads 1 0]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_retinex import _proc_status_mb, reset_high_water_mark  # noqa: E402  (VmRSS / VmHWM from /proc)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/data")
MOSAIC = DATA / "kampala" / "kampala_rgb_7p5cm_epsg3857.tif"
#: centre (row, col) of the largest fully covered square of the 7.5 cm mosaic (438 px side)
MOSAIC_CENTRE = (1024, 7254)
#: kriging engines timed: the default (numba kernel when installed) and the numpy fallback
ENGINES = ("auto", "numpy")


def blob_mask(valid: np.ndarray, diameter_px: float, cover: float, rng) -> np.ndarray:
    """Irregular blobs (union of three discs of radius d/3 around a centre jittered by d/4)
    at random valid places until ``cover`` of the valid pixels are gaps (coverage counted
    disc by disc, so a 10,000^2 px mask takes seconds)."""
    h, w = valid.shape
    gap = np.zeros_like(valid)
    everywhere = bool(valid.all())
    pts = None if everywhere else np.argwhere(valid)
    n_pts = h * w if everywhere else len(pts)
    target, covered = cover * valid.sum(), 0
    r = max(diameter_px / 3.0, 0.6)
    while covered < target:
        i = rng.integers(n_pts)
        cy, cx = divmod(i, w) if everywhere else pts[i]
        for _ in range(3):
            y, x = cy + rng.uniform(-1, 1) * diameter_px / 4, cx + rng.uniform(-1, 1) * diameter_px / 4
            r0, r1 = int(max(y - r - 1, 0)), int(min(y + r + 2, h))
            c0, c1 = int(max(x - r - 1, 0)), int(min(x + r + 2, w))
            yy, xx = np.mgrid[r0:r1, c0:c1]
            new = ((yy - y) ** 2 + (xx - x) ** 2 <= r * r) & ~gap[r0:r1, c0:c1]
            gap[r0:r1, c0:c1] |= new
            covered += int((new & valid[r0:r1, c0:c1]).sum())
    return gap & valid


def write_like(path, ds_profile, arr, nodata=None):
    import rasterio

    p = dict(ds_profile)
    p.update(count=arr.shape[0], dtype=arr.dtype.name, nodata=nodata, tiled=True, blockxsize=256,
             blockysize=256, compress="deflate")
    if arr.shape[1] < 256 or arr.shape[2] < 256:
        p.update(tiled=False), p.pop("blockxsize"), p.pop("blockysize")
    p.update(height=arr.shape[1], width=arr.shape[2])
    with rasterio.open(path, "w", **p) as dst:
        dst.write(arr)


def nearest_fill(img: np.ndarray, known: np.ndarray) -> np.ndarray:
    from scipy.ndimage import distance_transform_edt

    _, (ir, ic) = distance_transform_edt(~known, return_indices=True)
    return img[:, ir, ic]


def fillnodata(img: np.ndarray, known: np.ndarray, max_dist: float) -> np.ndarray:
    from rasterio.fill import fillnodata as gdal_fill

    return np.stack([gdal_fill(b.astype(np.float32), mask=known.astype(np.uint8), max_search_distance=max_dist,
                               smoothing_iterations=0) for b in img])


def krige_file(src, mask_path, out, **kw) -> float:
    from edifice.core.gapfill import GapSpec, KrigingSettings, cloud_gap_fill

    t = time.perf_counter()
    cloud_gap_fill(str(src), str(out), GapSpec(mask_path=str(mask_path)), KrigingSettings(**kw))
    return time.perf_counter() - t


def accuracy_case(name, path, sizes_m, metres_per_px, tmp: Path, seed=0):
    """Rows (image, blob size, n gap pixels, RMSE kriging, FillNodata, nearest) for one image."""
    import rasterio

    with rasterio.open(path) as ds:
        img, profile = ds.read(), ds.profile
        valid = np.isfinite(img).all(0) if img.dtype.kind == "f" else np.ones(img.shape[1:], bool)
        if ds.nodata is not None:
            valid &= (img != ds.nodata).all(0)
    rows = []
    for size in sizes_m:
        gap = blob_mask(valid, size / metres_per_px, 0.2, np.random.default_rng(seed))
        slug = "".join(ch if ch.isalnum() else "_" for ch in name)
        mask_path, out = tmp / f"{slug}_{size}_mask.tif", tmp / f"{slug}_{size}_out.tif"
        write_like(mask_path, profile, gap.astype(np.uint8)[None])
        krige_file(path, mask_path, out)
        with rasterio.open(out) as ds:
            kr = ds.read().astype(np.float64)
        known = valid & ~gap
        fn = fillnodata(img, known, 1000)
        nn = nearest_fill(img, known)
        truth = img[:, gap].astype(np.float64)

        def rmse(pred):
            return float(np.sqrt(np.mean((pred[:, gap].astype(np.float64) - truth) ** 2)))

        rows.append((name, size, int(gap.sum()), rmse(kr), rmse(fn), rmse(nn)))
    return rows


def print_accuracy(rows):
    print("(a) RMSE over the gap pixels (image units; uint8 grey levels / dB), 20 % cover")
    print(f"{'image':<22}{'blob':>7}{'gap px':>9}{'kriging':>10}{'FillNodata':>12}{'nearest':>10}"
          f"{'krig/FN':>9}{'krig/NN':>9}")
    for name, size, n, k, f, nn in rows:
        print(f"{name:<22}{size:>5} m{n:>9}{k:>10.3f}{f:>12.3f}{nn:>10.3f}{k / f:>9.3f}{k / nn:>9.3f}")


def mosaic_crop(side: int) -> tuple[np.ndarray, dict]:
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(MOSAIC) as ds:
        r, c = MOSAIC_CENTRE
        w = Window(c - side // 2, r - side // 2, side, side)
        img = ds.read(window=w)
        profile = dict(ds.profile, transform=ds.window_transform(w))
    assert (img != 0).all(axis=0).mean() > 0.999, "crop is not fully covered"
    return img, profile


def make_scene(side: int, factor: int, tmp: Path, seed=0) -> tuple[Path, Path]:
    """``side * factor`` px image (mirrored crop of the mosaic) with a 20 % blob mask (40-150 px blobs)."""
    base, profile = mosaic_crop(side)
    n = side * factor
    img = np.pad(base, ((0, 0), (0, n - side), (0, n - side)), mode="symmetric")
    rng = np.random.default_rng(seed)
    gap = np.zeros((n, n), bool)
    for d in (40, 80, 150):
        gap |= blob_mask(np.ones((n, n), bool), d, 0.07, rng)
    src, mask = tmp / f"scene{factor}.tif", tmp / f"scene{factor}_mask.tif"
    write_like(src, profile, img)
    write_like(mask, profile, gap.astype(np.uint8)[None])
    return src, mask


def speed_vs_pykrige(side: int, engine: str):
    """(seconds ours, seconds PyKrige, max relative difference, targets) on a side x side crop,
    ours with the kriging ``engine`` (compiled: numba kernel; numpy: stacked solves)."""
    from pykrige.ok import OrdinaryKriging

    from edifice.core.gapfill.kriging import krige, pixel_xy, tie_break_xy
    from edifice.core.gapfill.variogram import VariogramAccumulator, fit_variogram

    img, _ = mosaic_crop(max(side, 256))
    band = img[0, :side, :side].astype(np.float64)
    gap = blob_mask(np.ones(band.shape, bool), side / 8, 0.2, np.random.default_rng(1))
    acc = VariogramAccumulator(min(50, side // 2))
    acc.add(img[0].astype(float), np.ones(img.shape[1:], bool))
    v, _ = fit_variogram(acc.result())
    kr, kc = np.nonzero(~gap)
    gr, gc = np.nonzero(gap)
    kxy, txy = tie_break_xy(kr, kc, side), pixel_xy(gr, gc)
    krige(kxy[:50], band[kr[:50], kc[:50]][None], txy[:5], [v], 32, 1e9, engine=engine)  # JIT warm-up
    t = time.perf_counter()
    ours, _, _ = krige(kxy, band[kr, kc][None], txy, [v], 32, 1e9, engine=engine)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    ok = OrdinaryKriging(kxy[:, 0], kxy[:, 1], band[kr, kc], variogram_model=v.model,
                         variogram_parameters=v.pykrige_parameters())
    z, _ = ok.execute("points", txy[:, 0], txy[:, 1], n_closest_points=32, backend="loop")
    t_pk = time.perf_counter() - t
    return t_ours, t_pk, float(np.max(np.abs(ours[0] - z) / np.abs(z))), len(gr)


def child(src: str, mask: str, dst: str, block_size: int, radius: float, engine: str) -> None:
    """Entry point of a fresh process: one cloud_gap_fill run (kriging ``engine``), then its peak memory."""
    import functools

    import rasterio  # noqa: F401  (imports counted in the baseline)
    import scipy.spatial  # noqa: F401

    from edifice.core.gapfill import GapSpec, KrigingSettings, cloud_gap_fill, fill, kriging

    fill.krige = functools.partial(kriging.krige, engine=engine)

    base = reset_high_water_mark()
    t, cpu = time.perf_counter(), time.process_time()
    s = cloud_gap_fill(src, dst, GapSpec(mask_path=mask), KrigingSettings(search_radius=radius),
                       block_size=block_size)
    sec, cpu = time.perf_counter() - t, time.process_time() - cpu
    print(json.dumps({"base_mb": base, "peak_mb": _proc_status_mb("VmHWM"), "seconds": sec, "cpu_seconds": cpu,
                      "gap_pixels": s["gap_pixels"]}))


def run_child(src, mask, dst, block_size, radius, engine="auto", threads=None) -> dict:
    """One cloud_gap_fill run in a fresh process (``threads``: NUMBA_NUM_THREADS, None = numba's default)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT.parent) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if threads:
        env["NUMBA_NUM_THREADS"] = str(threads)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(src), str(mask), str(dst),
                          str(block_size), str(radius), engine], check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def fillnodata_seconds(src, mask, radius) -> tuple[float, float]:
    """(wall, CPU) seconds of FillNodata on the three bands in memory."""
    import rasterio

    with rasterio.open(src) as a, rasterio.open(mask) as m:
        img, gap = a.read(), m.read(1) != 0
    t, cpu = time.perf_counter(), time.process_time()
    fillnodata(img, ~gap, radius)
    return time.perf_counter() - t, time.process_time() - cpu


def load() -> str:
    return "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


def speed_vs_fillnodata(src, mask, args, engines, threads=(None,)) -> tuple[float, dict]:
    """(c): FillNodata (wall, CPU) seconds (in memory, best of --repeat) and ours GeoTIFF to GeoTIFF
    (best of --repeat, fresh process each) per (engine, threads), interleaved ours, FillNodata, ours, ..."""
    fill_s, ours = (math.inf, math.inf), {}
    for _ in range(args.repeat):
        for e in engines:
            for th in threads:
                r = run_child(src, mask, Path(src).with_name(f"out_{e}_{th}.tif"), args.block, args.radius, e, th)
                r["load"] = load()
                if (e, th) not in ours or r["seconds"] < ours[(e, th)]["seconds"]:
                    ours[(e, th)] = r
        fill_s = tuple(map(min, fill_s, fillnodata_seconds(src, mask, args.radius)))
    return fill_s, ours


def print_speed(side, fill_s, ours, args) -> None:
    """(c) figures: wall-time ratio, and CPU-time ratio (steadier on a loaded machine; with more than one
    thread ours spends more CPU than wall time)."""
    big = next(iter(ours.values()))
    print(f"\n(c) {side}^2 px, 3 bands, {big['gap_pixels']} gap px, radius {args.radius:g} px, block "
          f"{args.block} px: FillNodata {fill_s[0]:.2f} s, CPU {fill_s[1]:.2f} s (in memory, single-threaded); "
          f"ours GeoTIFF to GeoTIFF (best of {args.repeat}):")
    for (name, th), r in ours.items():
        threads = f"{th} thread" if th else "default threads"
        print(f"    engine {name:<8} {threads:<16}: {r['seconds']:.1f} s, CPU {r['cpu_seconds']:.1f} s, peak "
              f"{r['peak_mb']:.0f} MiB -> ours / FillNodata = {r['seconds'] / fill_s[0]:.1f}x wall, "
              f"{r['cpu_seconds'] / fill_s[1]:.1f}x CPU  ({r['load']})")


def full_size(args, tmp: Path) -> None:
    """The issue's benchmark: 10,000^2 px (the 400^2 crop mirrored 25x25), 3 bands, 20 % cloud."""
    t = time.perf_counter()
    src, mask = make_scene(400, 25, tmp)
    print(f"full-size scene written in {time.perf_counter() - t:.0f} s ({load()})", flush=True)
    fill_s, ours = speed_vs_fillnodata(src, mask, args, ("auto",), args.threads or (None,))
    print_speed(10_000, fill_s, ours, args)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=400, help="1x image side (px, <= 438); 16x is 4x this side")
    ap.add_argument("--radius", type=float, default=64.0, help="search radius (px) of (c) and (d)")
    ap.add_argument("--mem-block", type=int, default=256, help="block size (px) of the memory runs (d)")
    ap.add_argument("--block", type=int, default=1024, help="block size (px) of the speed run (c): the tool's default")
    ap.add_argument("--pk-side", type=int, default=80, help="crop side for the PyKrige comparison")
    ap.add_argument("--repeat", type=int, default=1, help="runs of (c), interleaved with FillNodata; best taken")
    ap.add_argument("--threads", type=int, nargs="*", default=None,
                    help="NUMBA_NUM_THREADS of the (c) runs, e.g. --threads 1 0 (0 = numba's default: all cores)")
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES,
                    help="kriging engines timed in (b) and (c)")
    ap.add_argument("--full", action="store_true",
                    help="only (c), on the issue's 10,000^2 px, 3-band, 20 %% cloud image (time, peak memory)")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--child", nargs=6, metavar=("SRC", "MASK", "DST", "BLOCK", "RADIUS", "ENGINE"))
    args = ap.parse_args()
    if args.child:
        child(*args.child[:3], int(args.child[3]), float(args.child[4]), args.child[5])
        return
    with tempfile.TemporaryDirectory(prefix="bench-gapfill-") as d:
        if args.full:
            full_size(args, Path(d))
        else:
            small_sizes(args, Path(d))


def small_sizes(args, tmp: Path) -> None:
    """(a) to (d) on the 1x and 16x images."""
    if not args.skip_accuracy:
        thu = DATA / "thu" / "THU_2020_sentinel_1_50pt.tif"
        thu = thu if thu.exists() else ROOT / "samples" / "thu" / "thu_s1_2020.tif"
        rows = accuracy_case("Kampala 0.5 m RGB", ROOT / "samples" / "kampala" / "kampala_rgb_50cm.tif",
                             (20, 50), 0.5, tmp)
        rows += accuracy_case("THU S1 VV/VH dB", thu, (20, 50, 100, 200), 10.0, tmp)
        print_accuracy(rows)
    print(f"\n(b) kriging the gap pixels of a {args.pk_side}^2 crop (1 band) ({load()})")
    for engine in args.engines:
        t_ours, t_pk, diff, n = speed_vs_pykrige(args.pk_side, engine)
        print(f"    {n} px, engine {engine:<8}: ours {t_ours:.3f} s, PyKrige {t_pk:.3f} s -> PyKrige / ours = "
              f"{t_pk / t_ours:.1f}x; max relative difference {diff:.1e}")
    runs = {}
    for factor in (1, 4):
        src, mask = make_scene(args.side, factor, tmp)
        runs[factor] = run_child(src, mask, tmp / f"out{factor}.tif", args.mem_block, args.radius)
        runs[factor]["side"] = args.side * factor
    fill_s, ours = speed_vs_fillnodata(src, mask, args, args.engines, args.threads or (None,))
    print_speed(runs[4]["side"], fill_s, ours, args)
    big = next(iter(ours.values()))
    per_px = big["seconds"] / big["gap_pixels"]
    print(f"    at this rate 10,000^2 px x 3 bands with 20 % cloud: ~{per_px * 2e7 / 60:.0f} min")
    print(f"\n(d) peak RSS = VmHWM (fresh process per size, block_size={args.mem_block}, "
          f"search radius {args.radius:g} px) ({load()})")
    for f, r in runs.items():
        print(f"    {r['side']:>5}^2 px: baseline {r['base_mb']:.0f} MiB, peak {r['peak_mb']:.0f} MiB, "
              f"{r['seconds']:.1f} s")
    above = [runs[f]["peak_mb"] - runs[f]["base_mb"] for f in (4, 1)]
    print(f"    16x / 1x peak: {runs[4]['peak_mb'] / runs[1]['peak_mb']:.2f} "
          f"(above baseline: {above[0] / above[1]:.2f})")


if __name__ == "__main__":
    main()
