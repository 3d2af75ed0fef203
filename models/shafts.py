"""SHAFTS-compatible SE-ResNet for building height and footprint (Li et al., GMD 2023).

The networks take a Sentinel patch (6 channels: VV, VH, R, G, B, NIR, scaled to [0, 1])
and a DEM patch (1 channel, metres) and predict, per patch, the mean building height
(metres, ReLU) and the building footprint fraction λp (0-1, sigmoid). State-dict key
names and shapes match SHAFTS's published checkpoints exactly, so those load strictly
(never partially) into these classes.

Variants (``resolution_m``: patch size in 10 m pixels): 100: 20, 250: 40, 500: 80, 1000: 160.
Tasks: ``"multi"`` (both heads), ``"height"`` or ``"footprint"`` (single-task head).

Imports torch only.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import (CheckpointError, FORMAT, load_state_strict, refusal_detail, shapes_match_on_meta,
                         validate_card)

#: Architecture name used in Edifice model cards.
ARCH_NAME = "shafts_senet"
RESOLUTIONS_M = (100, 250, 500, 1000)
TASKS = ("multi", "height", "footprint")
#: Sentinel patch size in pixels (the DEM patch has the same size in DEM pixels).
PATCH_SIZE = {100: 20, 250: 40, 500: 80, 1000: 160}
#: Output pixel size in degrees (EPSG:4326) SHAFTS uses for each target resolution.
OUTPUT_RES_DEG = {100: 0.0009, 250: 0.00225, 500: 0.0045, 1000: 0.009}
SENTINEL_BANDS = ("VV", "VH", "R", "G", "B", "NIR")

# (channels multiplier of the base width, stride of the first block) per SE layer,
# and whether the stem is conv7x7/2 + max-pool (True) or conv3x3/1 (False).
_LAYOUT = {
    100: (False, ((1, 1), (2, 2), (4, 2))),
    250: (True, ((1, 1), (2, 1), (4, 2))),
    500: (True, ((1, 1), (2, 2), (4, 2))),
    1000: (True, ((1, 1), (2, 2), (4, 2), (8, 2))),
}


class SEBlock(nn.Module):
    """Residual block with squeeze-excitation: conv3x3(s)-BN-ReLU-conv3x3-BN, channel
    re-weighting by GAP-FC(C/16)-ReLU-FC(C)-sigmoid, plus the (downsampled) identity, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, reduction: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        hidden = max(out_ch // reduction, 1)
        self.SEfc = nn.Sequential(nn.Linear(out_ch, hidden, bias=False), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, out_ch, bias=False), nn.Sigmoid())
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_ch))
        self.relu = nn.ReLU(inplace=True)
        #: conv1 applies the ReLU after it itself (set by :func:`fuse_relu_and_se_tails`)
        self.conv1_relu = False
        #: the tail (re-weighting, identity, ReLU) by the compiled kernel where it applies (idem)
        self.compiled_tail = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn1(self.conv1(x))
        if not self.conv1_relu:
            out = self.relu(out)
        out = self.bn2(self.conv2(out))
        w = self.SEfc(out.mean(dim=(2, 3)))
        if torch.is_inference_mode_enabled():   # no autograd: the same operations in place, fewer temporaries
            if self.compiled_tail:
                from . import _se_compiled
                if _se_compiled.applies(out, w, identity):
                    return _se_compiled.se_residual_relu_(out, w, identity)
            return out.mul_(w[:, :, None, None]).add_(identity).relu_()
        out = out * w[:, :, None, None]
        return self.relu(out + identity)


class SEBackbone(nn.Module):
    """Stem plus SE layers; returns the globally average-pooled feature vector (N, C)."""

    def __init__(self, in_channels: int, base: int, resolution_m: int, num_blocks: int = 1):
        super().__init__()
        big_stem, layers = _LAYOUT[resolution_m]
        # bn1 is registered before conv1 so the state-dict order matches SHAFTS's files.
        self.bn1 = nn.BatchNorm2d(base)
        if big_stem:
            self.conv1 = nn.Conv2d(in_channels, base, 7, 2, 1, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_channels, base, 3, 1, 1, bias=False)
            self.maxpool = None
        self.relu = nn.ReLU(inplace=True)
        blocks = []
        ch = base
        for mult, stride in layers:
            out = base * mult
            seq = [SEBlock(ch, out, stride)] + [SEBlock(out, out, 1) for _ in range(num_blocks - 1)]
            blocks.append(nn.Sequential(*seq))
            ch = out
        self.res_layer = nn.Sequential(*blocks)
        self.out_channels = ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        x = self.res_layer(x)
        return x.mean(dim=(2, 3))


class ShaftsNet(nn.Module):
    """SHAFTS SE-ResNet with DEM branch.

    ``forward(x, dem)``: ``x`` (N, 6, s, s) Sentinel channels VV, VH, R, G, B, NIR in [0, 1];
    ``dem`` (N, 1, s, s) SRTM elevation in metres. Returns a dict with ``"height"`` (N,) in metres
    and/or ``"footprint"`` (N,) as a fraction, depending on ``task``.
    """

    def __init__(self, resolution_m: int = 100, task: str = "multi", num_blocks: int = 1):
        super().__init__()
        if resolution_m not in _LAYOUT:
            raise ValueError(f"resolution_m must be one of {RESOLUTIONS_M}, got {resolution_m}")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if num_blocks not in (1, 2):
            raise ValueError(f"num_blocks must be 1 or 2, got {num_blocks}")
        self.resolution_m, self.task, self.num_blocks = resolution_m, task, num_blocks
        self.patch_size = PATCH_SIZE[resolution_m]
        self.features = SEBackbone(6, 64, resolution_m, num_blocks)
        self.aux_features = SEBackbone(1, 16, resolution_m, num_blocks)
        nf = self.features.out_channels + self.aux_features.out_channels
        if task == "multi":
            for name in ("height", "footprint"):
                setattr(self, f"fc_{name}", nn.Linear(nf, nf // 2))
                setattr(self, f"bn_out_{name}", nn.BatchNorm1d(nf // 2))
                setattr(self, f"fc_out_{name}", nn.Linear(nf // 2, 1))
        else:
            self.fc = nn.Linear(nf, nf // 2)
            self.bn_out = nn.BatchNorm1d(nf // 2)
            self.fc_out = nn.Linear(nf // 2, 1)

    def _head(self, z: torch.Tensor, suffix: str) -> torch.Tensor:
        fc, bn, out = (getattr(self, n + suffix) for n in ("fc", "bn_out", "fc_out"))
        return out(torch.relu(bn(fc(z)))).squeeze(1)

    def forward(self, x: torch.Tensor, dem: torch.Tensor) -> dict[str, torch.Tensor]:
        z = torch.cat([self.features(x), self.aux_features(dem)], dim=1)
        if self.task == "multi":
            return {"height": torch.relu(self._head(z, "_height")),
                    "footprint": torch.sigmoid(self._head(z, "_footprint"))}
        y = self._head(z, "")
        return {self.task: torch.relu(y) if self.task == "height" else torch.sigmoid(y)}


def build_shafts_model(resolution_m: int, task: str = "multi", num_blocks: int = 1) -> ShaftsNet:
    """A fresh (randomly initialised) SHAFTS network for ``resolution_m`` metres (100/250/500/1000),
    ``task`` "multi" | "height" | "footprint", ``num_blocks`` SE blocks per layer (1 or 2)."""
    return ShaftsNet(int(resolution_m), task, int(num_blocks))


def fuse_for_inference(model: ShaftsNet, copy_model: bool = True) -> ShaftsNet:
    """``model`` for inference only (eval mode, no training): every BatchNorm folded into the
    convolution or linear layer before it (and replaced by an identity), so a forward pass makes fewer
    passes over memory. Same outputs as ``model.eval()`` up to float32 rounding (the folded weights
    are rounded once more). Works on a copy (``model`` is left unchanged) unless ``copy_model`` is
    False (for a network nobody else holds)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval
    fused = (copy.deepcopy(model) if copy_model else model).eval()
    for backbone in (fused.features, fused.aux_features):
        backbone.conv1, backbone.bn1 = fuse_conv_bn_eval(backbone.conv1, backbone.bn1), nn.Identity()
        for block in (b for layer in backbone.res_layer for b in layer):
            block.conv1, block.bn1 = fuse_conv_bn_eval(block.conv1, block.bn1), nn.Identity()
            block.conv2, block.bn2 = fuse_conv_bn_eval(block.conv2, block.bn2), nn.Identity()
            if block.downsample is not None:
                block.downsample = nn.Sequential(fuse_conv_bn_eval(block.downsample[0], block.downsample[1]))
    for suffix in (("_height", "_footprint") if fused.task == "multi" else ("",)):
        fc, bn = getattr(fused, "fc" + suffix), getattr(fused, "bn_out" + suffix)
        setattr(fused, "fc" + suffix, fuse_linear_bn_eval(fc, bn))
        setattr(fused, "bn_out" + suffix, nn.Identity())
    return fused


def fuse_relu_and_se_tails(model: nn.Module) -> int:
    """For inference on a CPU in float32, after :func:`~edifice.models.winograd.winograd_layers`: in every
    SE block whose first convolution is a :class:`~edifice.models.winograd.WinogradConv2d` (with nothing
    between it and its ReLU, as after :func:`fuse_for_inference`), that convolution applies the ReLU as it
    writes its output; where numba is installed, each block's tail (``relu(out * w + identity)``) runs
    in one compiled pass (:mod:`._se_compiled`). The same values, fewer passes over memory. Returns how
    many blocks apply the ReLU in their convolution."""
    from .winograd import WinogradConv2d, compiled_available
    compiled = compiled_available()
    count = 0
    for block in (m for m in model.modules() if isinstance(m, SEBlock)):
        block.compiled_tail = compiled
        if isinstance(block.conv1, WinogradConv2d) and isinstance(block.bn1, nn.Identity):
            block.conv1.relu, block.conv1_relu = True, True
            count += 1
    return count


@dataclass(frozen=True)
class ShaftsVariant:
    """What a state dict says about its network. ``resolutions_m`` lists every target
    resolution the weights fit: 250 m and 500 m networks have identical key names and
    shapes (only strides differ), so those two cannot be told apart from the weights."""

    resolutions_m: tuple[int, ...]
    multi_task: bool
    num_blocks: int


def detect_shafts_variant(state_dict: dict) -> ShaftsVariant:
    """Variant of a SHAFTS state dict (keys without ``module.``), read from key names and the
    stem kernel size; :class:`CheckpointError` if it is not a SHAFTS network."""
    w = state_dict.get("features.conv1.weight")
    if w is None or getattr(w, "ndim", 0) != 4 or "aux_features.conv1.weight" not in state_dict:
        raise CheckpointError("not a SHAFTS height/footprint network (no features.conv1.weight / "
                              "aux_features.conv1.weight)")
    if "fc_height.weight" in state_dict or "fc_footprint.weight" in state_dict:
        multi = True
    elif "fc.weight" in state_dict:
        multi = False
    else:
        raise CheckpointError("SHAFTS state dict has neither multi-task heads (fc_height/fc_footprint) "
                              "nor a single-task head (fc)")
    k = int(w.shape[-1])
    n_layers = len({m.group(1) for key in state_dict
                    if (m := re.match(r"features\.res_layer\.(\d+)\.", key))})
    if k == 3:
        res = (100,)
    elif k == 7 and n_layers == 4:
        res = (1000,)
    elif k == 7:
        res = (250, 500)
    else:
        raise CheckpointError(f"SHAFTS stem kernel of size {k} is unknown (expected 3 or 7)")
    nb = len({m.group(1) for key in state_dict
              if (m := re.match(r"features\.res_layer\.0\.(\d+)\.", key))})
    if nb not in (1, 2):
        raise CheckpointError(f"SHAFTS state dict has {nb} blocks per layer; only 1 or 2 are supported")
    return ShaftsVariant(res, multi, nb)


# numpy scalar types SHAFTS's files may hold in their metric fields ('best_pred' etc.). numpy 2 renamed
# numpy.core to numpy._core, so a pickle names the scalar reconstructor after the numpy that saved it:
# both names are allowed, whichever numpy loads the file (each maps to the one function loaded here).
SCALAR_NAMES = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")


def _numpy_allow_list() -> list:
    scalar = np.float64(0).__reduce__()[0]        # the reconstructor itself, under numpy 1.x and 2.x alike
    allow = [(scalar, name) for name in SCALAR_NAMES] + [np.dtype]
    for t in (np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
              np.uint8, np.uint16, np.uint32, np.uint64, np.bool_):
        allow.append(type(np.dtype(t)))
    return allow


_ALLOWED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (numpy\.(_?core\.multiarray\.scalar|dtype|dtypes\.\w+DType))\b")


def _load_weights_only(path: Path):
    """torch.load(weights_only=True); on a refusal caused by numpy scalars only, retry with an
    allow-list of numpy scalar/dtype globals. Never unpickles anything else."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = exc
    if not _ALLOWED_GLOBAL.search(str(first)):
        raise CheckpointError(f"'{path}' is not a loadable PyTorch checkpoint, or holds Python objects that a "
                              f"safe (weights-only) load refuses{refusal_detail(first)}; Edifice never runs "
                              "code from a checkpoint") from first
    try:
        with torch.serialization.safe_globals(_numpy_allow_list()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"'{path}' holds objects beyond numpy scalars that a safe (weights-only) load "
                              f"refuses{refusal_detail(exc)}; Edifice never runs code from a checkpoint") from exc


def _strip_module(state: dict) -> dict:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


@dataclass
class ShaftsCheckpoint:
    """A loaded network and what is known about it: ``resolution_m`` (metres), ``task``,
    ``num_blocks``, ``source`` ("shafts" | "edifice"), the model ``card`` (Edifice files,
    else a card built from the variant) and the file's scalar ``metadata`` (epoch, metrics)."""

    model: ShaftsNet
    resolution_m: int
    task: str
    num_blocks: int
    source: str
    card: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)


def shafts_card(resolution_m: int, task: str, num_blocks: int, training: dict | None = None,
                metrics: dict | None = None) -> dict:
    """Edifice model card for a SHAFTS-architecture network."""
    s = PATCH_SIZE[resolution_m]
    outputs = {}
    if task in ("multi", "height"):
        outputs["height"] = "mean building height, metres"
    if task in ("multi", "footprint"):
        outputs["footprint"] = "building footprint fraction (plan area index), 0-1"
    return {
        "task": "height_footprint",
        "architecture": {"name": ARCH_NAME, "params": {"resolution_m": resolution_m, "task": task,
                                                       "num_blocks": num_blocks}},
        "bands": [{"name": "VV", "scale": 1.0, "offset": 0.0, "note": "min(10^(dB/10), 1)"},
                  {"name": "VH", "scale": 1.0, "offset": 0.0, "note": "min(10^(dB/10), 1)"}]
                 + [{"name": b, "scale": 1.0, "offset": 0.0, "note": "(x - min) / (q98 - q02), clipped 0-1"}
                    for b in ("R", "G", "B", "NIR")]
                 + [{"name": "DEM", "scale": 1.0, "offset": 0.0, "note": "SRTM metres, separate input"}],
        "gsd_m": 10.0,
        "window": s,
        "classes": [],
        "outputs": outputs,
        "training": training or {},
        "metrics": metrics or {},
    }


def _scalars(raw: dict) -> dict:
    out = {}
    for k, v in raw.items():
        if k == "state_dict":
            continue
        if isinstance(v, (int, float, str, bool)) or isinstance(v, np.generic):
            out[k] = v.item() if isinstance(v, np.generic) else v
        elif isinstance(v, torch.Tensor) and v.numel() == 1:
            out[k] = v.item()
    return out


def load_shafts_checkpoint(path, resolution_m: int | None = None, target: str | None = None
                           ) -> ShaftsCheckpoint:
    """Load a SHAFTS checkpoint (``{'state_dict': ..., 'epoch', 'best_pred*'}`` or a bare state dict,
    ``module.`` prefix allowed) or an Edifice checkpoint whose architecture is ``shafts_senet``.

    ``resolution_m`` is needed only where the weights do not say (250 vs 500 m) and is checked
    against them otherwise; ``target`` ("height" | "footprint") only for single-task SHAFTS files.
    The model is returned in eval mode on the CPU. Misfits raise :class:`CheckpointError`.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint '{p}' does not exist")
    raw = _load_weights_only(p)
    if not isinstance(raw, dict):
        raise CheckpointError(f"'{p}' does not hold a dict of weights")
    if raw.get("format") == FORMAT:
        card = validate_card(raw.get("card") or {})
        arch = card["architecture"]
        if arch.get("name") != ARCH_NAME:
            raise CheckpointError(f"'{p}' holds a '{arch.get('name')}' network, not '{ARCH_NAME}'")
        prm = arch.get("params", {})
        try:
            res, task, nb = int(prm["resolution_m"]), str(prm["task"]), int(prm.get("num_blocks", 1))
            if not 1 <= nb <= 64:
                raise ValueError(f"num_blocks {nb} is outside 1-64")
            state = raw.get("state_dict")
            if not isinstance(state, dict):
                raise CheckpointError(f"'{p}' has no state_dict")
            shapes_match_on_meta(lambda: build_shafts_model(res, task, nb), state)
            model = build_shafts_model(res, task, nb)
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"'{p}' has invalid architecture parameters {str(prm)[:200]}: {exc}") from exc
        if resolution_m is not None and int(resolution_m) != res:
            raise CheckpointError(f"'{p}' is a {res} m model, not {resolution_m} m")
        load_state_strict(model, state)
        model.eval()
        return ShaftsCheckpoint(model, res, task, nb, "edifice", card, {})
    wrapped = isinstance(raw.get("state_dict"), dict)
    state = raw["state_dict"] if wrapped else raw
    meta = _scalars(raw) if wrapped else {}
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"'{p}' has a state_dict with non-tensor entries")
    state = _strip_module(dict(state))
    variant = detect_shafts_variant(state)
    if resolution_m is None:
        if len(variant.resolutions_m) > 1:
            raise CheckpointError(f"'{p}' fits {' and '.join(map(str, variant.resolutions_m))} m networks "
                                  "alike; say which resolution it was trained for")
        res = variant.resolutions_m[0]
    else:
        res = int(resolution_m)
        if res not in variant.resolutions_m:
            raise CheckpointError(f"'{p}' is a {'/'.join(map(str, variant.resolutions_m))} m model, "
                                  f"not {res} m")
    if variant.multi_task:
        task = "multi"
    else:
        if target not in ("height", "footprint"):
            raise CheckpointError(f"'{p}' is a single-task SHAFTS model; say whether it predicts "
                                  "'height' or 'footprint'")
        task = target
    model = build_shafts_model(res, task, variant.num_blocks)
    load_state_strict(model, state)
    model.eval()
    return ShaftsCheckpoint(model, res, task, variant.num_blocks, "shafts",
                            shafts_card(res, task, variant.num_blocks, training={"source": "SHAFTS"},
                                        metrics={"file": meta}), meta)
