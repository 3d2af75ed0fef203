"""Sliding-window inference throughput and memory.

Prints, in one run:
* model-only throughput on the windows of a raster (inputs prepared in memory beforehand,
  the same batches the pipeline runs) vs the whole pipeline (read, scale, pad, model,
  merge, write 3 rasters) on the same raster — the pipeline should reach >= 0.9 of it;
* Mpx/s and km²/h at 0.5 m for both;
* peak resident memory (VmHWM from /proc, each run in a fresh subprocess) of the pipeline
  at 1x and 16x raster area (bounded memory: the two should be close).

    python benchmarks/bench_inference.py [--size 512] [--window 256] [--margin 32] [--width 4]

Measured on the shared 2-core CPU machine (torch 2.13 CPU; noisy), after outputs were switched to
DEFLATE level 1 and GDAL's block cache was capped:
  --size 1024 --width 4:  model 0.855 Mpx/s, pipeline 0.877 Mpx/s, ratio 1.03; VmHWM 443 -> 495 MiB (1.12x)
  --size 768 --width 32:  model 0.379 Mpx/s, pipeline 0.370 Mpx/s, ratio 0.98
Before (DEFLATE level 6, uncapped cache): ratios 0.45-0.89, the writer's compression competing with torch.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_inputs(folder: Path, size: int, width: int, window: int) -> tuple[Path, Path]:
    import rasterio
    import torch
    from affine import Affine

    from edifice.models.checkpoint import save_checkpoint
    from edifice.models.unet import ARCHITECTURE, UNetResNet

    img = folder / f"img_{size}.tif"
    if not img.exists():
        rng = np.random.default_rng(0)
        with rasterio.open(img, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                           crs="EPSG:32636", transform=Affine(0.5, 0, 450000, 0, -0.5, 40000), nodata=0,
                           tiled=True, blockxsize=256, blockysize=256, compress="deflate") as dst:
            for r in range(0, size, 512):
                h = min(512, size - r)
                yy, xx = np.mgrid[r:r + h, 0:size]
                base = 120 + 60 * np.sin(xx / 17.0) * np.cos(yy / 23.0)
                a = np.clip(base[None] + rng.normal(0, 10, (3, h, size)), 1, 255).astype(np.uint8)
                dst.write(a, window=((r, r + h), (0, size)))
    ck = folder / f"model_w{width}.pt"
    if not ck.exists():
        torch.manual_seed(0)
        params = {"encoder": "resnet18", "in_channels": 3, "variant": "imagery_multitask", "base_width": width}
        net = UNetResNet(**params)
        card = {"task": "building_use", "architecture": {"name": ARCHITECTURE, "params": params},
                "bands": [{"name": n, "scale": 1 / 255, "offset": 0.0} for n in ("red", "green", "blue")],
                "gsd_m": 0.5, "window": window, "classes": [], "outputs": {}}
        save_checkpoint(ck, net.state_dict(), card)
    return img, ck


def pipeline(img: Path, ck: Path, out: Path, window: int, margin: int, batch: int) -> dict:
    from edifice.core.building_use_map import map_building_use

    t0 = time.perf_counter()
    s = map_building_use(str(img), str(ck), footprint_probability=str(out / "fp.tif"),
                         use_class=str(out / "uc.tif"), use_probabilities=str(out / "up.tif"), device="cpu",
                         batch_size=batch, window=window, overlap=margin, resume=False)
    s["wall"] = time.perf_counter() - t0
    return s


def model_only(img: Path, ck: Path, window: int, margin: int, batch: int) -> tuple[float, int]:
    """Seconds for the model alone on the pipeline's windows (inputs read beforehand)."""
    import rasterio
    from rasterio.windows import Window

    from edifice.core.grid import Grid
    from edifice.core.sliding_window import Predictor, WindowLayout, pad_reflect
    from edifice.models.unet import load_model

    model, card = load_model(ck)
    pred = Predictor(model, "cpu")
    lay = WindowLayout(window, margin)
    xs = []
    with rasterio.open(img) as ds:
        grid = Grid.from_dataset(ds)
        for t in lay.tiles(grid):
            r0, c0 = max(t.row0, 0), max(t.col0, 0)
            r1, c1 = min(t.row0 + window, grid.height), min(t.col0 + window, grid.width)
            a = ds.read(window=Window(c0, r0, c1 - c0, r1 - r0)).astype(np.float32) / 255
            xs.append(pad_reflect(a, (r0 - t.row0, t.row0 + window - r1, c0 - t.col0, t.col0 + window - c1)))
    x = np.stack(xs)
    pred(x[:1])  # warm-up
    t0 = time.perf_counter()
    for k in range(0, len(x), batch):
        pred(x[k:k + batch])
    return time.perf_counter() - t0, len(x)


def peak_memory(img: Path, ck: Path, window: int, margin: int, batch: int) -> tuple[float, float]:
    """(VmHWM MiB, seconds) of the pipeline in a fresh subprocess."""
    code = (
        "import sys, json, tempfile, pathlib\n"
        "sys.path.insert(0, %r)\n"
        "from bench_inference import pipeline\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        "    s = pipeline(pathlib.Path(%r), pathlib.Path(%r), pathlib.Path(d), %d, %d, %d)\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "print(json.dumps({'hwm_kib': int(hwm), 'wall': s['wall']}))\n"
    ) % (str(Path(__file__).parent), str(img), str(ck), window, margin, batch)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    d = json.loads(r.stdout.strip().splitlines()[-1])
    return d["hwm_kib"] / 1024, d["wall"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512, help="raster side (px) of the 1x run")
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--margin", type=int, default=32)
    ap.add_argument("--width", type=int, default=4, help="encoder base width (64 = full ResNet)")
    ap.add_argument("--batch", type=int, default=4)
    a = ap.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        img, ck = make_inputs(d, a.size, a.width, a.window)
        img16, _ = make_inputs(d, 4 * a.size, a.width, a.window)
        out = d / "out"
        out.mkdir()
        px = a.size * a.size
        t_model, n = model_only(img, ck, a.window, a.margin, a.batch)
        pipeline(img, ck, out, a.window, a.margin, a.batch)  # warm-up (imports, file cache)
        s = pipeline(img, ck, out, a.window, a.margin, a.batch)
        t_pipe = s["wall"]
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ResNet-18 U-Net base width {a.width}; "
              f"window {a.window} px, margin {a.margin} px (stride {a.window - 2 * a.margin}), batch {a.batch}")
        print(f"raster {a.size} x {a.size} px = {px / 1e6:.2f} Mpx, {n} windows")
        for name, t in (("model only", t_model), ("pipeline  ", t_pipe)):
            mpx = px / t / 1e6
            print(f"{name}: {t:6.2f} s  {mpx:6.3f} Mpx/s  {mpx * 1e6 * 0.25 * 3600 / 1e6:7.2f} km²/h at 0.5 m")
        print(f"pipeline / model-only throughput: {t_model / t_pipe:.2f}  (model time inside the pipeline: "
              f"{s['model_seconds']:.2f} s)")
        m1, w1 = peak_memory(img, ck, a.window, a.margin, a.batch)
        m16, w16 = peak_memory(img16, ck, a.window, a.margin, a.batch)
        print(f"peak memory (VmHWM, fresh process): 1x {m1:.0f} MiB ({w1:.1f} s), "
              f"16x area {m16:.0f} MiB ({w16:.1f} s); ratio {m16 / m1:.2f}")


if __name__ == "__main__":
    main()
