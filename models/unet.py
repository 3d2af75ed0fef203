"""Multi-task U-Net on a ResNet encoder (seed 000 §2.6-2.8).

Input: (N, C, H, W) with C = imagery bands (R, G, B) followed, for the POI
variants, by the three POI probability bands (P_R, P_C, P_I) — early fusion
into the first convolution. Shared trunk: ResNet encoder and a U-Net decoder
with four upsampling stages joined to the encoder by skip connections (strides
32→16→8→4→2), then a last x2 upsampling to full resolution. Heads, with their
own final layers:

* ``use``: 3 channels of logits; ``sigmoid`` gives the membership probability
  of residential, commercial, industrial at each pixel (background = all low).
* ``footprint`` (multi-task variant only): 1 channel of logits; sigmoid > 0.5
  is building.

Variants (the seed's Table 2): ``imagery_single``, ``imagery_poi_single``,
``imagery_poi_multitask`` (default); plus ``imagery_multitask`` (both heads,
no POI bands) for areas without POIs or use labels.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointError, load_checkpoint, load_state_strict, shapes_match_on_meta
from .resnet import ENCODERS, ResNetEncoder

__all__ = ["ARCHITECTURE", "VARIANTS", "USE_CLASSES", "UNetResNet", "build_model", "build_from_card",
           "load_model", "poi_band_count"]

ARCHITECTURE = "unet_resnet"
USE_CLASSES = ("residential", "commercial", "industrial")
#: variant -> (uses the 3 POI bands, has the footprint head)
VARIANTS = {
    "imagery_single": (False, False),
    "imagery_poi_single": (True, False),
    "imagery_poi_multitask": (True, True),
    # not in Table 2: imagery only with both heads (footprint-only training where no POIs exist)
    "imagery_multitask": (False, True),
}
POI_BANDS = 3


def poi_band_count(variant: str) -> int:
    """Number of POI bands (at the end of the input) the variant expects."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant '{variant}'; use one of {', '.join(VARIANTS)}")
    return POI_BANDS if VARIANTS[variant][0] else 0


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    """x2 nearest upsampling, concatenation with the skip features, two 3x3 conv-BN-ReLU."""

    def __init__(self, cin: int, skip: int, cout: int):
        super().__init__()
        self.conv1 = _conv_bn_relu(cin + skip, cout)
        self.conv2 = _conv_bn_relu(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class Head(nn.Module):
    """Task head: 3x3 conv-BN-ReLU then a 1x1 convolution to ``cout`` logits."""

    def __init__(self, cin: int, cout: int, prior: float = 0.1):
        super().__init__()
        self.conv = _conv_bn_relu(cin, cin)
        self.out = nn.Conv2d(cin, cout, 1)
        # start at a small positive probability (sigmoid(bias) = prior) rather than 0.5
        # everywhere: Dice on mostly-background chips then learns much faster
        nn.init.constant_(self.out.bias, -math.log((1 - prior) / prior))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv(x))


class UNetResNet(nn.Module):
    """U-Net with a ResNet encoder and one (use) or two (use + footprint) heads.

    ``forward(x)`` returns ``{"use": (N, num_classes, H, W) logits}`` plus
    ``"footprint": (N, 1, H, W) logits`` for the multi-task variant. Inputs whose
    size is not a multiple of 32 are padded (edge replication) and the outputs cropped.
    """

    def __init__(self, encoder: str = "resnet34", in_channels: int = 6, variant: str = "imagery_poi_multitask",
                 num_classes: int = 3, base_width: int = 64, decoder_channels: tuple[int, ...] | None = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant '{variant}'; use one of {', '.join(VARIANTS)}")
        if encoder not in ENCODERS:
            raise ValueError(f"unknown encoder '{encoder}'; use one of {', '.join(ENCODERS)}")
        npoi = poi_band_count(variant)
        if in_channels < npoi + 1:
            raise ValueError(f"variant '{variant}' needs at least {npoi + 1} input bands "
                             f"(imagery + {npoi} POI), got {in_channels}")
        self.variant, self.in_channels, self.num_classes = variant, in_channels, num_classes
        self.multitask = VARIANTS[variant][1]
        self.encoder = ResNetEncoder(encoder, in_channels, base_width)
        if decoder_channels is None:
            w = base_width
            decoder_channels = (4 * w, 2 * w, w, max(w // 2, 8), max(w // 4, 8))
        if len(decoder_channels) != 5:
            raise ValueError("decoder_channels needs 5 values (4 skip stages + the full-resolution stage)")
        enc = self.encoder.out_channels  # strides 2, 4, 8, 16, 32
        skips = (enc[3], enc[2], enc[1], enc[0])
        blocks, cin = [], enc[4]
        for skip, cout in zip(skips, decoder_channels[:4]):
            blocks.append(DecoderBlock(cin, skip, cout))
            cin = cout
        self.decoder = nn.ModuleList(blocks)
        self.final = DecoderBlock(cin, 0, decoder_channels[4])
        self.use_head = Head(decoder_channels[4], num_classes)
        self.footprint_head = Head(decoder_channels[4], 1) if self.multitask else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        ph, pw = (-h) % 32, (-w) % 32
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        f0, f1, f2, f3, f4 = self.encoder(x)
        y = f4
        for block, skip in zip(self.decoder, (f3, f2, f1, f0)):
            y = block(y, skip)
        y = self.final(y)
        out = {"use": self.use_head(y)[..., :h, :w]}
        if self.footprint_head is not None:
            out["footprint"] = self.footprint_head(y)[..., :h, :w]
        return out


def build_model(params: dict) -> UNetResNet:
    """A :class:`UNetResNet` from a card's ``architecture.params``
    (keys: encoder, in_channels, variant, num_classes, base_width, decoder_channels)."""
    allowed = {"encoder", "in_channels", "variant", "num_classes", "base_width", "decoder_channels"}
    unknown = set(params) - allowed
    if unknown:
        raise CheckpointError(f"unknown architecture parameter(s) {', '.join(sorted(unknown))}")
    p = dict(params)
    if p.get("decoder_channels") is not None:
        p["decoder_channels"] = tuple(p["decoder_channels"])
    try:
        return UNetResNet(**p)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"architecture parameters do not build a model: {exc}") from exc


def build_from_card(card: dict) -> UNetResNet:
    """The (untrained) network a model card describes; :class:`CheckpointError` if the
    card names another architecture or its band list does not match ``in_channels``."""
    arch = card.get("architecture") or {}
    if arch.get("name") != ARCHITECTURE:
        raise CheckpointError(f"checkpoint architecture is '{arch.get('name')}', not '{ARCHITECTURE}': "
                              "this is not a building-use model; pick a building-use checkpoint")
    model = build_model(arch.get("params") or {})
    bands = card.get("bands") or []
    if len(bands) != model.in_channels:
        raise CheckpointError(f"model card lists {len(bands)} bands but the network takes {model.in_channels}")
    return model


def load_model(path) -> tuple[UNetResNet, dict]:
    """(model in eval mode, card) from an Edifice checkpoint; weights loaded strictly."""
    state, card = load_checkpoint(path)
    shapes_match_on_meta(lambda: build_from_card(card), state)
    with torch.device("meta"):  # no random initialisation of weights that are overwritten next
        model = build_from_card(card)
    model = model.to_empty(device="cpu")  # every tensor of the network is in the checkpoint (checked above)
    load_state_strict(model, state)
    model.eval()
    return model, card
