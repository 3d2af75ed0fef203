"""Sliding-window inference throughput and memory (building-use model, random weights).

Prints, in one run:
* the device used (and torch version, threads, precision);
* model-only throughput on the windows of a raster (inputs read and scaled in memory beforehand,
  the same windows and batches the pipeline runs, through the same Predictor: autocast and
  channels_last on CUDA) vs the whole pipeline (read, scale, pad, model, merge, write 3 rasters)
  on the same raster, and their ratio — the pipeline should reach >= 0.9 of the model alone;
* windows/s, Mpx/s and km²/h at 0.5 m for both;
* peak memory: CUDA ``torch.cuda.max_memory_allocated`` of each (on CUDA), and peak resident
  memory (VmHWM from /proc, each run in a fresh subprocess) of the pipeline at 1x and 16x raster
  area (bounded memory: the two should be close; ``--skip-16x`` leaves this out).

    python benchmarks/bench_inference.py [--device auto|cpu|cuda|cuda:N] [--encoder resnet18|resnet34|resnet50]
        [--bands 3|6] [--size PX] [--window PX] [--margin PX] [--base-width 4] [--precision auto|fp32|bf16|fp16]
        [--batch-size 4] [--threads N] [--repeat 2] [--skip-16x]

``--bands 6`` is RGB + the 3 POI probability bands (variant imagery_poi_multitask; a synthetic
3-band float32 POI raster on the imagery grid is given to the pipeline), ``--bands 3`` RGB only
(variant imagery_multitask). ``--window`` defaults to 1024 on CUDA, 256 on the CPU; ``--margin``
to window / 8; ``--size`` to 2048 on CUDA, 512 on the CPU. ``--base-width 64`` is the full ResNet.
For a GPU figure, e.g.:

    python benchmarks/bench_inference.py --device cuda --encoder resnet34 --bands 6 --window 1024 --base-width 64

Measured on the shared 2-core CPU machine (torch 2.13 CPU, 2 threads; load average ~2.2 from other
jobs, so noisy; ResNet-18, 3 bands, window 256, margin 32, batch 4, fp32, model and pipeline runs
interleaved, best of --repeat):
  --device cpu --size 1024 --repeat 3 (width 4):  model 62.4 windows/s 1.82 Mpx/s 1636 km²/h, pipeline
      38.4 windows/s 1.12 Mpx/s 1006 km²/h, ratio 0.61; VmHWM 399 -> 477 MiB at 16x area (1.20x)
  --device cpu --size 1024 --base-width 32 --repeat 3 --skip-16x:  model 0.953 Mpx/s, pipeline 0.735 Mpx/s,
      ratio 0.77; VmHWM 490 MiB
  --device cpu --size 768 --bands 6 --encoder resnet34 --base-width 16 --skip-16x:  model 1.42 Mpx/s,
      pipeline 0.88 Mpx/s, ratio 0.62
On 2 cores the pipeline's reader and writer threads (GDAL decode, DEFLATE) take CPU from torch, so the
faster the model the lower the ratio. Earlier figures taken on a busier machine (model 5-10x slower)
gave ratios 0.98-1.03 (width 4 and 32); with DEFLATE level 6 and GDAL's block cache uncapped, 0.45-0.89.
No GPU figures yet.
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

GSD_M = 0.5
KM2_PER_PX = GSD_M * GSD_M / 1e6


def make_inputs(folder: Path, size: int, cfg: dict) -> tuple[Path, Path, Path | None]:
    """(imagery, checkpoint, POI raster or None) in ``folder`` (reused when there)."""
    import rasterio
    import torch
    from affine import Affine

    from edifice.models.checkpoint import save_checkpoint
    from edifice.models.unet import ARCHITECTURE, UNetResNet

    transform = Affine(GSD_M, 0, 450000, 0, -GSD_M, 40000)
    img = folder / f"img_{size}.tif"
    if not img.exists():
        rng = np.random.default_rng(0)
        with rasterio.open(img, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                           crs="EPSG:32636", transform=transform, nodata=0,
                           tiled=True, blockxsize=256, blockysize=256, compress="deflate") as dst:
            for r in range(0, size, 512):
                h = min(512, size - r)
                yy, xx = np.mgrid[r:r + h, 0:size]
                base = 120 + 60 * np.sin(xx / 17.0) * np.cos(yy / 23.0)
                a = np.clip(base[None] + rng.normal(0, 10, (3, h, size)), 1, 255).astype(np.uint8)
                dst.write(a, window=((r, r + h), (0, size)))
    poi = None
    if cfg["bands"] == 6:
        poi = folder / f"poi_{size}.tif"
        if not poi.exists():
            with rasterio.open(poi, "w", driver="GTiff", width=size, height=size, count=3, dtype="float32",
                               crs="EPSG:32636", transform=transform, nodata=-1.0,
                               tiled=True, blockxsize=256, blockysize=256, compress="deflate") as dst:
                for r in range(0, size, 512):
                    h = min(512, size - r)
                    yy, xx = np.mgrid[r:r + h, 0:size]
                    p = np.stack([0.5 + 0.5 * np.sin(xx / 97.0), 0.5 + 0.5 * np.cos(yy / 89.0),
                                  0.5 + 0.5 * np.sin((xx + yy) / 131.0)]).astype(np.float32)
                    dst.write(p, window=((r, r + h), (0, size)))
    variant = "imagery_poi_multitask" if cfg["bands"] == 6 else "imagery_multitask"
    ck = folder / f"model_{cfg['encoder']}_b{cfg['bands']}_w{cfg['base_width']}.pt"
    if not ck.exists():
        torch.manual_seed(0)
        params = {"encoder": cfg["encoder"], "in_channels": cfg["bands"], "variant": variant,
                  "base_width": cfg["base_width"]}
        net = UNetResNet(**params)
        bands = [{"name": n, "scale": 1 / 255, "offset": 0.0} for n in ("red", "green", "blue")]
        if cfg["bands"] == 6:
            bands += [{"name": f"p_{c}", "scale": 1.0, "offset": 0.0}
                      for c in ("residential", "commercial", "industrial")]
        card = {"task": "building_use", "architecture": {"name": ARCHITECTURE, "params": params},
                "bands": bands, "gsd_m": GSD_M, "window": cfg["window"], "classes": [], "outputs": {}}
        save_checkpoint(ck, net.state_dict(), card)
    return img, ck, poi


def pipeline(img: Path, ck: Path, poi: Path | None, out: Path, cfg: dict) -> dict:
    """The whole engine (edifice.core.building_use_map.map_building_use), 3 raster outputs."""
    from edifice.core.building_use_map import map_building_use

    t0 = time.perf_counter()
    s = map_building_use(str(img), str(ck), poi_maps=str(poi) if poi else None,
                         footprint_probability=str(out / "fp.tif"), use_class=str(out / "uc.tif"),
                         use_probabilities=str(out / "up.tif"), device=cfg["device"], batch_size=cfg["batch"],
                         window=cfg["window"], overlap=cfg["margin"], precision=cfg["precision"], resume=False)
    _sync(cfg["device"])
    s["wall"] = time.perf_counter() - t0
    return s


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def model_only(img: Path, ck: Path, poi: Path | None, cfg: dict):
    """(run, windows, precision): ``run()`` gives the seconds of the model alone on the
    pipeline's windows (inputs read and scaled beforehand; each batch is copied to the device
    and its result back, as in the pipeline); warmed up already."""
    import rasterio
    from rasterio.windows import Window

    from edifice.core.grid import Grid
    from edifice.core.sliding_window import Predictor, WindowLayout, pad_reflect
    from edifice.models.unet import load_model

    model, card = load_model(ck)
    pred = Predictor(model, cfg["device"], precision=cfg["precision"])
    window = cfg["window"]
    lay = WindowLayout(window, cfg["margin"])
    scale = np.array([b["scale"] for b in card["bands"]], np.float32)[:, None, None]
    offset = np.array([b["offset"] for b in card["bands"]], np.float32)[:, None, None]
    xs = []
    with rasterio.open(img) as ds, (rasterio.open(poi) if poi else _null()) as pds:
        grid = Grid.from_dataset(ds)
        for t in lay.tiles(grid):
            r0, c0 = max(t.row0, 0), max(t.col0, 0)
            r1, c1 = min(t.row0 + window, grid.height), min(t.col0 + window, grid.width)
            w = Window(c0, r0, c1 - c0, r1 - r0)
            a = ds.read(window=w).astype(np.float32)
            if pds is not None:
                a = np.concatenate([a, pds.read(window=w).astype(np.float32)])
            a = (a - offset) * scale
            xs.append(pad_reflect(a, (r0 - t.row0, t.row0 + window - r1, c0 - t.col0, t.col0 + window - c1)))
    x = np.stack(xs)
    batch = cfg["batch"]
    # warm-up (kernels, autotuning, allocator) with the batch shapes of the timed runs
    pred(x[:batch])
    if len(x) % batch:
        pred(x[: len(x) % batch])

    def run() -> float:
        _sync(cfg["device"])
        t0 = time.perf_counter()
        for k in range(0, len(x), batch):
            pred(x[k:k + batch])
        _sync(cfg["device"])
        return time.perf_counter() - t0

    return run, len(x), pred.precision


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def peak_memory(img: Path, ck: Path, poi: Path | None, cfg: dict) -> dict:
    """{'hwm_mib', 'cuda_mib' (None off CUDA), 'wall'} of the pipeline in a fresh subprocess."""
    code = (
        "import sys, json, tempfile, pathlib\n"
        "sys.path.insert(0, %r)\n"
        "import torch\n"
        "from bench_inference import pipeline\n"
        "cfg = json.loads(%r)\n"
        "poi = pathlib.Path(%r) if %r else None\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        "    s = pipeline(pathlib.Path(%r), pathlib.Path(%r), poi, pathlib.Path(d), cfg)\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "cuda = torch.cuda.max_memory_allocated(cfg['device']) / 2**20 if cfg['device'].startswith('cuda') "
        "else None\n"
        "print(json.dumps({'hwm_mib': int(hwm) / 1024, 'cuda_mib': cuda, 'wall': s['wall']}))\n"
    ) % (str(Path(__file__).parent), json.dumps(cfg), str(poi), bool(poi), str(img), str(ck))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode:
        sys.stderr.write(r.stderr)
        raise SystemExit(f"the peak-memory subprocess failed (exit {r.returncode})")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _rates(px: int, windows: int, t: float) -> str:
    mpx = px / t / 1e6
    return (f"{t:7.2f} s  {windows / t:7.2f} windows/s  {mpx:7.3f} Mpx/s  "
            f"{px / t * 3600 * KM2_PER_PX:8.2f} km²/h at {GSD_M:g} m")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto (CUDA when available, else the CPU), cpu, cuda or cuda:N")
    ap.add_argument("--encoder", default="resnet18", choices=("resnet18", "resnet34", "resnet50"))
    ap.add_argument("--bands", type=int, default=3, choices=(3, 6),
                    help="3: RGB (imagery_multitask); 6: RGB + 3 POI bands (imagery_poi_multitask)")
    ap.add_argument("--size", type=int, default=None, help="raster side (px) of the 1x run (default 2048 on "
                    "CUDA, 512 on the CPU)")
    ap.add_argument("--window", type=int, default=None, help="window (px; default 1024 on CUDA, 256 on the CPU)")
    ap.add_argument("--margin", type=int, default=None, help="margin discarded per side (px; default window / 8)")
    ap.add_argument("--base-width", "--width", dest="base_width", type=int, default=4,
                    help="encoder base width (64 = full ResNet)")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                    help="auto: bf16 (else fp16) on CUDA, fp32 on the CPU")
    ap.add_argument("--batch-size", "--batch", dest="batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs of each (the best is reported)")
    ap.add_argument("--skip-16x", action="store_true", help="leave out the 16x-area run (peak RSS is then measured at 1x only)")
    a = ap.parse_args()
    import torch

    from edifice.core.sliding_window import resolve_device

    if a.threads:
        torch.set_num_threads(a.threads)
    from edifice.core.errors import EdificeError

    try:
        dev, desc = resolve_device(a.device)
    except EdificeError as exc:
        raise SystemExit(str(exc)) from None
    cuda = dev.type == "cuda"
    window = a.window or (1024 if cuda else 256)
    size = a.size or (2048 if cuda else 512)
    margin = a.margin if a.margin is not None else window // 8
    cfg = {"device": str(dev), "encoder": a.encoder, "bands": a.bands, "base_width": a.base_width,
           "window": window, "margin": margin, "batch": a.batch, "precision": a.precision}

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        img, ck, poi = make_inputs(d, size, cfg)
        out = d / "out"
        out.mkdir()
        px = size * size
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        run_model, n, precision = model_only(img, ck, poi, cfg)
        t_model = run_model()
        cuda_model = torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else None
        pipeline(img, ck, poi, out, cfg)  # warm-up (imports, file cache, kernels)
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        # interleaved, best of each: a machine whose load drifts favours neither
        s = pipeline(img, ck, poi, out, cfg)
        for _ in range(a.repeat - 1):
            t_model = min(t_model, run_model())
            r = pipeline(img, ck, poi, out, cfg)
            s = r if r["wall"] < s["wall"] else s
        cuda_pipe = torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else None
        t_pipe = s["wall"]
        variant = "imagery_poi_multitask" if a.bands == 6 else "imagery_multitask"
        print(f"device: {desc}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads; precision "
              f"{precision}")
        print(f"model: {a.encoder} U-Net base width {a.base_width}, {a.bands} bands ({variant}), random weights; "
              f"window {window} px, margin {margin} px (stride {window - 2 * margin}), batch {a.batch}")
        print(f"raster {size} x {size} px = {px / 1e6:.2f} Mpx ({px * KM2_PER_PX:.3f} km² at {GSD_M:g} m), "
              f"{n} windows (pipeline ran {s['tiles_run']})")
        print(f"best of {a.repeat} interleaved runs each (after a warm-up):")
        print(f"model only: {_rates(px, n, t_model)}")
        print(f"pipeline  : {_rates(px, s['tiles_run'], t_pipe)}")
        print(f"pipeline / model-only throughput: {t_model / t_pipe:.2f}  (model time inside the pipeline: "
              f"{s['model_seconds']:.2f} s)")
        if cuda:
            print(f"peak CUDA memory (max_memory_allocated): model only {cuda_model:.0f} MiB, "
                  f"pipeline {cuda_pipe:.0f} MiB")
        if a.skip_16x:
            m1 = peak_memory(img, ck, poi, cfg)
            print(f"peak memory of the pipeline (VmHWM, fresh process): {m1['hwm_mib']:.0f} MiB "
                  f"({m1['wall']:.1f} s)" + (f"; CUDA {m1['cuda_mib']:.0f} MiB" if cuda else ""))
        else:
            img16, _, poi16 = make_inputs(d, 4 * size, cfg)
            m1 = peak_memory(img, ck, poi, cfg)
            m16 = peak_memory(img16, ck, poi16, cfg)
            print(f"peak memory of the pipeline (VmHWM, fresh process): 1x {m1['hwm_mib']:.0f} MiB "
                  f"({m1['wall']:.1f} s), 16x area {m16['hwm_mib']:.0f} MiB ({m16['wall']:.1f} s); "
                  f"ratio {m16['hwm_mib'] / m1['hwm_mib']:.2f}")
            if cuda:
                print(f"peak CUDA memory of the pipeline (fresh process): 1x {m1['cuda_mib']:.0f} MiB, "
                      f"16x area {m16['cuda_mib']:.0f} MiB")
            px16 = 16 * px
            print(f"pipeline at 16x area (fresh process, includes start-up): {px16 / m16['wall'] / 1e6:.3f} Mpx/s, "
                  f"{px16 / m16['wall'] * 3600 * KM2_PER_PX:.2f} km²/h")


if __name__ == "__main__":
    main()
