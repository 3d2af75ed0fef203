"""CPU milliseconds per window of each thread of the building-use engine, the network replaced by a no-op.

On a GPU the model is quick (an H100: ~4 ms a 1024 px window in bf16) and the engine's run is bounded by its
slowest serial stage: the calling thread (batching, the model call, cutting each window's part out of the batch's
result), the one writer thread (finalising, writing the three outputs, the overviews' blocks) and the readers
(decoding, scaling, mirroring). This prints each stage's CPU ms per window (time.thread_time() around each thread's
loop, and around finalize / write / overview add inside the writer), so that the bound of a GPU run can be read on
any machine: windows/s <= 1000 / (the largest of the model thread's ms + the GPU's ms, and the writer's ms).

    python benchmarks/bench_engine_threads.py --size 4608 --io-threads 2 --workers 2 --pois edifice

Session 10, this 2-core machine (4608 px, 36 windows, edifice's POI maps, one run each; CI running beside it):
io-threads 1: readers 64.8 ms (two threads together), model thread 8.7, writer 17.7 (finalize 5.9, writes 11.4 of
which overview add 4.3); io-threads 2: readers 12.0 (decoding moved to GDAL's threads), model thread 7.4, writer
12.9 (finalize 6.2, writes 6.3 of which overview add 2.9). On the H100 (16 cores) the run gave 63-67 windows/s
(~15 ms a window) with 4.5 ms a window inside the model: the model thread and the writer are the bound there.
"""
from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_inference as bench  # noqa: E402

STAGES = ("readers", "model thread", "writer thread", "writer: finalize", "writer: outputs written",
          "writer: of which overview blocks")


def _timed(acc: dict, name: str, f):
    @functools.wraps(f)
    def wrapper(*a, **k):
        t0 = time.thread_time()
        try:
            return f(*a, **k)
        finally:
            acc[name] += time.thread_time() - t0
    return wrapper


def instrument(acc: dict, io_threads: int) -> None:
    """Wrap the engine's thread loops and writer steps (CPU time into ``acc``); the no-op network; GDAL threads."""
    import edifice.core.sliding_window as sw
    import edifice.core.use.building_use_map as bum

    pipe = sw._Pipeline
    pipe._reader_loop = _timed(acc, "readers", pipe._reader_loop)
    pipe._model_loop = _timed(acc, "model thread", pipe._model_loop)
    pipe._writer_loop = _timed(acc, "writer thread", pipe._writer_loop)
    bum.UseJob.finalize = _timed(acc, "writer: finalize", bum.UseJob.finalize)
    sw._Outputs.write = _timed(acc, "writer: outputs written", sw._Outputs.write)
    sw.TileOverviews.add = _timed(acc, "writer: of which overview blocks", sw.TileOverviews.add)
    bum.Predictor = bench._noop_predictor()
    sw.host_io_threads = lambda predictor: io_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=4608, help="raster side (px; 4608 = 6 x 6 windows at 1024/128)")
    ap.add_argument("--io-threads", type=int, default=1,
                    help="GDAL threads (the engine gives a GPU run every core)")
    ap.add_argument("--workers", type=int, default=2, help="reader threads")
    ap.add_argument("--pois", choices=("deflate", "edifice"), default="edifice",
                    help="the bench's DEFLATE float32 POI maps or as edifice:poiprobability writes them")
    a = ap.parse_args()
    cfg = {"device": "cpu", "encoder": "resnet34", "bands": 6, "base_width": 8, "window": 1024, "margin": 128,
           "batch": 16, "precision": "fp32", "compile": False, "compression": None, "workers": a.workers,
           "probability_type": None}
    acc: dict = defaultdict(float)
    instrument(acc, a.io_threads)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        img, ck, poi = bench.make_inputs(d, a.size, cfg)
        if a.pois == "edifice":
            poi = bench.edifice_poi(poi)
        out = d / "out"
        out.mkdir()
        bench.pipeline(img, ck, poi, out, cfg)  # warm-up (file cache, compiled kernels)
        acc.clear()
        s = bench.pipeline(img, ck, poi, out, cfg)
    n = s["tiles_run"]
    print(f"{a.size} px, {n} windows, GDAL threads {a.io_threads}, {a.workers} readers, {a.pois} POI maps: wall "
          f"{s['wall']:.2f} s ({n / s['wall']:.1f} windows/s on this machine); CPU ms per window:")
    for name in STAGES:
        print(f"  {name:34s} {1000 * acc[name] / n:7.2f}")


if __name__ == "__main__":
    main()
