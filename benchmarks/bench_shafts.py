"""Benchmark: SHAFTS-style height/footprint mapping of the THU sample, our implementation
(core.shafts_inference: vectorised patch gathering, batches across rows) against a straightforward
per-pixel implementation of SHAFTS's own procedure (GDAL warp clip, NaN fill, scaling, then a loop over
output pixels cutting each patch and running the model one batch per output row, or one pixel at a time),
on the same inputs and the same checkpoint. Prints patches/s, the time to map the extent and the largest
difference between the two outputs.

Inputs: samples/thu (real Sentinel-1 and SRTM crops from the SHAFTS test case; SYNTHETIC Sentinel-2),
extent 116.305-116.335 E, 39.987-40.017 N (34 x 34 output pixels at 100 m), padding 0.005°.
Checkpoint: a 100 m multi-task network with RANDOM weights (scripts/make_random_shafts_checkpoint.py,
output layers rescaled): the figures are about speed and agreement, not accuracy.

    PYTHONPATH=<dir holding edifice> python benchmarks/bench_shafts.py [--device cpu] [--threads 2] [--repeat 3]
    PYTHONPATH=<dir holding edifice> python benchmarks/bench_shafts.py --memory [--sides 0.1,0.5]

--memory: peak resident memory (VmHWM of a fresh subprocess) of preparing the inputs of one SHAFTS clip
(clip, NaN fill, scaling, uint8 quantisation: the memory-heavy part; the network then runs in row chunks)
for square extents of the given sides plus 0.03° padding, on SYNTHETIC 10 m inputs written to a temporary
folder (S-1 float32 dB, S-2 uint16 reflectance x 1e4, each with a small NaN/nodata hole so the fill runs;
SRTM int16 at 30 m). Prints VmHWM and VmHWM minus the resident size after imports.

Measured --memory (2-core machine, 23 GiB RAM, so GDAL's default block cache is up to ~1.1 GiB; numpy 1.26):
  0.1° + 0.03° padding (3.2 M px):  VmHWM 279 MiB, 206 MiB above imports (68 bytes/px);
                                     float64 clips before this change: 344 MiB (90 bytes/px)
  0.5° + 0.03° padding (38.9 M px): VmHWM 2049 MiB, 1976 MiB above imports (53 bytes/px);
                                     float64 clips before: 3049 MiB (80 bytes/px);
                                     with GDAL_CACHEMAX=16: 1440 MiB (37 bytes/px, the numpy arrays)

Measured (2 CPU cores shared with other jobs, torch 2.13 CPU, 2 threads, best of 3; 1156 patches):
ours 1.17 s (990 patches/s) at batch 64, 1.20 s at batch 256; SHAFTS-style loop with one batch per
output row 1.15 s (1003 patches/s); one pixel at a time 5.0 s (231 patches/s). On this small extent the
network dominates, so batching per row is as fast as ours; per-pixel inference is 4.3x slower. Max
difference ours vs reference: height 7.6e-5 m, footprint 1.7e-5 (batch-composition rounding; the rescaled
random output layer multiplies it by ~400). Same nodata. A first run under heavier load from other jobs
measured 3-11 s for the same work: timings on this shared machine vary by that much.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch

from edifice.core.shafts_inference import predict_height_footprint_shafts
from edifice.models.shafts import OUTPUT_RES_DEG, load_shafts_checkpoint

ROOT = Path(__file__).resolve().parents[1]
THU = ROOT / "samples" / "thu"
S1, S2, DEM = THU / "thu_s1_2020.tif", THU / "thu_s2_synthetic.tif", THU / "thu_srtm.tif"
EXTENT = (116.305, 39.987, 116.335, 40.017)
PADDING = 0.005


# ---------------------------------------------------------------------------------------------------
# reference: SHAFTS's procedure written straightforwardly (shafts-compat.md steps 1-9)
# ---------------------------------------------------------------------------------------------------
def _gdal_clip(path, bounds):
    """Warp to outputBounds with no resolution given, nearest neighbour (step 2). Returns (array, gt)."""
    from osgeo import gdal
    gdal.UseExceptions()
    ds = gdal.Warp("", str(path), format="MEM", outputBounds=bounds, resampleAlg="near")
    arr = ds.ReadAsArray()
    gt = ds.GetGeoTransform()
    nodata = [ds.GetRasterBand(b + 1).GetNoDataValue() for b in range(ds.RasterCount)]
    return arr, gt, nodata


def _fill_nearest(band):
    from scipy.ndimage import distance_transform_edt
    nan = np.isnan(band)
    if not nan.any():
        return band
    idx = distance_transform_edt(nan, return_distances=False, return_indices=True)
    return band[tuple(idx)]


def _prepare_reference():
    xmin, ymin, xmax, ymax = EXTENT
    bounds = (xmin - PADDING, ymin - PADDING, xmax + PADDING, ymax + PADDING)
    s1, gt1, _ = _gdal_clip(S1, bounds)
    s2, gt2, nd2 = _gdal_clip(S2, bounds)
    dem, gtd, _ = _gdal_clip(DEM, bounds)
    s1 = s1.astype(np.float32)
    valid1 = np.all(np.isfinite(s1), axis=0)
    s2 = s2.astype(np.float32)
    valid2 = np.ones(s2.shape[1:], bool)
    for b in range(s2.shape[0]):               # declared nodata honoured, as our implementation does
        if nd2[b] is not None:
            valid2 &= s2[b] != nd2[b]
            s2[b][s2[b] == nd2[b]] = np.nan
    chans = []
    for b in range(2):                          # step 4: min(10^(dB/10), 1)
        x = _fill_nearest(s1[b])
        chans.append(np.minimum(np.power(np.float32(10), x / np.float32(10)), np.float32(1)))
    for b in range(4):                          # (x - min) / (q98 - q02), clipped
        x = _fill_nearest(s2[b])
        lo, q02, q98 = np.min(x), np.quantile(x, 0.02), np.quantile(x, 0.98)
        chans.append(np.clip((x - lo) / (q98 - q02), 0, 1))
    img = [(c * np.float32(255)).astype(np.uint8) for c in chans]   # step 6: uint8 truncation
    return img[:2], gt1, img[2:], gt2, dem.astype(np.float64), gtd, valid1, valid2


def reference_map(model, device, per_pixel: bool):
    """SHAFTS's loop: for each output pixel cut the patches, run the model per row (or per pixel)."""
    s1, gt1, s2, gt2, dem, gtd, valid1, valid2 = _prepare_reference()
    res = OUTPUT_RES_DEG[model.resolution_m]
    xmin, ymin, xmax, ymax = EXTENT
    nx = math.ceil(round(round(xmax - xmin, 6) / res, 6))
    ny = math.ceil(round(round(ymax - ymin, 6) / res, 6))
    s = model.patch_size
    b0, b1 = s // 2 - 1, s // 2 + 1
    hgt = np.full((ny, nx), np.nan)
    fp = np.full((ny, nx), np.nan)
    for r in range(ny):
        xs_batch, ds_batch, cols = [], [], []
        for c in range(nx):
            x, y = xmin + res * (c + 0.5), ymax - res * (r + 0.5)
            i1, j1 = math.floor((x - gt1[0]) / gt1[1]), math.floor((y - gt1[3]) / gt1[5])
            i2, j2 = math.floor((x - gt2[0]) / gt2[1]), math.floor((y - gt2[3]) / gt2[5])
            idm, jdm = math.floor((x - gtd[0]) / gtd[1]), math.floor((y - gtd[3]) / gtd[5])
            if not (valid1[j1, i1] and valid2[j2, i2]):
                continue
            patch = np.stack([b[j1 - b0:j1 + b1, i1 - b0:i1 + b1] for b in s1]
                             + [b[j2 - b0:j2 + b1, i2 - b0:i2 + b1] for b in s2])
            xs_batch.append(patch.astype(np.float32) / 255.0)
            ds_batch.append(dem[jdm - b0:jdm + b1, idm - b0:idm + b1][None].astype(np.float32))
            cols.append(c)
        if not cols:
            continue
        groups = [[k] for k in range(len(cols))] if per_pixel else [list(range(len(cols)))]
        for g in groups:
            with torch.no_grad():
                out = model(torch.from_numpy(np.stack([xs_batch[k] for k in g])).to(device),
                            torch.from_numpy(np.stack([ds_batch[k] for k in g])).to(device))
            for n, k in enumerate(g):
                hgt[r, cols[k]] = float(out["height"][n])
                fp[r, cols[k]] = float(out["footprint"][n])
    hgt = np.where(hgt > 1000, 1000, np.where(hgt < 2.0, 0.0, hgt))     # step 9 (multi-task)
    fp = np.where(fp > 1, 1, np.where(fp < 0, 0.0, fp))
    return hgt, fp


# ---------------------------------------------------------------------------------------------------
# peak memory of preparing one clip (--memory)
# ---------------------------------------------------------------------------------------------------
S1_PX, DEM_PX, MEM_PADDING = 8.9831528e-5, 2.7777778e-4, 0.03

_CHILD = """
import sys
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) / 1024.0
import numpy, rasterio, scipy.ndimage
from edifice.core.shafts_inference import prepare_inputs
base = status('VmRSS')
s1, s2, dem, xmin, ymin, xmax, ymax = sys.argv[1:]
prep, _ = prepare_inputs(s1, s2, dem, tuple(map(float, (xmin, ymin, xmax, ymax))))
print(base, status('VmHWM'), prep.s2.shape[1] * prep.s2.shape[2], flush=True)
"""


def _synthetic_inputs(folder: Path, side: float):
    """S-1/S-2/SRTM GeoTIFFs covering a ``side``-degree square plus padding (and a 0.01° margin)."""
    from rasterio.transform import from_origin
    span = side + 2 * MEM_PADDING + 0.02
    x0, y1 = 10.0, 50.0 + span
    rng = np.random.default_rng(0)
    n = int(span / S1_PX) + 1
    out = []
    for name, count, dtype, px, nodata in (("s1", 2, "float32", S1_PX, None), ("s2", 4, "uint16", S1_PX, 0),
                                            ("dem", 1, "int16", DEM_PX, -32768)):
        m = n if px == S1_PX else int(span / DEM_PX) + 1
        path = folder / f"{name}_{side}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=m, height=m, count=count, dtype=dtype, tiled=True,
                           crs="EPSG:4326", transform=from_origin(x0, y1, px, px), nodata=nodata) as dst:
            for b in range(1, count + 1):
                if name == "s1":
                    a = rng.uniform(-25, 0, (m, m)).astype(np.float32)
                    a[m // 2:m // 2 + 50, m // 2:m // 2 + 50] = np.nan
                elif name == "s2":
                    a = rng.integers(1, 6000, (m, m), dtype=np.uint16)
                    a[m // 3:m // 3 + 50, m // 3:m // 3 + 50] = 0
                else:
                    a = rng.integers(0, 100, (m, m), dtype=np.int16)
                dst.write(a, b)
                del a
        out.append(str(path))
    bounds = (x0 + 0.01, 50.01, x0 + 0.01 + side + 2 * MEM_PADDING, 50.01 + side + 2 * MEM_PADDING)
    return out, bounds


def memory(sides) -> int:
    import os
    import subprocess
    import sys
    env = dict(os.environ)
    print("peak resident memory of preparing one clip (fresh subprocess; synthetic 10 m inputs)")
    with tempfile.TemporaryDirectory() as tmp:
        for side in sides:
            paths, bounds = _synthetic_inputs(Path(tmp), side)
            r = subprocess.run([sys.executable, "-c", _CHILD, *paths, *map(str, bounds)], env=env,
                               capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stderr[-2000:])
                return 1
            base, hwm, px = r.stdout.split()
            base, hwm, px = float(base), float(hwm), int(px)
            print(f"  extent {side}° + {MEM_PADDING}° padding: clip {px / 1e6:.1f} M px at 10 m; VmHWM {hwm:.0f} MiB, "
                  f"{hwm - base:.0f} MiB above the {base:.0f} MiB after imports "
                  f"({(hwm - base) * 2 ** 20 / px:.1f} bytes per 10 m pixel)")
            for p in paths:
                Path(p).unlink()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--memory", action="store_true", help="peak memory of preparing one clip instead")
    ap.add_argument("--sides", default="0.1,0.5", help="extent sides in degrees for --memory (0.1,0.5)")
    a = ap.parse_args()
    if a.memory:
        return memory([float(v) for v in a.sides.split(",")])
    torch.set_num_threads(a.threads)
    spec = importlib.util.spec_from_file_location("mk", ROOT / "scripts" / "make_random_shafts_checkpoint.py")
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = mk.make_random_checkpoint(tmp / "random_100m.pth", 100, 0, (S1, S2, DEM, EXTENT), PADDING)
        model = load_shafts_checkpoint(ckpt).model.to(a.device).eval()
        # warm-up (imports, allocator)
        predict_height_footprint_shafts(S1, S2, DEM, EXTENT, ckpt, 100, tmp / "h.tif", tmp / "f.tif",
                                        padding=PADDING, device=a.device)
        times = {}
        for bs in (64, 256):
            t = []
            for _ in range(a.repeat):
                t0 = time.perf_counter()
                out = predict_height_footprint_shafts(S1, S2, DEM, EXTENT, ckpt, 100, tmp / f"h{bs}.tif",
                                                      tmp / f"f{bs}.tif", padding=PADDING, device=a.device,
                                                      batch_size=bs)
                t.append(time.perf_counter() - t0)
            times[f"ours_b{bs}"] = min(t)
        n = out["pixels"]
        with rasterio.open(tmp / "h64.tif") as dh, rasterio.open(tmp / "f64.tif") as df:
            h_ours, f_ours = dh.read(1).astype(np.float64), df.read(1).astype(np.float64)
        results = {}
        for name, per_pixel in (("reference_per_row", False), ("reference_per_pixel", True)):
            t = []
            for _ in range(a.repeat):
                t0 = time.perf_counter()
                results[name] = reference_map(model, a.device, per_pixel)
                t.append(time.perf_counter() - t0)
            times[name] = min(t)
    print(f"THU extent {EXTENT}, 100 m: {n} output pixels (= patches), device {a.device}, "
          f"{torch.get_num_threads()} torch threads, random-weights checkpoint")
    for k, v in times.items():
        print(f"  {k:22s} {v:7.3f} s   {n / v:8.1f} patches/s")
    for name, (h_ref, f_ref) in results.items():
        ok = np.isfinite(h_ref) & (h_ours != -9999)
        assert (np.isfinite(h_ref) == (h_ours != -9999)).all(), "nodata differs"
        print(f"  max |ours - {name}|: height {np.abs(h_ours - h_ref)[ok].max():.3g} m, "
              f"footprint {np.abs(f_ours - f_ref)[ok].max():.3g}  ({int(ok.sum())} pixels)")
    print(f"  speed-up over per-row: {times['reference_per_row'] / times['ours_b64']:.1f}x, "
          f"over per-pixel: {times['reference_per_pixel'] / times['ours_b64']:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
