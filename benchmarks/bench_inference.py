"""Sliding-window inference throughput, host cost and memory (building-use model, random weights).

One command prints, measured in one run (child processes, interleaved, best of ``--repeat``):
* pipeline / model-only throughput on the same windows (model only: inputs read and scaled in memory
  beforehand, the same Predictor and batches; pipeline: read, scale, pad, model, merge, write 3 rasters);
  windows/s and km²/h at 0.5 m end to end (read -> write);
* the pipeline's own work with the network replaced by a no-op (``--noop-size``): CPU-s (user + sys)
  per km² at 0.5 m, as the slope of a least-squares fit of CPU-s against km² over four raster sizes of whole
  tiles (2304, 3072, 3840 and 4608 px at ``--noop-size 4096`` and 1024/128), each size's least run of all rounds
  (a busy machine only adds CPU time); the fit's standard error and residual RMS, each round's own slope and,
  with ``--before``, each round's after / before ratio are printed beside it to show how steady it is, and a
  digest of the pixel values of each code version's outputs (equal digests: identical outputs);
* peak memory (max RSS of a CLI run, ``edifice map-building-use``) at 4x vs 1x area (``--mem-size``);
* with ``--before REF``: the same figures for the code of git revision REF (extracted into a temporary
  folder), each figure's runs interleaved with ours — the before/after table of issue 17;
* on CUDA, per batch size of ``--batch-sizes``: the GPU utilisation (nvidia-smi sampled every 200 ms
  during the pipeline), ``--compile`` runs the model through torch.compile.
``--compression-only`` instead measures the write speed and size of the output compressions
(DEFLATE / ZSTD / LZW levels) on probability rasters made from the Kampala sample.

The issue's CPU table (ResNet-34 U-Net, 6 bands, 1024/128; about 35 min on a quiet 2-core machine;
``--base-width 16`` for a 4x quicker run of the same pipeline with a thinner network). The speed raster
needs several batches (16 windows at 3072 px) for reading, model and writing to overlap, and the 1x
memory run a full batch (4 windows at 1536 px), else the ratios measure start-up and batch size:

    python benchmarks/bench_inference.py --device cpu --encoder resnet34 --bands 6 --window 1024 --margin 128 --base-width 64 --size 3072 --noop-size 4096 --mem-size 1536 --repeat 2 --before 11b1056

The no-op lines alone (a few minutes), our probability rasters as the product's default (uint8 since session 8;
``--probability-type float32`` for float32; the ``--before`` tree writes its own default, float32):

    nice -n 10 python benchmarks/bench_inference.py --device cpu --encoder resnet34 --bands 6 --window 1024 --margin 128 --base-width 64 --noop-size 4096 --repeat 3 --noop-only --before 66264d0

Session 9 (issue 17 item 2): until then the no-op figure was the difference of a 2048 and a 4096 px run divided
by the difference of their areas, and it moved by +-0.1 CPU-s/km² between quiet runs of the same code (below:
0.596 and 0.349). It is now the fit above (5-7 min at load 3-4; ``--noop-pois edifice`` halves
it). Its steadiness depends on the machine's load: standard error of the slope 0.009-0.013 at load 1-4 (the first
run below), 0.02-0.04 at load 3-5, where the rounds' own slopes spread by +-10 % and CPU-s grow up to ~25 %:
two runs of the same code at load 3-5 gave 0.522 and 0.387 (DEFLATE POI maps), 0.391 and 0.362 (edifice's), so
on a shared machine compare only figures of one run. With 9 runs per size (``--repeat 3``, 3 sweeps per child,
the default since), two runs of our code one after the other at load 2.9-3.4 (no ``--before``, 3 min each) gave
0.338 and 0.372 (DEFLATE, +-5 %) and 0.295 and 0.288 (edifice's POI maps, +-1.2 %), standard errors 0.011-0.021:
the steady command is the one above with ``--repeat 3`` (about 10 min with ``--before 66264d0``).
Its run (final code, load 3.2 -> 4.2, 8 min): 0.369 / 0.284 CPU-s/km² (DEFLATE / edifice's POI maps; standard
errors 0.017 / 0.005), before (66264d0, float32) 0.948 / 0.796; after / before 0.389 / 0.357 (rounds 0.37-0.41 /
0.29-0.54). Earlier runs of the session (``--repeat 2``, 2 sweeps per child), before = 66264d0 (float32),
CPU-s/km² with the bench's DEFLATE POI maps / edifice's POI maps:
* first form of the fit (2048-5120 px; before the compiled finalisation), load 1.2 -> 4.4: 0.419 / 0.317
  (before 1.017 / 0.848; 0.412x / 0.374x);
* final code (branch-free compiled finalisation, compiled overview halving, one reduction per integer input
  band), load 3.1 -> 4.8: 0.522 / 0.391 (before 1.200 / 1.138; 0.435x / 0.344x); the same command again,
  load 2.8 -> 3.3: 0.387 / 0.362 (before 1.282 / 0.790; 0.302x / 0.458x). Peak memory 4x / 1x (``--mem-size
  1536 --skip-speed --skip-noop --repeat 2``, load 2.8-3.9): 1.09 (2662 -> 2900 MiB).
* the final code against main (``--repeat 3 --before main``, main at 12:07 UTC, its pipeline 1d02a5c's; load
  3.1-3.2): 0.346 / 0.330 (main 0.346 / 0.343; 0.999x / 0.963x, the rounds' ratios 0.71-1.16), each size's least
  run 3-17 % below main's; outputs identical (same digests). The session's cuts, timed alone (best of 20-40, same process): finalising a
  768 px tile 2-2.8x quicker (9.1 -> 3.1-5.0 ms), halving a 3-band uint8 tile that is out of the caches 2.1x
  (1.25 -> 0.60 ms), one reduction instead of two per integer input band: about 5 % of the no-op CPU in all,
  within the figure's noise on this machine.
Where the no-op CPU goes (py-spy --native, 3840 px, edifice POI maps, share of the pipeline's samples): reading
53 % (decoding the inputs 20 %: a whole-file decode of the 4096 px DEFLATE inputs alone is 1.0 CPU-s, ~0.24
CPU-s/km², the floor of the DEFLATE line; GDAL's copies and type conversion 7 %, validity 7 %, border mirroring
2 %), writing 40 % (finalisation 6 % after the change, 10 % before; overviews 18 %: halving 8 %, compressing their
blocks 8 %; compressing the base tiles 11 %), batching 4 %.

Measured on the shared 2-core machine (before = 66264d0, float32; same run, interleaved), CPU-s/km² with the
bench's DEFLATE POI maps / with POI maps as edifice:poiprobability writes them: uint8 0.536 / 0.352 (before 1.002 /
0.987, load 1.7-2.6); uint16 0.526 / 0.420 (before 0.901 / 0.998, load 3.4-3.7); float32 0.633 / 0.485 (before
1.003 / 0.864, load 3.6-4.4). Per 4096 px uint8 run (4.19 km², thread CPU): GDAL decoding the inputs ~0.9 s
(once per block since the run's block cache holds a row of windows), validity and scaling ~0.1 s, border
mirroring 0.14 s, finalize (one compiled pass) 0.13 s, overviews 0.14 s, compressing the outputs 0.14 s.
Quiet machine (lead, session 7, load 1.0-1.8, same commands with ``--skip-speed --mem-size 1536`` for uint8):
uint8 0.384 / 0.348 (before 0.836 / 0.858: 0.459x / 0.405x); float32 0.750 / 0.462 (before 0.952 / 0.865);
peak memory 4x / 1x with uint8 1.20 (2655 -> 3198 MiB; before 1.17 in the same run).

Session 8 (issue 17 goals A and B; shared machine, the figures interleaved with 66264d0 in the same run):
* Output encodings (``--compression-only --repeat 5``, load 0.8; CPU-s/km² of writing the three outputs, size):
  float32 zstd:1 predictor 3 (float32's default) 0.182, 1.79 MiB; predictor 2 0.109 (1.17x size); no predictor
  0.086 (1.27x); deflate:1 0.410; zstd:3 0.225; lzw 0.515; uint16 zstd:1 0.095 (0.57x); uint8 zstd:1 0.054
  (0.13x). Even float32 without a predictor saves only ~0.1 CPU-s/km² of the 0.46-0.75 measured, at +27 % size:
  float32 cannot meet 0.4 with a margin, so PROBABILITY_TYPE's default became uint8 (core/use/probability_type.py).
* No-op lines with the default (uint8) outputs (``--noop-only --before 66264d0``): load 5.8-6.2: 0.441 / 0.473
  CPU-s/km² (before, float32: 1.056 / 1.065; after / before 0.417 / 0.444); final code, load 1.4-2.2 (a test run
  beside it at first): 0.532 / 0.420 (before 1.199 / 1.001; 0.444 / 0.419). Quiet machine (session 7, same
  outputs): 0.384 / 0.348 (before 0.836 / 0.858); the ratios hold, so about 0.37 / 0.36 quiet.
* Peak memory 4x / 1x (``--skip-speed --skip-noop``, least of 2 rounds, load 3.8): 1.12 (2574 -> 2892 MiB; before
  1.11, 2743 -> 3037 MiB; session 7 1.20, 2655 -> 3198). What grew with the area, from RSS sampled every 20 ms
  with the pipeline's state (one 4x run each): the window pool (16 buffers of 24 MiB made in a large raster, 4 in
  the 1x one: +288 MiB; now the batch read ahead only, and the real Predictor hands its batch back once copied
  into its tensor, so the next batch is read into the same buffers: 4 in both), the GDAL read cache (twice a row
  of windows: 94 MiB at 3072 px, ~35 MiB used at 1536; capped at 64 MiB the 4x peak was 70 MiB lower, but less
  than twice a row decodes the windows' overlap again), per-batch variation of the activation peak (+-100 MiB).
  Not the writer's queue or cache, nor glibc's retained memory (trim threshold 32 MiB: both sizes ~100 MiB lower,
  the same ratio).

Quiet machine after the merges (session 8, uint8 default, before = 66264d0, load 1.2-1.7), two runs: no-op with
the bench's DEFLATE POI maps 1.345 -> 0.596 / 0.978 -> 0.349 CPU-s/km², with edifice's POI maps 1.080 -> 0.397 /
0.930 -> 0.461 (the figure, a difference of two runs, moves by +-0.1 between runs of the same code); peak memory
4x / 1x (least of 2 rounds) before 1.10, after 1.08 (2663 -> 2876 MiB).

The GPU figures: ``bash benchmarks/gpu_check.sh`` (it runs on a bare GPU machine too). Session 10, one H100 80GB
HBM3 with 16 host cores (torch 2.11, numpy 2.5, rasterio 1.4.4 / GDAL 3.10), ResNet-34 U-Net width 64, 6 bands,
1024/128, bf16 autocast, channels-last, 8192 px raster (121 windows, 16.8 km²), 4 reader threads, best of 2:
* engine before (c495d89), first run: model only 183 / 187 / 193 / 204 windows/s at batch 4 / 8 / 16 / 32 (91,000-
  102,000 km²/h), end to end 45.7 / 43.9 / 44.2 / 41.5 windows/s (20,700-22,800 km²/h), GPU busy 15-24 %: the
  pipeline / model ratio 0.20-0.25. Same code at batch 16 with ``GDAL_NUM_THREADS=ALL_CPUS`` 70.0 windows/s (0.36),
  with 8 reader threads 65.0, both at batch 32 60.3; torch.compile: model only 264 windows/s, end to end 44.2.
* so the engine now gives GDAL every host core when the model runs off the CPU (decoding each reader's blocks,
  compressing the outputs) and reads windows into page-locked memory. Second run, before and after interleaved
  (model-only inputs page-locked for both: the before engine's staging copy then ran at a third of its speed, so
  its model-only figures, 66 / 58 windows/s, are not a reference): end to end before 38.7 / 32.6 windows/s, after
  63.1 / 63.1 at batch 8 / 16 (31,500 km²/h; pipeline time after / before 0.613 / 0.516), model only after 257 /
  266 windows/s (128,000-133,000 km²/h; 1.37x the first run's, no staging copy), GPU busy 30-36 %; 8 reader
  threads 61.1; torch.compile model only 395 windows/s (197,000 km²/h), end to end 64.4. A third run (another
  machine): 67.0 windows/s (33,500 km²/h, ratio 0.25), with ``GDAL_NUM_THREADS=ALL_CPUS`` for the whole process
  71.8. Model time inside the pipeline is 0.5 s of the run's 1.8 s: the host side is the limit, not the GPU.

Session 10, quiet 2-core machine (no other jobs; load 0.3-1.8), CPU figures of the final code:
* no-op, ``--noop-only --repeat 3 --before 66264d0``: 0.406 / 0.413 CPU-s/km² (DEFLATE / edifice's POI maps;
  standard errors 0.028 / 0.026; rounds 0.437-0.511 / 0.421-0.425), before 1.151 / 0.933: after / before 0.352 /
  0.442. Against the code at the session's start (``--before c495d89``, load 1.2-1.3): 0.399 / 0.281 against 0.407 /
  0.395 (0.981x / 0.712x; the rounds' ratios 0.84-0.98 / 0.82-1.08): the CPU path did not change (GDAL's threads
  and the page-locked buffers are for a model off the CPU).
* pipeline / model-only throughput, ``--size 3072 --repeat 2 --skip-noop --skip-memory``: **0.992** (0.464 / 0.468
  windows/s; model time inside the pipeline 33.66 s against 34.19 s alone; fp32, OMP_WAIT_POLICY PASSIVE).

Session 11, another CPU (AMD EPYC, Zen 5, 2 cores, AVX-512; session 10's was Intel), quiet (load 0.5-1.9), code of
session 10:
* no-op (as above, ``--before 66264d0``): **0.178 / 0.154** CPU-s/km² (standard errors 0.001 / 0.003), before 0.438 /
  0.439: after / before 0.406 / 0.351. The same ratios as on the Intel machine, at 0.4x its CPU-s: a CPU-s/km²
  figure holds only on the machine it was measured on.
* pipeline / model-only: **0.888** (0.692 / 0.779 windows/s; model time inside the pipeline 22.77 s against 20.55 s
  alone); again with ``--before HEAD`` (the same engine twice, each in its own process): 0.928 and 0.883. The model
  alone ran 18.2-22.4 s for the same 16 windows in one process on this machine (+-10 %), so a ratio near 0.9 is
  within its noise; lowering the readers' and writer's priority (nice 10, so that the model's OpenMP threads keep
  the cores) changed nothing measurable in 4 interleaved rounds (best 20.93 s against 20.25 s without), left out.
* peak memory 4x / 1x (``--mem-size 1536``): 1.11 (2592 / 2880 MiB).
* ``bench_engine_threads.py --size 4608``, CPU ms a window, GDAL threads 1 / 2: readers 26.6 / 4.3, model thread
  2.1 / 3.8, writer 5.3 / 3.1 (finalize 1.5 / 1.4, writes 3.7 / 1.5); session 10's 12 / 7.4 / 12.9 were measured
  beside a CI run on the Intel machine.

Quick smoke test of every path:
``--size 256 --window 128 --margin 16 --noop-size 512 --mem-size 256 --repeat 1``.
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
                           tiled=True, blockxsize=256, blockysize=256, compress="deflate",
                           num_threads="all_cpus") as dst:
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
                               tiled=True, blockxsize=256, blockysize=256, compress="deflate",
                               num_threads="all_cpus") as dst:
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


def edifice_poi(poi: Path) -> Path:
    """The POI maps of ``poi`` as ``edifice:poiprobability`` writes them (values rounded to its quantum,
    float32, ZSTD level 1, floating-point predictor; core/use/poi_probability.py), beside it."""
    import rasterio

    from edifice.core.use.poi_probability import OUTPUT_PROFILE, QUANTUM_STEPS

    out = poi.with_name(poi.stem + "_edifice.tif")
    if not out.exists():
        with rasterio.open(poi) as src:
            profile = dict(src.profile, **OUTPUT_PROFILE)
            with rasterio.open(out, "w", **profile) as dst:
                for _, w in src.block_windows(1):
                    p = src.read(window=w)
                    dst.write(np.where(p == src.nodata, p, np.round(p * QUANTUM_STEPS) / QUANTUM_STEPS), window=w)
    return out


def pipeline(img: Path, ck: Path, poi: Path | None, out: Path, cfg: dict) -> dict:
    """The whole engine (edifice.core.use.building_use_map.map_building_use), 3 raster outputs."""
    from edifice.core.use.building_use_map import map_building_use

    extra = {"compression": cfg["compression"]} if cfg.get("compression") else {}
    if cfg.get("probability_type"):
        extra["probability_type"] = cfg["probability_type"]
    t0 = time.perf_counter()
    s = map_building_use(str(img), str(ck), poi_maps=str(poi) if poi else None,
                         footprint_probability=str(out / "fp.tif"), use_class=str(out / "uc.tif"),
                         use_probabilities=str(out / "up.tif"), device=cfg["device"], batch_size=cfg["batch"],
                         window=cfg["window"], overlap=cfg["margin"], precision=cfg["precision"], resume=False,
                         workers=cfg.get("workers", 1), **extra)
    _sync(cfg["device"])
    s["wall"] = time.perf_counter() - t0
    return s


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _retained():
    """The allocator setting of the engine (this tree's), so that the model-only reference runs
    with the same one; a no-op for code that has none."""
    try:
        from edifice.core.host_tuning import retained_allocations
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return retained_allocations()


def _compiled(model, cfg: dict):
    if not cfg.get("compile"):
        return model
    import torch

    return torch.compile(model, dynamic=False)


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
    pred.model = _compiled(pred.model, cfg)
    window = cfg["window"]
    lay = WindowLayout(window, cfg["margin"])
    scale = np.array([b["scale"] for b in card["bands"]], np.float32)[:, None, None]
    offset = np.array([b["offset"] for b in card["bands"]], np.float32)[:, None, None]
    xs = []
    # read beforehand, untimed: GDAL decodes each window's blocks on all cores
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"), rasterio.open(img) as ds, \
            (rasterio.open(poi) if poi else _null()) as pds:
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
    x = _host_array((len(xs),) + xs[0].shape, cfg["device"])
    np.stack(xs, out=x)
    del xs
    batch = cfg["batch"]
    # warm-up (kernels, autotuning, allocator) with the batch shapes of the timed runs
    with _retained():
        pred(x[:batch])
        if len(x) % batch:
            pred(x[: len(x) % batch])

    def run() -> float:
        with _retained():
            _sync(cfg["device"])
            t0 = time.perf_counter()
            for k in range(0, len(x), batch):
                pred(x[k:k + batch])
            _sync(cfg["device"])
            return time.perf_counter() - t0

    return run, len(x), pred.precision


def _host_array(shape: tuple, device: str) -> np.ndarray:
    """A float32 array for the model-only inputs: page-locked on CUDA (copied to the GPU at full bus speed, as the
    engine's window buffers are since issue 17), else plain."""
    if not device.startswith("cuda"):
        return np.empty(shape, np.float32)
    import torch

    return torch.empty(shape, dtype=torch.float32, pin_memory=True).numpy()


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


class _GpuSampler:
    """nvidia-smi's GPU utilisation (%) sampled every 200 ms while in the block."""

    def __init__(self, device: str):
        self.index = int(device.split(":")[1]) if ":" in device else 0
        self.samples: list[float] = []

    def __enter__(self):
        try:
            self.proc = subprocess.Popen(["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu",
                                          "--format=csv,noheader,nounits", "-lms", "200"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            self.proc = None
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            out, _ = self.proc.communicate()
            self.samples = [float(v) for v in out.split() if v.replace(".", "").isdigit()]
        return False

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


# ---------------------------------------------------------------- child processes (one per measurement)
def _patch_compile(cfg: dict) -> None:
    """With ``--compile``: the pipeline's Predictor runs torch.compile'd models too."""
    if not cfg.get("compile"):
        return
    import edifice.core.use.building_use_map as bum

    base = bum.Predictor

    class Compiled(base):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.model = _compiled(self.model, cfg)

    bum.Predictor = Compiled


def worker_speed(job: dict) -> dict:
    """Model only and pipeline on the same raster, interleaved, best of ``repeat`` each."""
    import torch

    cfg, d = job["cfg"], Path(job["folder"])
    _patch_compile(cfg)
    img, ck, poi = Path(job["img"]), Path(job["ck"]), Path(job["poi"]) if job["poi"] else None
    run_model, n, precision = model_only(img, ck, poi, cfg)
    out = d / f"out_{os.getpid()}"
    out.mkdir()
    pipeline(img, ck, poi, out, cfg)  # warm-up (file cache, kernels)
    t_model, best, gpu = float("inf"), None, None
    for _ in range(job["repeat"]):
        t_model = min(t_model, run_model())
        with (_GpuSampler(cfg["device"]) if cfg["device"].startswith("cuda") else _null()) as smp:
            r = pipeline(img, ck, poi, out, cfg)
        if best is None or r["wall"] < best["wall"]:
            best, gpu = r, (smp.mean if smp is not None else None)
    return {"t_model": t_model, "t_pipe": best["wall"], "model_in_pipe": best["model_seconds"], "windows": n,
            "run": best["tiles_run"], "precision": precision, "gpu_util": gpu,
            "threads": torch.get_num_threads(), "omp_wait": os.environ.get("OMP_WAIT_POLICY", "(unset)")}


def _noop_predictor():
    """A stand-in for the engine's Predictor: the network replaced by a no-op (its output: input bands, the smooth
    POI maps of a 6-band model, as a view of the batch: no work of its own; the host settings the real Predictor
    makes, keep_freed_memory, are made as well)."""

    class Noop:
        def __init__(self, model, device, precision="auto", progress=None, **_):
            self.precision, self.device = "fp32", device
            try:  # what the real Predictor does on creation (glibc thresholds: core/host_tuning.py)
                from edifice.core.host_tuning import keep_freed_memory
            except ImportError:
                return
            keep_freed_memory()

        def __call__(self, x):
            # smooth probability-like outputs (blue / 255 and the POI bands of 6-band models, a view), else the imagery
            return x[:, 2:6] if x.shape[1] >= 6 else x[:, [0, 1, 2, 0]]

    return Noop


def _outputs_digest(out: Path) -> str:
    """SHA-256 of the pixel values (every band, decoded) and data types of the three outputs in ``out``: equal
    digests, the same outputs whatever their compression or layout."""
    import hashlib

    import rasterio

    h = hashlib.sha256()
    for name in ("fp.tif", "uc.tif", "up.tif"):
        with rasterio.open(out / name) as ds:
            h.update(f"{name} {ds.dtypes} {ds.nodata} {ds.scales}".encode())
            h.update(np.ascontiguousarray(ds.read()).tobytes())
    return h.hexdigest()[:16]


def worker_noop(job: dict) -> dict:
    """The pipeline with a no-op network (:func:`_noop_predictor`) on each raster of ``job["runs"]`` ((size, img, ck,
    poi) each), one warm-up run of the first, then ``repeat`` sweeps over them all, in ascending and descending order
    by turns: {size: [CPU-s (user + sys of all threads), user, sys, wall, minor page faults] of each run}, and the
    digest of the last raster's outputs."""
    import resource

    import edifice.core.use.building_use_map as bum

    cfg, d = job["cfg"], Path(job["folder"])
    bum.Predictor = _noop_predictor()
    out = d / f"noop_{os.getpid()}"
    out.mkdir()
    runs = [(int(n), Path(i), Path(c), Path(p) if p else None) for n, i, c, p in job["runs"]]
    pipeline(*runs[0][1:], out, cfg)  # warm-up (imports, numba, file cache)
    samples: dict = {n: [] for n, *_ in runs}
    for sweep in range(job["repeat"]):
        for n, img, ck, poi in runs if sweep % 2 == 0 else runs[::-1]:  # up, down, ...: a drift of the load cancels
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            s = pipeline(img, ck, poi, out, cfg)
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            user, sys_ = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
            samples[n].append([user + sys_, user, sys_, s["wall"], r1.ru_minflt - r0.ru_minflt])
    return {"samples": samples, "digest": _outputs_digest(out)}


def _child(kind: str, job: dict, root: Path | None) -> dict:
    """Run ``worker_<kind>(job)`` in a fresh interpreter whose ``edifice`` is the tree at ``root``
    (None: this checkout)."""
    env = dict(os.environ)
    if root is not None:
        env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    code = ("import sys, json\n"
            "sys.path.insert(0, %r)\n"
            "try:\n"
            "    from edifice.core.host_tuning import quiet_cpu_threads\n"
            "    quiet_cpu_threads()\n"
            "except ImportError:\n"
            "    pass\n"
            "import bench_inference as b\n"
            "r = getattr(b, 'worker_' + %r)(json.loads(sys.stdin.read()))\n"
            "print('RESULT ' + json.dumps(r))\n") % (str(Path(__file__).parent), kind)
    r = subprocess.run([sys.executable, "-c", code], input=json.dumps(job), capture_output=True, text=True, env=env)
    if r.returncode:
        sys.stderr.write(r.stderr[-4000:])
        raise SystemExit(f"the {kind} child ({'this checkout' if root is None else root}) failed (exit {r.returncode})")
    return json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])


def cli_peak_rss(img: Path, ck: Path, poi: Path | None, cfg: dict, root: Path | None, out: Path) -> dict:
    """Max RSS (MiB) and wall (s) of one ``edifice map-building-use`` CLI run of the tree at ``root``."""
    env = dict(os.environ)
    if root is not None:
        env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    args = ["map-building-use", str(img), str(ck), "--footprint-probability", str(out / "fp.tif"),
            "--use-class", str(out / "uc.tif"), "--use-probabilities", str(out / "up.tif"), "--device",
            cfg["device"], "--batch-size", str(cfg["batch"]), "--window", str(cfg["window"]), "--overlap",
            str(cfg["margin"]), "--precision", cfg["precision"], "--no-resume"] + (["--poi-maps", str(poi)] if poi else [])
    if cfg.get("probability_type"):
        args += ["--probability-type", cfg["probability_type"]]
    code = "import sys; from edifice.core.cli import main; sys.exit(main(sys.argv[1:]))"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code] + args, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode:
        sys.stderr.write(err[-4000:])
        raise SystemExit(f"the CLI run failed (exit {proc.returncode})")
    return {"rss_mib": usage.ru_maxrss / 1024, "wall": time.perf_counter() - t0}


def extract_tree(ref: str, folder: Path) -> Path:
    """The package at git revision ``ref`` as ``folder/edifice`` (returns ``folder``); ``ref`` may also be a folder
    holding such a tree already (``git archive REF | tar -x -C DIR``, for a machine without the repository)."""
    repo = Path(__file__).resolve().parent.parent
    if Path(ref).is_dir():
        dest = folder / "edifice"
        folder.mkdir(parents=True)
        dest.symlink_to(Path(ref).resolve(), target_is_directory=True)
        return folder
    dest = folder / "edifice"
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(repo), "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return folder


# ---------------------------------------------------------------- output compression
def compression_table(repeat: int) -> None:
    """Write speed (Mpx/s) and size of each output compression on the three outputs of a tile row."""
    import rasterio
    from affine import Affine
    from scipy import ndimage

    from edifice.core.sliding_window import compression_options

    src = Path(__file__).resolve().parent.parent / "samples" / "kampala" / "kampala_rgb_50cm.tif"
    with rasterio.open(src) as ds:
        rgb = ds.read(out_dtype=np.float32)[:3] / 255.0
    use = np.stack([ndimage.gaussian_filter(b, 3) for b in rgb]).astype(np.float32)  # smooth 0-1 fields
    use /= np.maximum(use.sum(axis=0, keepdims=True), 1e-6)
    fp = ndimage.gaussian_filter(rgb.mean(axis=0), 2).astype(np.float32)
    cls = np.where(fp > np.median(fp), use.argmax(axis=0) + 1, 0).astype(np.uint8)
    h, w = fp.shape
    px = h * w
    print(f"output compression, {w} x {h} px outputs made from samples/kampala (footprint probability 1 band, class uint8, "
          f"3 use probabilities band-interleaved, as the engine writes them), 256 px tiles, best of {repeat}; "
          "predictor p1 none, p2 horizontal, p3 floating point:")
    with tempfile.TemporaryDirectory() as d:
        base = None
        for ptype, spec, pred in COMPRESSION_ROWS:
            rows = _typed_outputs(fp, cls, use, ptype)
            best, size = float("inf"), 0
            for _ in range(repeat):
                t0, size = time.process_time(), 0
                for name, arr in rows:
                    opts = compression_options(spec)
                    if opts["compress"] != "none":
                        opts["predictor"] = pred if arr.dtype.kind == "f" else 2
                    if len(arr) > 1:
                        opts["interleave"] = "band"
                    path = Path(d) / name
                    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=len(arr),
                                       dtype=arr.dtype.name, tiled=True, blockxsize=256, blockysize=256,
                                       crs="EPSG:32636", transform=Affine(0.5, 0, 0, 0, -0.5, 0), **opts) as ds:
                        ds.write(arr)
                    size += path.stat().st_size
                best = min(best, time.process_time() - t0)
            base = base or (best, size)
            label = f"{ptype} {spec}" + (f" p{pred}" if ptype == "float32" and spec != "none" else "")
            print(f"  {label:22s} {px / best / 1e6:7.1f} Mpx/s ({best / px * 4e6:6.3f} CPU-s/km² at 0.5 m)  "
                  f"size {size / 2**20:6.2f} MiB  (vs the first row: time {best / base[0]:.2f}x, size "
                  f"{size / base[1]:.2f}x)")


#: (PROBABILITY_TYPE, compression, predictor of float32 rasters) of the output-compression table; the first row is
#: the engine's float32 default, the last ones the scaled integer types at the default compression
COMPRESSION_ROWS = [("float32", "zstd:1", 3), ("float32", "zstd:1", 2), ("float32", "zstd:1", 1),
                    ("float32", "deflate:1", 3), ("float32", "deflate:6", 3), ("float32", "zstd:3", 3),
                    ("float32", "zstd:9", 3), ("float32", "lzw", 3), ("float32", "lzw", 1), ("float32", "none", 1),
                    ("uint16", "zstd:1", 2), ("uint8", "zstd:1", 2), ("uint8", "deflate:1", 2)]


def _typed_outputs(fp: np.ndarray, cls: np.ndarray, use: np.ndarray, ptype: str) -> list:
    """The three outputs (name, (bands, h, w)) with the probabilities stored as PROBABILITY_TYPE ``ptype``."""
    from edifice.core.use.probability_type import quantise

    return [("fp.tif", quantise(fp[None], ptype)), ("uc.tif", cls[None]), ("up.tif", quantise(use, ptype))]


def noop_sizes(largest: int, stride: int) -> list[int]:
    """The raster sides (px) of the no-op fit: 3, 4, 5 and 6 tile strides where ``largest`` is about 5 (2304, 3072,
    3840 and 4608 px for 4096 px and 1024 px windows with 128 px margins): whole tiles, so that every size has the
    same work per km² (a partial last tile costs a whole window for less area)."""
    k = max(2, round(largest / stride))
    return [stride * t for t in range(k - 2, k + 2)] if k > 2 else [stride * t for t in range(1, 5)]


def least_squares(km2: list[float], cpu: list[float]) -> dict:
    """Straight line fit of CPU-s against km²: slope (CPU-s/km²), intercept (CPU-s of a run's fixed work), the
    slope's standard error and the residuals' RMS (CPU-s)."""
    x, y = np.asarray(km2, float), np.asarray(cpu, float)
    a = np.stack([x, np.ones_like(x)], axis=1)
    (slope, icpt), *_ = np.linalg.lstsq(a, y, rcond=None)
    res = y - (slope * x + icpt)
    dof = max(len(x) - 2, 1)
    se = float(np.sqrt(res @ res / dof / np.sum((x - x.mean()) ** 2)))
    return {"slope": float(slope), "intercept": float(icpt), "slope_se": se, "rms": float(np.sqrt(np.mean(res ** 2)))}


def _noop_rows(trees: dict, sizes: list[int], d: Path, job: dict, cfg: dict, compression, edifice_pois: bool,
               sweeps: int) -> dict:
    """No-op CPU-s per km² of each tree, printed: per round (the trees interleaved, one child per tree and round,
    ``sweeps`` sweeps over every size in it after a warm-up), the slope of a least-squares fit of the child's runs'
    CPU-s against their areas; the figure is the median of the rounds' slopes, after / before the median of the
    rounds' ratios (each of two children run one after the other, so under much the same load)."""
    rasters = []
    for n in sizes:
        img, ck, poi = make_inputs(d, n, cfg)
        if poi and edifice_pois:
            poi = edifice_poi(poi)
        rasters.append([n, str(img), str(ck), str(poi) if poi else None])
    km2 = {n: n * n * KM2_PER_PX for n in sizes}
    rounds: dict = {name: [] for name in trees}
    for _ in range(job["repeat"]):
        for name, root in trees.items():
            c = dict(cfg, compression=None if name == "before" else compression,
                     probability_type=None if name == "before" else cfg.get("probability_type"))
            r = _child("noop", dict(job, cfg=c, runs=rasters, repeat=sweeps), root)
            runs = [(int(n), v) for n, vs in r["samples"].items() for v in vs]
            r["fit"] = least_squares([km2[n] for n, _ in runs], [v[0] for _, v in runs])
            rounds[name].append(r)
    res = {name: _envelope_fit(rs, sizes, km2) for name, rs in rounds.items()}
    for name, rs in rounds.items():
        _print_noop_tree(f"{name}, edifice POI" if edifice_pois else name, res[name], rs, sizes)
    if len(trees) > 1:
        digests = {name: {r["digest"] for r in rs} for name, rs in rounds.items()}
        if len({frozenset(v) for v in digests.values()}) == 1:
            print("  the code versions' outputs are identical (same pixel digest)")
        ratios = [a["fit"]["slope"] / b["fit"]["slope"] for a, b in zip(rounds["after"], rounds["before"])]
        ratio = res["after"]["slope"] / res["before"]["slope"]
        print(f"  after / before: {ratio:.3f} (the rounds' ratios, each of two children run one after the other: "
              f"{', '.join(f'{q:.3f}' for q in ratios)})  (load average "
              f"{os.getloadavg()[0]:.1f})")
    return res


def _envelope_fit(rounds: list, sizes: list[int], km2: dict) -> dict:
    """:func:`least_squares` of each size's least CPU-s over all the rounds' runs (a busy machine only adds CPU time:
    the least of many runs is the steadiest), with that least run of each size (``best``)."""
    best = {n: min((v for r in rounds for v in r["samples"][str(n)]), key=lambda v: v[0]) for n in sizes}
    return dict(least_squares([km2[n] for n in sizes], [best[n][0] for n in sizes]), best=best)


def _print_noop_tree(label: str, fit: dict, rounds: list, sizes: list[int]) -> None:
    """One tree's no-op lines: the fit of the least runs, the rounds' own slopes, the least runs."""
    slope, best = fit["slope"], fit["best"]
    print(f"  [{label:6s}] {slope:6.3f} CPU-s/km² (+- {fit['slope_se']:.3f} standard error; residual RMS "
          f"{fit['rms']:.3f} CPU-s; fixed {fit['intercept']:.2f} CPU-s per run); one core feeds {3600 / slope:,.0f} "
          "km²/h; each round's own slope: " + ", ".join(f"{r['fit']['slope']:.3f}" for r in rounds))
    top = best[sizes[-1]]
    print("           least CPU-s per size: " + ", ".join(f"{n} px {best[n][0]:.2f}" for n in sizes)
          + f"; {sizes[-1]} px: user {top[1]:.2f} s, sys {top[2]:.2f} s, wall {top[3]:.2f} s, {top[4]:,.0f} minor "
          f"page faults; outputs {'/'.join(sorted({r['digest'] for r in rounds}))}")


def _memory_rows(trees: dict, one: tuple, four: tuple, ck: Path, cfg: dict, d: Path, repeat: int) -> None:
    """Print each tree's least max RSS of ``repeat`` CLI runs at 1x and 4x area ((imagery, POI maps) each), the
    trees and sizes interleaved in every round."""
    best: dict = {}
    for k in range(repeat):
        for name, root in trees.items():
            o = d / f"mem_{name}_{k}"
            o.mkdir()
            c = dict(cfg, probability_type=None) if name == "before" else cfg
            for size, (img, poi) in (("1x", one), ("4x", four)):
                r = cli_peak_rss(img, ck, poi, c, root, o)
                if (name, size) not in best or r["rss_mib"] < best[name, size]["rss_mib"]:
                    best[name, size] = r
    for name in trees:
        r1, r4 = best[name, "1x"], best[name, "4x"]
        print(f"  [{name:6s}] 1x {r1['rss_mib']:.0f} MiB ({r1['wall']:.1f} s), 4x {r4['rss_mib']:.0f} MiB "
              f"({r4['wall']:.1f} s): 4x / 1x {r4['rss_mib'] / r1['rss_mib']:.2f}  (load average "
              f"{os.getloadavg()[0]:.1f})")


def _default_type() -> str:
    """This checkout's default PROBABILITY_TYPE, said as such (what our runs write without --probability-type)."""
    from edifice.core.use.probability_type import DEFAULT_PROBABILITY_TYPE

    return f"{DEFAULT_PROBABILITY_TYPE} (the default)"


def _fmt(px: int, windows: int, t: float) -> str:
    return (f"{windows / t:7.3f} windows/s  {px / t / 1e6:7.3f} Mpx/s  "
            f"{px / t * 3600 * KM2_PER_PX:9.2f} km²/h at {GSD_M:g} m")


def _parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto (CUDA when available, else the CPU), cpu, cuda or cuda:N")
    ap.add_argument("--encoder", default="resnet34", choices=("resnet18", "resnet34", "resnet50"))
    ap.add_argument("--bands", type=int, default=6, choices=(3, 6),
                    help="3: RGB (imagery_multitask); 6: RGB + 3 POI bands (imagery_poi_multitask)")
    ap.add_argument("--size", type=int, default=None, help="raster side (px) of the speed runs (default 4096 on "
                    "CUDA, 3072 on the CPU)")
    ap.add_argument("--noop-size", type=int, default=4096, help="about the second-largest raster side (px) of the "
                    "no-op runs: the fit takes whole tile strides k-2 .. k+1 with k = this / stride (2304, 3072, "
                    "3840, 4608 px at 4096 and 1024/128)")
    ap.add_argument("--noop-sweeps", type=int, default=3, help="sweeps over the no-op sizes in each child (after a "
                    "warm-up run), ascending and descending by turns; a slope is fitted to each child's runs")
    ap.add_argument("--noop-pois", default="both", choices=("deflate", "edifice", "both"),
                    help="the POI maps of the 6-band no-op runs: the bench's DEFLATE float32 maps, as "
                    "edifice:poiprobability writes them, or both (two sets of lines)")
    ap.add_argument("--mem-size", type=int, default=None, help="raster side (px) of the 1x peak-memory run "
                    "(the 4x one is twice it; default: 1.5 windows, i.e. a full batch of 4)")
    ap.add_argument("--window", type=int, default=1024, help="window (px)")
    ap.add_argument("--margin", type=int, default=None, help="margin discarded per side (px; default window / 8)")
    ap.add_argument("--base-width", "--width", dest="base_width", type=int, default=64,
                    help="encoder base width (64 = full ResNet)")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                    help="auto: bf16 (else fp16) on CUDA, fp32 on the CPU")
    ap.add_argument("--batch-size", "--batch", dest="batch", type=int, default=4)
    ap.add_argument("--batch-sizes", default=None, help="comma-separated batch sizes (speed runs for each)")
    ap.add_argument("--workers", type=int, default=1, help="reader threads of the pipeline")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (model-only and pipeline)")
    ap.add_argument("--compression", default=None, help="output compression of our runs (default: the engine's)")
    ap.add_argument("--probability-type", default=None, choices=("float32", "uint16", "uint8"),
                    help="PROBABILITY_TYPE of our runs' probability rasters (default: the product's default, uint8 since issue "
                    "17; the --before tree runs its own default)")
    ap.add_argument("--noop-only", action="store_true", help="only the no-op lines (same as --skip-speed "
                    "--skip-memory)")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs of each (the best is reported)")
    ap.add_argument("--before", default=None, metavar="REF", help="also measure the code of git revision REF (or of "
                    "the tree in folder REF)")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-noop", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--data-dir", default=None, help="folder of the generated inputs, kept and reused by later runs "
                    "(default: a temporary folder)")
    ap.add_argument("--compression-only", action="store_true", help="only the output-compression table")
    return ap.parse_args()


def _noop_section(a, trees: dict, d: Path, job: dict, cfg: dict) -> None:
    """The no-op lines: per POI-map encoding of ``--noop-pois``, each tree's CPU-s/km² and after / before."""
    sizes = noop_sizes(a.noop_size, cfg["window"] - 2 * cfg["margin"])
    km2 = [n * n * KM2_PER_PX for n in sizes]
    print(f"no-op network (the pipeline's own work), rasters {', '.join(map(str, sizes))} px square "
          f"({', '.join(f'{k:.2f}' for k in km2)} km²); per km² = the slope of a least-squares fit of each "
          f"size's least CPU-s (user + sys of a run; start-up, model loading and checks are in the fixed part) against "
          f"its area, over {a.repeat} rounds (code versions interleaved, a child each; in it a warm-up run, then "
          f"{a.noop_sweeps} sweeps over the sizes, up and down by turns):")
    pois = a.noop_pois if cfg["bands"] == 6 else "deflate"
    kinds = {"deflate": [False], "edifice": [True], "both": [False, True]}[pois]
    for edifice_pois in kinds:
        if edifice_pois:
            print("  with the POI maps as edifice:poiprobability writes them (ZSTD level 1, floating-point predictor, "
                  "values rounded to 1/65536):")
        elif cfg["bands"] == 6:
            print("  with the bench's DEFLATE float32 POI maps:")
        _noop_rows(trees, sizes, d, job, cfg, a.compression, edifice_pois, a.noop_sweeps)


def main() -> None:
    a = _parse()
    if a.compression_only:
        compression_table(max(1, a.repeat))
        return
    import torch

    from edifice.core.errors import EdificeError
    from edifice.core.sliding_window import resolve_device

    try:
        dev, desc = resolve_device(a.device)
    except EdificeError as exc:
        raise SystemExit(str(exc)) from None
    cuda = dev.type == "cuda"
    size = a.size or (4096 if cuda else 3072)
    margin = a.margin if a.margin is not None else a.window // 8
    batches = [int(b) for b in a.batch_sizes.split(",")] if a.batch_sizes else [a.batch]
    cfg = {"device": str(dev), "encoder": a.encoder, "bands": a.bands, "base_width": a.base_width,
           "window": a.window, "margin": margin, "batch": batches[0], "precision": a.precision,
           "compile": a.compile, "compression": a.compression, "workers": a.workers,
           "probability_type": a.probability_type}
    if a.noop_only:
        a.skip_speed = a.skip_memory = True
    variant = "imagery_poi_multitask" if a.bands == 6 else "imagery_multitask"
    print(f"device: {desc}; torch {torch.__version__}; load average {os.getloadavg()[0]:.1f} at the start")
    print(f"model: {a.encoder} U-Net base width {a.base_width}, {a.bands} bands ({variant}), random weights; "
          f"window {a.window} px, margin {margin} px (stride {a.window - 2 * margin}); precision {a.precision}"
          f"{'; torch.compile' if a.compile else ''}; our probability rasters {a.probability_type or _default_type()}")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        trees = {"after": None}
        if a.before:
            trees = {"before": extract_tree(a.before, d / "before"), "after": None}
        data = Path(a.data_dir) if a.data_dir else d
        data.mkdir(parents=True, exist_ok=True)
        img, ck, poi = make_inputs(data, size, cfg)
        job = {"cfg": cfg, "folder": str(d), "img": str(img), "ck": str(ck), "poi": str(poi) if poi else None,
               "repeat": a.repeat}
        px = size * size
        if not a.skip_speed:
            print(f"speed runs: raster {size} x {size} px ({px * KM2_PER_PX:.3f} km² at {GSD_M:g} m); model only = the "
                  f"same windows read beforehand; best of {a.repeat} interleaved, in a fresh process per code version")
        for bs in [] if a.skip_speed else batches:
            res = {}
            for name, root in trees.items():
                c = dict(cfg, batch=bs, compression=None if name == "before" else a.compression,
                         probability_type=None if name == "before" else a.probability_type)
                res[name] = _child("speed", dict(job, cfg=c), root)
            for name, r in res.items():
                print(f"  [{name:6s}] batch {bs:3d}: model {_fmt(px, r['windows'], r['t_model'])}")
                gpu = f", GPU busy {r['gpu_util']:.0f} %" if r.get("gpu_util") is not None else ""
                print(f"  [{name:6s}] batch {bs:3d}: pipe  {_fmt(px, r['run'], r['t_pipe'])}{gpu}")
                print(f"  [{name:6s}] pipeline / model-only throughput: {r['t_model'] / r['t_pipe']:.3f}  (precision "
                      f"{r['precision']}, {r['threads']} threads, OMP_WAIT_POLICY {r['omp_wait']}; model time "
                      f"inside the pipeline {r['model_in_pipe']:.2f} s vs {r['t_model']:.2f} s alone)")
            if "before" in res:
                print(f"  after / before model-only time: {res['after']['t_model'] / res['before']['t_model']:.3f}, "
                      f"pipeline time: {res['after']['t_pipe'] / res['before']['t_pipe']:.3f}  "
                      f"(load average {os.getloadavg()[0]:.1f})")
        if not a.skip_noop:
            _noop_section(a, trees, d, job, cfg)
        if not a.skip_memory:
            m = a.mem_size or (3 * a.window) // 2
            i1, _, p1 = make_inputs(d, m, cfg)
            i4, _, p4 = make_inputs(d, 2 * m, cfg)
            print(f"peak memory (max RSS of a CLI run; the least of {a.repeat} rounds, the code versions interleaved: "
                  f"a run's peak varies by +-100 MiB with how the threads' work falls on the model's batches), "
                  f"1x = {m} x {m} px, 4x = {2 * m} x {2 * m} px:")
            _memory_rows(trees, (i1, p1), (i4, p4), ck, cfg, d, a.repeat)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
