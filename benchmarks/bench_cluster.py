"""Building-use mapping on a Dask LocalCluster of 1 and 2 workers vs one process, same mosaic.

Prints, in one run, for a mosaic of 6 tiles (the Kampala sample mirrored 4 x 4 by default, cut into 6:
464 windows) and a tiny random-weights model (ResNet-18 U-Net, base width 4, windows of 256 px, margin 32):
* wall time of each whole command (``edifice map-building-use``, a fresh process each: imports,
  LocalCluster start, model loading on every worker, mosaics) and of its compute phase (the
  engine's seconds for one process; the block phase, submit to last block, for the cluster);
* efficiency = single time / (N x distributed time) for N = 1, 2, and overhead = 1-worker time /
  single time, for compute phases (the goals) and whole commands;
* the seconds of one 1024 px window of the full-size model (ResNet-34 U-Net, base width 64, 6 bands)
  on one CPU thread, for the projection in the README.

The single process runs with one math thread, as each worker does (``threads_per_worker=1`` and
Dask's OMP_NUM_THREADS=1), so the comparison is one core against N cores. One command:

    nice -n 10 python benchmarks/bench_cluster.py [--repeat 2] [--mirror 4] [--block-windows 8] [--skip-full-model]

What cost the time before (measured on the shared 2-CPU machine, 19:30-20:10 UTC 2026-11-26): Dask's nanny
starts workers with MALLOC_TRIM_THRESHOLD_=65536, which makes glibc hand every activation buffer back to the
kernel and page-fault it again at the next batch: 12,300 page faults and 0.047-0.053 CPU-s per window in such
a process against 2,100 and 0.023-0.029 in a plain one (core/host_tuning.py, now called by the engine's Predictor
in every process: 40 faults, 0.018-0.019 CPU-s). Worker threads x torch threads were not oversubscribed (torch
has 1 thread in each worker); the model is loaded once per worker; splitting into blocks costs 10-20 % in one
process at 3 x 3 windows a block (partial batches), less at the default 8 x 8; a LocalCluster start costs
~10 s and its shutdown ~4 s (a worker that imported torch does not exit within the nanny's 4 s), fixed costs
that the whole-command ratios carry and that a national run amortises.
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

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["--window", "256", "--overlap", "32", "--batch-size", "4", "--device", "cpu"]


def make_mosaic(folder: Path, mirror: int = 4) -> Path:
    """6 tiles of the Kampala sample mirrored ``mirror`` x ``mirror`` (5504 x 3036 px at 0.5 m for 4:
    464 windows of 256 px), without nodata so that every window runs."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(ROOT / "samples" / "kampala" / "kampala_rgb_50cm.tif") as src:
        a = src.read()
        prof = src.profile
    row = np.concatenate([a if j % 2 == 0 else a[:, :, ::-1] for j in range(mirror)], 2)
    big = np.concatenate([row if i % 2 == 0 else row[:, ::-1] for i in range(mirror)], 1)
    tiles = folder / "tiles"
    tiles.mkdir()
    h, w = big.shape[1:]
    rows, cols = [0, h // 2, h], [0, w // 3, 2 * w // 3, w]
    t0 = prof["transform"]
    for i in range(2):
        for j in range(3):
            win = Window(cols[j], rows[i], cols[j + 1] - cols[j], rows[i + 1] - rows[i])
            p = dict(prof, width=int(win.width), height=int(win.height), nodata=None,  # every window runs
                     transform=rasterio.windows.transform(win, t0))
            with rasterio.open(tiles / f"t{i}{j}.tif", "w", **p) as dst:
                dst.write(big[:, rows[i]:rows[i + 1], cols[j]:cols[j + 1]])
    return tiles


def run_cli(args: list[str]) -> tuple[float, dict]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "edifice.core.cli", *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    return wall, json.loads(r.stdout)


def full_model_window_s() -> float:
    """Seconds of one 1024 px window (6 bands) through a ResNet-34 U-Net of full width on this CPU."""
    import torch

    from edifice.core.host_tuning import keep_freed_memory
    from edifice.models.unet import UNetResNet

    keep_freed_memory()  # as the engine's Predictor does
    torch.set_num_threads(1)
    net = UNetResNet(encoder="resnet34", in_channels=6, variant="imagery_poi_multitask", base_width=64).eval()
    x = torch.rand(1, 6, 1024, 1024)
    with torch.inference_mode():
        net(x[:, :, :256, :256])
        t0 = time.perf_counter()
        net(x)
    return time.perf_counter() - t0


def _run_single(tiles: Path, ck: Path, out: Path) -> dict:
    wall, s = run_cli(["map-building-use", str(tiles), str(ck), *SETTINGS, "--use-class", str(out)])
    return {"wall": wall, "compute": s["seconds"], "windows": s["tiles_run"], "load": os.getloadavg()[0]}


def _run_cluster(tiles: Path, ck: Path, out: Path, n: int, block_windows: int) -> dict:
    wall, c = run_cli(["map-building-use", str(tiles), str(ck), *SETTINGS, "--use-class", str(out),
                       "--cluster", f"local:{n}", "--block-windows", str(block_windows)])
    return {"wall": wall, "compute": c["blocks_seconds"], "tasks": c["block_task_seconds"], "blocks": c["blocks"],
            "load": os.getloadavg()[0]}


def _best(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["compute"])


def _report(single: dict, cluster: dict) -> None:
    w = single["windows"]
    print(f"one process (1 thread): {single['wall']:.1f} s whole command, {single['compute']:.1f} s engine, "
          f"{w} windows ({single['compute'] / max(w, 1):.3f} s/window; load {single['load']:.1f})")
    for n, c in cluster.items():
        print(f"LocalCluster {n} worker(s): {c['wall']:.1f} s whole command, {c['compute']:.1f} s block phase "
              f"({c['blocks']} blocks; block tasks {c['tasks']:.1f} s in all inside the workers, "
              f"{c['tasks'] / max(w, 1):.3f} s/window; load {c['load']:.1f})")
    for n, c in cluster.items():
        print(f"efficiency N={n}: compute {single['compute'] / (n * c['compute']):.2f} (goal >= 0.8 for N=2), "
              f"whole command {single['wall'] / (n * c['wall']):.2f}")
    c1 = cluster[1]
    print(f"overhead (1 worker / one process): compute {c1['compute'] / single['compute']:.2f} (goal <= 1.1), "
          f"whole command {c1['wall'] / single['wall']:.2f}")


def main() -> None:
    from edifice.core.cluster import BLOCK_WINDOWS

    ap = argparse.ArgumentParser()
    ap.add_argument("--block-windows", type=int, default=BLOCK_WINDOWS)
    ap.add_argument("--mirror", type=int, default=4, help="the Kampala sample mirrored N x N (4: 464 windows)")
    ap.add_argument("--skip-full-model", action="store_true")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each configuration, interleaved; best kept")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_tiny_use_checkpoint

    print(f"load average before: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        tiles = make_mosaic(d, a.mirror)
        ck = make_tiny_use_checkpoint(d / "tiny.pt", variant="imagery_multitask", window=256)
        singles, clusters = [], {1: [], 2: []}
        for rep in range(a.repeat):  # interleaved (one process, 1 worker, 2 workers, ...), best of --repeat
            singles.append(_run_single(tiles, ck, d / f"single_{rep}" / "uc.tif"))
            for n in clusters:
                clusters[n].append(_run_cluster(tiles, ck, d / f"local{n}_{rep}" / "uc.vrt", n, a.block_windows))
        _report(_best(singles), {n: _best(r) for n, r in clusters.items()})
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if not a.skip_full_model:
        print(f"full-size model (ResNet-34 U-Net, width 64, 6 bands), one 1024 px window on 1 CPU thread: "
              f"{full_model_window_s():.1f} s")


if __name__ == "__main__":
    main()
