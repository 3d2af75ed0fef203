"""Dice losses of seed 000 §2.8 (Eq. 5-7), with ignored pixels left out.

Sums run over every valid pixel of the batch. ``eps`` is the smoothing constant
of Eq. 5/6 (1.0 by default, so a class absent from a batch gives a finite loss
that pushes its predictions towards 0).
"""
from __future__ import annotations

import torch

IGNORE = 255


def dice_binary(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Eq. 5. ``logits`` (N, 1, H, W) or (N, H, W); ``target`` (N, H, W) with
    0/1 and 255 (ignored)."""
    if logits.ndim == 4:
        logits = logits[:, 0]
    valid = target != IGNORE
    p = torch.sigmoid(logits.float()) * valid
    y = (target == 1).float()
    inter = (p * y).sum()
    return 1.0 - (2.0 * inter + eps) / (p.sum() + y.sum() + eps)


def dice_multiclass(logits: torch.Tensor, target: torch.Tensor, n_classes: int = 3, eps: float = 1.0) -> torch.Tensor:
    """Eq. 6: mean over classes of per-class Dice losses. ``logits`` (N, C, H, W),
    class c's membership probability is ``sigmoid(logits[:, c])``; ``target``
    (N, H, W) with 0 background (no class), 1..C the classes, 255 ignored."""
    valid = (target != IGNORE).unsqueeze(1)
    p = torch.sigmoid(logits.float()) * valid
    codes = torch.arange(1, n_classes + 1, device=target.device).view(1, -1, 1, 1)
    y = (target.unsqueeze(1) == codes).float()
    dims = (0, 2, 3)
    dice = (2.0 * (p * y).sum(dims) + eps) / (p.sum(dims) + y.sum(dims) + eps)
    return 1.0 - dice.mean()


def building_use_loss(outputs: dict, footprint: torch.Tensor, use: torch.Tensor, lambda_footprint: float = 1.0,
                      lambda_use: float = 1.0, eps: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 7: ``lambda_B * L_B + lambda_U * L_U`` (L_B only when the model has a
    footprint head). Returns (loss, {"footprint": L_B, "use": L_U})."""
    lu = dice_multiclass(outputs["use"], use, outputs["use"].shape[1], eps)
    parts = {"use": float(lu.detach())}
    loss = lambda_use * lu
    if "footprint" in outputs:
        lb = dice_binary(outputs["footprint"], footprint, eps)
        parts["footprint"] = float(lb.detach())
        loss = loss + lambda_footprint * lb
    return loss, parts


def predict_labels(outputs: dict, threshold: float = 0.5) -> torch.Tensor:
    """Label map (N, H, W): 0 background, 1..C the argmax class. A pixel is a
    building when the footprint probability exceeds ``threshold`` (multi-task) or,
    without a footprint head, when the largest class probability does."""
    p = torch.sigmoid(outputs["use"].float())
    pmax, arg = p.max(dim=1)
    building = (torch.sigmoid(outputs["footprint"][:, 0].float()) > threshold) if "footprint" in outputs \
        else pmax > threshold
    return torch.where(building, arg + 1, torch.zeros_like(arg))
