"""Compiled (numba) transforms of Winograd F(5, 3), cache-blocked: the input and output transforms of
:class:`~edifice.models.winograd.WinogradConv2d` for a few patches at a time, so that the transformed
tiles stay in cache between the transform, the products (``torch.bmm``, MKL) and the output transform.

The torch formulation of :mod:`.winograd` makes six passes over whole tensors (pad, gather, two 1-D
transforms, products, output transform, bias) that do not fit in cache; on 64-channel 20 x 20 maps
those passes cost what the products save. Here each chunk of patches is copied into a zero-bordered
buffer, transformed tile by tile into ``V`` (49, tiles, C_in), multiplied by the transformed filters
point by point (49 products of (tiles x C_in) by (C_in x C_out), contiguous operands) into ``M``
(49, tiles, C_out) and transformed back, with the bias, straight into the channels-last output. The
kernels loop over the channels innermost (vectorised), so one compiled kernel serves any channel count;
the nonzero entries of B^T and A^T are written out in the code (15 of B^T's 49 and 8 of A^T's 35 are
zero: those terms are left out), in sums ordered so that the fused multiply-adds are those of the
kernels that read all seven entries from arrays (bit-identical outputs, tested against those kernels
in ``tests/unit/test_winograd.py``). They are specialised to F(5, 3) (7 x 7 input tiles, 5 x 5 output
tiles) and to maps whose sides are multiples of 5 (the caller checks, :func:`applies`).

Measured with the written-out entries and the point-major ``V``/``M`` (branch shafts17f; thread CPU
time, one thread, batch 64, interleaved, min of 60, load average 3): 64 ch 20 x 20 12.1 ms against 14.8
for the kernels before (0.82x), 128 ch 10 x 10 6.65 against 7.21 (0.92x), 64 -> 128 ch 10 x 10 3.87
against 4.09; the whole SHAFTS 100 m network (two workers, CPU per patch, interleaved, 8 rounds):
best 1.91 against 2.40 ms, median 2.54 against 2.70 (loaded machine: the median is the safer figure);
the whole 10x SHAFTS inference 0.97x (``benchmarks/bench_shafts.py``).
Tried and dropped: 512-bit vectors (LLVM's ``-prefer-256-bit`` turned off through NUMBA_CPU_FEATURES):
no gain beyond noise (the kernels are not bound by the FMA width); each transform's first pass over
one run of 7 x C floats (the tile's seven columns) instead of seven runs of C: no gain.

The kernels as first written (branch shafts17d; batch 64, two threads each running its own batches as the
SHAFTS inference does, this 2-core AVX-512 CPU at load average 4-5; best of 8, CPU time): 64 channels 20
x 20 11.7 ms per batch against 14.7 for the direct (oneDNN) convolution and 20.8 for the torch
transforms; 128 channels 10 x 10 7.9 against 10.8 (torch transforms) and 14.8 (direct); on maps of one
tile (5 x 5) no gain over the torch transforms (256 channels: 7.6 against 7.0), so
:class:`~.winograd.WinogradConv2d` uses these kernels on maps of more than one tile only. The SHAFTS 100
m network: 0.85-0.9x the CPU time per patch of the torch transforms (two threads, load 4-5).

Optional: :data:`AVAILABLE` is False when numba is not installed (:mod:`.winograd` then uses its torch
formulation). Compiled code is cached on disk (numba ``cache=True``); ``nogil``: the batch-parallel
CPU workers run it in parallel threads. Scratch buffers are kept per thread and per shape (a few MB;
freed with the thread). Imports torch and numba.
"""
from __future__ import annotations

import threading

import numpy as np
import torch

from . import _gemm_compiled as _gemm

try:  # pragma: no cover - exercised when numba is installed
    import numba
except ImportError:  # pragma: no cover
    numba = None

AVAILABLE = numba is not None
#: Output tile side and input tile side of the compiled kernels (F(5, 3)).
M, T = 5, 7
#: Bytes of transformed tiles (V and M together) per chunk: small enough to stay in a core's L2 cache.
CHUNK_BYTES = 3 << 20

#: The nonzero entries of F(5, 3)'s B^T and A^T other than 1 (:func:`~.winograd.winograd_matrices`), float32.
_M2 = np.float32(-2.0)
_P4 = np.float32(4.0)
_P2_5 = np.float32(2.5)
_M5 = np.float32(-5.0)
_M0_5 = np.float32(-0.5)
_P2 = np.float32(2.0)
_M4_5 = np.float32(-4.5)
_P0_5 = np.float32(0.5)
_P6 = np.float32(6.0)
_M3_5 = np.float32(-3.5)
_M1_5 = np.float32(-1.5)
_P1_5 = np.float32(1.5)
_M1 = np.float32(-1.0)
_M2_5 = np.float32(-2.5)
_P0_25 = np.float32(0.25)
_P8 = np.float32(8.0)
_M8 = np.float32(-8.0)
_P0_125 = np.float32(0.125)
_P16 = np.float32(16.0)
_P0_0625 = np.float32(0.0625)

_local = threading.local()


def applies(x: torch.Tensor, m: int) -> bool:
    """Whether the compiled path can compute a Winograd F(``m``, 3) layer on ``x`` (N, C, H, W):
    numba installed, F(5, 3), float32 on the CPU, no autograd, sides multiples of 5."""
    return (AVAILABLE and m == M and x.dtype == torch.float32 and x.device.type == "cpu" and x.dim() == 4
            and x.shape[2] % M == 0 and x.shape[3] % M == 0 and not (torch.is_grad_enabled() and x.requires_grad))


def _scratch(key: str, shape: tuple, zero: bool = False) -> np.ndarray:
    """A float32 buffer of ``shape`` kept for this thread (zeros when first made: the border of the
    padded input is never written after that)."""
    bufs = _local.__dict__.setdefault("buffers", {})
    buf = bufs.get((key, shape))
    if buf is None:
        buf = bufs[(key, shape)] = np.zeros(shape, np.float32) if zero else np.empty(shape, np.float32)
    return buf


def winograd_f53(x: torch.Tensor, u: torch.Tensor, bias: np.ndarray, relu: bool = False) -> torch.Tensor:
    """3x3 stride-1 zero-padded convolution of ``x`` (N, C, H, W) float32, H and W multiples of 5, by
    Winograd F(5, 3): ``u`` (49, C, C_out) transformed filters, ``bias`` (C_out,); ``relu``: followed by a
    ReLU, applied as the output is written (the same values as a ReLU after it, one pass less). Returns
    (N, C_out, H, W) in channels-last memory format."""
    n, c, h, w = x.shape
    co = u.shape[-1]
    xn = x.detach().permute(0, 2, 3, 1).contiguous().numpy()
    y = torch.empty((n, h, w, co), dtype=torch.float32)
    yn = y.numpy().reshape(n * h * w, co)
    per = (h // M) * (w // M)
    budget = max(CHUNK_BYTES, u.numel() * 4)   # a chunk's filters read once: no fewer tiles than their size
    k = max(1, min(n, budget // (per * T * T * 4 * (c + co))))
    xp = _scratch("xp", (k, h + 2, w + 2, c), zero=True)
    vbuf = _scratch("v", (k * per * T * T * c,))
    mbuf = _scratch("m", (k * per * T * T * co,))
    un = u.numpy() if _gemm.applies(co) else None
    for n0 in range(0, n, k):
        n1 = min(n, n0 + k)
        p = (n1 - n0) * per
        v = vbuf[:T * T * p * c].reshape(T * T, p, c)
        mm = mbuf[:T * T * p * co].reshape(T * T, p, co)
        _input_transform(xn, n0, n1, xp, v)
        if un is not None:
            _gemm.batched_matmul_into(v, un, mm)
        else:
            torch.bmm(torch.from_numpy(v), u, out=torch.from_numpy(mm))
        _output_transform(mm, bias, yn, h, w, n0, n1, relu)
    return y.permute(0, 3, 1, 2)


def _pad_copy(x, n0, n1, xp):
    """Patches n0..n1 of ``x`` (N, H, W, C) into the interior of ``xp`` (k, H + 2, W + 2, C)."""
    _, h, w, c = x.shape
    for n in range(n0, n1):
        for r in range(h):
            for q in range(w):
                for ch in range(c):
                    xp[n - n0, r + 1, q + 1, ch] = x[n, r, q, ch]


def _input_transform(x, n0, n1, xp, v):
    """``V[7a + b, p] = sum_ij B^T[a, i] B^T[b, j] d_p[i, j]`` for every 7 x 7 tile ``d_p`` (stride 5)
    of patches n0..n1 of ``x`` (N, H, W, C) zero-padded by one pixel, tiles in row-major order. B^T's
    entries are written out (checked against :func:`~.winograd.winograd_matrices` by the tests), terms
    with a zero entry left out; a sum whose first term is 4 d is written (d + d) + (d + d), so that the
    fused multiply-adds are those of the sum over all seven terms (identical values, tested)."""
    _pad_copy(x, n0, n1, xp)
    _, hp, wp, c = xp.shape
    th, tw = (hp - 2) // 5, (wp - 2) // 5
    tmp = np.empty((7, 7, c), np.float32)
    p = 0
    for n in range(n1 - n0):
        for ty in range(th):
            for tx in range(tw):
                r0, c0 = ty * 5, tx * 5
                for j in range(7):                       # columns: tmp[a, j] = sum_i B^T[a, i] d[i, j]
                    cj = c0 + j
                    d0, d1, d2, d3 = xp[n, r0, cj], xp[n, r0 + 1, cj], xp[n, r0 + 2, cj], xp[n, r0 + 3, cj]
                    d4, d5, d6 = xp[n, r0 + 4, cj], xp[n, r0 + 5, cj], xp[n, r0 + 6, cj]
                    _bt_rows(d0, d1, d2, d3, d4, d5, d6, tmp[0, j], tmp[1, j], tmp[2, j], tmp[3, j], tmp[4, j],
                             tmp[5, j], tmp[6, j], c)
                for a in range(7):                       # rows: V[7a + b] = sum_j B^T[b, j] tmp[a, j]
                    q = 7 * a
                    _bt_rows(tmp[a, 0], tmp[a, 1], tmp[a, 2], tmp[a, 3], tmp[a, 4], tmp[a, 5], tmp[a, 6], v[q, p],
                             v[q + 1, p], v[q + 2, p], v[q + 3, p], v[q + 4, p], v[q + 5, p], v[q + 6, p], c)
                p += 1


def _bt_rows(d0, d1, d2, d3, d4, d5, d6, o0, o1, o2, o3, o4, o5, o6, c):
    """``o_a = sum_i B^T[a, i] d_i`` over the ``c`` channels of seven vectors (F(5, 3)'s B^T)."""
    for ch in range(c):
        o0[ch] = _M2 * d0[ch] + _P4 * d1[ch] + _P2_5 * d2[ch] + _M5 * d3[ch] + _M0_5 * d4[ch] + d5[ch]
    for ch in range(c):
        o1[ch] = _P2 * d1[ch] + _M2 * d2[ch] + _M4_5 * d3[ch] + _P0_5 * d4[ch] + d5[ch]
    for ch in range(c):
        o2[ch] = _M2 * d1[ch] + _P6 * d2[ch] + _M3_5 * d3[ch] + _M1_5 * d4[ch] + d5[ch]
    for ch in range(c):
        o3[ch] = d1[ch] + _M1_5 * d2[ch] + _M2 * d3[ch] + _P1_5 * d4[ch] + d5[ch]
    for ch in range(c):
        o4[ch] = _M1 * d1[ch] + _P2_5 * d2[ch] + _M2_5 * d4[ch] + d5[ch]
    for ch in range(c):
        o5[ch] = ((d1[ch] + d1[ch]) + (d1[ch] + d1[ch])) + _M5 * d3[ch] + d5[ch]
    for ch in range(c):
        o6[ch] = _M2 * d1[ch] + _P4 * d2[ch] + _P2_5 * d3[ch] + _M5 * d4[ch] + _M0_5 * d5[ch] + d6[ch]


def _at_rows(m0, m1, m2, m3, m4, m5, m6, o0, o1, o2, o3, o4, c):
    """``o_a = sum_i A^T[a, i] m_i`` over the ``c`` channels of seven vectors (F(5, 3)'s A^T)."""
    for ch in range(c):
        o0[ch] = m0[ch] + m1[ch] + m2[ch] + m3[ch] + m4[ch] + m5[ch]
    for ch in range(c):
        o1[ch] = m1[ch] + _M1 * m2[ch] + _P2 * m3[ch] + _M2 * m4[ch] + _P0_5 * m5[ch]
    for ch in range(c):
        o2[ch] = m1[ch] + m2[ch] + _P4 * m3[ch] + _P4 * m4[ch] + _P0_25 * m5[ch]
    for ch in range(c):
        o3[ch] = m1[ch] + _M1 * m2[ch] + _P8 * m3[ch] + _M8 * m4[ch] + _P0_125 * m5[ch]
    for ch in range(c):
        o4[ch] = m1[ch] + m2[ch] + _P16 * m3[ch] + _P16 * m4[ch] + _P0_0625 * m5[ch] + m6[ch]


def _output_transform(mm, bias, y, h, w, n0, n1, relu):
    """``y[n, 5ty + a, 5tx + b] = bias + sum_ij A^T[a, i] A^T[b, j] M[7i + j, p]`` for every tile p of
    patches n0..n1 (``y`` is (N * H * W, C_out), channels last), then max(y, 0) where ``relu``. A^T's
    entries written out as in :func:`_input_transform`."""
    c = mm.shape[2]
    th, tw = h // 5, w // 5
    tmp = np.empty((5, 7, c), np.float32)
    out = np.empty((5, c), np.float32)
    zero = np.float32(0.0)
    p = 0
    for n in range(n0, n1):
        for ty in range(th):
            for tx in range(tw):
                for j in range(7):                       # tmp[a, j] = sum_i A^T[a, i] M[7i + j]
                    _at_rows(mm[j, p], mm[7 + j, p], mm[14 + j, p], mm[21 + j, p], mm[28 + j, p], mm[35 + j, p],
                             mm[42 + j, p], tmp[0, j], tmp[1, j], tmp[2, j], tmp[3, j], tmp[4, j], c)
                for a in range(5):                       # y[a, b] = bias + sum_j A^T[b, j] tmp[a, j]
                    _at_rows(tmp[a, 0], tmp[a, 1], tmp[a, 2], tmp[a, 3], tmp[a, 4], tmp[a, 5], tmp[a, 6],
                             out[0], out[1], out[2], out[3], out[4], c)
                    row = (n * h + ty * 5 + a) * w + tx * 5
                    for b in range(5):
                        for ch in range(c):
                            val = bias[ch] + out[b, ch]
                            y[row + b, ch] = zero if relu and val < zero else val
                p += 1


if AVAILABLE:  # pragma: no branch
    _fast = {"contract"}          # fused multiply-adds only: no reassociation
    _pad_copy = numba.njit(cache=True, nogil=True)(_pad_copy)
    _bt_rows = numba.njit(cache=True, nogil=True, fastmath=_fast, inline="always")(_bt_rows)
    _at_rows = numba.njit(cache=True, nogil=True, fastmath=_fast, inline="always")(_at_rows)
    _input_transform = numba.njit(cache=True, nogil=True, fastmath=_fast)(_input_transform)
    _output_transform = numba.njit(cache=True, nogil=True, fastmath=_fast)(_output_transform)


def warm_up() -> None:
    """Compile or load the kernels (first use in a process) on a tiny layer."""
    if not AVAILABLE:
        return
    with torch.inference_mode():
        winograd_f53(torch.zeros(1, 1, 5, 5), torch.zeros(49, 1, 1), np.zeros(1, np.float32))
    _gemm.warm_up()
