"""Benchmark: imagery download + mosaic (edifice.core.acquire.imagery) against GDAL's own WMS/XYZ
driver (``gdal_translate`` of a ``<GDAL_WMS>`` description), on the same local tile server and extent.

Server: tests/servers/tile_server.py as a real process on 127.0.0.1 (the stand-in harness), with
``--repeat``: real PNG tiles of the Kampala 7.5 cm drone mosaic at zoom 19 (0.30 m), its covered part
repeated over the extent so every tile holds imagery; encoded tiles are memoised by the server, so
both clients see the same, warm server (one untimed warm-up pass first).

(a) Throughput on a square extent of ``--side`` metres (default 600 m) at GSD 0.3 m (zoom 19):
  * GDAL, the issue's reference: ``gdal_translate`` of the GDAL_WMS (TMS service, zoom 19,
    MaxConnections = ours, 4: GDAL's default is 2, which is no faster here; WMS disk cache off, as
    ours runs without its cache) over the extent's Web Mercator box at the tiles' own resolution
    -> tiled GeoTIFF (no reprojection: less work than ours); its process start-up
    (``gdal_translate --version``, ~0.1 s: dynamic linking, PROJ database) is part of its time
    and is shown on its own;
  * GDAL, the same product as ours: ``gdalwarp`` of the same GDAL_WMS onto our UTM grid (bilinear,
    alpha), single-threaded as gdalwarp runs by default, and with ``-multi -wo NUM_THREADS=<CPUs>``;
  * ours: ``download_imagery`` -> tiled GeoTIFF in UTM 36N at 0.3 m (reprojection included),
    no response cache, ``--concurrency`` requests in flight (default 4);
  * ours, the same product as gdal_translate: EPSG:3857 at the tiles' own resolution (tiles cut
    and pasted, no resampling);
  * ours as a process: ``python -m edifice.core.cli imagery-download`` (interpreter start-up,
    imports and the first use of the compiled warp included: what a one-off CLI user waits).
  Every writer uses our output's creation options (ZSTD level 1, horizontal predictor), so the
  comparison is like with like. All are run in turn in each of ``--repeats`` rounds (ours,
  ref, ours, ref...) and the best of each is kept. Each reports extent area per second and CPU
  seconds, and the tile server's CPU seconds meanwhile (it shares the machine's CPUs: it must not
  be what limits either side); ratios are throughputs, ours / GDAL. Run at 0 and 30 ms of server
  latency per tile (``--latencies``).
(a') The issue's ratio, ours / gdal_translate, again on a larger square extent (``--large-side``,
  default 1500 m: a city is kilometres; fixed costs weigh less there), in the same run.
(b) Peak memory: ``download_imagery`` in a fresh process (VmHWM from /proc/self/status) for the 1x
  extent and the 16x extent (4x the side); the ratio 16x / 1x (goal <= 1.2).

    cd <worktree> && source scripts/env.sh && nice -n 10 python benchmarks/bench_imagery.py --repeats 3

Measured after the round that added the two-pass warp, the 8-block tile look-ahead, compression in
GDAL threads and the cropped tile mosaics (one run, 2 CPUs shared with two other sessions, load
average 4.7-5.9; a loaded machine favours ours, whose work is spread over threads, while
gdal_translate decodes and compresses in one thread: quiet-machine ratios are lower):
  600 m, 0 ms: gdal_translate 1.29 s (CPU 0.82 s), ours 0.53 s (CPU 0.50 s): 2.43x; no warp 2.93x;
  600 m, 30 ms: 1.96 s against 0.75 s: 2.60x; 1500 m, 0 ms: 5.66 s (CPU 3.61) against 2.72 s
  (CPU 3.30): 2.08x; 1500 m, 30 ms: 9.02 s against 4.17 s: 2.16x; peak memory 16x / 1x 1.02;
  ours vs gdalwarp max 1 DN, mean 0.0024 DN (the one-pass warp: 1 DN, 0.0021 DN).
The same code against the code before this round (main at 66264d0), each in its own process, best of
4-8 interleaved runs on the same server, load 5.4-5.5: 600 m, 0 ms 0.622 -> 0.440 s (ratio to
gdal_translate 1.56x -> 2.21x); 1500 m, 0 ms 3.62 -> 2.40 s (1.59x -> 2.40x), CPU 3.68 -> 3.05 s.
Before this round, on a quiet machine: 1.67x, 1.90x (30 ms), 1.64x (1500 m), 1.51x (1500 m, 30 ms).
Strips of 4096 pixels instead of 2048 (core/acquire/imagery.py STRIP_WIDTH; one column of tiles on
each strip edge is fetched and decoded twice): 1500 m (5000 px, one edge instead of two) 439 requests
for 420 tiles, was 462; 2400 m (the 16x extent, 8000 px) 1089 for 1056, was 1155; a city-wide extent
~6 % of its tiles twice, was ~12 %. Same run, same server, interleaved, best of 4, 1500 m, load
5.8-6.1: 0 ms 2.07 -> 1.80 s (ratio to gdal_translate 1.92x -> 2.21x), 30 ms (best of 3, load 4.6-5.4)
4.11 -> 3.77 s (2.25x -> 2.45x); the same CPU at 0 ms (2.31 -> 2.29 s). The tiles kept to bridge the rows of a
strip grow with its width, not the extent (33 -> 57 decoded tiles, 8 -> 14 MiB): peak memory at 16x
252 -> 256 MiB, 16x / 1x 1.04 -> 1.05 (strips of 8192: 271 MiB, 1.12, no refetch below 8192 px;
left out, the memory goal is 1.2). The 600 m extent (2000 px) is one strip either way: unchanged.
The whole benchmark after it, two runs (load 5.2-6.6): 600 m, 0 ms: gdal_translate 0.85 / 0.82 s,
ours 0.63 / 0.55 s: 1.34x / 1.49x (gdal_translate ran faster than in the round above, 1.29 s: the
load of the other sessions, not this change; a third run of 600 m, 0 ms alone, best of 5, load 4.5-4.7:
0.91 s against 0.38 s, 2.41x); 600 m, 30 ms: 2.26x / 2.27x; no warp 1.82x / 1.75x
(0 ms), 2.37x / 2.33x (30 ms); 1500 m, 0 ms: 4.60 s (CPU 2.87) against 2.25 s (CPU 2.60): 2.04x, and
4.20 s against 1.72 s (CPU 2.41): 2.44x; 1500 m, 30 ms: 2.17x / 1.96x; peak memory 16x / 1x 1.05 / 1.05.
Bound by latency at 30 ms: 4 connections x 30 ms per tile make ours at least 81 x 30 / 4 = 0.61 s
(600 m) and 439 x 30 / 4 = 3.29 s (1500 m: 439 requests for 420 tiles, those on the edge of the
4096-pixel strips fetched again so that memory stays flat), so against a quiet gdal_translate (1.37 s,
5.82 s) the ratio cannot pass 2.2x (600 m) and 1.77x (1500 m) there; 1.85x with no tile fetched twice.
Issue 11, 1500 m / 0 ms (quiet main: 1.63x, ours 1.43 s with 2.16 CPU-s, ~1.5 of 2 cores): the main
thread spent 54-65 % of a download blocked in GDAL writes (waiting for the compression threads); meanwhile
no block was submitted and no tile requested, and the block workers stood idle 28-30 % of their time
between blocks. Now the writer runs in its own thread (imagery._BackgroundWriter) and run_bounded queues
one block per worker (queued=): block workers idle 0.6-1.5 % between blocks. Same CPU. Wall time A/B
against main only on a loaded machine (load 4.7-6.3, CPU-bound, so idle cores did not show): best of 6
interleaved rounds 1.68 -> 1.56 s, paired median 1.07x, and runs where either was faster; a quiet
rerun is needed to measure the gain.
Quiet machine (lead, session 7, nothing else running), ours / gdal_translate: final main 1e19fb6 (load
1.2-2.2): 600 m, 0 ms 2.06x (0.48 s, CPU 0.59 s against 0.23 s, CPU 0.36 s); 1500 m, 0 ms 1.86x (2.48 s,
CPU 2.50 s against 1.33 s, CPU 2.06 s); 600 m, 30 ms 1.87x; 1500 m, 30 ms 1.62x; no warp 2.27x; peak
memory 16x / 1x 1.07. Before the background writer (689f9a7, load 1.0-1.4): 2.27x, 1.63x, 1.87x, 1.63x,
no warp 2.36x, memory 1.04. A run in between (final code, load 2.6 -> 1.5): 2.37x, 1.82x, 2.05x, 1.66x.
Issue 11, last goal, 1500 m / 0 ms (quiet main 1.86x): where the CPU went and what was done (session 8;
2 CPUs shared with two other sessions, load 3-6.5 throughout, so ratios are lower than on a quiet machine):
  * tile decoding (the largest share): GDAL 3.10's PNG driver already inflates with libdeflate (~65 % of
    its 1.5 ms a tile, perf) and undoes the row filters in SIMD (~35 %). Measured and left out: pyspng
    (libspng) 2.5-3.1 ms a tile; our own decoder (chunks parsed, libdeflate or ISA-L inflate: 0.8-0.9
    / 0.9-1.1 ms, row filters in numba: 1.1-2.2 ms scalar or packed 4 x 16-bit lanes, Paeth the bulk);
    none beats GDAL, so no new dependency;
  * strip edges: the tiles on the edge between two 4096-pixel strips are held from one strip to the next
    (imagery.CARRIED_TILE_BYTES, 16 MiB at most): 1500 m 420 requests for 420 tiles (was 439), 2400 m
    1056 (was 1089); the 30 ms cap at 1500 m rises to 420 x 30 / 4 = 3.15 s, 2.08x of a quiet
    gdal_translate (was 1.77x);
  * HTTP: a GET without a proxy goes through http.client on a kept-alive connection of its thread
    (http_transport.Transport._get_direct): 0.19-0.22 CPU-ms per 150 KB tile, was 0.46-0.66 (urllib3's
    pool manager), with the GIL held;
  * the output compressed in the writer thread (imagery.COMPRESSION_THREADS 1): GDAL's compression
    threads added ~20 % to the CPU of each block written once writes had a thread of their own;
  * the two-pass warp kernel: 0.82-0.86x the CPU per 512-pixel block (same bytes).
  Output bytes unchanged (sha256 of the 1500 m output the same as main's, same server). main (3dec203) and
  this code, each in its own process, interleaved with gdal_translate, best of 5, load 4.5-6.5: 1500 m,
  0 ms, 1.96 -> 1.59 s (paired main / new 1.05, 1.09, 1.35, 1.48, 1.61), CPU 2.53 -> 2.21 s (mean).
  The whole benchmark, two runs (load 4.3-6.1, then 5.4-6.4): 600 m, 0 ms: 1.93x / 1.75x (no warp 2.23x /
  2.22x); 1500 m, 0 ms: gdal_translate 4.16 s (CPU 2.65) against 2.04 s (CPU 2.08): 2.04x, then 4.96 s
  (CPU 3.20) against 1.55 s (CPU 2.06): 3.20x; 600 m, 30 ms: 2.18x / 2.85x; 1500 m, 30 ms: 2.18x / 2.41x;
  peak memory 16x / 1x 1.09 / 1.10. The load swings both ways; a quiet rerun is needed for the
  quiet-machine ratios (COMPRESSION_THREADS is the one setting to check there: 1 saves CPU, 2 a tail).
Quiet machine after the merge (session 8, nothing else running, load 0.6-1.5), three whole runs in a row:
  600 m, 0 ms 2.38x / 2.11x / 2.10x; 1500 m, 0 ms 2.19x (ours 1.19 s, CPU 1.77 s; gdal_translate 2.59 s,
  CPU 2.61 s) / 1.996x (1.29 vs 2.57 s) / 2.07x (1.11 vs 2.30 s); 600 m, 30 ms 1.95x / 1.86x / 1.86x;
  1500 m, 30 ms 1.76x / 1.66x / 1.58x; peak memory 16x / 1x 1.07 / 1.09 / 1.10.
Session 11, another CPU (AMD EPYC, Zen 5, 2 cores; earlier figures: Intel), quiet (load 0.6-1.2), code unchanged
since session 8, two whole runs (``--repeats 3``; the second ``--skip-memory``):
  600 m, 0 ms: gdal_translate 0.30 / 0.30 s (CPU 0.39 / 0.36), ours 0.13 / 0.13 s (CPU 0.20 / 0.20): 2.30x / 2.40x,
  its start-up (0.04 s) left out 2.00x / 2.10x; no warp 2.46x / 2.80x; against gdalwarp 4.76x / 4.83x;
  1500 m, 0 ms: 1.30 / 1.28 s (CPU 1.35) against 0.62 / 0.60 s (CPU 1.02 / 0.96): 2.09x / 2.15x (start-up left
  out 2.03x / 2.08x); peak memory 16x / 1x 1.09.
  With 30 ms of latency a tile: 600 m 1.63x / 1.62x; 1500 m 1.36x / 1.36x: ours 3.32 / 3.31 s against the floor of
  420 x 30 / 4 = 3.15 s that 4 connections set for any client, gdal_translate 4.50 / 4.52 s (that floor plus its
  1.4 CPU-s, which it does not overlap with the waiting), so no client with 4 connections can pass 1.43x there.
  Where a 1500 m, 0 ms download's 0.63 s go (this CPU, thread timeline): 100 blocks warped in 0.17 CPU-s by 2
  workers that mostly wait for their tiles, the writer thread 0.21 CPU-s, the main thread 0.03; the rest of the
  1.0 CPU-s in the 4 fetching threads (HTTP and GDAL's PNG decoding); both cores ~85 % busy from the first block
  (0.02 s) to the last write (0.65 s).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "tests" / "servers" / "tile_server.py"
MOSAIC = "/work/shared/data/kampala/kampala_rgb_7p5cm_epsg3857.tif"
CENTRE = (32.5950, 0.3505)  # lon, lat (Kampala)
GSD, ZOOM = 0.3, 19
HALF = 20037508.342789244
TILE_RES = 2 * HALF / (256 * 2 ** ZOOM)  # metres of Web Mercator per pixel at ZOOM
#: GeoTIFF creation options of every writer in the comparison: those of edifice's output (like with like).
TIFF_OPTIONS = ["-co", "TILED=YES", "-co", "COMPRESS=ZSTD", "-co", "ZSTD_LEVEL=1", "-co", "PREDICTOR=2"]


def _standin():
    spec = importlib.util.spec_from_file_location("bench_standin", ROOT / "tests" / "servers" / "standin.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def utm_extent(side_m: float) -> tuple[float, float, float, float]:
    """Square extent of ``side_m`` metres around CENTRE, in EPSG:32636."""
    from pyproj import Transformer

    x, y = Transformer.from_crs(4326, 32636, always_xy=True).transform(*CENTRE)
    h = side_m / 2
    return x - h, y - h, x + h, y + h


def run_ours(url: str, extent, out: str, concurrency: int, web_mercator: bool = False) -> dict:
    """Our download into UTM 36N at GSD, or (``web_mercator``) into EPSG:3857 at the tiles' own
    resolution, the product of gdal_translate (our tiles are then cut, not resampled)."""
    from edifice.core.acquire.imagery import download_imagery
    from edifice.core.acquire.imagery_sources import ImagerySource

    src = ImagerySource("xyz", url + "/xyz/{z}/{x}/{y}.png", max_zoom=ZOOM)
    if web_mercator:
        return download_imagery(src, extent, "EPSG:32636", out, gsd_m=TILE_RES, crs="EPSG:3857",
                                max_concurrency=concurrency, cache=None)
    return download_imagery(src, extent, "EPSG:32636", out, gsd_m=GSD, max_concurrency=concurrency, cache=None)


def gdal_wms_xml(url: str, concurrency: int) -> str:
    return f"""<GDAL_WMS>
  <Service name="TMS"><ServerUrl>{url}/xyz/${{z}}/${{x}}/${{y}}.png</ServerUrl></Service>
  <DataWindow><UpperLeftX>{-HALF}</UpperLeftX><UpperLeftY>{HALF}</UpperLeftY><LowerRightX>{HALF}</LowerRightX>
    <LowerRightY>{-HALF}</LowerRightY><TileLevel>{ZOOM}</TileLevel><TileCountX>1</TileCountX><TileCountY>1</TileCountY>
    <YOrigin>top</YOrigin></DataWindow>
  <Projection>EPSG:3857</Projection><BlockSizeX>256</BlockSizeX><BlockSizeY>256</BlockSizeY><BandsCount>4</BandsCount>
  <MaxConnections>{concurrency}</MaxConnections><ZeroBlockHttpCodes>204,404</ZeroBlockHttpCodes>
</GDAL_WMS>"""


def run_gdal(xml_path: str, extent, out: str) -> None:
    from pyproj import Transformer

    t = Transformer.from_crs(32636, 3857, always_xy=True)
    xs, ys = t.transform([extent[0], extent[2], extent[0], extent[2]], [extent[1], extent[1], extent[3], extent[3]])
    env = dict(os.environ, GDAL_HTTP_USERAGENT="bench", CPL_VSIL_CURL_CACHE_SIZE="0", GDAL_DEFAULT_WMS_CACHE_PATH="")
    subprocess.run(["gdal_translate", "-q", "-projwin", str(min(xs)), str(max(ys)), str(max(xs)), str(min(ys)),
                    "-b", "1", "-b", "2", "-b", "3", *TIFF_OPTIONS,
                    "--config", "GDAL_ENABLE_WMS_CACHE", "NO", xml_path, out],
                   check=True, env=env)


def run_gdal_startup() -> None:
    """gdal_translate's process start-up alone."""
    subprocess.run(["gdal_translate", "--version"], check=True, capture_output=True)


def run_cli(url: str, extent, out: str, concurrency: int) -> None:
    """Our download as a one-off CLI process (the product of :func:`run_ours`)."""
    subprocess.run([sys.executable, "-m", "edifice.core.cli", "imagery-download", out, "--extent",
                    ",".join(map(str, extent)), "--extent-crs", "EPSG:32636", "--xyz", url + "/xyz/{z}/{x}/{y}.png",
                    "--max-zoom", str(ZOOM), "--gsd", str(GSD), "--max-concurrency", str(concurrency), "--no-cache"],
                   check=True, capture_output=True)


def run_gdalwarp(xml_path: str, grid_bounds, out: str, threads: int) -> None:
    """The same product as ours with GDAL: the WMS warped onto the same UTM grid (bilinear, with
    an alpha band like ours), with ``threads`` warp threads (and -multi: I/O beside the warp)."""
    subprocess.run(["gdalwarp", "-q", "-overwrite", "-t_srs", "EPSG:32636", "-te", *map(str, grid_bounds),
                    "-tr", str(GSD), str(GSD),
                    "-r", "bilinear", "-dstalpha", *TIFF_OPTIONS, "-wo", f"NUM_THREADS={threads}",
                    *(["-multi"] if threads > 1 else []),
                    "--config", "GDAL_ENABLE_WMS_CACHE", "NO", xml_path, out], check=True)


def _run_timed(fn, server_pid: int | None = None) -> tuple[float, float, float]:
    """Wall seconds of ``fn()``, its CPU seconds (this process and its children: the tile
    server is neither) and the tile server's CPU seconds meanwhile (``server_pid``)."""
    r0s, r0c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    s0 = _process_cpu(server_pid)
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    s1 = _process_cpu(server_pid)
    r1s, r1c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, sum(b.ru_utime - a.ru_utime + b.ru_stime - a.ru_stime for a, b in ((r0s, r1s), (r0c, r1c))), s1 - s0


def _process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of process ``pid`` so far; 0 without one."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_interleaved(fns: dict, repeats: int, server_pid: int | None = None) -> dict:
    """Best (wall, CPU, server CPU) of ``repeats`` rounds for each of ``fns`` (the round of least
    wall time), run in turn within each round (ours, ref, ours, ref...) so that a change of
    machine load hits all of them alike."""
    best = {k: (math.inf, math.inf, math.inf) for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            best[k] = min(best[k], _run_timed(fn, server_pid))
    return best


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(key)


def child(url: str, side: float, out: str, concurrency: int) -> None:
    """Run one download in this (fresh) process; print its peak memory as JSON."""
    import edifice.core.acquire.imagery  # noqa: F401 - imports before the baseline
    base = _status_mb("VmRSS")
    t0 = time.perf_counter()
    summary = run_ours(url, utm_extent(side), out, concurrency)
    print(json.dumps({"base_mb": base, "peak_mb": _status_mb("VmHWM"), "seconds": time.perf_counter() - t0,
                      "pixels": summary["width"] * summary["height"], "tiles": summary["tiles_requested"]}))


def measure_memory(url: str, side: float, out: str, concurrency: int) -> dict:
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", url, str(side), out, str(concurrency)],
                       check=True, capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--side", type=float, default=600.0, help="1x extent side, metres")
    p.add_argument("--large-side", type=float, default=1500.0,
                   help="side (metres) of a larger extent for ours / gdal_translate alone (0: none)")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--latencies", default="0,30", help="server latencies to test, ms per tile (0,30)")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a.child[0], float(a.child[1]), a.child[2], int(a.child[3]))
    with tempfile.TemporaryDirectory() as tmp:
        for i, latency in enumerate([] if a.skip_throughput else [float(v) for v in a.latencies.split(",")]):
            with _server(Path(tmp) / f"srv{i}", latency) as server:
                throughput(server, a, Path(tmp), latency)
        if not a.skip_memory:
            with _server(Path(tmp) / "srvm", 0.0) as server:
                memory(server.url, a, Path(tmp))


def _server(state: Path, latency_ms: float):
    return _standin().start_standin(SERVER, state, ["--source", MOSAIC, "--repeat", "--latency-ms", latency_ms])


def throughput(server, a, tmp: Path, latency_ms: float) -> None:
    url = server.url
    extent = utm_extent(a.side)
    xml = tmp / "tms.xml"
    xml.write_text(gdal_wms_xml(url, a.concurrency))
    warm = run_ours(url, extent, str(tmp / "warm.tif"), a.concurrency)   # untimed: warms the server's memo
    area_km2 = (a.side / 1000) ** 2
    import rasterio

    with rasterio.open(tmp / "warm.tif") as ds:
        grid_bounds = tuple(ds.bounds)
    gdal_threads = os.cpu_count() or 1
    t = timed_interleaved({
        "ours": lambda: run_ours(url, extent, str(tmp / "ours.tif"), a.concurrency),
        "ours_wm": lambda: run_ours(url, extent, str(tmp / "ours_wm.tif"), a.concurrency, web_mercator=True),
        "translate": lambda: run_gdal(str(xml), extent, str(tmp / "gdal.tif")),
        "startup": run_gdal_startup,
        "cli": lambda: run_cli(url, extent, str(tmp / "cli.tif"), a.concurrency),
        "warp": lambda: run_gdalwarp(str(xml), grid_bounds, str(tmp / "gdalwarp.tif"), 1),
        "warp_mt": lambda: run_gdalwarp(str(xml), grid_bounds, str(tmp / "gdalwarp_mt.tif"), gdal_threads)},
        a.repeats, server.proc.pid)
    print(f"(a) throughput, server latency {latency_ms:g} ms per tile, {a.side:.0f} m x {a.side:.0f} m at {GSD} m "
          f"(zoom {ZOOM}, {warm['tiles_requested']} tiles, {a.concurrency} connections each), best of {a.repeats} "
          f"interleaved rounds, load average {_load()} on {os.cpu_count()} CPUs:")
    rows = (("translate", "GDAL WMS driver, gdal_translate (Web Mercator, no warp)"),
            ("startup", "  of which its process start-up (gdal_translate --version)"),
            ("warp", "GDAL WMS driver, gdalwarp to the same UTM grid"),
            ("warp_mt", f"  the same, -multi -wo NUM_THREADS={gdal_threads}"),
            ("ours", "edifice download_imagery (same UTM grid)"),
            ("ours_wm", "edifice, Web Mercator at the tiles' resolution (no warp)"),
            ("cli", "edifice as a CLI process (same UTM grid; start-up, imports)"))
    _print_rows(t, rows, area_km2)
    ours = t["ours"][0]
    print(f"    throughput ours / gdal_translate (the issue's reference; goal >= 2): {t['translate'][0] / ours:.2f}x; "
          f"its start-up left out: {(t['translate'][0] - t['startup'][0]) / ours:.2f}x; "
          f"ours as a CLI process / gdal_translate: {t['translate'][0] / t['cli'][0]:.2f}x")
    print(f"    throughput ours / gdalwarp (the same product): {t['warp'][0] / ours:.2f}x; "
          f"ours / gdalwarp -multi: {t['warp_mt'][0] / ours:.2f}x; CPU seconds gdalwarp / ours: "
          f"{t['warp'][1] / t['ours'][1]:.2f}")
    print(f"    throughput ours / gdal_translate, both Web Mercator at the tiles' resolution (the same product): "
          f"{t['translate'][0] / t['ours_wm'][0]:.2f}x", flush=True)
    compare_outputs(tmp)
    if a.large_side:
        throughput_large(server, a, tmp, latency_ms)


def throughput_large(server, a, tmp: Path, latency_ms: float) -> None:
    """The issue's ratio (ours / gdal_translate) on a larger extent (a city is kilometres):
    fixed costs (process start-up, planning, the first and last tiles) weigh less there."""
    url, side = server.url, a.large_side
    extent = utm_extent(side)
    xml = tmp / "tms.xml"
    warm = run_ours(url, extent, str(tmp / "warm_large.tif"), a.concurrency)  # untimed: warms the server's memo
    t = timed_interleaved({
        "ours": lambda: run_ours(url, extent, str(tmp / "ours_large.tif"), a.concurrency),
        "translate": lambda: run_gdal(str(xml), extent, str(tmp / "gdal_large.tif")),
        "startup": run_gdal_startup}, a.repeats, server.proc.pid)
    print(f"(a') the same at {side:.0f} m x {side:.0f} m, server latency {latency_ms:g} ms ({warm['tiles_requested']} "
          f"tiles), best of {a.repeats} interleaved rounds, load average {_load()}:")
    _print_rows(t, (("translate", "GDAL WMS driver, gdal_translate (Web Mercator, no warp)"),
                    ("startup", "  of which its process start-up (gdal_translate --version)"),
                    ("ours", "edifice download_imagery (UTM grid)")), (side / 1000) ** 2)
    print(f"    throughput ours / gdal_translate (goal >= 2): {t['translate'][0] / t['ours'][0]:.2f}x; its start-up "
          f"left out: {(t['translate'][0] - t['startup'][0]) / t['ours'][0]:.2f}x", flush=True)


def _print_rows(t: dict, rows, area_km2: float) -> None:
    for key, label in rows:
        wall, cpu, server_cpu = t[key]
        print(f"    {label:<56} {wall:7.2f} s  {area_km2 / wall:8.4f} km2/s  CPU {cpu:6.2f} s  "
              f"server CPU {server_cpu:5.2f} s")


def compare_outputs(tmp: Path) -> None:
    """How far our outputs are from GDAL's same products (pixels valid in both)."""
    import numpy as np
    import rasterio

    with rasterio.open(tmp / "ours.tif") as o, rasterio.open(tmp / "gdalwarp.tif") as w:
        ours, ref = o.read().astype(int), w.read().astype(int)
    valid = (ours[0] > 0) & (ref[3] >= 128)
    agree = ((ours[0] > 0) == (ref[3] >= 128)).mean()
    print(f"    outputs: ours vs gdalwarp (UTM): max |diff| {np.abs(ours - ref[:3])[:, valid].max()} DN, mean "
          f"{np.abs(ours - ref[:3])[:, valid].mean():.4f} DN, valid masks agree on {100 * agree:.3f} % of pixels")
    with rasterio.open(tmp / "ours_wm.tif") as o, rasterio.open(tmp / "gdal.tif") as g:
        col, row = ~g.transform @ (o.transform.c, o.transform.f)
        col, row = round(col), round(row)
        ours, ref = o.read().astype(int), g.read().astype(int)
    r0, c0 = max(row, 0), max(col, 0)
    h, w = min(ref.shape[1], row + ours.shape[1]) - r0, min(ref.shape[2], col + ours.shape[2]) - c0
    a, b = ours[:, r0 - row:r0 - row + h, c0 - col:c0 - col + w], ref[:, r0:r0 + h, c0:c0 + w]
    valid = a[0] > 0
    print(f"    outputs: ours vs gdal_translate (Web Mercator): max |diff| {np.abs(a - b)[:, valid].max()} DN over "
          f"{valid.sum()} pixels valid in ours", flush=True)


def _load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def memory(url: str, a, tmp: Path) -> None:
    m1 = measure_memory(url, a.side, str(tmp / "m1.tif"), a.concurrency)
    m16 = measure_memory(url, 4 * a.side, str(tmp / "m16.tif"), a.concurrency)
    print("(b) peak memory (VmHWM of a fresh process; baseline = RSS after imports):")
    for label, m in (("1x", m1), ("16x", m16)):
        print(f"    {label:>3}: {m['pixels'] / 1e6:6.1f} Mpx  {m['tiles']:5d} tiles  peak {m['peak_mb']:7.1f} MiB  "
              f"baseline {m['base_mb']:6.1f} MiB  {m['seconds']:6.1f} s")
    print(f"    ratio 16x / 1x peak: {m16['peak_mb'] / m1['peak_mb']:.2f} (goal <= 1.2); above baseline: "
          f"{(m16['peak_mb'] - m16['base_mb']) / max(m1['peak_mb'] - m1['base_mb'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
