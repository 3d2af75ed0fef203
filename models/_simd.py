"""LLVM vector operations for the compiled kernels written as numba intrinsics (:mod:`._gemm_compiled`,
:mod:`._winograd_compiled`): the float32 vector width of the CPU numba compiles for, and the IR of
vector loads, stores, constants, broadcasts and fused multiply-adds. Every helper also takes ``lanes=1``
(plain float32 scalars), for the channels left over below a whole vector.

Imports numba and llvmlite (callers import this module only where numba is installed). numba's on-disk cache
of a kernel is keyed on the kernel's own file: after changing this module, clear ``models/__pycache__/*.nb*``
(or touch the kernels' files), else the cached kernels keep the old IR.
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils

F32, I1, I32, I64 = ir.FloatType(), ir.IntType(1), ir.IntType(32), ir.IntType(64)


def _vector_lanes() -> int:
    """float32 lanes of the widest vector registers of the CPU numba compiles for: 16 with AVX-512F, 8
    with AVX, else 4 (also for numba's 'generic' target)."""
    if str(numba.config.CPU_NAME).lower() == "generic":
        return 4
    features = numba.config.CPU_FEATURES or ""
    if not features:
        import llvmlite.binding as llvm
        features = llvm.get_host_cpu_features().flatten()
    if "+avx512f" in features:
        return 16
    return 8 if "+avx" in features else 4


#: float32 lanes per vector register of this CPU.
LANES = _vector_lanes()


def is_float32_array(t, ndim: int) -> bool:
    """Whether the numba type ``t`` is a C-contiguous float32 array of ``ndim`` dimensions (what the
    kernels' pointer arithmetic assumes)."""
    return isinstance(t, types.Array) and t.dtype == types.float32 and t.ndim == ndim and t.layout == "C"


def vector_type(lanes: int = LANES, element=F32):
    return element if lanes == 1 else ir.VectorType(element, lanes)


def constant(value: float, lanes: int = LANES):
    """``value`` rounded to float32, in every lane."""
    v = float(np.float32(value))
    return ir.Constant(F32, v) if lanes == 1 else ir.Constant(vector_type(lanes), [v] * lanes)


def fma_function(builder, lanes: int = LANES):
    """LLVM's fused multiply-add intrinsic for ``lanes`` floats (one rounding)."""
    ty = vector_type(lanes)
    name = "llvm.fma.f32" if lanes == 1 else f"llvm.fma.v{lanes}f32"
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty] * 3), name)


def _pointer(builder, base, offset, lanes: int):
    ptr = builder.gep(base, [offset])
    return ptr if lanes == 1 else builder.bitcast(ptr, vector_type(lanes).as_pointer())


def load(builder, base, offset, lanes: int = LANES):
    """``lanes`` floats from ``base + offset`` (a float pointer and an element offset; unaligned)."""
    return builder.load(_pointer(builder, base, offset, lanes), align=4)


def store(builder, value, base, offset, lanes: int = LANES) -> None:
    builder.store(value, _pointer(builder, base, offset, lanes), align=4)


def splat(builder, scalar, lanes: int = LANES):
    """``scalar`` (a float or an i1) in every lane."""
    if lanes == 1:
        return scalar
    ty = vector_type(lanes, scalar.type)
    one = builder.insert_element(ir.Constant(ty, ir.Undefined), scalar, I32(0))
    return builder.shuffle_vector(one, ir.Constant(ty, ir.Undefined), ir.Constant(ir.VectorType(I32, lanes),
                                                                                  [0] * lanes))
