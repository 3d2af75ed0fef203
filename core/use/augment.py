"""Synchronised augmentation of image and masks (seed 000 §2.4.4): horizontal
and vertical flips, 90° rotations, transposition and scale changes, applied
identically to the input bands and both masks. Masks use nearest-neighbour
resampling; pixels brought in from outside the chip are ignored (255)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = 255


def _rand(gen: torch.Generator) -> float:
    return float(torch.rand((), generator=gen))


def augment_sample(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, gen: torch.Generator,
                   scale_range: tuple[float, float] = (0.8, 1.25), p_scale: float = 0.5
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One sample: ``x`` (C, H, W) float, ``a``/``b`` (H, W) integer masks.
    Returns tensors of the same shapes."""
    if _rand(gen) < 0.5:
        x, a, b = x.flip(-1), a.flip(-1), b.flip(-1)
    if _rand(gen) < 0.5:
        x, a, b = x.flip(-2), a.flip(-2), b.flip(-2)
    if x.shape[-1] == x.shape[-2]:
        if _rand(gen) < 0.5:
            x, a, b = x.transpose(-1, -2), a.transpose(-1, -2), b.transpose(-1, -2)
        k = int(torch.randint(0, 4, (), generator=gen))
        if k:
            x, a, b = torch.rot90(x, k, (-2, -1)), torch.rot90(a, k, (-2, -1)), torch.rot90(b, k, (-2, -1))
    if p_scale > 0 and _rand(gen) < p_scale:
        lo, hi = scale_range
        s = lo + (hi - lo) * _rand(gen)
        x, a, b = _rescale(x, a, b, s, gen)
    return x.contiguous(), a.contiguous(), b.contiguous()


def _rescale(x, a, b, s, gen):
    h, w = x.shape[-2:]
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    if (nh, nw) == (h, w):
        return x, a, b
    xs = F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    m = torch.stack([a, b]).float()[None]
    ms = F.interpolate(m, size=(nh, nw), mode="nearest-exact")[0].to(a.dtype)
    if nh >= h and nw >= w:  # zoom in: random crop
        r = int(torch.randint(0, nh - h + 1, (), generator=gen))
        c = int(torch.randint(0, nw - w + 1, (), generator=gen))
        return xs[:, r:r + h, c:c + w], ms[0, r:r + h, c:c + w], ms[1, r:r + h, c:c + w]
    # zoom out: paste at a random place, the rest is zero input and ignored labels
    r = int(torch.randint(0, h - nh + 1, (), generator=gen))
    c = int(torch.randint(0, w - nw + 1, (), generator=gen))
    xo = torch.zeros_like(x)
    ao = torch.full_like(a, IGNORE)
    bo = torch.full_like(b, IGNORE)
    xo[:, r:r + nh, c:c + nw] = xs
    ao[r:r + nh, c:c + nw] = ms[0]
    bo[r:r + nh, c:c + nw] = ms[1]
    return xo, ao, bo


def augment_batch(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, gen: torch.Generator, **kw):
    """:func:`augment_sample` on every sample of a batch (N, C, H, W), (N, H, W), (N, H, W)."""
    out = [augment_sample(x[i], a[i], b[i], gen, **kw) for i in range(x.shape[0])]
    return torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out]), torch.stack([o[2] for o in out])
