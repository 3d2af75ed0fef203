"""Compiled (numba) Winograd F(5, 3), cache-blocked: the input transform, the products and the output
transform of :class:`~edifice.models.winograd.WinogradConv2d` for a few patches at a time, so that the
transformed tiles stay in cache between them.

The torch formulation of :mod:`.winograd` makes six passes over whole tensors (pad, gather, two 1-D
transforms, products, output transform, bias) that do not fit in cache; on 64-channel 20 x 20 maps
those passes cost what the products save. Here each chunk of patches is copied into a zero-bordered
buffer, transformed tile by tile into ``V`` (49, tiles, C_in), multiplied by the transformed filters
point by point (49 products of (tiles x C_in) by (C_in x C_out), contiguous operands; by
:mod:`._gemm_compiled` where C_out is a multiple of its block, else ``torch.bmm``) into ``M`` (49,
tiles, C_out) and transformed back, with the bias, straight into the channels-last output. A chunk's
tiles take at least as many bytes as the transformed filters, which are read once per chunk (256
channels: 12.8 MB of filters, the whole batch in one chunk).

Each tile's transform is one kernel of LLVM vector operations (numba intrinsics, :mod:`._simd`) over
vectors of channels, the channels left over below a vector in scalar lanes, so one kernel serves any
channel count. The rows of B^T and A^T are term tables (:data:`BT_ROWS`, :data:`AT_ROWS`: 15 of B^T's 49
and 8 of A^T's 35 entries are zero and left out), evaluated with the fused multiply-adds of the numba
kernels that read all seven entries from arrays (bit-identical outputs, tested against those kernels in
``tests/unit/test_winograd.py``). The input transform goes row by row of the result (a row's seven
column sums, then its seven entries: few values live at once), the output transform by channel vector
(49 inputs, 35 column sums, 25 outputs). Measured against the numba loops they replace (session 12, AMD
EPYC Zen 5, one thread, batch 64, min of 10 interleaved rounds, us a patch): input 13.6 against 16.7 (64
ch 20 x 20), 6.6 against 8.9 (128 ch 10 x 10), 2.5 against 3.5 (256 ch 5 x 5); output 10.1 against
13.1, 5.3 against 6.2, 2.7 against 2.3; the input transform by channel vector instead was 2x slower
(spills). The whole SHAFTS 100 m network: 0.81-0.85 against 0.89-0.93 ms a patch (one thread, batch 64,
caches flushed between batches, three interleaved runs). They are specialised to F(5, 3) (7 x 7 input
tiles, 5 x 5 output tiles) and to maps whose sides are multiples of 5 (the caller checks,
:func:`applies`), one tile (5 x 5) included: 256 ch 5 x 5 2.9 ms a batch against 3.7 with the torch
transforms once the products are compiled (before them no gain, 7.6 against 7.0).

Earlier measurements (Intel CPUs, products by ``torch.bmm``):
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
transforms; 128 channels 10 x 10 7.9 against 10.8 (torch transforms) and 14.8 (direct). The SHAFTS 100
m network: 0.85-0.9x the CPU time per patch of the torch transforms (two threads, load 4-5).

Optional: :data:`AVAILABLE` is False when numba is not installed (:mod:`.winograd` then uses its torch
formulation). Compiled code is cached on disk (numba ``cache=True``); ``nogil``: the batch-parallel
CPU workers run it in parallel threads. Scratch buffers are kept per thread and per shape (a few MB to
tens of MB; freed with the thread). Imports torch, numba and llvmlite.
"""
from __future__ import annotations

import threading

import numpy as np
import torch

from . import _gemm_compiled as _gemm

try:  # pragma: no cover - exercised when numba is installed
    import numba
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    from . import _simd
except ImportError:  # pragma: no cover
    numba = None

AVAILABLE = numba is not None and not numba.config.DISABLE_JIT   # intrinsics need compiled code
#: Output tile side and input tile side of the compiled kernels (F(5, 3)).
M, T = 5, 7
#: Bytes of transformed tiles (V and M together) per chunk: small enough to stay in a core's L2 cache.
CHUNK_BYTES = 3 << 20

#: The rows of F(5, 3)'s B^T and A^T (:func:`~.winograd.winograd_matrices`) as the sums the kernels compute,
#: terms ``(coefficient, input)`` with the zero entries left out: ``None`` adds the input itself, -1 its
#: negation, ``"4x"`` adds ``(d + d) + (d + d)``. Evaluated left to right, the first product fused into the
#: first addition (B^T's row 2 lists its second entry first for that), every later product fused into the
#: addition that takes it: the fused multiply-adds LLVM made of the kernels that read all seven entries
#: from arrays (bit-identical outputs, tested against those kernels in ``tests/unit/test_winograd.py``).
BT_ROWS = (((-2.0, 0), (4.0, 1), (2.5, 2), (-5.0, 3), (-0.5, 4), (None, 5)),
           ((2.0, 1), (-2.0, 2), (-4.5, 3), (0.5, 4), (None, 5)),
           ((6.0, 2), (-2.0, 1), (-3.5, 3), (-1.5, 4), (None, 5)),
           ((None, 1), (-1.5, 2), (-2.0, 3), (1.5, 4), (None, 5)),
           ((-1.0, 1), (2.5, 2), (-2.5, 4), (None, 5)),
           (("4x", 1), (-5.0, 3), (None, 5)),
           ((-2.0, 1), (4.0, 2), (2.5, 3), (-5.0, 4), (-0.5, 5), (None, 6)))
AT_ROWS = (((None, 0), (None, 1), (None, 2), (None, 3), (None, 4), (None, 5)),
           ((None, 1), (-1.0, 2), (2.0, 3), (-2.0, 4), (0.5, 5)),
           ((None, 1), (None, 2), (4.0, 3), (4.0, 4), (0.25, 5)),
           ((None, 1), (-1.0, 2), (8.0, 3), (-8.0, 4), (0.125, 5)),
           ((None, 1), (None, 2), (16.0, 3), (16.0, 4), (0.0625, 5), (None, 6)))

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
    of patches n0..n1 of ``x`` (N, H, W, C) zero-padded by one pixel, tiles in row-major order."""
    _pad_copy(x, n0, n1, xp)
    _, hp, wp, c = xp.shape
    p = 0
    for n in range(n1 - n0):
        for ty in range((hp - 2) // 5):
            for tx in range((wp - 2) // 5):
                _input_tile(xp, n, 5 * ty, 5 * tx, v, p)
                p += 1


def _output_transform(mm, bias, y, h, w, n0, n1, relu):
    """``y[n, 5ty + a, 5tx + b] = bias + sum_ij A^T[a, i] A^T[b, j] M[7i + j, p]`` for every tile p of
    patches n0..n1 (``y`` is (N * H * W, C_out), channels last), then max(y, 0) where ``relu``."""
    p = 0
    for n in range(n0, n1):
        for ty in range(h // 5):
            for tx in range(w // 5):
                _output_tile(mm, p, bias, y, (n * h + 5 * ty) * w + 5 * tx, w, relu)
                p += 1


def _combine(builder, fma, terms, xs, lanes):
    """IR of one row's sum (:data:`BT_ROWS`, :data:`AT_ROWS`) over the values ``xs`` (``lanes`` wide)."""
    def is_product(term):
        return term[0] not in (None, -1.0, "4x")

    def value(term):
        coef, x = term[0], xs[term[1]]
        if coef is None:
            return x
        if coef == -1.0:
            return builder.fneg(x)
        if coef == "4x":
            return builder.fadd(builder.fadd(x, x), builder.fadd(x, x))
        return builder.fmul(_simd.constant(coef, lanes), x)

    def fused(term, acc):
        return builder.call(fma, [_simd.constant(term[0], lanes), xs[term[1]], acc])

    first, second = terms[0], terms[1]
    if is_product(first):
        acc = fused(first, value(second))
    elif is_product(second):
        acc = fused(second, value(first))
    else:
        acc = builder.fadd(value(first), value(second))
    for term in terms[2:]:
        acc = fused(term, acc) if is_product(term) else builder.fadd(acc, value(term))
    return acc


def _channel_groups(builder, c, emit) -> None:
    """``emit(offset, lanes)`` for every whole vector of the ``c`` channels, then for each channel left over
    (lanes 1)."""
    whole = builder.udiv(c, _simd.I64(_simd.LANES))
    with cgutils.for_range(builder, whole) as loop:
        emit(builder.mul(loop.index, _simd.I64(_simd.LANES)), _simd.LANES)
    done = builder.mul(whole, _simd.I64(_simd.LANES))
    with cgutils.for_range(builder, builder.sub(c, done)) as loop:
        emit(builder.add(done, loop.index), 1)


if AVAILABLE:  # pragma: no branch
    @intrinsic
    def _input_tile(typingctx, xp, n, r0, c0, v, p):
        """``V[:, p] =`` B^T d B of the tile of ``xp[n]`` (k, H + 2, W + 2, C) at (r0, c0); ``v`` (49, P, C).
        By rows of the result: for each row a, its seven column sums, then its seven entries (few values
        live at a time: no spilling)."""
        if not (_simd.is_float32_array(xp, 4) and _simd.is_float32_array(v, 3)):
            return None
        return types.void(xp, types.intp, types.intp, types.intp, v, types.intp), _input_tile_ir

    def _input_tile_ir(context, builder, signature, args):
        xs, vs = (context.make_array(signature.args[i])(context, builder, args[i]) for i in (0, 4))
        n, r0, c0, p = args[1], args[2], args[3], args[5]
        _, hp, wp, c = cgutils.unpack_tuple(builder, xs.shape, 4)
        point_stride = builder.mul(cgutils.unpack_tuple(builder, vs.shape, 3)[1], c)
        row_stride = builder.mul(wp, c)
        tile = builder.add(builder.mul(builder.add(builder.mul(n, hp), r0), row_stride), builder.mul(c0, c))
        out0 = builder.mul(p, c)
        for a in range(7):
            def emit(ch, lanes, a=a):
                fma = _simd.fma_function(builder, lanes)
                cols = []
                for j in range(7):
                    col = builder.add(tile, builder.add(builder.mul(_simd.I64(j), c), ch))
                    d = {i: _simd.load(builder, xs.data, builder.add(col, builder.mul(_simd.I64(i), row_stride)),
                                       lanes) for _, i in BT_ROWS[a]}
                    cols.append(_combine(builder, fma, BT_ROWS[a], d, lanes))
                for b in range(7):
                    at = builder.add(builder.add(builder.mul(_simd.I64(7 * a + b), point_stride), out0), ch)
                    _simd.store(builder, _combine(builder, fma, BT_ROWS[b], cols, lanes), vs.data, at, lanes)
            _channel_groups(builder, c, emit)
        return context.get_dummy_value()

    @intrinsic
    def _output_tile(typingctx, mm, p, bias, y, row0, w, relu):
        """``y[row0 + a w + b] = bias +`` (A^T M A)[a, b] for tile p of ``mm`` (49, P, C), then max(., 0)
        where ``relu``. By channel vectors: the 49 inputs, the 35 column sums, the 25 outputs."""
        if not all(_simd.is_float32_array(t, d) for t, d in ((mm, 3), (bias, 1), (y, 2))):
            return None
        return types.void(mm, types.intp, bias, y, types.intp, types.intp, types.boolean), _output_tile_ir

    def _output_tile_ir(context, builder, signature, args):
        ms, bs, ys = (context.make_array(signature.args[i])(context, builder, args[i]) for i in (0, 2, 3))
        p, row0, w, relu = args[1], args[4], args[5], args[6]
        _, points, c = cgutils.unpack_tuple(builder, ms.shape, 3)
        point_stride = builder.mul(points, c)
        in0 = builder.mul(p, c)
        relu = relu if relu.type == _simd.I1 else builder.icmp_unsigned("!=", relu, ir.Constant(relu.type, 0))

        def emit(ch, lanes):
            fma = _simd.fma_function(builder, lanes)
            zero = _simd.constant(0.0, lanes)
            clip = _simd.splat(builder, relu, lanes)
            bias_v = _simd.load(builder, bs.data, ch, lanes)
            cols = [[None] * 7 for _ in range(5)]
            for j in range(7):
                points_j = [builder.add(builder.mul(_simd.I64(7 * i + j), point_stride), in0) for i in range(7)]
                m = [_simd.load(builder, ms.data, builder.add(at, ch), lanes) for at in points_j]
                for a in range(5):
                    cols[a][j] = _combine(builder, fma, AT_ROWS[a], m, lanes)
            for a in range(5):
                for b in range(5):
                    val = builder.fadd(bias_v, _combine(builder, fma, AT_ROWS[b], cols[a], lanes))
                    val = builder.select(builder.and_(builder.fcmp_ordered("<", val, zero), clip), zero, val)
                    pixel = builder.add(row0, builder.add(builder.mul(_simd.I64(a), w), _simd.I64(b)))
                    at = builder.add(builder.mul(pixel, c), ch)
                    _simd.store(builder, val, ys.data, at, lanes)
        _channel_groups(builder, c, emit)
        return context.get_dummy_value()

    _pad_copy = numba.njit(cache=True, nogil=True)(_pad_copy)
    _input_transform = numba.njit(cache=True, nogil=True)(_input_transform)
    _output_transform = numba.njit(cache=True, nogil=True)(_output_transform)


def warm_up() -> None:
    """Compile or load the kernels (first use in a process) on a tiny layer."""
    if not AVAILABLE:
        return
    with torch.inference_mode():
        winograd_f53(torch.zeros(1, 1, 5, 5), torch.zeros(49, 1, 1), np.zeros(1, np.float32))
    _gemm.warm_up()
