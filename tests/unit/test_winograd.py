"""Winograd F(m, 3) convolution (models/winograd.py) against the direct convolution."""
import random
from fractions import Fraction

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from edifice.models.shafts import build_shafts_model, fuse_for_inference
from edifice.models.winograd import POINTS, WinogradConv2d, winograd_layers, winograd_matrices

needs_numba = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba is not installed")


@pytest.mark.parametrize("m", sorted(POINTS))
def test_matrices_compute_the_correlation_exactly(m):
    """In exact rational arithmetic A^T[(G g) * (B^T d)] is the correlation sum_k g_k d_(i+k), for random
    integer data and filters: the transforms are right, not merely close."""
    at, g, bt = winograd_matrices(m)
    n, rng = m + 2, random.Random(m)
    for _ in range(20):
        d = [Fraction(rng.randint(-50, 50)) for _ in range(n)]
        f = [Fraction(rng.randint(-50, 50)) for _ in range(3)]
        gf = [sum(g[j][k] * f[k] for k in range(3)) for j in range(n)]
        bd = [sum(bt[j][i] * d[i] for i in range(n)) for j in range(n)]
        y = [sum(at[i][j] * gf[j] * bd[j] for j in range(n)) for i in range(m)]
        assert y == [sum(f[k] * d[i + k] for k in range(3)) for i in range(m)]


def test_matrices_refuse_wrong_points():
    with pytest.raises(ValueError, match="distinct"):
        winograd_matrices(4, 3, (0, 1, 1, 2, -2))
    with pytest.raises(ValueError, match="points"):
        winograd_matrices(4, 3, (0, 1, -1))


def _conv(cin, cout, bias, dtype, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Conv2d(cin, cout, 3, 1, 1, bias=bias).to(dtype).eval()


@pytest.mark.parametrize("h,w", [(10, 10), (5, 5), (7, 9), (1, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_float64_winograd_equals_the_direct_convolution(h, w, bias):
    """In float64 the only difference is rounding (1e-12), for maps that are and are not multiples of
    the 5-pixel tile (the crop path), with and without bias, channels-last and contiguous inputs."""
    conv = _conv(8, 6, bias, torch.float64)
    wino = WinogradConv2d(conv)
    x = torch.randn(3, 8, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    want = F.conv2d(x, conv.weight, conv.bias, padding=1)
    for inp in (x, x.contiguous(memory_format=torch.channels_last)):
        with torch.inference_mode():
            got = wino(inp)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_float32_winograd_error_is_float32_rounding():
    """float32, 256 channels on a 5 x 5 map (SHAFTS's deepest layer): error against the float64 direct
    convolution below 2^-13 of the output magnitude (the direct float32 convolution's own error is
    about 2^-17 of it here; the transforms multiply rounding by at most the sum of |entries| of A^T
    and B^T products, < 2^4); a wrong transform would be off by O(1)."""
    conv = _conv(256, 256, True, torch.float32)
    x = torch.rand(4, 256, 5, 5, generator=torch.Generator().manual_seed(2)).contiguous(
        memory_format=torch.channels_last)
    want = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    with torch.inference_mode():
        got = WinogradConv2d(conv)(x)
    err = (got.double() - want).abs().max().item()
    assert err < 2 ** -13 * want.abs().max().item()


def test_large_maps_and_autocast_use_the_direct_convolution():
    """Maps wider than max_side or smaller than min_side, and autocast (bf16), go to the wrapped
    convolution: bit-identical to it."""
    conv = _conv(4, 4, True, torch.float32)
    wino = WinogradConv2d(conv, max_side=10)
    x = torch.rand(2, 4, 12, 11)
    with torch.inference_mode():
        assert torch.equal(wino(x), conv(x))
        assert torch.equal(WinogradConv2d(conv, min_side=6)(x[..., :5, :5]), conv(x[..., :5, :5]))
        assert not torch.equal(WinogradConv2d(conv, min_side=5)(x[..., :5, :5]), conv(x[..., :5, :5]))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(wino(x[..., :5, :5]), conv(x[..., :5, :5]))


def test_incompatible_convolutions_are_refused():
    for conv in (torch.nn.Conv2d(4, 4, 3, 2, 1), torch.nn.Conv2d(4, 4, 1), torch.nn.Conv2d(4, 4, 3, 1, 0),
                 torch.nn.Conv2d(4, 4, 3, 1, 1, groups=2)):
        with pytest.raises(ValueError, match="3x3 stride-1"):
            WinogradConv2d(conv)


def _shafts_100m(seed=0):
    torch.manual_seed(seed)
    model = build_shafts_model(100, "multi", 2).eval()
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if k.endswith("running_mean"):
                v.copy_(torch.randn(v.shape) * 0.05)
    return model


def _assert_network_agrees(direct, wino):
    g = torch.Generator().manual_seed(3)
    x, d = torch.rand(6, 6, 20, 20, generator=g), 50 + 5 * torch.randn(6, 1, 20, 20, generator=g)
    with torch.inference_mode():
        want, got = direct(x, d), wino(x, d)
        feats = direct.features(x)
    assert feats.abs().max() > 0.01                     # the Sentinel branch carries signal
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-5 * (float(want[k].abs().max()) + 1e-6))


def test_shafts_100m_network_gets_winograd_only_where_it_pays():
    """Torch transforms (compiled=False): in the 100 m network the six 3x3 stride-1 convolutions of >= 128
    input channels (layers 2 and 3 of the Sentinel branch, maps of 10 x 10 and 5 x 5) are replaced; the
    stem, the 64-channel layer, the stride-2 and 1x1 convolutions and the DEM branch stay direct. The
    network's outputs agree with the direct one within 1e-5 of their magnitude."""
    model = _shafts_100m()
    direct, wino = fuse_for_inference(model), fuse_for_inference(model)
    assert winograd_layers(wino, compiled=False) == 6
    replaced = {n for n, m in wino.named_modules() if isinstance(m, WinogradConv2d)}
    assert replaced == {f"features.res_layer.{i}.{c}" for i in (1, 2) for c in ("0.conv2", "1.conv1", "1.conv2")}
    assert not any(m.compiled for m in wino.modules() if isinstance(m, WinogradConv2d))
    _assert_network_agrees(direct, wino)


@needs_numba
def test_shafts_100m_network_with_compiled_transforms():
    """Compiled transforms (the default where numba is installed): the 64-channel layers are replaced too
    (the Sentinel branch's first layer on 20 x 20 maps and the DEM branch's last, on 5 x 5 maps): 13
    layers; the stem, stride-2, 1x1 and narrower DEM convolutions stay direct; outputs within 1e-5 as
    above."""
    model = _shafts_100m()
    direct, wino = fuse_for_inference(model), fuse_for_inference(model)
    assert winograd_layers(wino) == 13
    replaced = {n for n, m in wino.named_modules() if isinstance(m, WinogradConv2d)}
    assert replaced == ({f"features.res_layer.0.{c}" for c in ("0.conv1", "0.conv2", "1.conv1", "1.conv2")}
                        | {f"features.res_layer.{i}.{c}" for i in (1, 2) for c in ("0.conv2", "1.conv1", "1.conv2")}
                        | {f"aux_features.res_layer.2.{c}" for c in ("0.conv2", "1.conv1", "1.conv2")})
    assert all(m.compiled for m in wino.modules() if isinstance(m, WinogradConv2d))
    assert {m.min_side for m in wino.modules() if isinstance(m, WinogradConv2d)} == {1}
    _assert_network_agrees(direct, wino)


# ---------------------------------------------------------------------------------------------------
# compiled (numba) transforms: models/_winograd_compiled.py
# ---------------------------------------------------------------------------------------------------
@needs_numba
@pytest.mark.parametrize("cin,cout,side", [(64, 64, 20), (128, 128, 10), (256, 128, 10), (3, 5, 15), (64, 32, 10)])
def test_compiled_transforms_equal_the_direct_convolution(cin, cout, side, monkeypatch):
    """float32, channels-last and contiguous inputs, with chunks small enough that a batch of 7 patches
    is cut into several (and a partial last one): error against the float64 direct convolution within
    the bound of the torch transforms (2^-13 of the output magnitude), output channels-last, and the same
    values as the torch transforms up to float32 rounding."""
    from edifice.models import _winograd_compiled as wc
    monkeypatch.setattr(wc, "CHUNK_BYTES", 3 * 49 * 4 * (cin + cout) * (side // 5) ** 2)   # 3 patches a chunk
    conv = _conv(cin, cout, True, torch.float32, seed=cin + side)
    x = torch.rand(7, cin, side, side, generator=torch.Generator().manual_seed(4))
    want = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    compiled, torch_path = WinogradConv2d(conv, max_side=20, compiled=True), WinogradConv2d(conv, max_side=20,
                                                                                              compiled=False)
    for inp in (x, x.contiguous(memory_format=torch.channels_last)):
        with torch.inference_mode():
            got = compiled(inp)
            other = torch_path(inp)
        assert got.shape == want.shape and got.is_contiguous(memory_format=torch.channels_last)
        scale = want.abs().max().item()
        assert (got.double() - want).abs().max().item() < 2 ** -13 * scale
        assert (got - other).abs().max().item() < 2 ** -14 * scale


@needs_numba
def test_written_out_transform_entries_are_those_of_the_matrices():
    """The compiled kernels' rows of B^T and A^T (zero terms left out) are F(5, 3)'s: each term's
    coefficient is the matrix entry, every nonzero entry has its term, each input once per row."""
    from edifice.models import _winograd_compiled as wc
    at, _, bt = winograd_matrices(5)
    for rows, mat in ((wc.BT_ROWS, bt), (wc.AT_ROWS, at)):
        assert len(rows) == len(mat)
        for row, want in zip(rows, mat):
            got = [Fraction(0)] * 7
            for coef, i in row:
                assert got[i] == 0
                got[i] = Fraction(1) if coef is None else Fraction(4) if coef == "4x" else Fraction(coef)
            assert got == [Fraction(v) for v in want]


def _generic_kernels():
    """The transforms with B^T and A^T read from arrays, all seven terms of every sum (the formulation
    before the entries were written out), for :mod:`._winograd_compiled`'s point-major layout."""
    import numba
    import numpy as np
    from edifice.models import _winograd_compiled as wc
    at, _, bt = (np.array([[float(v) for v in row] for row in mat], np.float32) for mat in winograd_matrices(5))

    def input_transform(x, n0, n1, xp, v):
        wc._pad_copy(x, n0, n1, xp)
        _, hp, wp, c = xp.shape
        tmp = np.empty((7, 7, c), np.float32)
        p = 0
        for n in range(n1 - n0):
            for ty in range((hp - 2) // 5):
                for tx in range((wp - 2) // 5):
                    r = 5 * ty
                    for j in range(7):
                        d = xp[n, :, 5 * tx + j]
                        for a in range(7):
                            for ch in range(c):
                                tmp[a, j, ch] = (bt[a, 0] * d[r, ch] + bt[a, 1] * d[r + 1, ch] + bt[a, 2] * d[r + 2, ch]
                                                 + bt[a, 3] * d[r + 3, ch] + bt[a, 4] * d[r + 4, ch]
                                                 + bt[a, 5] * d[r + 5, ch] + bt[a, 6] * d[r + 6, ch])
                    for a in range(7):
                        t = tmp[a]
                        for b in range(7):
                            for ch in range(c):
                                v[7 * a + b, p, ch] = (bt[b, 0] * t[0, ch] + bt[b, 1] * t[1, ch] + bt[b, 2] * t[2, ch]
                                                       + bt[b, 3] * t[3, ch] + bt[b, 4] * t[4, ch]
                                                       + bt[b, 5] * t[5, ch] + bt[b, 6] * t[6, ch])
                    p += 1

    def output_transform(mm, bias, y, h, w, n0, n1, relu):
        c = mm.shape[2]
        tmp = np.empty((5, 7, c), np.float32)
        p = 0
        for n in range(n0, n1):
            for ty in range(h // 5):
                for tx in range(w // 5):
                    m = mm[:, p]
                    for j in range(7):
                        for a in range(5):
                            for ch in range(c):
                                tmp[a, j, ch] = (at[a, 0] * m[j, ch] + at[a, 1] * m[7 + j, ch]
                                                 + at[a, 2] * m[14 + j, ch] + at[a, 3] * m[21 + j, ch]
                                                 + at[a, 4] * m[28 + j, ch] + at[a, 5] * m[35 + j, ch]
                                                 + at[a, 6] * m[42 + j, ch])
                    for a in range(5):
                        t = tmp[a]
                        for b in range(5):
                            for ch in range(c):
                                val = bias[ch] + (at[b, 0] * t[0, ch] + at[b, 1] * t[1, ch] + at[b, 2] * t[2, ch]
                                                  + at[b, 3] * t[3, ch] + at[b, 4] * t[4, ch] + at[b, 5] * t[5, ch]
                                                  + at[b, 6] * t[6, ch])
                                y[(n * h + 5 * ty + a) * w + 5 * tx + b, ch] = 0.0 if relu and val < 0.0 else val
                    p += 1

    jit = numba.njit(nogil=True, fastmath={"contract"})
    return jit(input_transform), jit(output_transform)


@needs_numba
@pytest.mark.parametrize("cin,cout,side", [(64, 64, 20), (128, 128, 10), (64, 128, 10), (3, 5, 15)])
def test_written_out_transforms_give_the_generic_kernels_values_exactly(cin, cout, side, monkeypatch):
    """The written-out transforms (zero terms left out, 4 d as (d + d) + (d + d)) compute exactly what
    the kernels with all seven terms and fused multiply-adds compute: bit-identical layer outputs, with
    and without the ReLU, on inputs of both signs (the outputs SHAFTS agreement was measured with)."""
    from edifice.models import _winograd_compiled as wc
    conv = _conv(cin, cout, True, torch.float32, seed=cin + side)
    layer = WinogradConv2d(conv, max_side=20, compiled=True)
    x = (torch.rand(9, cin, side, side, generator=torch.Generator().manual_seed(12)) - 0.3).contiguous(
        memory_format=torch.channels_last)
    generic_in, generic_out = _generic_kernels()
    for relu in (False, True):
        layer.relu = relu
        with torch.inference_mode():
            got = layer(x)
            with monkeypatch.context() as m:
                m.setattr(wc, "_input_transform", generic_in)
                m.setattr(wc, "_output_transform", generic_out)
                want = layer(x)
        assert torch.equal(got, want)


@needs_numba
def test_compiled_transforms_do_not_depend_on_the_batch():
    """A patch's output is the same whether it runs alone or in a batch of 9 (float rounding of the
    products aside: within 1e-6 of the magnitude)."""
    conv = _conv(64, 64, True, torch.float32, seed=5)
    wino = WinogradConv2d(conv, max_side=20, compiled=True)
    x = torch.rand(9, 64, 20, 20, generator=torch.Generator().manual_seed(6)).contiguous(
        memory_format=torch.channels_last)
    with torch.inference_mode():
        whole = wino(x)
        alone = torch.cat([wino(x[i:i + 1]) for i in range(9)])
    assert (whole - alone).abs().max().item() <= 1e-6 * whole.abs().max().item()


@needs_numba
def test_compiled_transforms_refused_where_they_do_not_apply():
    """Maps whose sides are not multiples of 5 go to the torch transforms (same values as with
    compiled=False); the compiled path says it does not apply there, nor to float64, other tile sizes or
    inputs that need gradients."""
    from edifice.models import _winograd_compiled as wc
    conv = _conv(8, 8, True, torch.float32)
    x = torch.rand(2, 8, 7, 10)
    assert not wc.applies(x, 5) and wc.applies(x[..., :5, :], 5) and not wc.applies(x[..., :5, :], 4)
    assert not wc.applies(x.double(), 5)
    xg = x[..., :5, :].clone().requires_grad_()
    assert not wc.applies(xg, 5)
    a, b = WinogradConv2d(conv, compiled=True), WinogradConv2d(conv, compiled=False)
    with torch.inference_mode():
        assert torch.equal(a(x), b(x))


@needs_numba
def test_compiled_transforms_in_parallel_threads():
    """Two threads running different layers at once (per-thread scratch buffers) get their own results."""
    from concurrent.futures import ThreadPoolExecutor
    layers = [WinogradConv2d(_conv(64, 64, True, torch.float32, seed=s), max_side=20, compiled=True)
              for s in (7, 8)]
    xs = [torch.rand(5, 64, 20, 20, generator=torch.Generator().manual_seed(s)) for s in (9, 10)]
    with torch.inference_mode():
        want = [layer(x) for layer, x in zip(layers, xs)]

    def run(i):
        with torch.inference_mode():
            return [layers[i](xs[i]) for _ in range(5)]
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(run, (0, 1)))
    for i in (0, 1):
        assert all(torch.equal(g, want[i]) for g in got[i])


def test_without_numba_the_torch_transforms_are_used(monkeypatch):
    """numba missing: compiled_available() is False, layers use the torch transforms and only the
    >= 128-channel layers are replaced (the defaults without the compiled path)."""
    import importlib.util
    from edifice.models import winograd
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "numba" else real(name, *a))
    assert not winograd.compiled_available()
    winograd.warm_up_compiled()                  # nothing to warm up: no error, no thread
    model = fuse_for_inference(_shafts_100m())
    assert winograd_layers(model) == 6
    assert not any(m.compiled for m in model.modules() if isinstance(m, WinogradConv2d))


# ---------------------------------------------------------------------------------------------------
# fused ReLU and squeeze-excitation tails (models/shafts.fuse_relu_and_se_tails, models/_se_compiled.py)
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("compiled", [pytest.param(True, marks=needs_numba), False])
def test_relu_in_the_winograd_layer_equals_a_relu_after_it(compiled):
    """relu=True gives exactly relu(layer(x)): on the compiled path (applied in the output transform),
    on the torch transforms and on maps the layer hands to the direct convolution."""
    conv = _conv(64, 32, True, torch.float32, seed=11)
    plain, fused = (WinogradConv2d(conv, max_side=20, compiled=compiled) for _ in range(2))
    fused.relu = True
    for side in (20, 10, 5, 25):                # 25: larger than max_side, the direct convolution
        x = torch.randn(3, 64, side, side, generator=torch.Generator().manual_seed(side)).contiguous(
            memory_format=torch.channels_last)
        with torch.inference_mode():
            want, got = torch.relu(plain(x)), fused(x)
        assert (want == 0).any() and (want > 0).any()
        assert torch.equal(got, want)


@needs_numba
@pytest.mark.parametrize("c,side", [(64, 20), (128, 10), (256, 5)])
def test_compiled_se_tail_equals_the_torch_operations(c, side):
    """max(out * w + identity, 0) in one compiled pass: the same values as the three torch passes."""
    from edifice.models import _se_compiled as se
    g = torch.Generator().manual_seed(c)
    out = torch.randn(5, c, side, side, generator=g).contiguous(memory_format=torch.channels_last)
    identity = torch.randn(5, c, side, side, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.rand(5, c, generator=g)
    want = (out * w[:, :, None, None] + identity).relu()
    with torch.inference_mode():
        assert se.applies(out, w, identity)
        got = se.se_residual_relu_(out, w, identity)
    assert got is out and torch.equal(got, want)


@needs_numba
def test_compiled_se_tail_refused_where_it_does_not_apply():
    """Contiguous (not channels-last) tensors, float64, fewer than 64 channels, shapes that differ and
    tensors that need gradients go to the torch operations."""
    from edifice.models import _se_compiled as se
    out = torch.rand(2, 64, 5, 5).contiguous(memory_format=torch.channels_last)
    w, identity = torch.rand(2, 64), torch.rand(2, 64, 5, 5).contiguous(memory_format=torch.channels_last)
    assert se.applies(out, w, identity)
    assert not se.applies(out.contiguous(), w, identity)
    assert not se.applies(out.double(), w.double(), identity.double())
    assert not se.applies(out[:, :32], w[:, :32], identity[:, :32])
    assert not se.applies(out, w, identity[:1])
    assert not se.applies(out, w.clone().requires_grad_(), identity)


@pytest.mark.parametrize("compiled", [pytest.param(True, marks=needs_numba), False])
def test_fused_relu_and_se_tails_give_the_same_network_outputs(compiled, monkeypatch):
    """The SHAFTS 100 m network after fuse_relu_and_se_tails: exactly the outputs of the same Winograd
    network without it (live Sentinel branch), with the ReLU moved into every Winograd conv1 (the
    64-channel ones only with the compiled transforms); without numba the tails stay torch's."""
    from edifice.models import winograd
    from edifice.models.shafts import SEBlock, fuse_relu_and_se_tails
    if not compiled:
        monkeypatch.setattr(winograd, "compiled_available", lambda: False)
    model = _shafts_100m()
    plain, fused = fuse_for_inference(model), fuse_for_inference(model)
    winograd_layers(plain), winograd_layers(fused)
    moved = fuse_relu_and_se_tails(fused)
    assert moved == (5 if compiled else 2)          # conv1 of blocks 0.0, 0.1, 1.1, 2.1 (+ aux 2.1) / 1.1, 2.1
    blocks = [m for m in fused.modules() if isinstance(m, SEBlock)]
    assert all(b.compiled_tail == compiled for b in blocks)
    assert sum(b.conv1_relu for b in blocks) == moved
    g = torch.Generator().manual_seed(3)
    x, d = torch.rand(6, 6, 20, 20, generator=g), 50 + 5 * torch.randn(6, 1, 20, 20, generator=g)
    with torch.inference_mode():
        want, got = plain(x.contiguous(memory_format=torch.channels_last), d), fused(
            x.contiguous(memory_format=torch.channels_last), d)
        assert plain.features(x).abs().max() > 0.01
    for k in want:
        assert torch.equal(got[k], want[k])
