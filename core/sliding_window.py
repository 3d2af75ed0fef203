"""The sliding-window inference engine (seed 000 §2.3.4): any raster size, bounded memory,
seamless, resumable.

Layout (:class:`WindowLayout`)
------------------------------
The output grid is cut into square *tiles* of ``stride = window - 2 * margin`` pixels.
Each tile is predicted from one model window of ``window`` x ``window`` pixels centred on
it, i.e. the tile grown by ``margin`` pixels of context on every side; only the tile (the
window's central ``stride`` x ``stride`` part) is kept. Consecutive windows therefore
start ``stride`` pixels apart and share ``2 * margin`` pixels. The seed's setting — 1024 px
windows, "128 px overlap", central 768 x 768 kept — is ``window=1024, margin=128``
(stride 768). Where a window reaches past the raster, the missing part is filled by
reflecting the raster at its border, so every output pixel, border pixels included, is
predicted with ``margin`` pixels of context.

``blend=True`` replaces the hard seams by a linear cross-fade of width ``2 * ramp``
(``ramp = margin // 2``) centred on each seam: a pixel there is the weighted mean of the
two (or four) windows that hold it, weights summing to one; every pixel with a non-zero
weight still has at least ``margin - ramp`` pixels of context.

Pipeline
--------
reader thread(s) (read + scale straight into one of a fixed pool of window buffers, mirror the
part beyond the raster in place, skip tiles that are all nodata or outside the mask) → main
thread (a batch is the pool's buffers themselves when they are consecutive slots of one of its
batch-sized slabs, as they are when no window is skipped, else gathered into one reused array; model on the chosen device, channels-last on
every device, autocast at PRECISION bf16/fp16, halving the batch on out-of-memory) → writer
thread (blend, per-tile post-processing, write with the COMPRESSION setting, default zstd:1, and the
tile's blocks of the internal overviews: :mod:`core.tile_overviews`, so that GDAL need not re-read the
finished rasters to build them).
When the model runs off the CPU (a GPU), the window buffers are the predictor's page-locked memory
(:meth:`Predictor.host_buffer`: a batch goes to the GPU without a staging copy) and GDAL decodes each
reader's blocks and compresses the outputs in threads on every core (:func:`host_io_threads`).
Queues are bounded and the window buffers are those of the batch being run and of the batch read ahead
(:func:`pool_windows`), so memory is independent of the raster's size (in blend mode it holds up to
two rows of tile results); with ``EDIFICE_KEEP_FREED_MEMORY=1`` freed memory stays in the process
during a run (:func:`core.host_tuning.retained_allocations`) and is returned at its end. The result of every
tile depends only on the data (never on batch size, number of readers or arrival order).

Outputs and resume
------------------
Every output raster is written tile by tile into a temporary sibling
``.<name>.partial.tif``; a sidecar ``.<first output>.resume.json`` lists the tile rows
that are complete (and on disk: at a flush, at most every ``FLUSH_SECONDS``, and when the run is
cancelled) with a fingerprint of the inputs and settings.
On success the temporaries are moved into place and the sidecar is removed. When a run is
cancelled (or killed) the partial files stay; running the same command again skips the
finished rows and ends with the same output. Any other error removes them.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, Resampling
from rasterio.windows import Window

from .errors import Cancelled, EdificeError, InputError
from .grid import Grid
from .progress import Progress, ensure
from .outputs import DiskFullError, verify_written
from .raster_io import (GTIFF_PROFILE, build_internal_overviews, overview_compression_env, overview_factors,
                        verify_raster)
from .tile_overviews import DATASET_CLOSE_LOCK, GdalOverviewWriter, TileOverviews, tile_levels

__all__ = ["WindowLayout", "Tile", "RasterOutput", "WindowReader", "Predictor", "resolve_device", "block_size_for",
           "pool_windows",
           "run_sliding_window", "pad_reflect", "fill_reflect", "reflect_index", "file_fingerprint", "DiskFullError",
           "compression_options", "resolve_precision", "PRECISIONS", "DEFAULT_COMPRESSION"]


# ---------------------------------------------------------------- layout
@dataclass(frozen=True)
class Tile:
    """One tile (row ``i``, column ``j`` of the tile grid): ``out`` the part of the grid it
    produces, ``ext`` that part grown by the blend ramp (clipped to the grid), ``row0,
    col0`` the grid position of its model window's top-left pixel (may be negative)."""

    index: int
    i: int
    j: int
    out: Window
    ext: Window
    row0: int
    col0: int


@dataclass(frozen=True)
class WindowLayout:
    """Window size, discarded margin and merge mode (see the module docstring)."""

    window: int = 1024
    margin: int = 128
    blend: bool = False

    def __post_init__(self):
        if self.window < 8:
            raise InputError("WINDOW", f"must be at least 8 pixels, got {self.window}.")
        if self.margin < 0 or self.window - 2 * self.margin < 8:
            raise InputError("OVERLAP", f"{self.margin} px on each side leaves less than 8 px of a "
                             f"{self.window} px window to keep.",
                             "use an overlap (margin) smaller than a third of the window, e.g. 128 for 1024.")

    @property
    def stride(self) -> int:
        return self.window - 2 * self.margin

    @property
    def ramp(self) -> int:
        return min(self.margin // 2, self.stride // 2) if self.blend else 0

    def shape(self, grid: Grid) -> tuple[int, int]:
        return math.ceil(grid.height / self.stride), math.ceil(grid.width / self.stride)

    def region_window(self, grid: Grid, region: tuple[int, int, int, int]) -> Window:
        """The pixels (a window of ``grid``) produced by the tiles of ``region`` = (first tile row,
        end tile row, first tile column, end tile column), ends exclusive."""
        i0, i1, j0, j1 = region
        ni, nj = self.shape(grid)
        if not (0 <= i0 < i1 <= ni and 0 <= j0 < j1 <= nj):
            raise ValueError(f"region {region} is not inside the {ni} x {nj} tile grid")
        s = self.stride
        r0, c0 = i0 * s, j0 * s
        return Window(c0, r0, min(j1 * s, grid.width) - c0, min(i1 * s, grid.height) - r0)

    def tiles(self, grid: Grid) -> list[Tile]:
        s, m, b = self.stride, self.margin, self.ramp
        ni, nj = self.shape(grid)
        out = []
        for i in range(ni):
            for j in range(nj):
                r, c = i * s, j * s
                h, w = min(s, grid.height - r), min(s, grid.width - c)
                er0, ec0 = max(r - b, 0), max(c - b, 0)
                er1, ec1 = min(r + h + b, grid.height), min(c + w + b, grid.width)
                out.append(Tile(i * nj + j, i, j, Window(c, r, w, h), Window(ec0, er0, ec1 - ec0, er1 - er0),
                                r - m, c - m))
        return out


def reflect_index(i: np.ndarray, n: int) -> np.ndarray:
    """Indices into an axis of length ``n`` of positions ``i`` (any integers: -1 is the first pixel before it)
    mirrored at its edges, again and again for positions far outside it (numpy >= 2's 'reflect'; 'edge' when
    ``n`` is 1)."""
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    j = np.mod(i, period)
    return np.where(j >= n, period - j, j)


def pad_reflect(a: np.ndarray, pads: tuple[int, int, int, int]) -> np.ndarray:
    """Pad the last two axes of ``a`` by (top, bottom, left, right) pixels, mirroring the
    array at its edges (:func:`reflect_index`: numpy >= 2's 'reflect', repeated for pads longer than the
    array; numpy 1's differed where an axis is padded on both sides and one pad is as long as the axis or
    longer; 'edge' for an axis of length one)."""
    top, bottom, left, right = pads
    if not any(pads):
        return a
    h, w = a.shape[-2:]
    rows = reflect_index(np.arange(-top, h + bottom), h)
    cols = reflect_index(np.arange(-left, w + right), w)
    return a[..., rows[:, None], cols[None, :]]


def fill_reflect(buf: np.ndarray, pads: tuple[int, int, int, int]) -> None:
    """In place: the borders (top, bottom, left, right pixels) of ``buf`` (C, H, W) become the
    mirror of its interior, exactly as :func:`pad_reflect` of the interior would give (rows first, over the
    interior's columns, then columns over every row)."""
    top, bottom, left, right = pads
    if not any(pads):
        return
    h, w = buf.shape[-2] - top - bottom, buf.shape[-1] - left - right
    _mirror_last_axis(buf[..., left:left + w].swapaxes(-1, -2), top, top + h, bottom)
    _mirror_last_axis(buf, left, left + w, right)


def _mirror_last_axis(v: np.ndarray, lo: int, hi: int, after: int) -> None:
    """In place along the last axis of ``v``: [0, lo) and [hi, hi + after) become the mirror of [lo, hi)
    (:func:`reflect_index`): one reversed slice copy a side where both pads are shorter than [lo, hi) (every
    window of a raster at least a window long, since such a window is padded on one side only, by less than
    the window), else a copy through the mirrored indices."""
    n = hi - lo
    if n > 1 and lo < n and after < n:
        if lo:
            v[..., :lo] = v[..., lo + 1:2 * lo + 1][..., ::-1]
        if after:
            v[..., hi:hi + after] = v[..., hi - after - 1:hi - 1][..., ::-1]
        return
    border = np.r_[np.arange(-lo, 0), np.arange(n, n + after)]
    v[..., border + lo] = v[..., lo + reflect_index(border, n)]


def pool_windows(batch_size: int, workers: int, released_early: bool = False) -> int:
    """How many model-input buffers a run reuses: the batch the model runs, the next batch read ahead, and one
    being filled by each further reader (``2 * batch_size + workers - 1``); ``released_early``: the predictor hands
    the batch back once it has copied it into its own tensor (:attr:`Predictor.releases_input`), so the next batch
    is read into the same buffers while the model runs (``batch_size + workers - 1``). That is enough for the model
    never to wait while reading a batch takes less than running one; more would only add memory: each buffer is a
    window of every band in float32 (24 MiB at 1024 px and 6 bands), and a large raster keeps every buffer busy, so
    the pool is what made peak memory grow from a raster of one batch to a larger one (issue 17)."""
    return (1 if released_early else 2) * batch_size + workers - 1


class _WindowPool:
    """At most ``count`` model-input buffers of one shape, reused window after window (no
    per-window allocation: the pool's memory is fixed for a run and freed with it). The buffers are
    the slots of slabs of ``slab`` windows, so that a batch of consecutive slots is the model's input
    as it is (:meth:`run_of`), without being copied into a batch array."""

    def __init__(self, count: int, stop: threading.Event, slab: int = 1,
                 alloc: Callable[[tuple], np.ndarray] | None = None):
        # ``alloc(shape)``: a new float32 array (the predictor's host_buffer: page-locked memory on CUDA)
        self.alloc = alloc or (lambda shape: np.empty(shape, np.float32))
        self.slab = max(1, slab)
        self.count, self.stop = -(-count // self.slab) * self.slab, stop
        self.free: queue.Queue = queue.Queue()
        self.made = 0
        self.lock = threading.Lock()
        self._slabs: list[np.ndarray] = []
        self._where: dict[int, tuple[int, int]] = {}  # buffer address -> (slab, slot)

    def _new(self, shape: tuple) -> np.ndarray:
        k = self.made % self.slab
        if k == 0 or self._slabs[-1].shape[1:] != shape:
            self._slabs.append(self.alloc((self.slab,) + shape))
            k = 0
        buf = self._slabs[-1][k]
        self._where[buf.ctypes.data] = (len(self._slabs) - 1, k)
        self.made += 1
        return buf

    def take(self, shape: tuple) -> np.ndarray | None:
        """A free buffer of ``shape`` (waits for one; None once the run is stopping)."""
        with self.lock:  # a slab begun is handed out to its end first, so that batches stay consecutive slots
            if self.made < self.count and (self.free.empty() or self.made % self.slab):
                return self._new(shape)
        while not self.stop.is_set():
            try:
                buf = self.free.get(timeout=0.1)
            except queue.Empty:
                continue
            return buf if buf.shape == shape else np.empty(shape, np.float32)
        return None

    def give(self, buf: np.ndarray) -> None:
        self.free.put(buf)

    def run_of(self, bufs: list) -> np.ndarray | None:
        """``bufs`` as one (n, C, H, W) array when they are consecutive slots of one slab (a view), else None."""
        places = [self._where.get(b.ctypes.data) for b in bufs]
        if places[0] is None or any(p is None for p in places):
            return None
        s, k0 = places[0]
        if any(p != (s, k0 + i) for i, p in enumerate(places)):
            return None
        slab = self._slabs[s]
        run = slab[k0:k0 + len(bufs)]
        return run if run.shape[1:] == bufs[0].shape else None


# ---------------------------------------------------------------- inputs
class WindowReader(Protocol):
    """Reads model-ready inputs on the output grid; one instance per reader thread."""

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """(C, h, w) float32 model input and (h, w) bool validity for ``window`` (inside the grid)."""

    def read_mask(self, window: Window) -> np.ndarray | None:
        """(h, w) bool 'process here' mask, or None when there is no mask."""

    # Optional, faster: ``bands`` (int) and ``read_into(window, out)`` filling a (bands, h, w) float32
    # array (a view into the window's buffer: contiguous along its rows only) with what ``read``
    # returns, giving the validity; ``None`` when this window must go through ``read``.

    def close(self) -> None:
        ...


# ---------------------------------------------------------------- device and model
def resolve_device(spec: str | None = "auto"):
    """(torch.device, description). The choice itself is :func:`core.devices.resolve_device`
    (``auto`` takes CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:N`` and ``mps``
    are taken as asked or refused with a clear error — never a silent fallback); this adds
    the description that is reported to the user."""
    import torch

    from .devices import resolve_device as _resolve

    s = (spec or "auto").strip().lower()
    dev = _resolve(s)
    if dev.type == "mps":
        return dev, "mps (Apple Metal)"
    if dev.type == "cuda":
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        dev = torch.device(f"cuda:{idx}")
        desc = f"{dev} ({torch.cuda.get_device_name(idx)})"
    else:
        desc = f"cpu ({torch.get_num_threads()} threads)"
        if s == "auto":
            desc += "; auto chose the CPU because CUDA is not available"
    return dev, desc


def _channels_from_output(out) -> "torch.Tensor":
    import torch

    if isinstance(out, dict):
        parts = [torch.sigmoid(out["use"])]
        if "footprint" in out:
            parts.append(torch.sigmoid(out["footprint"]))
        return torch.cat(parts, dim=1)
    return out


#: the precisions a Predictor runs at (``auto``: bf16, else fp16, on CUDA; fp32 elsewhere)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_supports_bf16() -> bool:
    """True when oneDNN runs bf16 natively on this CPU (AVX-512 BF16 or AMX); elsewhere bf16 is
    emulated and slower than fp32."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str | None, device) -> str:
    """``auto``/``fp32``/``bf16``/``fp16`` -> the precision a run on ``device`` uses: auto is bf16
    (fp16 where bf16 is not supported) on CUDA and fp32 elsewhere; fp16 is refused off CUDA and
    bf16 on a GPU without it."""
    import torch

    p = (precision or "auto").strip().lower()
    if p not in PRECISIONS:
        raise InputError("PRECISION", f"'{precision}' is not one of {', '.join(PRECISIONS)}.")
    cuda = torch.device(device).type == "cuda"
    if p == "auto":
        return ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    if p == "fp16" and not cuda:
        raise InputError("PRECISION", f"fp16 runs on CUDA only, not on {device}.", "use bf16 or fp32.")
    if p == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise InputError("PRECISION", f"{device} does not support bf16.", "use fp16 or fp32.")
    return p


class Predictor:
    """Runs ``model`` on batches of windows: ``predictor(x)`` with x (N, C, H, W) float32
    numpy → (N, K, H, W) float32 numpy. ``to_channels`` turns the model's output into K
    channels (default: sigmoid of ``use`` then of ``footprint``). Channels-last on every
    device; ``precision`` bf16/fp16 runs under autocast, and the largest difference from fp32
    on the first window is reported (``precision_difference``). On CUDA the batch goes through a
    reused pinned host buffer. On out-of-memory the batch is halved (and stays halved) and the
    work goes on. The result of a window never depends on the batch it is run in."""

    def __init__(self, model, device, to_channels: Callable | None = None, precision: str = "auto",
                 progress: Progress | None = None):
        import torch

        from .host_tuning import keep_freed_memory

        keep_freed_memory()  # activations reused, not page-faulted again every batch (core/host_tuning.py)
        self.torch = torch
        self.device = torch.device(device)
        self.to_channels = to_channels or _channels_from_output
        self.progress = ensure(progress)
        self.max_batch: int | None = None
        self.precision = resolve_precision(precision, self.device)
        if self.precision == "bf16" and self.device.type == "cpu" and not cpu_supports_bf16():
            self.progress.warning("PRECISION bf16: this CPU has no native bf16 (AVX-512 BF16 / AMX), so it is "
                                  "emulated and may be slower than fp32.")
        self.channels_last = True
        self.model = model.to(self.device).eval().to(memory_format=torch.channels_last)
        self.precision_difference: float | None = None
        self._pinned = None
        self._page_lock_refused = False

    def host_buffer(self, shape: tuple) -> np.ndarray:
        """A new float32 host array of ``shape`` for the model's inputs (the engine reads windows into these):
        page-locked on CUDA, so that a batch of them is copied to the GPU directly, without first being copied
        into a staging buffer; plain memory elsewhere, and where the system refuses page-locked memory (a
        locked-memory limit: the run goes on, through the staging copy). (torch keeps freed page-locked blocks
        for reuse.)"""
        pinned = self._page_locked(shape, self.torch.float32) if self.device.type == "cuda" else None
        return np.empty(shape, np.float32) if pinned is None else pinned.numpy()

    def _page_locked(self, shape: tuple, dtype):
        """A page-locked host tensor, or None where the system refuses one (said once in the log; not asked
        again by this predictor)."""
        if self._page_lock_refused:
            return None
        try:
            return self.torch.empty(shape, dtype=dtype, pin_memory=True)
        except RuntimeError as exc:
            self._page_lock_refused = True
            self.progress.warning(f"page-locked host memory refused ({exc}); going on with plain memory "
                                  "(slower copies to and from the GPU).")
            return None

    def _to_device(self, x: np.ndarray):
        torch = self.torch
        t = torch.from_numpy(np.ascontiguousarray(x))
        if self.device.type == "cuda" and t.is_pinned():
            # page-locked already (host_buffer): copied directly, and synchronously, since the engine refills
            # the buffer as soon as this returns
            t = t.to(self.device)
        elif self.device.type == "cuda":
            if self._pinned is None or self._pinned.shape[0] < t.shape[0] or self._pinned.shape[1:] != t.shape[1:]:
                self._pinned = self._page_locked(tuple(t.shape), t.dtype)
            if self._pinned is None:  # refused: a plain copy
                t = t.to(self.device)
            else:
                buf = self._pinned[:t.shape[0]]
                buf.copy_(t)
                t = buf.to(self.device, non_blocking=True)
        else:
            t = t.to(self.device)
        return t.contiguous(memory_format=torch.channels_last)

    def _forward(self, t, precision: str):
        torch = self.torch
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        if dtype is None:
            return self.to_channels(self.model(t)).float()
        with torch.autocast(self.device.type, dtype=dtype):
            return self.to_channels(self.model(t)).float()

    def _run(self, x) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            t = x if isinstance(x, torch.Tensor) else self._to_device(x)
            y = self._forward(t, self.precision)
            if self.precision != "fp32" and self.precision_difference is None:
                self.precision_difference = float((y[:1] - self._forward(t[:1], "fp32")).abs().max())
                self.progress.info(f"Precision {self.precision}: largest difference from fp32 on the first window "
                                   f"{self.precision_difference:.2g} (probabilities 0-1).")
            return self._to_host(y)

    def _to_host(self, y) -> np.ndarray:
        """``y`` as a host numpy array: from CUDA through page-locked memory (a copy at full bus speed;
        the block returns to torch's page-locked cache when the array is freed)."""
        host = self._page_locked(tuple(y.shape), y.dtype) if y.device.type == "cuda" else None
        if host is None:
            return y.cpu().numpy()
        host.copy_(y)
        return host.numpy()

    #: ``predictor(x, release=f)`` calls ``f()`` once ``x`` is copied into the model's own tensor (the engine then
    #: reads the next batch into ``x``'s buffers while the model runs: :func:`pool_windows`)
    releases_input = True

    def __call__(self, x: np.ndarray, release: Callable[[], None] | None = None) -> np.ndarray:
        torch = self.torch
        if release is not None:
            try:
                t = self._to_device(x)  # the whole batch, channels-last on the device (as each part would be)
            except torch.OutOfMemoryError:
                pass  # copied part by part below, as without ``release``
            else:
                if t.device.type == "cpu" and np.shares_memory(t.numpy(), x):  # e.g. one band: no layout change
                    t = t.clone(memory_format=torch.channels_last)  # the buffers are refilled while the model runs
                x = t
                release()
        n = len(x)
        step = min(n, self.max_batch or n)
        outs, k = [], 0
        while k < n:
            try:
                outs.append(self._run(x[k:k + step]))
                k += step
            except torch.OutOfMemoryError as exc:
                if step == 1:
                    raise EdificeError(f"Out of memory on {self.device} with a single window; use a smaller "
                                       "WINDOW or another device.") from exc
                step = max(1, step // 2)
                self.max_batch = step
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.progress.warning(f"out of memory on {self.device}: batch size lowered to {step}.")
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)


# ---------------------------------------------------------------- outputs
@dataclass
class RasterOutput:
    """One output raster: ``count`` bands of ``dtype`` with ``nodata`` written outside valid pixels."""

    path: str
    count: int
    dtype: str
    nodata: float | int
    descriptions: Sequence[str] | None = None
    colormap: dict | None = None
    resampling: Resampling = Resampling.average
    #: GDAL band scale (and offset) of scaled integer values (value = DN x scale + offset); None: none written
    scale: float | None = None
    offset: float = 0.0
    #: bands stored one after the other (GDAL INTERLEAVE=BAND) instead of pixel-interleaved: no interleaving on
    #: write, and each band a smooth field for the predictor and compressor (a fraction of the CPU time and size)
    band_interleaved: bool = False

    @property
    def partial(self) -> Path:
        p = Path(self.path)
        return p.with_name(f".{p.stem}.partial{p.suffix or '.tif'}")


def file_fingerprint(path: str | os.PathLike | None) -> list | None:
    """(path, size, mtime) of a file, for the resume fingerprint."""
    if not path:
        return None
    try:
        st = os.stat(path)
        return [str(Path(path).resolve()), st.st_size, int(st.st_mtime_ns)]
    except OSError:
        return [str(path)]


def block_size_for(stride: int) -> int:
    """GeoTIFF block edge for outputs written in tiles ``stride`` px apart: the largest of
    256, 128, 64, 32, 16 dividing ``stride`` (GeoTIFF blocks are multiples of 16), so that every
    tile write covers whole blocks and no compressed block is written twice (a rewritten
    block leaves its old copy as dead space in the file). 256 when none divides it."""
    for b in (256, 128, 64, 32, 16):
        if stride % b == 0:
            return b
    return 256


#: output compression methods and the GDAL creation option of their level (None: no level)
COMPRESSION_METHODS = {"deflate": "zlevel", "zstd": "zstd_level", "lzw": None, "none": None}
#: measured with benchmarks/bench_inference.py --compression-only: the fastest to write at about DEFLATE's size
DEFAULT_COMPRESSION = "zstd:1"


def compression_options(spec: str | None) -> dict:
    """GDAL creation options of an output compression ``method[:level]`` (deflate, zstd, lzw or none;
    e.g. ``zstd:1``, ``deflate:6``); None or empty is :data:`DEFAULT_COMPRESSION`."""
    text = (spec or DEFAULT_COMPRESSION).strip().lower()
    method, _, level = text.partition(":")
    if method not in COMPRESSION_METHODS:
        raise InputError("COMPRESSION", f"'{spec}' is not one of {', '.join(COMPRESSION_METHODS)} "
                         "(optionally with :level).", "write e.g. zstd:1 or deflate:6.")
    key = COMPRESSION_METHODS[method]
    opts: dict = {"compress": method}
    if level:
        top = 22 if method == "zstd" else 9
        if key is None or not level.isdigit() or not 1 <= int(level) <= top:
            raise InputError("COMPRESSION", f"'{spec}': {method} takes "
                             + (f"a level from 1 to {top}." if key else "no level."))
        opts[key] = int(level)
    elif key == "zlevel":
        opts[key] = GTIFF_PROFILE["zlevel"]
    return opts


def host_io_threads(predictor) -> int:
    """GDAL threads that decode a reader's input blocks and compress the outputs' blocks: every core of this
    process when the model runs off the CPU (its cores are then idle: 1.6x the end-to-end throughput on an H100
    with 16 cores, benchmarks/gpu_check.sh), else 1 (the model's threads have the cores)."""
    dev = getattr(predictor, "device", None)
    if getattr(dev, "type", "cpu") == "cpu":
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _profile(grid: Grid, o: RasterOutput, block: int = 256, compression: str | None = None,
             threads: int = 1) -> dict:
    p = dict(GTIFF_PROFILE)
    p.pop("zlevel", None)
    dt = np.dtype(o.dtype)
    p.update(width=grid.width, height=grid.height, count=o.count, dtype=dt.name, crs=grid.crs,
             transform=grid.transform, nodata=o.nodata, predictor=3 if dt.kind == "f" else 2,
             blockxsize=block, blockysize=block, **compression_options(compression))
    if o.band_interleaved and o.count > 1:
        p["interleave"] = "band"
    if p["compress"] == "none":
        p.pop("predictor")
    elif threads > 1:
        p["num_threads"] = threads  # GDAL compresses blocks in that many threads (the pixels are the same)
    if grid.width < block or grid.height < block:
        p.update(tiled=False)
        p.pop("blockxsize"), p.pop("blockysize")
    return p


#: at most this many seconds of finished tile rows are lost when a run is killed (see :class:`_Outputs`)
FLUSH_SECONDS = 300.0


class _Outputs:
    """The temporary output datasets plus the resume sidecar.

    A finished tile row becomes resumable (listed in the sidecar) once it is on disk: when the datasets
    are closed (end, cancel) and at a flush, which closes and reopens them. Flushes are at most every
    ``flush_seconds`` (0: after every row), because GDAL cannot be told the compression level of a
    reopened GeoTIFF: what is written after a flush is compressed at GDAL's default level (ZSTD 9,
    DEFLATE 6: 2-4x the CPU time of level 1 for the same pixel values). So a run shorter than
    ``flush_seconds`` is written wholly at the COMPRESSION level, and a killed run loses at most
    ``flush_seconds`` of finished rows."""

    def __init__(self, grid: Grid, outputs: Sequence[RasterOutput], fingerprint: dict, resume: bool,
                 progress: Progress, block: int = 256, origin: tuple[int, int] = (0, 0),
                 compression: str | None = None, flush_seconds: float = FLUSH_SECONDS, tile_step: int = 0,
                 threads: int = 1):
        # ``grid`` is the grid of the files; ``origin`` (row, col) its top-left pixel on the engine's grid;
        # ``tile_step``: the tiles' stride (px), for overviews built from the tiles (core/tile_overviews.py);
        # ``threads``: GDAL's compression threads (:func:`host_io_threads`)
        self.grid, self.outputs, self.progress, self.origin = grid, list(outputs), progress, origin
        first = Path(outputs[0].path)
        self.sidecar = first.with_name(f".{first.stem}.resume.json")
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
        self.profiles = [_profile(grid, o, block, compression, threads) for o in self.outputs]
        self._open_options = {"num_threads": threads} if threads > 1 else {}
        self.flush_seconds = flush_seconds
        self.done: set[int] = set()
        self.written: set[int] = set()  # finished rows not yet on disk
        self.last_flush = time.monotonic()
        self.ds: list = []
        self.pyramids: list[TileOverviews | None] = [None] * len(self.outputs)
        old = self._load_sidecar() if resume else None
        if old is not None and old.get("fingerprint") == self.fingerprint and \
                all(o.partial.exists() for o in self.outputs) and self._reopen():
            self.done = set(int(r) for r in old.get("done_rows", []))
            progress.info(f"Resuming: {len(self.done)} tile row(s) already done ({self.sidecar.name}).")
        else:
            if old is not None:
                progress.info("Partial results of an earlier run with other inputs or settings are discarded.")
            self.remove()
            for o, profile in zip(self.outputs, self.profiles):
                Path(o.path).parent.mkdir(parents=True, exist_ok=True)
                ds = rasterio.open(o.partial, "w", **profile)
                if o.descriptions:
                    for b, d in enumerate(o.descriptions, start=1):
                        ds.set_band_description(b, d)
                if o.colormap is not None:
                    ds.write_colormap(1, o.colormap)
                    ds.colorinterp = [ColorInterp.palette]
                if o.scale is not None:
                    ds.scales, ds.offsets = [o.scale] * o.count, [o.offset] * o.count
                self.ds.append(ds)
            self.pyramids = [self._tile_overviews(o, ds, p, tile_step)
                             for o, ds, p in zip(self.outputs, self.ds, self.profiles)]
            self._save()

    def _tile_overviews(self, o: RasterOutput, ds, profile: dict, step: int) -> TileOverviews | None:
        """Overviews of the new dataset ``ds`` built from its tiles as they are written (core/tile_overviews.py;
        the same pixels as GDAL's); None: GDAL builds them from the base at the end."""
        factors = overview_factors(ds.width, ds.height)
        resampling = _overview_resampling(o)
        levels = tile_levels(ds.width, ds.height, factors, step, o.dtype, o.nodata)
        if not levels or resampling not in (Resampling.average, Resampling.nearest):
            return None
        try:
            with rasterio.Env(**overview_compression_env(profile)):
                writer = GdalOverviewWriter(str(o.partial), o.count, factors)
            return TileOverviews(ds.width, ds.height, factors, levels, o.nodata, resampling == Resampling.average,
                                 writer)
        except (LookupError, OSError, AttributeError):
            return None

    def _reopen(self) -> bool:
        """Open the partial files for update; False (nothing open) when one cannot be read, as
        when the process was killed before GDAL wrote its header."""
        try:
            for o in self.outputs:
                self.ds.append(rasterio.open(o.partial, "r+", **self._open_options))
            return True
        except Exception:  # noqa: BLE001 - GDAL's errors here vary (TypeError, CPLE_*), the file is ours to redo
            self.close()
            self.progress.info("Partial results of an interrupted run cannot be read (it was killed while "
                               "writing them); they are discarded.")
            return False

    def _load_sidecar(self) -> dict | None:
        try:
            return json.loads(self.sidecar.read_text())
        except (OSError, ValueError):
            return None

    def _save(self) -> None:
        tmp = self.sidecar.with_name(self.sidecar.name + ".tmp")
        tmp.write_text(json.dumps({"fingerprint": self.fingerprint, "done_rows": sorted(self.done),
                                   "partials": [str(o.partial) for o in self.outputs]}))
        os.replace(tmp, self.sidecar)

    def write(self, k: int, data: np.ndarray, window: Window) -> None:
        r, c = self.origin
        col, row = int(window.col_off) - c, int(window.row_off) - r
        _write_block(self.ds[k], data, Window(col, row, window.width, window.height))
        if self.pyramids[k] is not None:
            self.pyramids[k].add(data, col, row)

    def row_done(self, i: int) -> None:
        """Row ``i`` is written; it is recorded as done at the next flush (now when ``flush_seconds`` have
        passed since the last one) or when the datasets are closed."""
        self.written.add(i)
        if time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Put everything written so far on disk (close and reopen) and record its rows as done."""
        for k, o in enumerate(self.outputs):
            with DATASET_CLOSE_LOCK:
                self.ds[k].close()
            self.ds[k] = rasterio.open(o.partial, "r+", **self._open_options)
            pyr = self.pyramids[k]
            if pyr is not None:  # the reopened dataset has another GDAL handle
                try:
                    pyr.writer = GdalOverviewWriter(str(o.partial), o.count, pyr.factors)
                except LookupError:
                    self.pyramids[k] = None
        self._record_written()

    def _record_written(self) -> None:
        if self.written:
            self.done |= self.written
            self.written.clear()
            self._save()
        self.last_flush = time.monotonic()

    def close(self) -> None:
        """Close the datasets; the rows written are recorded as done when every one closed cleanly."""
        clean = bool(self.ds)
        for ds in self.ds:
            try:
                with DATASET_CLOSE_LOCK:
                    ds.close()
            except Exception:  # noqa: BLE001 - closing after an error
                clean = False
        self.ds = []
        if clean:
            self._record_written()

    def finish(self) -> None:
        """Overviews (built in the open datasets, compressed at the COMPRESSION level; by GDAL unless they were
        built from the tiles), then move every temporary into place and drop the sidecar."""
        for ds, o, profile, pyr in zip(self.ds, self.outputs, self.profiles, self.pyramids):
            if pyr is None or not pyr.complete:
                build_internal_overviews(ds, _overview_resampling(o), profile)
            else:
                with rasterio.Env(**overview_compression_env(profile)):
                    pyr.finish()
        self.close()
        for o in self.outputs:  # a write error GDAL did not report shows here, before anything is moved
            verify_written(verify_raster, Path(o.partial), Path(o.path), "OUTPUT", Path(o.path).parent)
        for o in self.outputs:
            os.replace(o.partial, o.path)
        self.sidecar.unlink(missing_ok=True)

    def remove(self) -> None:
        self.close()
        for o in self.outputs:
            for p in (o.partial, Path(str(o.partial) + ".aux.xml"), Path(str(o.partial) + ".ovr")):
                p.unlink(missing_ok=True)
        self.sidecar.unlink(missing_ok=True)
        Path(str(self.sidecar) + ".tmp").unlink(missing_ok=True)


def _overview_resampling(o: RasterOutput) -> Resampling:
    """How the overviews of ``o`` are computed: nearest for palette rasters (classes), else its ``resampling``."""
    return Resampling.nearest if o.colormap else o.resampling


def _write_block(ds, data: np.ndarray, window: Window) -> None:
    """The single place tiles reach the disk (tests replace it to simulate a full disk)."""
    ds.write(data, window=window)


# ---------------------------------------------------------------- the engine
def _ramp_weights(n0: int, n1: int, start: int, stop_next: int | None, first: bool, ramp: int) -> np.ndarray:
    """1-D blend weights for absolute positions n0..n1-1 of a tile starting at ``start``
    whose next tile starts at ``stop_next`` (None: last tile)."""
    p = np.arange(n0, n1, dtype=np.float64)
    w = np.ones_like(p)
    if ramp > 0:
        if not first:
            w = np.minimum(w, np.clip((p - start + ramp + 0.5) / (2 * ramp), 0.0, 1.0))
        if stop_next is not None:
            w = np.minimum(w, np.clip((stop_next + ramp - p - 0.5) / (2 * ramp), 0.0, 1.0))
    return w


def _window_input(rd, win: Window, pads: tuple, size: int, pool: _WindowPool):
    """(model input (C, size, size) in a buffer of ``pool``, validity (h, w) of ``win``): the window read
    (straight into the buffer where the reader can), invalid pixels set to 0, the part beyond the raster
    mirrored. (None, None) when the run is stopping."""
    bands = getattr(rd, "bands", None) if hasattr(rd, "read_into") else None
    if bands:
        buf = pool.take((bands, size, size))
        if buf is None:
            return None, None
        top, left = pads[0], pads[2]
        x = buf[:, top:top + int(win.height), left:left + int(win.width)]
        valid = rd.read_into(win, x)
        if valid is not None:
            if not valid.all():
                np.copyto(x, 0, where=~valid[None])
            fill_reflect(buf, pads)
            return buf, valid
        pool.give(buf)
    x, valid = rd.read(win)
    buf = pool.take((x.shape[0], size, size))
    if buf is None:
        return None, None
    _place(buf, x, valid, pads)
    return buf, valid


def _place(buf: np.ndarray, x: np.ndarray, valid: np.ndarray, pads: tuple) -> None:
    """``x`` (0 where not ``valid``) into the interior of ``buf``, its borders mirrored."""
    top, left = pads[0], pads[2]
    inner = buf[:, top:top + x.shape[1], left:left + x.shape[2]]
    if valid.all():
        np.copyto(inner, x, casting="unsafe")
    else:
        np.copyto(inner, x, where=valid[None], casting="unsafe")
        np.copyto(inner, 0, where=~valid[None])
    fill_reflect(buf, pads)


_STOP = object()


def run_sliding_window(*args, **kwargs) -> dict:
    """:func:`_run_sliding_window` (same arguments); with ``EDIFICE_KEEP_FREED_MEMORY=1`` freed memory
    is kept in the process for the run (:func:`core.host_tuning.retained_allocations`)."""
    from .host_tuning import retained_allocations

    with retained_allocations():
        return _run_sliding_window(*args, **kwargs)


def _run_sliding_window(grid: Grid, layout: WindowLayout, open_reader: Callable[[], WindowReader],
                        predictor: Callable[[np.ndarray], np.ndarray], outputs: Sequence[RasterOutput],
                        finalize: Callable[[np.ndarray, np.ndarray], Sequence[np.ndarray]],
                        batch_size: int = 4, workers: int = 1, fingerprint: dict | None = None,
                        resume: bool = True, order: str = "rows", region: tuple[int, int, int, int] | None = None,
                        compression: str | None = None, flush_seconds: float = FLUSH_SECONDS,
                        io_threads: int | None = None, progress: Progress | None = None) -> dict:
    """Predict every tile of ``grid`` and write ``outputs``.

    ``open_reader()`` gives a :class:`WindowReader` (one per reader thread);
    ``predictor(x)`` maps (N, C, window, window) inputs to (N, K, window, window)
    per-pixel values (e.g. probabilities); ``finalize(values (K, h, w), valid (h, w))``
    turns a merged tile into one array per output ((count, h, w) each, any values at
    invalid pixels — they become nodata). ``order``: 'rows' or 'reverse' (reading order;
    the result does not depend on it). ``region`` (first tile row, end row, first tile column,
    end column; ends exclusive) limits the run to those tiles: the outputs then cover only their
    pixels (:meth:`WindowLayout.region_window`), each pixel with the value it has in a run over the
    whole grid (same windows, same reflection at the grid's border, blend neighbours outside the
    region run as well). ``compression``: of the outputs, see :func:`compression_options`. ``flush_seconds``:
    how often finished tile rows are put on disk for resuming after a kill (see :class:`_Outputs`).
    ``io_threads``: GDAL's threads decoding each reader's blocks and compressing the outputs (None:
    :func:`host_io_threads`; the outputs are the same whatever it is).
    Returns a summary (tiles run, skipped, resumed, s).
    """
    compression_options(compression)  # refused before anything is written
    progress = ensure(progress)
    if batch_size < 1:
        raise InputError("BATCH_SIZE", f"must be at least 1, got {batch_size}.")
    if workers < 1:
        raise InputError("WORKERS", f"must be at least 1, got {workers}.")
    if order not in ("rows", "reverse"):
        raise ValueError(f"unknown order '{order}'")
    plan = _TilePlan(grid, layout, region)
    io_threads = host_io_threads(predictor) if io_threads is None else max(1, int(io_threads))
    t_start = time.perf_counter()
    outs = _Outputs(plan.out_grid, outputs, _run_fingerprint(plan, outputs, fingerprint, compression), resume,
                    progress, block_size_for(layout.stride), origin=(int(plan.area.row_off), int(plan.area.col_off)),
                    compression=compression, flush_seconds=flush_seconds, tile_step=layout.stride, threads=io_threads)
    plan.schedule(outs.done, reverse=order == "reverse")
    pipeline = _Pipeline(plan, open_reader, predictor, outputs, finalize, outs, batch_size, workers, progress,
                         io_threads)
    pipeline.run()
    return {"tiles": len(plan.mine), "tiles_run": pipeline.stats["run"], "tiles_skipped": pipeline.stats["skipped"],
            "rows_resumed": plan.region[1] - plan.region[0] - len(plan.row_left),
            "seconds": time.perf_counter() - t_start, "model_seconds": pipeline.model_seconds,
            "tile_rows": plan.ni, "tile_cols": plan.nj}


def _run_fingerprint(plan: "_TilePlan", outputs: Sequence[RasterOutput], caller: dict | None,
                     compression: str | None) -> dict:
    """What a resumed run must share with the run that wrote the partial files."""
    grid, layout = plan.grid, plan.layout
    # "engine": bumped when the same inputs give other values (3: the mirror beyond a raster shorter than a window,
    # padded on both sides with one pad as long as the raster or longer, :func:`reflect_index`), so that partial
    # files of an older version are not resumed
    fp = {"engine": 3, "grid": [list(grid.transform)[:6], grid.width, grid.height, grid.crs],
          "layout": [layout.window, layout.margin, layout.blend],
          "outputs": [[str(Path(o.path).resolve()), o.count, o.dtype, o.nodata]
                      + ([o.scale, o.offset] if o.scale is not None else []) for o in outputs],
          "caller": caller or {}, "compression": compression_options(compression)}
    if plan.region != (0, plan.ni, 0, plan.nj):
        fp["region"] = list(plan.region)
    return fp


class _TilePlan:
    """The tiles of a run (all of the grid, or a region of tile rows and columns), the windows to
    predict for the tiles still to write, and how many of those tiles use each window."""

    def __init__(self, grid: Grid, layout: WindowLayout, region: tuple[int, int, int, int] | None):
        self.grid, self.layout = grid, layout
        self.tiles = layout.tiles(grid)
        self.ni, self.nj = layout.shape(grid)
        self.region = tuple(region) if region is not None else (0, self.ni, 0, self.nj)
        self.area = layout.region_window(grid, self.region)
        r = self.region
        self.mine = [t for t in self.tiles if r[0] <= t.i < r[1] and r[2] <= t.j < r[3]]
        self.out_grid = grid
        if self.region != (0, self.ni, 0, self.nj):
            a = self.area
            self.out_grid = Grid(grid.window_transform(a), int(a.width), int(a.height), grid.crs)
        self._by_ij = {(t.i, t.j): t for t in self.tiles}
        self._reach = 1 if layout.ramp > 0 else 0

    def neighbours(self, t: Tile) -> list[Tile]:
        """``t`` and the tiles whose windows blend into it (its 8 neighbours in blend mode)."""
        k = self._reach
        return [self._by_ij[(t.i + di, t.j + dj)] for di in range(-k, k + 1) for dj in range(-k, k + 1)
                if (t.i + di, t.j + dj) in self._by_ij]

    def schedule(self, done_rows: set[int], reverse: bool = False) -> None:
        """The tiles to write (rows not in ``done_rows``), the windows they need in reading order,
        how many of them use each window, and how many are left per tile row."""
        self.todo = [t for t in self.mine if t.i not in done_rows]
        self.todo_set = {t.index for t in self.todo}
        self.needed = sorted({n.index for t in self.todo for n in self.neighbours(t)}, reverse=reverse)
        self.users: dict[int, int] = {}
        self.row_left: dict[int, int] = {}
        for t in self.todo:
            self.row_left[t.i] = self.row_left.get(t.i, 0) + 1
            for n in self.neighbours(t):
                self.users[n.index] = self.users.get(n.index, 0) + 1

    def read_window(self, t: Tile) -> tuple[Window, tuple[int, int, int, int]]:
        """The part of ``t``'s model window inside the raster, and the pads (top, bottom, left, right)
        mirrored around it."""
        g, size = self.grid, self.layout.window
        r0, c0 = max(t.row0, 0), max(t.col0, 0)
        r1, c1 = min(t.row0 + size, g.height), min(t.col0 + size, g.width)
        return Window(c0, r0, c1 - c0, r1 - r0), (r0 - t.row0, t.row0 + size - r1, c0 - t.col0, t.col0 + size - c1)

    def blend(self, t: Tile, cache: dict) -> np.ndarray:
        """Tile ``t``'s values (K, h, w) float32: the ramp-weighted mean of the windows that hold its
        pixels (``cache``: window index -> (values over its extent, valid) or None when skipped)."""
        h, w = int(t.out.height), int(t.out.width)
        r0, c0 = int(t.out.row_off), int(t.out.col_off)
        s, ramp = self.layout.stride, self.layout.ramp
        acc, wsum = None, np.zeros((h, w), np.float64)
        for n in self.neighbours(t):
            entry = cache.get(n.index)
            if entry is None:
                continue
            e = n.ext
            rr0, rr1 = max(r0, int(e.row_off)), min(r0 + h, int(e.row_off + e.height))
            cc0, cc1 = max(c0, int(e.col_off)), min(c0 + w, int(e.col_off + e.width))
            if rr0 >= rr1 or cc0 >= cc1:
                continue
            wy = _ramp_weights(rr0, rr1, n.i * s, (n.i + 1) * s if n.i < self.ni - 1 else None, n.i == 0, ramp)
            wx = _ramp_weights(cc0, cc1, n.j * s, (n.j + 1) * s if n.j < self.nj - 1 else None, n.j == 0, ramp)
            wgt = wy[:, None] * wx[None, :]
            part = entry[0][:, rr0 - int(e.row_off):rr1 - int(e.row_off), cc0 - int(e.col_off):cc1 - int(e.col_off)]
            if acc is None:
                acc = np.zeros((part.shape[0], h, w), np.float64)
            acc[:, rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] += part * wgt
            wsum[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] += wgt
        return (acc / np.maximum(wsum, 1e-12)).astype(np.float32)


class _Pipeline:
    """One run's threads: readers fill window buffers (queue ``in_q``), the calling thread batches
    them through the model (queue ``out_q``), a writer blends, finalises and writes finished tiles.
    Errors in any thread stop all of them and are raised in the calling thread."""

    def __init__(self, plan: _TilePlan, open_reader, predictor, outputs, finalize, outs: "_Outputs",
                 batch_size: int, workers: int, progress: Progress, io_threads: int = 1):
        self.plan, self.open_reader, self.predictor = plan, open_reader, predictor
        self.io_threads = io_threads
        self.outputs, self.finalize, self.outs = list(outputs), finalize, outs
        self.batch_size, self.workers, self.progress = batch_size, workers, progress
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.in_q: queue.Queue = queue.Queue(maxsize=max(2, 2 * batch_size))
        self.out_q: queue.Queue = queue.Queue(maxsize=max(2, 2 * batch_size))
        self.feed = iter(plan.needed)
        self.feed_lock = threading.Lock()
        self.releases = bool(getattr(predictor, "releases_input", False))
        self.pool = _WindowPool(pool_windows(batch_size, workers, self.releases), self.stop, batch_size,
                                getattr(predictor, "host_buffer", None))
        self.stats = {"run": 0, "skipped": 0, "written": 0}
        self.cache: dict[int, tuple | None] = {}
        self.model_seconds = 0.0
        self._batch: list = []
        self._gathered: np.ndarray | None = None  # the batch array, allocated once
        self._in_use: list = []  # pool buffers that are the model's input right now

    # ------------------------------------------------------------ whole run
    def run(self) -> None:
        """Start the threads, feed the model until the readers are done, then finish the outputs;
        on cancel keep the finished rows for a resume, on any other error remove the partial files."""
        self.readers = [threading.Thread(target=self._reader_loop, name=f"edifice-reader-{k}", daemon=True)
                        for k in range(self.workers)]
        self.writer = threading.Thread(target=self._writer_loop, name="edifice-writer", daemon=True)
        for th in self.readers + [self.writer]:
            th.start()
        try:
            self._model_loop()
            self._end_writer()
            if self.errors:
                raise self.errors[0]
            self.progress.check_cancelled()
            if any(v for v in self.plan.row_left.values()):
                raise EdificeError("internal error: some tiles were not written")
            self.outs.finish()
        except (Cancelled, KeyboardInterrupt):
            self._halt()
            self.outs.close()
            self.progress.info(f"Stopped; {len(self.outs.done)} finished tile row(s) are kept in "
                               f"{self.outs.sidecar.parent} so that running the same command again resumes.")
            raise
        except OSError as exc:
            self._halt()
            self.outs.remove()
            if exc.errno == errno.ENOSPC or "No space left" in str(exc):
                raise DiskFullError(f"OUTPUT: the disk is full while writing to "
                                    f"'{Path(self.outputs[0].path).parent}'; nothing was written. "
                                    "Fix: free some space or choose another folder.") from exc
            raise
        except BaseException:
            self._halt()
            self.outs.remove()
            raise

    def _halt(self) -> None:
        self.stop.set()
        _drain(self.in_q, self.out_q, self.readers, self.writer)

    def _put(self, q, item) -> bool:
        """Put unless the run is stopping (then False)."""
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _end_writer(self) -> None:
        while self.writer.is_alive():  # the writer drains the queue until it sees _STOP
            try:
                self.out_q.put(_STOP, timeout=0.1)
                break
            except queue.Full:
                continue
        self.writer.join()

    # ------------------------------------------------------------ readers
    def _reader_loop(self) -> None:
        rd = None
        try:
            with self._reader_gdal_env():
                rd = self.open_reader()
                self._read_tiles(rd)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.errors.append(exc)
            self.stop.set()
        finally:
            if rd is not None:
                with DATASET_CLOSE_LOCK:  # not while a writer looks up its dataset (core/tile_overviews.py)
                    rd.close()
            self._put(self.in_q, _STOP)

    def _reader_gdal_env(self):
        """GDAL_NUM_THREADS for this reader thread alone (rasterio sets a child thread's options thread-locally):
        its datasets decode the blocks of a window in ``io_threads`` threads."""
        if self.io_threads > 1:
            return rasterio.Env(GDAL_NUM_THREADS=str(self.io_threads))
        return contextlib.nullcontext()

    def _read_tiles(self, rd) -> None:
        while not self.stop.is_set():
            with self.feed_lock:
                idx = next(self.feed, None)
            if idx is None or not self._read_tile(rd, idx):
                break

    def _read_tile(self, rd, idx: int) -> bool:
        """Queue window ``idx`` as (idx, input, validity over its extent), or (idx, None, None) when the
        extent is all nodata or outside the mask; False when the run is stopping."""
        t = self.plan.tiles[idx]
        e = t.ext
        m = rd.read_mask(e)
        if m is not None and not m.any():
            return self._put(self.in_q, (idx, None, None))
        win, pads = self.plan.read_window(t)
        x, valid = _window_input(rd, win, pads, self.plan.layout.window, self.pool)
        if x is None:
            return False
        er, ec = int(e.row_off) - int(win.row_off), int(e.col_off) - int(win.col_off)
        ev = valid[er:er + int(e.height), ec:ec + int(e.width)]
        if m is not None:
            ev = ev & m
        if not ev.any():
            self.pool.give(x)
            return self._put(self.in_q, (idx, None, None))
        return self._put(self.in_q, (idx, x, ev))

    # ------------------------------------------------------------ model (calling thread)
    def _model_loop(self) -> None:
        finished_readers = 0
        while finished_readers < self.workers:
            self.progress.check_cancelled()
            if self.errors:
                return
            try:
                item = self.in_q.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _STOP:
                finished_readers += 1
                continue
            idx, x, _ = item
            if x is None:
                self.stats["skipped"] += 1
                self._put(self.out_q, (idx, None))
                continue
            self._batch.append(item)
            if len(self._batch) >= self.batch_size:
                self._flush_batch()
                self.progress.check_cancelled()
        if not self.errors:
            self._flush_batch()

    def _batch_input(self) -> np.ndarray:
        """The batch's inputs as one array: their buffers themselves when they are consecutive slots of the pool
        (given back by :meth:`_flush_batch` after the model), else copied into one reused array (given back now)."""
        items = self._batch
        run = self.pool.run_of([it[1] for it in items])
        if run is not None:
            self._in_use = [it[1] for it in items]
            return run
        shape = (self.batch_size,) + items[0][1].shape
        if self._gathered is None or self._gathered.shape != shape:
            self._gathered = self.pool.alloc(shape)
        x = self._gathered[:len(items)]
        for k, it in enumerate(items):
            x[k] = it[1]
            self.pool.give(it[1])
        return x

    def _flush_batch(self) -> None:
        """Run the model on the gathered batch and queue each window's values over its extent."""
        if not self._batch:
            return
        x = self._batch_input()
        t0 = time.perf_counter()
        y = self.predictor(x, release=self._give_back_inputs) if self.releases else self.predictor(x)
        self.model_seconds += time.perf_counter() - t0
        for (idx, _, ev), yy in zip(self._batch, y):
            t = self.plan.tiles[idx]
            e = t.ext
            oy, ox = int(e.row_off) - t.row0, int(e.col_off) - t.col0
            part = np.ascontiguousarray(yy[:, oy:oy + int(e.height), ox:ox + int(e.width)], dtype=np.float32)
            if np.may_share_memory(part, x):  # a model output that is its input: the buffer is reused next
                part = part.copy()
            if not self._put(self.out_q, (idx, (part, ev))):
                break
        self._give_back_inputs()  # the model (and its output, when a view of them) is done with them
        self.stats["run"] += len(self._batch)
        self._batch.clear()

    def _give_back_inputs(self) -> None:
        """Return the pool buffers that are the model's input (once; the reader refills them)."""
        in_use, self._in_use = self._in_use, []
        for buf in in_use:
            self.pool.give(buf)

    # ------------------------------------------------------------ writer
    def _writer_loop(self) -> None:
        try:
            arrived: set[int] = set()
            written: set[int] = set()
            plan = self.plan
            while True:
                item = self.out_q.get()
                if item is _STOP:
                    break
                if self.stop.is_set():
                    continue
                idx, entry = item
                self.cache[idx] = entry
                arrived.add(idx)
                for cand in plan.neighbours(plan.tiles[idx]):
                    if cand.index in plan.todo_set and cand.index not in written and \
                            all(n.index in arrived for n in plan.neighbours(cand)):
                        self._finish_tile(cand)
                        written.add(cand.index)
                        self._release_windows(cand)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.errors.append(exc)
            self.stop.set()
            while self.out_q.get() is not _STOP:  # keep draining so that the main thread never blocks
                pass

    def _release_windows(self, t: Tile) -> None:
        """Drop the cached windows no unwritten tile needs after ``t``."""
        for n in self.plan.neighbours(t):
            self.plan.users[n.index] -= 1
            if self.plan.users[n.index] == 0:
                self.cache.pop(n.index, None)

    def _finish_tile(self, t: Tile) -> None:
        """Merge, finalise and write tile ``t`` (nodata where invalid); a finished tile row is flushed
        and recorded for resume."""
        own = self.cache[t.index]
        h, w = int(t.out.height), int(t.out.width)
        if own is None:
            valid, vals = np.zeros((h, w), bool), None
        else:
            oy, ox = int(t.out.row_off - t.ext.row_off), int(t.out.col_off - t.ext.col_off)
            valid = own[1][oy:oy + h, ox:ox + w]
            vals = own[0][:, oy:oy + h, ox:ox + w] if self.plan.layout.ramp == 0 else self.plan.blend(t, self.cache)
        results = self.finalize(vals, valid) if vals is not None else [None] * len(self.outputs)
        holes = not valid.all()
        for k, o in enumerate(self.outputs):
            arr = results[k]
            if arr is None:
                arr = np.full((o.count, h, w), o.nodata, dtype=o.dtype)
            else:  # a copy only where nodata goes in (``arr`` may be a view of the cached model output)
                arr = np.asarray(arr).reshape(o.count, h, w).astype(o.dtype, copy=holes)
                if holes:
                    arr[:, ~valid] = o.nodata
            self.outs.write(k, arr, t.out)
        self.stats["written"] += 1
        row_left = self.plan.row_left
        row_left[t.i] -= 1
        if row_left[t.i] == 0:
            self.outs.row_done(t.i)
        self.progress.set_fraction(self.stats["written"] / max(1, len(self.plan.todo)))


def _drain(in_q, out_q, readers, writer) -> None:
    """After ``stop`` was set: make sure every thread ends, and wait for them (no timeout:
    the writer holds the output datasets, which the caller closes or removes next)."""
    def empty(q):
        try:
            while True:
                q.get_nowait()
        except queue.Empty:
            pass

    empty(in_q)
    while writer.is_alive():
        empty(out_q)  # only this thread puts into out_q, so after emptying it there is room
        try:
            out_q.put(_STOP, timeout=0.1)
            break
        except queue.Full:
            continue
    for th in readers:
        while th.is_alive():
            empty(in_q)  # readers stop putting once ``stop`` is set; never leave one blocked
            th.join(timeout=0.1)
    writer.join()
