"""Winograd F(m, 3) convolution (models/winograd.py) against the direct convolution."""
import random
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from edifice.models.shafts import build_shafts_model, fuse_for_inference
from edifice.models.winograd import POINTS, WinogradConv2d, winograd_layers, winograd_matrices


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
    """Maps wider than max_side and autocast (bf16) go to the wrapped convolution: bit-identical to it."""
    conv = _conv(4, 4, True, torch.float32)
    wino = WinogradConv2d(conv, max_side=10)
    x = torch.rand(2, 4, 12, 11)
    with torch.inference_mode():
        assert torch.equal(wino(x), conv(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(wino(x[..., :5, :5]), conv(x[..., :5, :5]))


def test_incompatible_convolutions_are_refused():
    for conv in (torch.nn.Conv2d(4, 4, 3, 2, 1), torch.nn.Conv2d(4, 4, 1), torch.nn.Conv2d(4, 4, 3, 1, 0),
                 torch.nn.Conv2d(4, 4, 3, 1, 1, groups=2)):
        with pytest.raises(ValueError, match="3x3 stride-1"):
            WinogradConv2d(conv)


def test_shafts_100m_network_gets_winograd_only_where_it_pays():
    """In the 100 m network: the six 3x3 stride-1 convolutions of >= 128 input channels (layers 2 and 3 of
    the Sentinel branch, maps of 10 x 10 and 5 x 5) are replaced; the stem, the 64-channel layer, the
    stride-2 and 1x1 convolutions and the DEM branch stay direct. The network's outputs agree with the
    direct one within 1e-5 of their magnitude."""
    torch.manual_seed(0)
    model = build_shafts_model(100, "multi", 2).eval()
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if k.endswith("running_mean"):
                v.copy_(torch.randn(v.shape) * 0.05)
    direct = fuse_for_inference(model)
    wino = fuse_for_inference(model)
    assert winograd_layers(wino) == 6
    replaced = {n for n, m in wino.named_modules() if isinstance(m, WinogradConv2d)}
    assert replaced == {f"features.res_layer.{i}.{c}" for i in (1, 2) for c in ("0.conv2", "1.conv1", "1.conv2")}
    g = torch.Generator().manual_seed(3)
    x, d = torch.rand(6, 6, 20, 20, generator=g), 50 + 5 * torch.randn(6, 1, 20, 20, generator=g)
    with torch.inference_mode():
        want, got = direct(x, d), wino(x, d)
        feats = direct.features(x)
    assert feats.abs().max() > 0.01                     # the Sentinel branch carries signal
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-5 * (float(want[k].abs().max()) + 1e-6))
