"""ResNet-18/34/50 encoders with torchvision-compatible parameter names.

The modules are named exactly as in ``torchvision.models.resnet`` (``conv1``,
``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0`` …), so the state dict of
a torchvision ImageNet checkpoint loads after :func:`adapt_torchvision_state`
has dropped ``fc.*`` and widened ``conv1`` to the number of input bands.
No classification head: the encoder returns the five feature maps a U-Net needs.

``base_width`` scales every stage (64 is torchvision; smaller values give tiny
networks for tests and CPU experiments; pretrained weights need 64).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

__all__ = ["BasicBlock", "Bottleneck", "ResNetEncoder", "ENCODERS", "adapt_torchvision_state",
           "adapt_first_conv"]

#: depth name -> (block type, blocks per stage)
ENCODERS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck (stride on the 3x3 convolution)."""
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetEncoder(nn.Module):
    """ResNet trunk without ``avgpool``/``fc``.

    ``forward(x)`` with x of shape (N, in_channels, H, W) returns five feature maps
    at strides 2, 4, 8, 16, 32: the stem after ReLU, then layer1..layer4.
    Their channel counts are :attr:`out_channels`.
    """

    def __init__(self, name: str = "resnet34", in_channels: int = 3, base_width: int = 64):
        super().__init__()
        if name not in ENCODERS:
            raise ValueError(f"unknown encoder '{name}'; use one of {', '.join(ENCODERS)}")
        if in_channels < 1 or base_width < 1:
            raise ValueError("in_channels and base_width must be positive")
        kind, layers = ENCODERS[name]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.name, self.in_channels, self.base_width = name, in_channels, base_width
        w = base_width
        self.inplanes = w
        self.conv1 = nn.Conv2d(in_channels, w, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, w, layers[0])
        self.layer2 = self._make_layer(block, 2 * w, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * w, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * w, layers[3], stride=2)
        e = block.expansion
        self.out_channels = (w, w * e, 2 * w * e, 4 * w * e, 8 * w * e)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        del self.inplanes

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        mods = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f0 = self.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(self.maxpool(f0))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [f0, f1, f2, f3, f4]


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Widen/narrow a first-convolution weight (out, 3, k, k) to ``in_channels``.

    Channels 0..min(3, in_channels)-1 keep the pretrained RGB filters; every extra
    channel (e.g. the POI bands P_R, P_C, P_I) gets the mean of the RGB filters,
    so a constant extra band adds the same response as a grey image would.
    """
    if weight.ndim != 4:
        raise ValueError(f"expected a 4-D convolution weight, got shape {tuple(weight.shape)}")
    cin = weight.shape[1]
    if in_channels <= cin:
        return weight[:, :in_channels].clone()
    mean = weight.mean(dim=1, keepdim=True)
    extra = mean.expand(-1, in_channels - cin, -1, -1)
    return torch.cat([weight, extra], dim=1).clone()


def adapt_torchvision_state(state_dict: Mapping[str, torch.Tensor], in_channels: int,
                            prefix: str = "") -> dict[str, torch.Tensor]:
    """Encoder state dict for ``in_channels`` bands from a torchvision ResNet state dict.

    ``state_dict`` is what ``torch.load(path, weights_only=True)`` returns for a
    torchvision ``resnet*.pth`` (the caller loads it). ``fc.*`` is dropped and
    ``conv1.weight`` adapted with :func:`adapt_first_conv`. ``prefix`` is prepended
    to each key (e.g. ``"encoder."`` to load into a U-Net).
    """
    if "conv1.weight" not in state_dict:
        raise ValueError("not a torchvision ResNet state dict (no 'conv1.weight')")
    out = {}
    for k, v in state_dict.items():
        if k.startswith("fc."):
            continue
        if k == "conv1.weight":
            v = adapt_first_conv(v, in_channels)
        out[prefix + k] = v
    return out
