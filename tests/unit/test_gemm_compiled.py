"""The compiled micro-kernel products of models/_gemm_compiled.py: values, summation order, refusals,
and their use in the Winograd layers."""
import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edifice.models.winograd import WinogradConv2d

pytestmark = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba is not installed")


def _gemm():
    from edifice.models import _gemm_compiled
    return _gemm_compiled


def _operands(b, p, c, k, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((b, p, c), dtype=np.float32), rng.standard_normal((b, c, k), dtype=np.float32))


@pytest.mark.parametrize("c", [1, 7, 64, 256])
def test_products_equal_the_float64_products_to_float32_rounding(c):
    """Every row count from 1 to 2 blocks + 11 (the full block and each left-over kernel: 8, 4, 2, 1 rows)
    and two column blocks: within C float32 roundings of the float64 product, every element written."""
    g = _gemm()
    k = 2 * g.COLS
    for p in range(1, 2 * g.ROWS + 12):
        v, u = _operands(3, p, c, k, seed=p)
        out = np.full((3, p, k), np.nan, np.float32)
        g.batched_matmul_into(v, u, out)
        want = np.matmul(v.astype(np.float64), u.astype(np.float64))
        bound = (c + 1) * 2.0 ** -24 * np.matmul(np.abs(v).astype(np.float64), np.abs(u).astype(np.float64))
        assert np.all(np.abs(out - want) <= bound), (p, c)


def test_a_row_is_the_same_whichever_kernel_computes_it():
    """Each element is one fused multiply-add per k in order, in the full blocks and in the kernels for
    left-over rows alike: the product of all rows equals each row multiplied alone, bit for bit (so an
    output does not depend on how the patches are batched)."""
    g = _gemm()
    v, u = _operands(2, 2 * g.ROWS + 7, 96, g.COLS, seed=3)
    whole = np.empty((2, v.shape[1], g.COLS), np.float32)
    g.batched_matmul_into(v, u, whole)
    for r in range(v.shape[1]):
        alone = np.empty((2, 1, g.COLS), np.float32)
        g.batched_matmul_into(np.ascontiguousarray(v[:, r:r + 1]), u, alone)
        assert np.array_equal(alone[:, 0], whole[:, r]), r


def test_bad_operands_are_refused_not_read_out_of_bounds():
    g = _gemm()
    v, u = _operands(2, 5, 8, g.COLS)
    out = np.empty((2, 5, g.COLS), np.float32)
    bad = [
        (v.astype(np.float64), u, out),                                        # dtype
        (v, u[:, :, :g.COLS - 1].copy(), out[:, :, :g.COLS - 1].copy()),       # columns not a block multiple
        (v, u[:, :7].copy(), out),                                             # inner sizes differ
        (v[:1].copy(), u, out),                                                # batch sizes differ
        (v, u, np.empty((2, 4, g.COLS), np.float32)),                          # rows differ
        (np.asfortranarray(v), u, out),                                        # not C-contiguous
        (v[0], u[0], out[0]),                                                  # not batched
    ]
    for args in bad:
        with pytest.raises(ValueError):
            g.batched_matmul_into(*args)


def test_switched_off_by_the_environment(monkeypatch):
    g = _gemm()
    assert g.applies(g.COLS) and not g.applies(g.COLS + 1) and not g.applies(0)
    monkeypatch.setenv("EDIFICE_COMPILED_GEMM", "0")
    assert not g.applies(g.COLS)


@pytest.mark.parametrize("cin,cout,side", [(256, 256, 5), (128, 64, 5), (64, 64, 20), (64, 64, 7)])
def test_winograd_layers_with_the_compiled_products(cin, cout, side, monkeypatch):
    """Maps of one tile and of many (compiled transforms and products) and a map whose side is not a
    multiple of 5 (torch transforms, compiled products): within the float32 Winograd bound of the float64
    direct convolution, and within float32 rounding of the same layer with torch.bmm's products
    (EDIFICE_COMPILED_GEMM=0)."""
    torch.manual_seed(cin + side)
    conv = torch.nn.Conv2d(cin, cout, 3, 1, 1).eval()
    layer = WinogradConv2d(conv, max_side=20, compiled=True)
    x = torch.rand(9, cin, side, side, generator=torch.Generator().manual_seed(2)).contiguous(
        memory_format=torch.channels_last)
    want = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    g, calls = _gemm(), []
    real = g.batched_matmul_into
    monkeypatch.setattr(g, "batched_matmul_into", lambda *a: calls.append(a[0].shape) or real(*a))
    with torch.inference_mode():
        got = layer(x)
        assert calls and sum(s[1] for s in calls) == 9 * (-(-side // 5)) ** 2   # every tile, once
        n = len(calls)
        monkeypatch.setenv("EDIFICE_COMPILED_GEMM", "0")
        with_bmm = layer(x)
    assert len(calls) == n                                                     # switched off: bmm
    scale = want.abs().max().item()
    assert (got.double() - want).abs().max().item() < 2 ** -13 * scale
    assert (got - with_bmm).abs().max().item() < 2 ** -16 * scale


_NARROW_VECTORS_SCRIPT = """
import numpy as np, torch, torch.nn.functional as F
from edifice.models import _gemm_compiled as g, _simd
from edifice.models.winograd import WinogradConv2d
rng = np.random.default_rng(0)
for p in range(1, 2 * g.ROWS + 3):
    v = rng.standard_normal((2, p, 40), dtype=np.float32)
    u = rng.standard_normal((2, 40, 2 * g.COLS), dtype=np.float32)
    out = np.empty((2, p, 2 * g.COLS), np.float32)
    g.batched_matmul_into(v, u, out)
    assert np.abs(out - v @ u).max() < 1e-4, p
torch.manual_seed(0)
for cin, side in ((64, 20), (37, 10), (256, 5)):
    conv = torch.nn.Conv2d(cin, 64, 3, 1, 1).eval()
    x = torch.rand(3, cin, side, side)
    with torch.inference_mode():
        got = WinogradConv2d(conv, max_side=20, compiled=True)(x)
    want = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    assert (got.double() - want).abs().max() < 2 ** -13 * want.abs().max(), cin
print("lanes", _simd.LANES, g.ROWS, g.COLS)
"""


@pytest.mark.parametrize("target,lanes", [({"NUMBA_CPU_NAME": "haswell",
                                            "NUMBA_CPU_FEATURES": "+avx,+avx2,+fma,+sse4.2,+popcnt"}, 8),
                                           ({"NUMBA_CPU_NAME": "generic"}, 4)])
def test_narrower_vector_targets(target, lanes, tmp_path):
    """Compiled for an AVX2 CPU (8 lanes: 6 x 16 blocks) and for numba's generic target (4 lanes), in a
    fresh process: products for every left-over row count, and Winograd layers (a channel count that is
    not a multiple of the vector: scalar lanes) within their float32 bounds."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), **target)
    run = subprocess.run([sys.executable, "-c", _NARROW_VECTORS_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["lanes", str(lanes), "6", str(2 * lanes)]
