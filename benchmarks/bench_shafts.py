"""Benchmark: SHAFTS-compatible height/footprint inference (core.height.shafts_inference) against SHAFTS's own
inference procedure, at the THU extent and at 10x and 100x its area, with the implementation before this
optimisation measured in the same run. One command prints the whole table:

    PYTHONPATH=<dir holding edifice> nice -n 10 python benchmarks/bench_shafts.py [--sizes 1,10,100]
        [--threads 2] [--repeat 3] [--before-rev 11b1056] [--previous-rev fdc00d5] [--no-memory] [--no-streamlined]
    PYTHONPATH=<dir holding edifice> python benchmarks/bench_shafts.py --memory [--sides 0.1,0.5]

Per size it runs, interleaved (after, before, after_bf16, shafts, previous, streamlined, after, ...) and keeps the best of
``--repeat`` (1 at sizes above 10x: a SHAFTS run there takes minutes):
  after        predict_height_footprint_shafts as it is now (defaults: batch 64 on CPU / 512 on GPU, BatchNorm
               folded into the convolutions, channels-last batches gathered from strided windows, inference_mode;
               on a CPU one worker thread per torch thread, each running whole batches with one intra-op
               thread: core/batch_workers.py; on a CPU in fp32 the 3x3 stride-1 convolutions by Winograd
               F(5,3), models/winograd.py: with numba those of >= 64 channels, compiled cache-blocked
               transforms and products (models/_winograd_compiled.py, models/_gemm_compiled.py);
               without numba those of >= 128 channels; the ReLU
               after each Winograd conv1 applied in its output transform, and with numba each SE block's
               tail, relu(out * w + identity), in one compiled pass: models/shafts.fuse_relu_and_se_tails);
  torch_wino   ``after`` with the compiled transforms off (as without numba; the network of commit 66264d0);
  after_bf16   the same with precision="bf16" (opt-in; not SHAFTS's numbers: see the printed max difference);
  previous     the same function as it was at ``--previous-rev`` (default fdc00d5: batches of 64 split across
               the cores by torch's OpenMP threads, before the batch-parallel CPU workers; '' skips it);
  before       the same function as it was at ``--before-rev`` (git show of core/shafts_inference.py, its path then,
               loaded as a module; default 11b1056, the main commit this work started from, batch 64);
  shafts       SHAFTS's own procedure as its code does it (src/shafts/inference.py
               pred_height_from_tiff_DL_patch_MTL at 62d2029 and the helpers it calls; written here, not
               imported: SHAFTS needs albumentations, h5py, ... and the PyPI release builds the 100 m
               multi-task network wrongly): gdal.Warp of S-1 and S-2 to check the extent, gdal.Warp clips
               to temporary GeoTIFFs, ``ReadAsArray() * 1.0``, scipy ``griddata`` nearest fill of every
               S-1/S-2 band, min/q98/q02 rescale of the S-2 bands, then for each batch of 64 output pixels
               (SHAFTS's CLI default) one patch per pixel (np.zeros + np.pad per raster), per-patch
               backscatter conversion, uint8 cast, ToTensor-style scaling, torch.no_grad forward of the
               plain network (NCHW float32, BatchNorm unfolded), Float64 GeoTIFF outputs. Deviation, so
               outputs can be compared: declared nodata is read as NaN (SHAFTS reads it as a value);
  streamlined  the reference this script used before (edt fill, whole-band conversion, one batch per output
               row): faster than SHAFTS, printed for continuity.
Ratios are time / shafts time at the same size. Max differences of after vs before and after vs shafts are
printed (heights in m, footprint fraction). Unless --no-memory, it also prints peak resident memory (VmHWM of a
fresh subprocess running one ``after`` and one ``before`` call) per size and relative to 1x.

Session 12, the AMD EPYC (Zen 5, 2 cores, AVX-512) again, quiet (load 0.5-1.9), ``--no-memory --no-streamlined
--runners after,shafts``, ``--sizes 1,10 --repeat 2`` then ``--sizes 100 --repeat 1``, at each step of the work:
  products compiled (models/_gemm_compiled.py): 1x 0.140 (0.75 s against 5.35 s), 10x 0.234 (5.90 against 25.19 s),
  100x 0.300 (62.32 against 208.04 s; CPU 0.368);
  + compiled transforms on one-tile maps, chunks no smaller than the filters, 64 ch 5 x 5 by Winograd: 100x 0.278
  (56.65 against 203.75 s; CPU 0.342);
  + the transforms as vector kernels (models/_winograd_compiled.py): **1x 0.137** (0.75 against 5.45 s; CPU 0.199),
  **10x 0.204** (5.35 against 26.25 s; CPU 0.270), **100x 0.255** (54.37 against 213.08 s; CPU 0.312); the same
  commands again: 1x 0.123 (0.68 against 5.48 s), 10x 0.216 (5.25 against 24.32 s), 100x 0.268 (54.04 against
  201.85 s; CPU 0.328): ours steady, SHAFTS's time moving by a few percent between runs.
  max |after - shafts| height 4.58e-5 / 5.34e-5 / 5.34e-5 m (100x: the one pixel across the 2 m cut left out, as
  in session 11), footprint 1.43e-6 / 1.67e-6 / 2.09e-6, same nodata. Ours at 100x: 0.935 CPU-ms a patch, of which
  the network alone (one thread, batch 64, caches flushed between batches) 0.81-0.85 ms (1.32 in session 11).
  Batches of 128 / 256 instead of 64 (network alone, caches flushed, before the vector transforms): 0.943 / 0.908
  against 0.961 ms a patch
  (weights streamed from memory less often); 64 kept (fewer patches in flight, both workers busy on small extents).
Session 11, another CPU (AMD EPYC, Zen 5, 2 cores, AVX-512; the figures below it are Intel), quiet (load 1.0-1.9),
code unchanged since session 10, ``--no-memory --no-streamlined --runners after,shafts``:
  ``--sizes 1,10 --repeat 2``: 1x after 0.94 s against SHAFTS 5.29 s: 0.178 wall / 0.276 CPU; 10x 7.77 against 25.77
  s: 0.301 / 0.415. Again with ``--repeat 3``: 1x 0.186 / 0.290; 10x 7.96 against 24.18 s: 0.329 / 0.445.
  ``--sizes 100 --repeat 1``: after 76.6 s (CPU 149.3 s) against SHAFTS 192.6 s (CPU 297.6 s): 0.398 / 0.502.
  Both run faster here than on the Intel machines (ours 76.6 s against 113-140 s at 100x), SHAFTS much more
  (192.6 against 355-469 s): its plain network is oneDNN's direct convolution, at ~260 GFLOP/s a core on this CPU,
  while our Winograd products go through MKL, at ~100 GFLOP/s here (models/winograd.py), so the Winograd layers
  gain 0.8-0.9x instead of ~0.6x. Our 100x run is the network (1.34 CPU-ms a patch; the network alone, one thread,
  batch 64: 1.32 ms). max |after - shafts| at 100x: height 5.34e-5 m over every pixel but one, where ours is
  exactly 2.0 m and SHAFTS's value fell just under its 2 m cut and was written 0 (now counted apart, _across_cut);
  footprint 1.76e-6. Ours is deterministic (two runs identical) and within 3.1e-5 m of our network without
  Winograd at 100x. Batches of 128 instead of 64: 1.26 against 1.33 ms a patch on this CPU (network alone, one
  thread), 2.45 against 2.26 on the Intel one: 64 kept.
Branch shafts17f (models/_winograd_compiled.py: B^T and A^T entries written out, zero terms left out, the
same fused multiply-adds; V and M point-major, so the 49 products take contiguous operands; the inference
keeps freed memory for reuse, core/host_tuning.keep_freed_memory). Outputs bit-identical to main (tested
layer by layer against the kernels before; see the max differences below, equal to session 8's):
  single layers (thread CPU time, one thread, batch 64, interleaved with main's kernels, min of 60, load 3):
  64 ch 20 x 20 12.1 ms against 14.8 (0.82x), 128 ch 10 x 10 6.65 against 7.21 (0.92x). The network alone
  (two workers, batches of 64, CPU per patch, interleaved with main's kernels, 8 rounds, load 2.7-2.9):
  best 1.91 against 2.40 ms, median 2.54 against 2.70. First 10x run in a process: 680,000 page faults and
  2.1 s of system time (of 35 CPU-s) before, 53,000 and 0.3 s with the freed memory kept.
  Whole inference against main (1d02a5c, run from an exported tree), 10x, separate processes,
  interleaved, 5 rounds, load 2.9 -> 1.8: wall best 11.76 s against 12.11 (0.97x), per-round ratios
  0.85-1.00 (median 0.97); CPU best 22.88 s against 23.66; outputs bit-identical (max |new - main| 0).
  ``--sizes 100 --repeat 1 --no-memory --no-streamlined --runners after,shafts`` (load 4.3 -> 3.9, the
  last ~1.5 min of SHAFTS's run beside a nice-19 test run): after 405.8 s (CPU 325.8 s), SHAFTS 1854.7 s
  (CPU 1952.4 s): 0.219 wall / 0.167 CPU. NOT comparable with the quiet figures: at this load SHAFTS's
  OpenMP batches took 3.4x the CPU time of its quiet run (573.8 s), ours 1.2x (269.0 s); rerun quiet for
  the goal figure. max |after - shafts| height 5.34e-5 m, footprint 1.73e-6, same nodata (session 8's
  figures exactly).
  ``--sizes 10 --repeat 2 --no-memory --no-streamlined --runners after,shafts`` (load 1.4 -> 1.6): after
  11.69 s (CPU 22.70 s), SHAFTS 51.90 s (CPU 76.50 s): 0.225 wall / 0.297 CPU (session 7, quiet: 0.275 /
  0.365); max |after - shafts| height 4.58e-5 m, footprint 1.61e-6, same nodata.
  ``--sizes 100 --repeat 1 --no-memory --no-streamlined --runners after,shafts`` again, quieter (load 1.6
  -> 1.9): after 113.3 s (CPU 222.1 s), SHAFTS 424.5 s (CPU 669.3 s): 0.267 wall / 0.332 CPU; max |after -
  shafts| height 5.34e-5 m, footprint 1.73e-6, same nodata. Ours is 0.83x session 8's 137.2 s (CPU
  222 against 269 s), more than the 0.97x measured against main side by side at 10x: part of it is the
  machine, and SHAFTS's 424.5 s is at the slow end of its 355-469 s; one run each, not best of N.
  Where the time goes (main's kernels; forward hooks on every module, one thread, batch 64): the four
  64-channel 20 x 20 Winograd convolutions 33 %, the 128- and 256-channel Winograd ones 31 %, the two
  stride-2 3x3 convolutions (oneDNN direct) 11 %, the DEM branch 10 %, 1x1 shortcuts 3 %, the stem 2 %;
  of a 64-channel 20 x 20 layer the products were 47 %, the input transform (with its padded copy) 29 %,
  the output transform 18 %. The products (MKL bmm) run at 90-110 GFLOP/s on one core, as fast as one
  large sgemm here (93-108 GFLOP/s), the direct convolutions at 80-100: the network is near the core's
  arithmetic peak, so mainly fewer operations would make it faster.
  Levers measured and not taken: (1) work thrown away: every output pixel of these scenes is valid (11,236
  of 11,236 at 10x) and patches whose centre has no Sentinel data or whose DEM patch has a gap are already
  skipped (SHAFTS runs them): nothing left to skip; (2) overlap of neighbouring patches: every SE block
  pools per patch and each layer's zero padding reaches one pixel further in, so only the stem and the
  inside of the first convolution could be shared (about 5 % of the operations, not bit-identical: other
  convolution kernels on the whole raster); (3) the stride-2 convolutions run at ~100 GFLOP/s already;
  computing them with fewer products (polyphase Winograd, ~0.54x the multiplications) changes the
  rounding, so the outputs would no longer be identical to main's (the agreement with SHAFTS is at
  5.3e-5 m of its ~5e-5 m budget); (4) two processes of one thread instead of two worker threads: 2.35
  against 2.28 CPU-ms per patch (60 batches, load 3.8): no gain; (5) 512-bit vectors for the transforms
  (no gain) and each first pass over one run of 7 x C floats (no gain); the written-out entries kept.
Branch shafts17e (fused ReLU and SE tails, clip by slices; live Sentinel branch in the checkpoint; figures
from here up compare both branches), "previous" = main at 3dec203 (``--previous-rev 3dec203``):
  network alone, one thread, batches of 64, interleaved, best of 20-30: 2.23-2.33 ms per patch against
  2.29-2.40 without the fusions (0.973x, load 3.1 and 5.0); outputs bit-identical (tested). Preparing the
  100x clip: 2.9 s instead of 4.2 s (the source pixel size is kept, so rows and columns are slices).
  ``--sizes 100 --repeat 1 --no-memory --no-streamlined --runners after,previous,shafts --previous-rev
  3dec203`` (load 4.1 -> 2.0, it changed during the 27 minutes): after 0.343 wall / 0.309 CPU (310.2 s at
  0.94 of a core, 291.4 CPU-s), previous 0.156 / 0.291 (140.7 s on 1.95 cores, at the quiet end), SHAFTS
  903.0 s; NOT a quiet-machine figure (after and previous ran at different loads: compare neither wall
  nor CPU between them). max |after - previous| 0 (height and footprint); max |after - shafts| height
  5.34e-5 m, footprint 1.73e-6, same nodata (Sentinel branch live).
  ``--sizes 10 --threads 2 --repeat 2 --runners after,previous,shafts --previous-rev 3dec203`` (load
  3.8 -> 3.8): after 0.289 / 0.257 (26.7 s on 1.07 cores), previous 0.188 / 0.300 (17.4 s on 1.92 cores),
  SHAFTS 92.2 s; max |after - previous| 0; max |after - shafts| height 4.58e-5 m, footprint 1.61e-6.
  Tried and dropped (same machine, one thread, batch 64): the Winograd transforms on whole planes (tiles
  gathered into 49 planes of tiles x C, each 1-D transform one long vector loop): bit-identical but 1.5x
  the time (the gather and scatter of 64-float runs cost more than the loops saved); a fully unrolled
  per-channel body with literal coefficients: not vectorised (too many pointers for LLVM's run-time alias
  checks), 10 s to compile; the column pass as one run of 7 C: 4x slower (not vectorised); q-major V and M
  (contiguous bmm operands): no gain beyond noise; chunk sizes 1-12 MB: flat; batches of 32/64/128/256:
  2.38/2.26/2.45/2.41 ms per patch (64 stays); oneDNN conv + ReLU post-op (torch.ops.mkldnn.
  _convolution_pointwise): 1.0-1.5x slower than conv + relu_; im2col + GEMM for the stride-2 layers: 1.1-1.5x
  slower than oneDNN's direct convolution. Where the CPU goes (torch profiler, one thread): bmm (the
  Winograd products) 40 %, oneDNN direct convolutions (stem, stride-2, 1x1, the DEM branch) 34 %, the
  numba transforms besides; the 100x run is 95 % network (prep 2.9 s, gathers 5.6 us per patch).
Measured with the compiled Winograd transforms (branch shafts17d; NOTE: the random checkpoint of that time
had a dead Sentinel branch (every feature exactly 0 after its last ReLU), so the max differences from here
down only see the DEM branch; the Sentinel-branch agreement was checked by tests/unit/test_winograd.py):
  network alone, two worker threads each running batches of 64 (the inference's own scheme), interleaved,
  best of 8: CPU per patch 2.11 ms with the compiled transforms against 2.42 ms with the torch ones
  (0.87x; load 1.6-2.3); 0.85-0.9x in repeated runs at load 4-5.
  ``--sizes 100 --repeat 1 --runners after,shafts`` (load 4.5 -> 3.6): 100x after 0.412 wall / 0.282 CPU
  (after 469.2 s, 334.8 CPU-s = 3.0 CPU-ms per pixel, on 0.71 of a core under load; SHAFTS 1138.6 s);
  max differences height 5.34e-5 m, footprint 5.13e-6, same nodata. Not a quiet-machine figure: the
  load changed during the 27 minutes; rerun quiet for the wall ratio.
  ``--sizes 1,10 --repeat 1 --runners after,shafts,torch_wino`` (load 2.4-3.9): 1x after 0.180 / 0.169,
  torch_wino 0.126 / 0.160 (one repeat of a 3-4 s run: noise); 10x after 0.077 / 0.098 (27.6 s, 27.75
  CPU-s = 2.47 CPU-ms per pixel), torch_wino 0.064 / 0.107 (23.1 s, 30.5 CPU-s = 2.71 CPU-ms per pixel):
  after / torch_wino CPU 0.91; SHAFTS ran at the heavier load (360 s), so these wall ratios are low.
  An earlier state of the branch (also 64 ch on 5 x 5 and 256 ch by the compiled transforms, since
  restricted: no gain there) at load 5-9, ``--repeat 2``: 1x after 0.106 / 0.129, torch_wino 0.127 / 0.131;
  10x after 0.200 / 0.196, torch_wino 0.163 / 0.183.
  Quiet machine (lead, session 7): 100x after 0.333 wall / 0.424 CPU (156.3 s against SHAFTS 469.3 s,
  load 1.5-1.9) and 0.351 / 0.432 (124.5 s against 354.7 s, load 1.7-1.9); 10x (``--repeat 2``, load 1.7-1.8)
  after 0.275 / 0.365, torch_wino 0.296 / 0.397 (compiled transforms 0.93x of the whole 10x inference).
Measured with Winograd F(5,3) (commit f4be7df):
  quietest run, ``--sizes 1,10 --threads 2 --repeat 2 --no-memory --no-streamlined``, load 0.5-1.8, ratio to
  shafts wall / CPU: 1x after 0.190 / 0.281, previous 0.258 / 0.401, before 0.273 / 0.429, bf16 0.096 / 0.137;
  10x after 0.313 / 0.417, previous 0.352 / 0.473, before 0.479 / 0.643, bf16 0.145 / 0.190 (after: 2.8
  CPU-ms per output pixel with two workers; SHAFTS 52 s). The same command on the loaded machine:
  ``--sizes 1,10 --threads 2 --repeat 2 --no-memory --no-streamlined``, load 3.0-5.7, ratio to shafts wall / CPU:
  1x after 0.313 / 0.246, previous 0.558 / 0.527, before 0.804 / 0.867, bf16 0.125 / 0.098;
  10x after 0.119 / 0.180, previous 0.528 / 0.601, before 0.804 / 0.817, bf16 0.102 / 0.097
  (after: 2.7 CPU-ms per output pixel at 10x; SHAFTS's OpenMP batches lose more to the load than ours, so
  the wall ratios at this load are lower than a quiet machine's). Max differences after vs shafts:
  1x height 5.3e-5 m, footprint 4.3e-6; 10x 4.6e-5 m, 5.0e-6; same nodata. Winograd vs the plain (direct)
  convolution, i.e. after vs previous (the same folded fp32 network without Winograd): 1x height 2.3e-5 m,
  footprint 7.2e-7; 10x 1.5e-5 m, 7.8e-7 (random network whose output layer is scaled ~400x). Network alone
  (one thread, batch 64): 2.2 ms per patch with Winograd, 2.7 ms direct (oneDNN), outputs within 1e-7.
  100x (``--sizes 100 --repeat 1 --runners after,shafts``, 111556 px): after 0.340 / 0.245 (after ran at
  load 4-5 and got 0.74 of a core, 3.2 CPU-ms per pixel; SHAFTS ran later at load 2-3: 1405 s); max differences
  height 5.3e-5 m, footprint 5.1e-6, same nodata. Quiet re-runs (lead, load 0.6-2.0): ``--sizes 1,10 --repeat 2
  --runners after,shafts,previous``: 1x after 0.182 / 0.270, previous 0.199; 10x after 0.276 / 0.367, previous
  0.440; ``--sizes 100 --runners after,shafts``: 100x after 0.316 / 0.385 (128.8 s vs SHAFTS 407.2 s).
Before Winograd (2-core machine shared with other jobs; --repeat 1 unless noted; ratio to shafts, wall / CPU):
  --threads 2, load 6-9: 1x after 0.282 / 0.154 (best of 2), previous 0.496 / 0.372; 10x after 0.205 / 0.181,
  previous 0.443 / 0.482.  --threads 2, load 4-5: 1x after 0.354 / 0.199, previous 0.433 / 0.385; 10x after
  0.362 / 0.263, previous 0.442 / 0.472.  --threads 1, load 3-5 (no OpenMP barriers on either side, the
  intrinsic cost): 1x after 0.259 / 0.335; 10x after 0.628 / 0.486 (CPU per patch: after ~3.1 ms, SHAFTS's
  forward alone ~4.1-4.5 ms). The ratio grows with the size because SHAFTS's fixed work (gdal.Warp, griddata
  fill of the padded clip: ~10 CPU-s at 1x, clip area x3 at 10x) is spread over 10x more patches, so it tends
  to the per-patch ratio; the lower ratios under load come from SHAFTS's OpenMP-parallel batches (barriers,
  spinning) that ours no longer has.

Inputs: samples/thu (real Sentinel-1 and SRTM crops from the SHAFTS test case; SYNTHETIC Sentinel-2), extent
116.305-116.335 E, 39.987-40.017 N (34 x 34 output pixels at 100 m), padding 0.005°. Sizes above 1x are
SYNTHETIC: the THU rasters tiled (np.tile) into larger GeoTIFFs with the same origin and pixel sizes, and the
extent grown by sqrt(size) on each side (10x: 108 x 108 px, 100x: 334 x 334 px... see the printed counts).
Checkpoint: a 100 m multi-task network with 2 SE blocks per layer (SHAFTS's current 100 m MTL layout) and
RANDOM weights, output layers rescaled (scripts/make_random_shafts_checkpoint.py): the figures are about speed
and agreement, not accuracy. The Sentinel branch's BatchNorm shifts are 0.1-0.3 so that its features stay
live (with zero shifts, as before branch shafts17e, every Sentinel feature was 0 after the branch's last
ReLU and the outputs depended on the DEM branch only); the run checks it first and prints the share of
nonzero Sentinel features and how far zeroing the Sentinel patches moves the heights (0.970, 2.56 m).

--memory: peak resident memory of preparing one SHAFTS clip (the memory-heavy part) for square extents of the
given sides plus 0.03° padding, on SYNTHETIC 10 m inputs (S-1 float32 dB, S-2 uint16, SRTM int16 at 30 m).
Measured (2-core machine, 23 GiB RAM, GDAL's default block cache up to ~1.1 GiB; numpy 1.26):
  0.1° + 0.03° padding (3.2 M px): VmHWM 279 MiB; 0.5° + 0.03° (38.9 M px): VmHWM 2049 MiB
  (1440 MiB with GDAL_CACHEMAX=16).
Quiet machine after the merge of shafts17e (session 8, live Sentinel branch, load 1.5-1.9): 100x, ours 137.2 s
(CPU 269.0 s) against SHAFTS 360.5 s (CPU 573.8 s): 0.381 (CPU 0.469); height within 5.34e-5 m, footprint 1.73e-6.
Session 10, quiet machine (no other jobs, load 1.5-1.9), ``--sizes 1,10 --repeat 2`` and ``--sizes 100 --repeat 1``
(``--no-memory --no-streamlined --runners after,shafts``): 1x 0.138 wall / 0.197 CPU (1.54 s against 11.19 s), 10x
0.264 / 0.353 (15.05 s against 57.08 s), 100x 0.312 / 0.391 (139.5 s against 447.0 s; session 9's quiet run:
126.3 s against 452.3 s, 0.279); heights within 5.34e-5 m, footprints 1.73e-6, same nodata. Where our 100x run goes
(wall, timed around each step in a separate run of 152.7 s): preparing the inputs 3.1 s, gathering the patches 1.7 s
of thread time, the network 296 s of thread time on its 2 workers (2.65 CPU-ms a patch): the network is the whole
cost, and the ratio at 100x moves with how fast the SHAFTS reference runs (its 100x runs: 355-469 s).
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import rasterio
import torch

from edifice.core.height.shafts_inference import predict_height_footprint_shafts
from edifice.models.shafts import OUTPUT_RES_DEG, build_shafts_model, load_shafts_checkpoint

ROOT = Path(__file__).resolve().parents[1]
THU = ROOT / "samples" / "thu"
S1, S2, DEM = THU / "thu_s1_2020.tif", THU / "thu_s2_synthetic.tif", THU / "thu_srtm.tif"
EXTENT = (116.305, 39.987, 116.335, 40.017)
PADDING = 0.03       # SHAFTS's recommended padding (example/minimum_case_run.py) and our default
BEFORE_REV = "11b1056"
#: the main commit the batch-parallel CPU workers started from (batches split across the cores by OpenMP)
PREVIOUS_REV = "fdc00d5"
SHAFTS_BATCH = 64


# ---------------------------------------------------------------------------------------------------
# inputs: THU as it is (1x) or tiled (synthetic, larger sizes)
# ---------------------------------------------------------------------------------------------------
def _tile_raster(src_path: Path, dst_path: Path, reps: int) -> None:
    """Write ``src_path`` tiled ``reps`` x ``reps``, shifted one tile left and up, so the original data
    keeps its coordinates in tile (1, 1) and copies of it surround it (same pixel size, dtype, nodata)."""
    with rasterio.open(src_path) as src:
        data, profile, t = src.read(), src.profile, src.transform
    profile.update(width=data.shape[2] * reps, height=data.shape[1] * reps, tiled=True, blockxsize=256,
                   blockysize=256, compress=None,
                   transform=rasterio.Affine(t.a, 0, t.c - t.a * data.shape[2], 0, t.e, t.f - t.e * data.shape[1]))
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(np.tile(data, (1, reps, reps)))


def scene(size: float, padding: float, folder: Path):
    """(S1, S2, DEM paths, extent) for ``size`` times the THU extent's area: the THU rasters themselves
    where the extent plus ``padding`` fits in them, else tiled copies (synthetic margins/area) with the
    real THU data at its own coordinates; the extent grows right and down from the THU extent."""
    xmin, ymin, xmax, ymax = EXTENT
    side = math.sqrt(size)
    w, h = (xmax - xmin) * side, (ymax - ymin) * side
    extent = (xmin, ymax - h, xmin + w, ymax)
    with rasterio.open(S1) as ds:
        b = ds.bounds
    if size == 1 and b.left <= xmin - padding and b.right >= xmax + padding and \
            b.bottom <= ymin - padding and b.top >= ymax + padding:
        return S1, S2, DEM, EXTENT
    reps = 2 + math.ceil((xmin - b.left + w + padding + 0.01) / (b.right - b.left))
    paths = []
    for p in (S1, S2, DEM):
        dst = folder / f"{p.stem}_x{size:g}.tif"
        _tile_raster(p, dst, reps)
        paths.append(dst)
    return (*paths, extent)


def make_checkpoint(path: Path) -> Path:
    """Random 2-block 100 m multi-task network with random BatchNorm statistics, output layers spread.
    The Sentinel branch's BatchNorm shifts are set to 0.1-0.3 so that its features stay live: with the
    default zero shifts every Sentinel feature was exactly 0 after the branch's last ReLU (inputs in
    [0, 1]), so the outputs depended on the DEM branch only (checked by :func:`sentinel_branch_live`)."""
    spec = importlib.util.spec_from_file_location("mk", ROOT / "scripts" / "make_random_shafts_checkpoint.py")
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    torch.manual_seed(0)
    model = build_shafts_model(100, "multi", 2)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if k.endswith("running_var"):
                v.copy_(0.5 + torch.rand(v.shape))
            elif k.endswith("running_mean"):
                v.copy_(torch.rand(v.shape) * 0.2)
            elif k.startswith("features.") and k.endswith(".bias") and k.split(".")[-2].startswith("bn"):
                v.copy_(0.1 + torch.rand(v.shape) * 0.2)        # keeps the Sentinel features above 0
    model.eval()
    mk._spread_outputs(model, S1, S2, DEM, EXTENT, 0.005)      # fits inside the THU crop
    torch.save({"epoch": 0, "state_dict": model.state_dict()}, path)      # SHAFTS's file layout
    return path


def sentinel_branch_live(ckpt: Path) -> tuple[float, float]:
    """(fraction of the Sentinel branch's features that are nonzero, max |height change| in metres when
    the Sentinel patches are replaced by zeros) on the THU patches; raises if the branch is dead (all
    features 0 or no effect on the heights), since the agreement figures would then ignore it."""
    from edifice.core.height.shafts_inference import gather_patches, prepare_inputs, shafts_output_grid
    model = load_shafts_checkpoint(ckpt).model.eval()
    xmin, ymin, xmax, ymax = EXTENT
    prep, crs = prepare_inputs(S1, S2, DEM, (xmin - 0.005, ymin - 0.005, xmax + 0.005, ymax + 0.005))
    xs, ys = shafts_output_grid(EXTENT, 100, crs).pixel_centres()
    x, d, valid = gather_patches(prep, xs.ravel(), ys.ravel(), model.patch_size)
    ok = valid & np.isfinite(d).all(axis=(1, 2, 3))
    xt, dt = torch.from_numpy(x[ok]).float() / 255.0, torch.from_numpy(d[ok])
    with torch.no_grad():
        live = float((model.features(xt) != 0).float().mean())
        change = float((model(xt, dt)["height"] - model(torch.zeros_like(xt), dt)["height"]).abs().max())
    if not (live > 0 and change > 0):
        raise SystemExit(f"the checkpoint's Sentinel branch is dead (nonzero features {live:.3f}, "
                         f"height change {change:.3g} m): the agreement figures would not see it")
    return live, change


# ---------------------------------------------------------------------------------------------------
# the implementation before (git) and after (this checkout)
# ---------------------------------------------------------------------------------------------------
def load_before(rev: str):
    """predict_height_footprint_shafts as it was at git revision ``rev`` (core/height/shafts_inference.py,
    or core/shafts_inference.py before core/ was split by domain)."""
    for path, package in (("core/height/shafts_inference.py", "edifice.core.height"),
                          ("core/shafts_inference.py", "edifice.core")):
        r = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], capture_output=True, text=True)
        if r.returncode == 0:
            break
    else:
        raise SystemExit(f"no shafts_inference.py at revision {rev}")
    name = f"{package}._shafts_inference_{rev}"
    mod = types.ModuleType(name)
    mod.__package__, mod.__file__ = package, f"<{rev}:{path}>"
    sys.modules[name] = mod
    exec(compile(r.stdout, mod.__file__, "exec"), mod.__dict__)
    return mod.predict_height_footprint_shafts


def run_torch_winograd(paths, extent, ckpt, out: Path, device: str):
    """``after`` with the compiled Winograd transforms switched off (as where numba is not installed):
    the torch transforms on the >= 128-channel layers only, as at commit 66264d0."""
    from edifice.models import winograd
    real = winograd.compiled_available
    winograd.compiled_available = lambda: False
    try:
        return run_ours(predict_height_footprint_shafts, paths, extent, ckpt, out, device)
    finally:
        winograd.compiled_available = real


def run_ours(fn, paths, extent, ckpt, out: Path, device: str, **kw):
    s1, s2, dem = paths
    fn(s1, s2, dem, extent, str(ckpt), 100, out / "h.tif", out / "f.tif", padding=PADDING, device=device, **kw)
    return _read(out / "h.tif"), _read(out / "f.tif")


def _read(path):
    with rasterio.open(path) as ds:
        a = ds.read(1).astype(np.float64)
        if ds.nodata is not None:
            a[a == ds.nodata] = np.nan
    return a


# ---------------------------------------------------------------------------------------------------
# SHAFTS's own procedure (see the module docstring)
# ---------------------------------------------------------------------------------------------------
def _shafts_check_extent(paths, tmp: Path):
    from osgeo import gdal
    for p in paths:                       # SHAFTS warps each whole input to a file to read its bounds
        dst = str(tmp / "TEMP_check.tif")
        ds = gdal.Warp(destNameOrDestDS=dst, srcDSOrSrcDSTab=[str(p)])
        ds.GetGeoTransform()
        ds = None
        os.remove(dst)


def _shafts_clip(path, bounds, tmp: Path, key: str):
    from osgeo import gdal
    dst = str(tmp / f"50pt@{key}@TEMP.tif")
    gdal.Warp(destNameOrDestDS=dst, srcDSOrSrcDSTab=[str(path)], options=gdal.WarpOptions(outputBounds=bounds))
    ds = gdal.Open(dst)
    arr = ds.ReadAsArray() * 1.0
    if ds.RasterCount == 1:
        arr = arr[None]
    nodata = ds.GetRasterBand(1).GetNoDataValue()
    if nodata is not None:                 # deviation (see docstring): declared nodata -> NaN
        arr = arr.astype(np.result_type(arr.dtype, np.float32))
        arr[arr == nodata] = np.nan
    return arr, ds.GetGeoTransform()


def _shafts_fill(band):
    from scipy.interpolate import griddata
    gy, gx = np.mgrid[0:band.shape[0], 0:band.shape[1]]
    py, px = np.where(~np.isnan(band))
    return griddata(np.stack([py, px], axis=1), band[py, px], (gy, gx), method="nearest")


def _shafts_rescale(band):
    v = band.flatten()
    v = v[~np.isnan(v)]
    lo, hi, low = np.min(v), np.quantile(v, 0.98), np.quantile(v, 0.02)
    return np.clip((band - lo) / (hi - low), 0.0, 1.0)


def _shafts_patch(arr, gt, x, y, s):
    i, j = np.floor((x - gt[0]) / gt[1]), np.floor((y - gt[3]) / gt[5])
    r0, c0 = int(j - s / 2 + 1), int(i - s / 2 + 1)
    bands = np.arange(arr.shape[0])
    patch = np.zeros((arr.shape[0], s, s))
    patch[bands] = np.pad(arr[bands, r0:r0 + s, c0:c0 + s], ((0, 0), (0, 0), (0, 0)), mode="constant",
                          constant_values=np.nan)
    return patch


def _to_tensor(hwc):
    t = torch.from_numpy(hwc.transpose(2, 0, 1)).contiguous()
    return t.float().div(255) if t.dtype == torch.uint8 else t.float()


def _shafts_batch_input(arrs, x, y, s):
    (s1, gt1), (s2, gt2), (dem, gtd) = arrs
    p1, p2 = _shafts_patch(s1, gt1, x, y, s), _shafts_patch(s2, gt2, x, y, s)
    vv = np.transpose(np.minimum(np.power(10.0, p1[0:1] / 10.0), 1.0) * 255, (1, 2, 0))
    vh = np.transpose(np.minimum(np.power(10.0, p1[1:2] / 10.0), 1.0) * 255, (1, 2, 0))
    rgb = np.transpose(p2[0:3] * 1.0 * 255, (1, 2, 0))
    nir = np.transpose(p2[3:4] * 1.0 * 255, (1, 2, 0))
    patch = np.concatenate([vv.astype(np.uint8), vh.astype(np.uint8), rgb.astype(np.uint8),
                            nir.astype(np.uint8)], axis=-1)
    aux = np.transpose(_shafts_patch(dem, gtd, x, y, s), (1, 2, 0))
    return _to_tensor(patch)[None], _to_tensor(aux)[None]


def shafts_reference(paths, extent, ckpt, tmp: Path, device: str):
    """Height and footprint (float64, NaN: none) as SHAFTS's own code computes them."""
    from osgeo import gdal
    gdal.UseExceptions()
    model = load_shafts_checkpoint(ckpt).model.to(device).eval()
    xmin, ymin, xmax, ymax = extent
    _shafts_check_extent(paths[:2], tmp)
    bounds = [xmin - PADDING, ymin - PADDING, xmax + PADDING, ymax + PADDING]
    (s1, gt1), (s2, gt2), (dem, gtd) = (_shafts_clip(p, bounds, tmp, k) for p, k in zip(paths, ("s1", "s2", "dem")))
    s1 = np.stack([_shafts_fill(b) for b in s1])
    s2 = np.stack([_shafts_rescale(_shafts_fill(b)) for b in s2])
    res = OUTPUT_RES_DEG[100]
    nx = int(np.ceil(round(round(xmax - xmin, 6) / res, 6)))
    ny = int(np.ceil(round(round(ymax - ymin, 6) / res, 6)))
    xc = np.array([xmin + res * (i + 1 / 2) for i in range(nx)])
    yc = np.array([ymax - res * (i + 1 / 2) for i in range(ny)])
    arrs = ((s1, gt1), (s2, gt2), (dem, gtd))
    hs, fs = [], []
    for b0 in range(0, nx * ny, SHAFTS_BATCH):
        xb, db = zip(*(_shafts_batch_input(arrs, xc[p % nx], yc[p // nx], model.patch_size)
                       for p in range(b0, min(b0 + SHAFTS_BATCH, nx * ny))))
        with torch.no_grad():
            out = model(torch.cat(xb).to(device), torch.cat(db).to(device))
        hs.append(out["height"].cpu().numpy().reshape(-1))      # SHAFTS squeezes (and fails on a batch of 1)
        fs.append(out["footprint"].cpu().numpy().reshape(-1))
    h = np.concatenate(hs).reshape(ny, nx)
    f = np.concatenate(fs).reshape(ny, nx)
    h = np.where(h > 1000.0, 1000.0, np.where(h < 2.0, 0.0, h))
    f = np.where(f > 1.0, 1.0, np.where(f < 0.0, 0.0, f))
    _shafts_write(tmp, h, f, xmin, ymax, res)
    return h, f


def _shafts_write(tmp: Path, h, f, xmin, ymax, res):
    from osgeo import gdal
    drv = gdal.GetDriverByName("GTiff")
    for name, a in (("height", h), ("footprint", f)):
        ds = drv.Create(str(tmp / f"shafts_{name}.tif"), a.shape[1], a.shape[0], 1, gdal.GDT_Float64)
        ds.GetRasterBand(1).WriteArray(a)
        ds.SetGeoTransform((xmin, res, 0.0, ymax, 0.0, -res))
        ds.FlushCache()
        ds = None


# ---------------------------------------------------------------------------------------------------
# the reference this script used before: streamlined SHAFTS (edt fill, whole-band conversion, per row)
# ---------------------------------------------------------------------------------------------------
def _gdal_clip(path, bounds):
    from osgeo import gdal
    gdal.UseExceptions()
    ds = gdal.Warp("", str(path), format="MEM", outputBounds=bounds, resampleAlg="near")
    nodata = [ds.GetRasterBand(b + 1).GetNoDataValue() for b in range(ds.RasterCount)]
    return ds.ReadAsArray(), ds.GetGeoTransform(), nodata


def _fill_nearest(band):
    from scipy.ndimage import distance_transform_edt
    nan = np.isnan(band)
    if not nan.any():
        return band
    idx = distance_transform_edt(nan, return_distances=False, return_indices=True)
    return band[tuple(idx)]


def _prepare_streamlined(paths, extent):
    xmin, ymin, xmax, ymax = extent
    bounds = (xmin - PADDING, ymin - PADDING, xmax + PADDING, ymax + PADDING)
    (s1, gt1, _), (s2, gt2, nd2), (dem, gtd, _) = (_gdal_clip(p, bounds) for p in paths)
    s1, s2 = s1.astype(np.float32), s2.astype(np.float32)
    valid1, valid2 = np.all(np.isfinite(s1), axis=0), np.ones(s2.shape[1:], bool)
    for b in range(s2.shape[0]):
        if nd2[b] is not None:
            valid2 &= s2[b] != nd2[b]
            s2[b][s2[b] == nd2[b]] = np.nan
    chans = [np.minimum(np.power(np.float32(10), _fill_nearest(s1[b]) / np.float32(10)), np.float32(1))
             for b in range(2)]
    for b in range(4):
        x = _fill_nearest(s2[b])
        lo, q02, q98 = np.min(x), np.quantile(x, 0.02), np.quantile(x, 0.98)
        chans.append(np.clip((x - lo) / (q98 - q02), 0, 1))
    img = [(c * np.float32(255)).astype(np.uint8) for c in chans]
    return img[:2], gt1, img[2:], gt2, dem.astype(np.float64), gtd, valid1, valid2


def streamlined_reference(paths, extent, ckpt, device: str):
    model = load_shafts_checkpoint(ckpt).model.to(device).eval()
    s1, gt1, s2, gt2, dem, gtd, valid1, valid2 = _prepare_streamlined(paths, extent)
    res = OUTPUT_RES_DEG[100]
    xmin, ymin, xmax, ymax = extent
    nx = math.ceil(round(round(xmax - xmin, 6) / res, 6))
    ny = math.ceil(round(round(ymax - ymin, 6) / res, 6))
    s = model.patch_size
    b0, b1 = s // 2 - 1, s // 2 + 1
    hgt, fp = np.full((ny, nx), np.nan), np.full((ny, nx), np.nan)
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
        if cols:
            with torch.no_grad():
                out = model(torch.from_numpy(np.stack(xs_batch)).to(device),
                            torch.from_numpy(np.stack(ds_batch)).to(device))
            hgt[r, cols] = out["height"].cpu().numpy()
            fp[r, cols] = out["footprint"].cpu().numpy()
    hgt = np.where(hgt > 1000, 1000, np.where(hgt < 2.0, 0.0, hgt))
    fp = np.where(fp > 1, 1, np.where(fp < 0, 0.0, fp))
    return hgt, fp


# ---------------------------------------------------------------------------------------------------
# peak memory of one call in a fresh subprocess
# ---------------------------------------------------------------------------------------------------
_RUN_CHILD = """
import sys, torch
sys.path.insert(0, sys.argv[1])
import bench_shafts as b
from pathlib import Path
torch.set_num_threads(int(sys.argv[2]))
which, ckpt, out, s1, s2, dem = sys.argv[3:9]
extent = tuple(map(float, sys.argv[9:13]))
b.PADDING = float(sys.argv[14])
fn = b.predict_height_footprint_shafts if which == "after" else b.load_before(sys.argv[13])
b.run_ours(fn, (s1, s2, dem), extent, ckpt, Path(out), "cpu")
print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) / 1024.0)
"""


def peak_memory_mib(which, ckpt, paths, extent, out: Path, threads: int, rev: str) -> float:
    r = subprocess.run([sys.executable, "-c", _RUN_CHILD, str(Path(__file__).parent), str(threads), which, str(ckpt),
                        str(out), *map(str, paths), *map(str, extent), rev, str(PADDING)], capture_output=True, text=True,
                       env=dict(os.environ))
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return float(r.stdout.split()[-1])


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
from edifice.core.height.shafts_inference import prepare_inputs
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
    print("peak resident memory of preparing one clip (fresh subprocess; synthetic 10 m inputs)")
    with tempfile.TemporaryDirectory() as tmp:
        for side in sides:
            paths, bounds = _synthetic_inputs(Path(tmp), side)
            r = subprocess.run([sys.executable, "-c", _CHILD, *paths, *map(str, bounds)], env=dict(os.environ),
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


# ---------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------
def _load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


#: SHAFTS's multi-task heights below this many metres are written as 0 (as ours are: postprocess)
HEIGHT_CUT_M = 2.0


def _across_cut(a, b, tol: float = 1e-3):
    """Pixels where float32 rounding put one height just at or above :data:`HEIGHT_CUT_M` and the other just
    below it, so one is written as the cut and the other as 0 (a 2 m difference from a ~1e-5 m one)."""
    def kept(u, v):
        return (v == 0) & (u >= HEIGHT_CUT_M) & (u < HEIGHT_CUT_M + tol)
    return kept(a, b) | kept(b, a)


def _maxdiff(a, b, cut: bool = False):
    """(max |a - b| over pixels valid in both, same nodata); ``cut``: heights, leaving out the pixels across
    SHAFTS's 2 m cut (:func:`_across_cut`), whose number is then returned third."""
    same_nodata = bool((np.isnan(a) == np.isnan(b)).all())
    ok = np.isfinite(a) & np.isfinite(b)
    flips = _across_cut(a, b) & ok if cut else np.zeros_like(ok)
    ok &= ~flips
    d = (float(np.abs(a - b)[ok].max()) if ok.any() else 0.0), same_nodata
    return (*d, int(flips.sum())) if cut else d


def bench_size(size, runners, repeat, tmp: Path):
    """Interleaved best-of-``repeat`` times and outputs of each runner at one size."""
    times, cpu, outs = {k: math.inf for k in runners}, {k: math.inf for k in runners}, {}
    for _ in range(repeat):
        for name, run in runners.items():
            out = tmp / name
            out.mkdir(exist_ok=True)
            t0, c0 = time.perf_counter(), time.process_time()
            outs[name] = run(out)
            times[name] = min(times[name], time.perf_counter() - t0)
            cpu[name] = min(cpu[name], time.process_time() - c0)
    return times, cpu, outs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="best of N at sizes up to 10x (1 above)")
    ap.add_argument("--sizes", default="1,10,100", help="area multiples of the THU extent (1,10,100)")
    ap.add_argument("--padding", type=float, default=PADDING, help="degrees around the extent (0.03)")
    ap.add_argument("--before-rev", default=BEFORE_REV, help="git revision of the 'before' implementation")
    ap.add_argument("--previous-rev", default=PREVIOUS_REV,
                    help="git revision of the 'previous' implementation ('' to skip it)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocess runs")
    ap.add_argument("--no-streamlined", action="store_true", help="skip the old streamlined reference")
    ap.add_argument("--runners", default="",
                    help="comma-separated subset of after,before,after_bf16,shafts,previous,torch_wino,streamlined to run "
                         "(default all; 'after' and 'shafts' are always run), e.g. at 100x where a run takes minutes")
    ap.add_argument("--memory", action="store_true", help="peak memory of preparing one clip instead")
    ap.add_argument("--sides", default="0.1,0.5", help="extent sides in degrees for --memory (0.1,0.5)")
    a = ap.parse_args()
    if a.memory:
        return memory([float(v) for v in a.sides.split(",")])
    torch.set_num_threads(a.threads)
    globals()["PADDING"] = a.padding
    before = load_before(a.before_rev)
    previous = load_before(a.previous_rev) if a.previous_rev else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = make_checkpoint(tmp / "random_100m_mtl.pth")
        live, change = sentinel_branch_live(ckpt)
        print(f"checkpoint: Sentinel branch features nonzero {live:.3f}; zeroing the Sentinel patches moves the "
              f"heights by up to {change:.3g} m (the agreement figures below include that branch)", flush=True)
        *paths, extent = scene(1, a.padding, tmp)
        run_ours(predict_height_footprint_shafts, paths, extent, ckpt, tmp, a.device)     # warm-up
        for size in (float(v) for v in a.sizes.split(",")):
            *paths, extent = scene(size, a.padding, tmp)
            runners = {"after": lambda o: run_ours(predict_height_footprint_shafts, paths, extent, ckpt, o, a.device),
                       "before": lambda o: run_ours(before, paths, extent, ckpt, o, a.device),
                       "after_bf16": lambda o: run_ours(predict_height_footprint_shafts, paths, extent, ckpt, o,
                                                        a.device, precision="bf16"),
                       "shafts": lambda o: shafts_reference(paths, extent, ckpt, o, a.device)}
            runners["torch_wino"] = lambda o: run_torch_winograd(paths, extent, ckpt, o, a.device)
            if previous is not None:
                runners["previous"] = lambda o: run_ours(previous, paths, extent, ckpt, o, a.device)
            if not a.no_streamlined:
                runners["streamlined"] = lambda o: streamlined_reference(paths, extent, ckpt, a.device)
            if a.runners:
                keep = set(a.runners.split(",")) | {"after", "shafts"}
                runners = {k: v for k, v in runners.items() if k in keep}
            load0 = _load()
            times, cpu, outs = bench_size(size, runners, a.repeat if size <= 10 else 1, tmp)
            mem = {} if a.no_memory else {w: peak_memory_mib(w, ckpt, paths, extent, tmp / w, a.threads, a.before_rev)
                                          for w in ("after", "before")}
            rows.append((size, outs["after"][0].size, times, cpu, outs, mem, load0, _load()))
            _print_size(rows[-1])
            for p in paths:
                if Path(p).parent == tmp:
                    Path(p).unlink()
    _print_summary(rows, a)
    return 0


def _print_size(row):
    size, n, times, cpu, outs, mem, load0, load1 = row
    print(f"{size:g}x THU extent: {n} output pixels; load average {load0} -> {load1}", flush=True)
    for k, v in times.items():
        print(f"  {k:12s} {v:8.2f} s  {n / v:8.1f} px/s  ratio to shafts {v / times['shafts']:.3f}   "
              f"CPU {cpu[k]:8.2f} s, ratio {cpu[k] / cpu['shafts']:.3f}", flush=True)
    for other in ("before", "previous", "torch_wino", "after_bf16", "shafts", "streamlined"):
        if other in outs:
            dh, same_h, flips = _maxdiff(outs["after"][0], outs[other][0], cut=True)
            df, _ = _maxdiff(outs["after"][1], outs[other][1])
            across = f" ({flips} pixel(s) across the {HEIGHT_CUT_M:g} m cut left out: 0 on one side)" if flips else ""
            print(f"  max |after - {other}|: height {dh:.3g} m{across}, footprint {df:.3g}; same nodata: {same_h}")
    for k, v in mem.items():
        print(f"  peak memory {k}: {v:.0f} MiB (VmHWM of a fresh process)")


def _print_summary(rows, a):
    print(f"\nsummary (device {a.device}, {a.threads} torch threads, padding {a.padding}°, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; ratio = time / SHAFTS's procedure, same run)")
    print("  (CPU: the same ratios of process CPU time, less sensitive to other load with --threads 1)")
    print("  size   pixels   after/shafts  previous/shafts  before/shafts  after/before  bf16/shafts   "
          "CPU: after/shafts previous/shafts before/shafts bf16/shafts   load average   peak MiB after (x 1x)  "
          "before (x 1x)")
    base = rows[0][5]
    for size, n, t, c, _, mem, load0, load1 in rows:
        m = ""
        if mem:
            m = "   ".join(f"{mem[w]:6.0f} ({mem[w] / base[w]:.2f})" for w in ("after", "before"))
        prev_t = f"{t['previous'] / t['shafts']:13.3f}" if "previous" in t else f"{'-':>13s}"
        prev_c = f"{c['previous'] / c['shafts']:15.3f}" if "previous" in c else f"{'-':>15s}"
        def r(d, k, ref="shafts", w=10):
            return f"{d[k] / d[ref]:{w}.3f}" if k in d and ref in d else f"{'-':>{w}s}"
        print(f"  {size:4g}x {n:8d}   {r(t, 'after')}   {prev_t}   {r(t, 'before', w=12)}"
              f"   {r(t, 'after', 'before', 11)}  {r(t, 'after_bf16')}"
              f"   {r(c, 'after', w=16)} {prev_c} {r(c, 'before', w=13)}"
              f" {r(c, 'after_bf16', w=11)}   {load0} -> {load1}     {m}")


if __name__ == "__main__":
    raise SystemExit(main())
