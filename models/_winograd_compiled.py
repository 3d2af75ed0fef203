"""Compiled (numba) transforms of Winograd F(5, 3), cache-blocked: the input and output transforms of
:class:`~edifice.models.winograd.WinogradConv2d` for a few patches at a time, so that the transformed
tiles stay in cache between the transform, the products (``torch.bmm``, MKL) and the output transform.

The torch formulation of :mod:`.winograd` makes six passes over whole tensors (pad, gather, two 1-D
transforms, products, output transform, bias) that do not fit in cache; on 64-channel 20 x 20 maps
those passes cost what the products save. Here each chunk of patches is copied into a zero-bordered
buffer, transformed tile by tile into ``V`` (tiles, 49, C_in), multiplied by the transformed filters
point by point (49 products of (tiles x C_in) by (C_in x C_out)) into ``M`` (tiles, 49, C_out) and
transformed back, with the bias, straight into the channels-last output. The kernels loop over the
channels innermost (vectorised) with the 7 x 7 transform matrices read from arrays, so one compiled
kernel serves any channel count; they are specialised to F(5, 3) (7 x 7 input tiles, 5 x 5 output
tiles) and to maps whose sides are multiples of 5 (the caller checks, :func:`applies`).

Measured (batch 64, two threads each running its own batches as the SHAFTS inference does, this 2-core
AVX-512 CPU at load average 4-5; best of 8, CPU time): 64 channels 20 x 20 11.7 ms per batch against
14.7 for the direct (oneDNN) convolution and 20.8 for the torch transforms; 128 channels 10 x 10 7.9
against 10.8 (torch transforms) and 14.8 (direct); on maps of one tile (5 x 5) no gain over the torch
transforms (256 channels: 7.6 against 7.0), so :class:`~.winograd.WinogradConv2d` uses these kernels on
maps of more than one tile only. The SHAFTS 100 m network: 0.85-0.9x the CPU time per patch of the
torch transforms (two threads, load 4-5).

Optional: :data:`AVAILABLE` is False when numba is not installed (:mod:`.winograd` then uses its torch
formulation). Compiled code is cached on disk (numba ``cache=True``); ``nogil``: the batch-parallel
CPU workers run it in parallel threads. Scratch buffers are kept per thread and per shape (a few MB;
freed with the thread). Imports torch and numba.
"""
from __future__ import annotations

import threading

import numpy as np
import torch

try:  # pragma: no cover - exercised when numba is installed
    import numba
except ImportError:  # pragma: no cover
    numba = None

AVAILABLE = numba is not None
#: Output tile side and input tile side of the compiled kernels (F(5, 3)).
M, T = 5, 7
#: Bytes of transformed tiles (V and M together) per chunk: small enough to stay in a core's L2 cache.
CHUNK_BYTES = 3 << 20

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


def winograd_f53(x: torch.Tensor, u: torch.Tensor, bt: np.ndarray, at: np.ndarray, bias: np.ndarray,
                 relu: bool = False) -> torch.Tensor:
    """3x3 stride-1 zero-padded convolution of ``x`` (N, C, H, W) float32, H and W multiples of 5, by
    Winograd F(5, 3): ``u`` (49, C, C_out) transformed filters, ``bt`` (7, 7) B^T, ``at`` (5, 7) A^T,
    ``bias`` (C_out,); ``relu``: followed by a ReLU, applied as the output is written (the same values
    as a ReLU after it, one pass less). Returns (N, C_out, H, W) in channels-last memory format."""
    n, c, h, w = x.shape
    co = u.shape[-1]
    xn = x.detach().permute(0, 2, 3, 1).contiguous().numpy()
    y = torch.empty((n, h, w, co), dtype=torch.float32)
    yn = y.numpy().reshape(n * h * w, co)
    per = (h // M) * (w // M)
    k = max(1, min(n, CHUNK_BYTES // (per * T * T * 4 * (c + co))))
    xp = _scratch("xp", (k, h + 2, w + 2, c), zero=True)
    v = _scratch("v", (k * per, T * T, c))
    mm = _scratch("m", (k * per, T * T, co))
    vt, mt = torch.from_numpy(v), torch.from_numpy(mm)
    for n0 in range(0, n, k):
        n1 = min(n, n0 + k)
        p = (n1 - n0) * per
        _input_transform(xn, n0, n1, xp, bt, v)
        torch.bmm(vt[:p].transpose(0, 1), u, out=mt[:p].transpose(0, 1))
        _output_transform(mm, at, bias, yn, h, w, n0, n1, relu)
    return y.permute(0, 3, 1, 2)


def _pad_copy(x, n0, n1, xp):
    """Patches n0..n1 of ``x`` (N, H, W, C) into the interior of ``xp`` (k, H + 2, W + 2, C)."""
    _, h, w, c = x.shape
    for n in range(n0, n1):
        for r in range(h):
            for q in range(w):
                for ch in range(c):
                    xp[n - n0, r + 1, q + 1, ch] = x[n, r, q, ch]


def _input_transform(x, n0, n1, xp, bt, v):
    """``V[p, 7a + b] = sum_ij B^T[a, i] B^T[b, j] d_p[i, j]`` for every 7 x 7 tile ``d_p`` (stride 5)
    of patches n0..n1 of ``x`` (N, H, W, C) zero-padded by one pixel, tiles in row-major order."""
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
                    for a in range(7):
                        b0, b1, b2, b3, b4, b5, b6 = bt[a, 0], bt[a, 1], bt[a, 2], bt[a, 3], bt[a, 4], bt[a, 5], bt[a, 6]
                        for ch in range(c):
                            tmp[a, j, ch] = (b0 * xp[n, r0, cj, ch] + b1 * xp[n, r0 + 1, cj, ch]
                                             + b2 * xp[n, r0 + 2, cj, ch] + b3 * xp[n, r0 + 3, cj, ch]
                                             + b4 * xp[n, r0 + 4, cj, ch] + b5 * xp[n, r0 + 5, cj, ch]
                                             + b6 * xp[n, r0 + 6, cj, ch])
                for a in range(7):                       # rows: V[7a + b] = sum_j B^T[b, j] tmp[a, j]
                    for b in range(7):
                        b0, b1, b2, b3, b4, b5, b6 = bt[b, 0], bt[b, 1], bt[b, 2], bt[b, 3], bt[b, 4], bt[b, 5], bt[b, 6]
                        q = 7 * a + b
                        for ch in range(c):
                            v[p, q, ch] = (b0 * tmp[a, 0, ch] + b1 * tmp[a, 1, ch] + b2 * tmp[a, 2, ch]
                                           + b3 * tmp[a, 3, ch] + b4 * tmp[a, 4, ch] + b5 * tmp[a, 5, ch]
                                           + b6 * tmp[a, 6, ch])
                p += 1


def _output_transform(mm, at, bias, y, h, w, n0, n1, relu):
    """``y[n, 5ty + a, 5tx + b] = bias + sum_ij A^T[a, i] A^T[b, j] M_p[7i + j]`` for every tile p of
    patches n0..n1 (``y`` is (N * H * W, C_out), channels last), then max(y, 0) where ``relu``."""
    c = mm.shape[2]
    th, tw = h // 5, w // 5
    tmp = np.empty((5, 7, c), np.float32)
    zero = np.float32(0.0)
    p = 0
    for n in range(n0, n1):
        for ty in range(th):
            for tx in range(tw):
                for j in range(7):                       # tmp[a, j] = sum_i A^T[a, i] M[7i + j]
                    for a in range(5):
                        a0, a1, a2, a3, a4, a5, a6 = at[a, 0], at[a, 1], at[a, 2], at[a, 3], at[a, 4], at[a, 5], at[a, 6]
                        for ch in range(c):
                            tmp[a, j, ch] = (a0 * mm[p, j, ch] + a1 * mm[p, 7 + j, ch] + a2 * mm[p, 14 + j, ch]
                                             + a3 * mm[p, 21 + j, ch] + a4 * mm[p, 28 + j, ch]
                                             + a5 * mm[p, 35 + j, ch] + a6 * mm[p, 42 + j, ch])
                for a in range(5):                       # y[a, b] = bias + sum_j A^T[b, j] tmp[a, j]
                    row = (n * h + ty * 5 + a) * w + tx * 5
                    for b in range(5):
                        a0, a1, a2, a3, a4, a5, a6 = at[b, 0], at[b, 1], at[b, 2], at[b, 3], at[b, 4], at[b, 5], at[b, 6]
                        for ch in range(c):
                            val = bias[ch] + (a0 * tmp[a, 0, ch] + a1 * tmp[a, 1, ch] + a2 * tmp[a, 2, ch]
                                              + a3 * tmp[a, 3, ch] + a4 * tmp[a, 4, ch] + a5 * tmp[a, 5, ch]
                                              + a6 * tmp[a, 6, ch])
                            y[row + b, ch] = zero if relu and val < zero else val
                p += 1


if AVAILABLE:  # pragma: no branch
    _fast = {"contract"}          # fused multiply-adds only: no reassociation
    _pad_copy = numba.njit(cache=True, nogil=True)(_pad_copy)
    _input_transform = numba.njit(cache=True, nogil=True, fastmath=_fast)(_input_transform)
    _output_transform = numba.njit(cache=True, nogil=True, fastmath=_fast)(_output_transform)


def warm_up() -> None:
    """Compile or load the kernels (first use in a process) on a tiny layer."""
    if not AVAILABLE:
        return
    bt, at = np.eye(7, dtype=np.float32), np.eye(5, 7, dtype=np.float32)
    with torch.inference_mode():
        winograd_f53(torch.zeros(1, 1, 5, 5), torch.zeros(49, 1, 1), bt, at, np.zeros(1, np.float32))
