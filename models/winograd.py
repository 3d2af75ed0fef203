"""Winograd F(m, 3) convolution for 3x3, stride-1, zero-padding-1 layers at inference (CPU).

A 3x3 convolution computes each m x m output tile from a (m + 2) x (m + 2) input tile with
(m + 2)^2 multiplications per input/output channel pair instead of 9 m^2 (Lavin & Gray 2016):
``Y = A^T [ (G g G^T) * (B^T d B) ] A``. With m = 5 (points 0, 1, -1, 2, -2, 1/2 and infinity) a
10 x 10 map is 2 x 2 tiles (196 instead of 900 products per channel pair) and a 5 x 5 map one tile
(49 instead of 225). The transform matrices are built in exact rational arithmetic (Toom-Cook, with
the transposition principle for correlation) and checked there; the filters are transformed once, in
float64. The result differs from the direct convolution by float32 rounding only, amplified by the
transforms (measured on random 128/256-channel layers with inputs in [0, 1]: max |difference| to a
float64 reference ~1e-5, against ~3e-6 for the direct float32 convolution).

Two implementations of the transforms. The torch one (any tile size, any map) makes several passes
over whole tensors; measured (one thread, batch 64, this 2-core AVX-512 CPU, oneDNN 3.12 direct
convolution as reference): 128 ch 10 x 10: 1.4-1.6x faster; 256 ch 5 x 5: 2.3-3x faster; 64 ch 20 x 20:
no gain (the transforms cost what the products save). The compiled one (:mod:`._winograd_compiled`,
numba; F(5, 3) on maps whose sides are multiples of 5) transforms a few patches at a time in cache and
also pays on 64 ch 20 x 20 (0.8x the direct convolution's CPU time, 128 ch 10 x 10 0.7x the torch
transforms'). With numba the products are compiled too (:mod:`._gemm_compiled`, on both paths; else
``torch.bmm``). :func:`winograd_layers` picks the layers by which one is there: with numba the 3x3
stride-1 layers of >= 64 channels on maps up to 20 px, else those of >= 128 channels up to 10 px.
The whole SHAFTS 100 m network (2 blocks per layer): torch transforms on six layers, 2.2 ms instead of
2.7 ms of CPU per patch (one thread, batch 64, load average 2.4), outputs within 1e-7 of the direct
network's; compiled transforms (ten layers computed by Winograd), 0.85-0.9x the CPU time per patch of
the torch transforms (two threads, load average 4-5; see ``benchmarks/bench_shafts.py``). Through the
whole SHAFTS inference (``benchmarks/bench_shafts.py``) the outputs moved by at most 3.1e-5 m of height
and 3.3e-6 of footprint fraction (random network whose output layer is scaled ~400x).

The compiled kernels with B^T and A^T written out (zero terms left out, bit-identical outputs): 0.82x
the CPU time of a 64-channel 20 x 20 layer, 0.92x of a 128-channel 10 x 10 one (:mod:`._winograd_compiled`).

On an AMD CPU (EPYC, Zen 5, AVX-512; session 11) the gain was smaller with ``torch.bmm``'s products: the
direct (oneDNN) convolution runs at ~260 GFLOP/s a core, MKL's products at ~100 GFLOP/s there (its AVX2 code;
MKL_ENABLE_INSTRUCTIONS does not change it): 64 ch 20 x 20 6.56 ms against 7.23 direct (0.91x), of which
products 4.1 ms; the whole 100 m network 1.32 against 1.41 ms a patch. oneDNN's own matmul
(``torch.ops.mkldnn._linear_pointwise``, an internal operator) runs them at 190-240 GFLOP/s on >= ~1000 tiles
but pays ~12 us a call (49 a chunk). Session 12 compiled them (:mod:`._gemm_compiled`, 225-255 GFLOP/s) and
then the transforms as vector kernels (:mod:`._winograd_compiled`): the network 1.28 -> 0.91 -> 0.86 (one-tile
maps compiled, chunks no smaller than the filters, 64 ch 5 x 5 too) -> 0.81-0.85 ms a patch.

Imports torch (numba only for the compiled transforms, on first use).
"""
from __future__ import annotations

import threading
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

#: Interpolation points (besides infinity) per output tile size m, for r = 3.
POINTS = {2: (0, 1, -1), 3: (0, 1, -1, 2), 4: (0, 1, -1, 2, -2),
          5: (0, 1, -1, 2, -2, Fraction(1, 2)), 6: (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2))}
#: Tile size used: output tiles of 5 x 5 pixels (inputs 7 x 7).
TILE = 5


def _poly_from_roots(roots) -> list:
    """Coefficients (lowest degree first) of prod (x - root)."""
    c = [Fraction(1)]
    for root in roots:
        c = [Fraction(0)] + c
        for i in range(len(c) - 1):
            c[i] -= root * c[i + 1]
    return c


def winograd_matrices(m: int, r: int = 3, points=None) -> tuple[list, list, list]:
    """Exact (Fraction) matrices (A^T: m x n, G: n x r, B^T: n x n), n = m + r - 1, of the 1-D
    correlation ``y_i = sum_k g_k d_(i+k)`` = ``A^T [(G g) * (B^T d)]`` for the given finite
    ``points`` (n - 1 distinct values; infinity is the last point)."""
    pts = [Fraction(p) for p in (POINTS[m] if points is None else points)]
    n = m + r - 1
    if len(pts) != n - 1 or len(set(pts)) != len(pts):
        raise ValueError(f"F({m},{r}) needs {n - 1} distinct finite points, got {pts}")
    at = [[p ** i for p in pts] + [Fraction(int(i == m - 1))] for i in range(m)]
    g, bt = [], [[Fraction(0)] * n for _ in range(n)]
    for j, p in enumerate(pts):
        others = pts[:j] + pts[j + 1:]
        f = Fraction(1)
        for q in others:
            f *= p - q
        g.append([p ** k / f for k in range(r)])
        for i, c in enumerate(_poly_from_roots(others)):
            bt[j][i] = c
    g.append([Fraction(int(k == r - 1)) for k in range(r)])
    for i, c in enumerate(_poly_from_roots(pts)):
        bt[n - 1][i] = c
    return at, g, bt


def _tensor(rows) -> torch.Tensor:
    return torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float64)


class WinogradConv2d(nn.Module):
    """A 3x3, stride-1, padding-1 :class:`~torch.nn.Conv2d` (groups 1, dilation 1, zero padding)
    computed with Winograd F(``m``, 3) on maps of ``min_side`` to ``max_side`` pixels a side (the longer
    side); other maps go to the original convolution. ``compiled``: the compiled transforms on maps of
    more than one tile where they apply (default: where numba is installed), else the torch ones.
    Inference only (the weights are transformed once, at construction)."""

    def __init__(self, conv: nn.Conv2d, m: int = TILE, max_side: int = 10, compiled: bool | None = None,
                 min_side: int = 1):
        super().__init__()
        if not is_winograd_compatible(conv):
            raise ValueError("WinogradConv2d needs a 3x3 stride-1 padding-1 convolution without groups")
        at, g, bt = (_tensor(x) for x in winograd_matrices(m))
        w = conv.weight.detach().to(torch.float64)
        u = (g @ w @ g.T).permute(2, 3, 1, 0)                       # G g G^T: (t, t, C_in, C_out)
        self.m, self.t, self.max_side, self.min_side = m, m + 2, max_side, min_side
        self.conv = conv
        dtype = conv.weight.dtype
        self.register_buffer("u", u.reshape(self.t ** 2, w.shape[1], w.shape[0]).to(dtype).contiguous(),
                             persistent=False)
        self.register_buffer("bt", bt.to(dtype), persistent=False)
        self.register_buffer("ka", torch.kron(at, at).to(dtype), persistent=False)   # (m^2, t^2)
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(w.shape[0], dtype=dtype)
        self.register_buffer("bias", bias.clone(), persistent=False)
        #: the compiled (numba) transforms where they apply (:mod:`._winograd_compiled`), else torch's
        self.compiled = compiled_available() if compiled is None else bool(compiled)
        #: followed by a ReLU, applied here (in the compiled output transform as the output is written)
        self.relu = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if not self.min_side <= max(h, w) <= self.max_side or x.dtype != self.u.dtype \
                or torch.is_autocast_enabled(x.device.type):
            return self._relu(self.conv(x))
        wc = _compiled("_winograd_compiled") if self.compiled else None
        if wc is not None and wc.applies(x, self.m) and self.u.device.type == "cpu":
            return wc.winograd_f53(x, self.u, self.bias.numpy(), self.relu)
        return self._relu(self._torch_winograd(x))

    def _relu(self, y: torch.Tensor) -> torch.Tensor:
        return y.relu_() if self.relu else y

    def _torch_winograd(self, x: torch.Tensor) -> torch.Tensor:
        """The torch formulation of the transforms (any tile size, any map)."""
        n, c, h, w = x.shape
        m, t = self.m, self.t
        th, tw = -(-h // m), -(-w // m)
        xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, tw * m + 1 - w, 1, th * m + 1 - h))   # (N, H+, W+, C)
        s_n, s_h, s_w, s_c = xp.stride()
        p = n * th * tw
        tiles = xp.as_strided((t, t, n, th, tw, c), (s_h, s_w, s_n, m * s_h, m * s_w, s_c)).reshape(t, -1)
        v = torch.matmul(self.bt, (self.bt @ tiles).reshape(t, t, p * c)).reshape(t * t, p, c)  # B^T d B
        y = self._products(v)                                                                     # (t^2, P, C_out)
        y = (self.ka @ y.reshape(t * t, -1)).reshape(m, m, n, th, tw, -1)                       # A^T . A
        out = torch.empty((n, th, m, tw, m, y.shape[-1]), dtype=x.dtype, device=x.device)
        torch.add(y.permute(2, 3, 0, 4, 1, 5), self.bias, out=out)
        return out.reshape(n, th * m, tw * m, -1)[:, :h, :w].permute(0, 3, 1, 2)

    def _products(self, v: torch.Tensor) -> torch.Tensor:
        """``v @ u`` point by point, (t^2, P, C) by (t^2, C, C_out): with the compiled transforms (float32 on
        the CPU, C_out a multiple of the kernels' block) by :mod:`._gemm_compiled`, else ``torch.bmm``."""
        gemm = _compiled("_gemm_compiled") if self.compiled and v.device.type == "cpu" and v.dtype == torch.float32 else None
        if gemm is None or not gemm.applies(self.u.shape[-1]) or torch.is_grad_enabled() and v.requires_grad:
            return torch.bmm(v, self.u)
        y = torch.empty((v.shape[0], v.shape[1], self.u.shape[-1]), dtype=v.dtype)
        gemm.batched_matmul_into(v.contiguous().numpy(), self.u.numpy(), y.numpy())
        return y


def is_winograd_compatible(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros")


def compiled_available() -> bool:
    """Whether the compiled (numba) transforms can be used: numba is installed (not imported here:
    that takes seconds; :func:`warm_up_compiled` does it in the background)."""
    import importlib.util
    return importlib.util.find_spec("numba") is not None


def _compiled(name: str):
    """The compiled-kernel module ``name`` of this package (:mod:`._winograd_compiled`,
    :mod:`._gemm_compiled`) if it imports and numba is there, else None."""
    import importlib
    try:
        module = importlib.import_module(f".{name}", __package__)
    except ImportError:  # pragma: no cover - a broken numba install
        return None
    return module if module.AVAILABLE else None


_warming = threading.Lock()
_warm_started = False


def warm_up_compiled() -> None:
    """Import numba and load (or compile, once per environment) the compiled transforms in a
    background thread, so that a caller preparing its inputs meanwhile does not wait for them."""
    global _warm_started
    with _warming:
        if _warm_started or not compiled_available():
            return
        _warm_started = True
    threading.Thread(target=_warm_up, name="edifice-winograd-warm-up", daemon=True).start()


def _warm_up() -> None:
    try:
        from . import _winograd_compiled
        _winograd_compiled.warm_up()
    except Exception:  # noqa: BLE001 - only a head start: the first layer reports any real error
        pass


def winograd_layers(model: nn.Module, min_channels: int | None = None, max_side: int | None = None,
                    compiled: bool | None = None) -> int:
    """Replace (in place) every compatible 3x3 convolution of ``model`` with at least ``min_channels``
    input channels by a :class:`WinogradConv2d` (used on maps of at most ``max_side`` pixels a side).
    ``compiled`` (default: where numba is installed) uses the cache-blocked compiled transforms and
    products, which also pay on 64-channel maps: defaults 64 channels and 20 px with them (64 ch 5 x 5: 0.21
    against 0.42 ms for the direct convolution, batch 64, one thread, session 12), 128 and 10 px without.
    Returns how many were replaced."""
    compiled = compiled_available() if compiled is None else bool(compiled)
    min_channels = min_channels if min_channels is not None else (64 if compiled else 128)
    max_side = max_side if max_side is not None else (20 if compiled else 10)
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if is_winograd_compatible(child) and child.in_channels >= min_channels:
                setattr(parent, name, WinogradConv2d(child, max_side=max_side, compiled=compiled))
                count += 1
    return count
