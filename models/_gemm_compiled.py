"""Small float32 matrix products at the CPU's full vector width, compiled with numba: the products of
Winograd's transformed tiles by the transformed filters (:mod:`.winograd`, :mod:`._winograd_compiled`).

``out[b] = v[b] @ u[b]`` for a batch of (P x C) by (C x K) products, C-contiguous float32, K a multiple
of :data:`COLS`. Each block of :data:`ROWS` rows by :data:`COLS` columns of ``out`` is one micro-kernel
written in LLVM vector operations (a numba intrinsic): its ROWS x 2 vector accumulators stay in
registers while k runs over C, each step one broadcast of ``v[p, k]`` per row and one fused
multiply-add per accumulator with the two vectors of ``u[k, j0:j0 + COLS]``. Summation order: k = 0, 1,
..., C - 1, one fused multiply-add each, the same on every run and for every batch composition.

Why: on an AMD CPU MKL runs its AVX2 code (``torch.bmm`` of these shapes at 84-106 GFLOP/s on one core of
an AMD EPYC Zen 5, whose AVX-512 peak is ~256 GFLOP/s; oneDNN's direct convolution reaches ~260), and
oneDNN's matmul pays ~12 us a call (49 calls a chunk). Measured there (one thread, 49 products, best of
20, session 12): (112 x 64) by (64 x 64) 250 GFLOP/s against bmm's 101; (60 x 128) by (128 x 128) 253
against 100; (64 x 256) by (256 x 256) 224 against 97. Blocks tried: 6, 8, 10 and 12 rows by 32
columns, 4 and 6 by 64: 12 x 32 within a few percent of the best on every shape.

The vector width follows the CPU numba compiles for (:mod:`._simd`): 16 floats with AVX-512F (12 x 32
blocks, 24 of the 32 vector registers), else 8 (AVX/AVX2: 6 x 16 blocks, 12 of 16 registers), else 4
(6 x 8). Rows left over below a block are done in blocks of 8, 4, 2 and 1 rows. No bounds checks inside
the kernels: the entry points check shapes, types and layout first.

Optional: :data:`AVAILABLE` is False without numba. Compiled code is cached on disk (numba
``cache=True``, keyed by CPU); ``nogil``: callable from parallel threads.
"""
from __future__ import annotations

import os

import numpy as np

try:  # pragma: no cover - exercised when numba is installed
    import numba
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    from . import _simd
except ImportError:  # pragma: no cover
    numba = None

AVAILABLE = numba is not None and not numba.config.DISABLE_JIT   # intrinsics need compiled code

#: float32 lanes per vector; rows and columns of one micro-kernel block.
LANES = _simd.LANES if AVAILABLE else 4
ROWS = 12 if LANES == 16 else 6
COLS = 2 * LANES


def applies(k: int) -> bool:
    """Whether products with ``k`` output columns can be computed here (numba installed, k a multiple of
    :data:`COLS`, not switched off by ``EDIFICE_COMPILED_GEMM=0``)."""
    return AVAILABLE and k > 0 and k % COLS == 0 and os.environ.get("EDIFICE_COMPILED_GEMM", "1") != "0"


def batched_matmul_into(v: np.ndarray, u: np.ndarray, out: np.ndarray) -> None:
    """``out[b] = v[b] @ u[b]``: v (B, P, C), u (B, C, K), out (B, P, K), float32, C-contiguous, K a
    multiple of :data:`COLS` (:func:`applies`); raises ValueError otherwise."""
    arrays = (v, u, out)
    if not all(isinstance(a, np.ndarray) and a.dtype == np.float32 and a.ndim == 3 and a.flags.c_contiguous
               for a in arrays):
        raise ValueError("batched_matmul_into needs C-contiguous float32 arrays of 3 dimensions")
    (b, p, c), (b2, c2, k), (b3, p3, k3) = v.shape, u.shape, out.shape
    if not (b == b2 == b3 and c == c2 and p == p3 and k == k3) or not applies(k) or c == 0:
        raise ValueError(f"cannot multiply {v.shape} by {u.shape} into {out.shape} here")
    _batched(v, u, out)


if AVAILABLE:  # pragma: no branch
    def _micro_kernel(rows: int):
        """An intrinsic ``kernel(v, u, out, p0, j0)``: ``out[p0:p0 + rows, j0:j0 + COLS] = v[p0:p0 + rows]
        @ u[:, j0:j0 + COLS]`` (no bounds checks)."""

        @intrinsic
        def kernel(typingctx, v, u, out, p0, j0):
            if not all(_simd.is_float32_array(t, 2) for t in (v, u, out)):
                return None
            return types.void(v, u, out, types.intp, types.intp), _codegen

        def _codegen(context, builder, signature, args):
            vs, us, outs = (context.make_array(t)(context, builder, a)
                            for t, a in zip(signature.args[:3], args))
            p0, j0 = args[3], args[4]
            c = cgutils.unpack_tuple(builder, vs.shape, 2)[1]
            k = cgutils.unpack_tuple(builder, us.shape, 2)[1]
            fma = _simd.fma_function(builder)
            acc = [[cgutils.alloca_once_value(builder, _simd.constant(0.0)) for _ in range(2)]
                   for _ in range(rows)]
            row_starts = [builder.mul(builder.add(p0, _simd.I64(r)), c) for r in range(rows)]
            with cgutils.for_range(builder, c) as loop:
                u_row = builder.add(builder.mul(loop.index, k), j0)
                u_vecs = [_simd.load(builder, us.data, builder.add(u_row, _simd.I64(w * LANES))) for w in range(2)]
                for r in range(rows):
                    v_rk = builder.load(builder.gep(vs.data, [builder.add(row_starts[r], loop.index)]))
                    a = _simd.splat(builder, v_rk)
                    for w in range(2):
                        builder.store(builder.call(fma, [a, u_vecs[w], builder.load(acc[r][w])]), acc[r][w])
            for r in range(rows):
                out_row = builder.add(builder.mul(builder.add(p0, _simd.I64(r)), k), j0)
                for w in range(2):
                    at = builder.add(out_row, _simd.I64(w * LANES))
                    _simd.store(builder, builder.load(acc[r][w]), outs.data, at)
            return context.get_dummy_value()

        return kernel

    _k_block = _micro_kernel(ROWS)
    _k8, _k4, _k2, _k1 = (_micro_kernel(r) for r in (8, 4, 2, 1))

    @numba.njit(cache=True, nogil=True)
    def _matmul(v, u, out):
        """out = v @ u, one matrix (shapes checked by the caller)."""
        p, k = v.shape[0], u.shape[1]
        for j0 in range(0, k, COLS):
            p0 = 0
            while p0 + ROWS <= p:
                _k_block(v, u, out, p0, j0)
                p0 += ROWS
            if ROWS > 8 and p - p0 >= 8:
                _k8(v, u, out, p0, j0)
                p0 += 8
            if p - p0 >= 4:
                _k4(v, u, out, p0, j0)
                p0 += 4
            if p - p0 >= 2:
                _k2(v, u, out, p0, j0)
                p0 += 2
            if p - p0 >= 1:
                _k1(v, u, out, p0, j0)

    @numba.njit(cache=True, nogil=True)
    def _batched(v, u, out):
        for b in range(v.shape[0]):
            _matmul(v[b], u[b], out[b])


def warm_up() -> None:
    """Compile or load the kernels (first use in a process) on a tiny product."""
    if applies(COLS):
        batched_matmul_into(np.zeros((1, 1, 1), np.float32), np.zeros((1, 1, COLS), np.float32),
                            np.zeros((1, 1, COLS), np.float32))
