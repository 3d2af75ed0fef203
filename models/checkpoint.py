"""The one Edifice checkpoint format: weights plus a model card, in one file.

File layout (a ``torch.save`` of a plain dict, loadable with ``weights_only=True``)::

    {"format": "edifice-checkpoint", "version": 1,
     "card": {...model card, plain JSON-like types only...},
     "state_dict": {name: tensor}}

Model card keys (see :data:`REQUIRED_CARD_KEYS`):
  task          "building_use" | "height_footprint" | ...
  architecture  {"name": str, "params": {...constructor keyword arguments...}}
  bands         [{"name": str, "scale": float, "offset": float}] in input order;
                the network sees (value - offset) * scale
  gsd_m         ground sample distance in metres the model was trained at
  window        input window size in pixels
  classes       [{"index": int, "name": str, "color": "#rrggbb"}] (may be empty)
  outputs       {output name: description/units}
  training      free-form summary (data, epochs, device, ...)
  metrics       {subset: {metric: value}}

Checkpoints are untrusted input: they are only ever read with
``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import copy
import errno
import json
import math
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch

FORMAT = "edifice-checkpoint"
VERSION = 1
REQUIRED_CARD_KEYS = ("task", "architecture", "bands", "gsd_m", "window", "classes", "outputs")


class CheckpointError(ValueError):
    """The file is not a usable Edifice checkpoint (message says why and what to do)."""


def _plain(obj: Any) -> Any:
    """Check the card holds only JSON-like types (so weights_only loading accepts it)."""
    json.dumps(obj)
    return copy.deepcopy(obj)


#: bounds of the numbers a card may hold: a card is untrusted data, and its numbers size allocations
MAX_BANDS = 64
MAX_CLASSES = 256
WINDOW_RANGE = (8, 8192)        # px
GSD_RANGE_M = (0.01, 10_000.0)  # m
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}([0-9a-fA-F]{2})?$")


def _finite(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CheckpointError(f"model card {what} must be a finite number, not {value!r:.40}")
    return float(value)


def _check_bands(bands) -> None:
    if not isinstance(bands, list) or not 1 <= len(bands) <= MAX_BANDS:
        raise CheckpointError(f"model card 'bands' must list 1 to {MAX_BANDS} bands")
    for k, band in enumerate(bands):
        if not isinstance(band, dict) or not isinstance(band.get("name", ""), str):
            raise CheckpointError(f"model card band {k + 1} must be a dict with a text 'name'")
        _finite(band.get("scale", 1.0), f"band {k + 1} 'scale'")
        _finite(band.get("offset", 0.0), f"band {k + 1} 'offset'")


def _check_classes(classes) -> None:
    if not isinstance(classes, list) or len(classes) > MAX_CLASSES:
        raise CheckpointError(f"model card 'classes' must be a list of at most {MAX_CLASSES} classes")
    for c in classes:
        if not isinstance(c, dict) or not isinstance(c.get("index"), int) or not 0 <= c["index"] < MAX_CLASSES \
                or not isinstance(c.get("name", ""), str) or len(c.get("name", "")) > 200 \
                or ("color" in c and not (isinstance(c["color"], str) and _COLOR.match(c["color"]))):
            raise CheckpointError("model card classes need an 'index' 0-255, a short text 'name' and a "
                                  "'#rrggbb' colour")


def validate_card(card: dict) -> dict:
    """Check a card's structure, types and ranges before anything is built or allocated from it."""
    if not isinstance(card, dict):
        raise CheckpointError("the model card is not a dictionary")
    missing = [k for k in REQUIRED_CARD_KEYS if k not in card]
    if missing:
        raise CheckpointError(f"model card lacks {', '.join(missing)}")
    arch = card["architecture"]
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str) \
            or not isinstance(arch.get("params", {}), dict):
        raise CheckpointError("model card 'architecture' must be a dict with a 'name' and a 'params' dict")
    _check_bands(card["bands"])
    _check_classes(card["classes"])
    window = card["window"]
    if isinstance(window, bool) or not isinstance(window, int) or not WINDOW_RANGE[0] <= window <= WINDOW_RANGE[1]:
        raise CheckpointError(f"model card 'window' must be a whole number of pixels from {WINDOW_RANGE[0]} "
                              f"to {WINDOW_RANGE[1]}, not {window!r:.40}")
    gsd = _finite(card["gsd_m"], "'gsd_m'")
    if not GSD_RANGE_M[0] <= gsd <= GSD_RANGE_M[1]:
        raise CheckpointError(f"model card 'gsd_m' must be from {GSD_RANGE_M[0]} to {GSD_RANGE_M[1]} m, not {gsd}")
    if not isinstance(card["outputs"], dict):
        raise CheckpointError("model card 'outputs' must be a dictionary")
    return card


def shapes_match_on_meta(build, state_dict: dict) -> None:
    """Build the network with ``build()`` on PyTorch's 'meta' device (no memory for weights) and
    require the checkpoint's tensors to match it in names and shapes, so a card whose numbers would
    make a huge network is refused before anything is allocated."""
    with torch.device("meta"):
        meta = build()
    check_state_fits(meta.state_dict(), state_dict)


def save_checkpoint(path: str | os.PathLike, state_dict: dict, card: dict) -> None:
    """Write a checkpoint atomically (temporary name, then rename)."""
    validate_card(card)
    payload = {"format": FORMAT, "version": VERSION, "card": _plain(card),
               "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}}
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, final)
    except RuntimeError as exc:  # torch's zip writer reports a failed write (e.g. a full disk) this way
        tmp.unlink(missing_ok=True)
        full = shutil.disk_usage(final.parent).free < 2**20
        raise OSError(errno.ENOSPC if full else errno.EIO, f"writing the checkpoint failed "
                      f"({str(exc).splitlines()[0][:160]})", str(final)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_raw(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True`` and clear errors."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint '{p}' does not exist")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(f"'{p}' is not a loadable PyTorch checkpoint, or holds Python objects that a "
                              f"safe (weights-only) load refuses{refusal_detail(exc)}; Edifice never runs "
                              "code from a checkpoint. Fix: use a checkpoint made by Edifice or SHAFTS, or "
                              "re-save the weights alone (a state_dict of tensors)") from exc


def refusal_detail(exc: BaseException) -> str:
    """The part of PyTorch's refusal worth showing (which global was refused, or the corruption),
    without its advice to load the file unsafely."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f" (it asks for '{found.group(1)}')"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if "weights_only" in first or "unsafe" in first.lower():
        return ""
    return f" ({type(exc).__name__}: {first[:160]})"


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """(state_dict, card) of an Edifice checkpoint; :class:`CheckpointError` otherwise."""
    raw = load_raw(path)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not an Edifice checkpoint (no '{FORMAT}' header)")
    if int(raw.get("version", 0)) > VERSION:
        raise CheckpointError(f"'{path}' has format version {raw.get('version')}, newer than this "
                              f"Edifice supports ({VERSION}); update the plugin")
    card = validate_card(raw.get("card") or {})
    state = raw.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"'{path}' has no valid state_dict")
    return state, card


def load_state_strict(model: torch.nn.Module, state_dict: dict) -> None:
    """Load ``state_dict`` into ``model`` requiring every key and shape to match
    (never a partial load)."""
    check_state_fits(model.state_dict(), state_dict)
    model.load_state_dict(state_dict, strict=True)


def check_state_fits(own: dict, state_dict: dict) -> None:
    """:class:`CheckpointError` unless ``state_dict`` has exactly the names and shapes of ``own``."""
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = sorted(k for k in set(own) & set(state_dict) if tuple(own[k].shape) != tuple(state_dict[k].shape))
    if missing or unexpected or wrong:
        def head(xs):
            return ", ".join(xs[:5]) + (" …" if len(xs) > 5 else "")
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({head(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({head(unexpected)})")
        if wrong:
            parts.append(f"{len(wrong)} of another shape ({head(wrong)})")
        raise CheckpointError("checkpoint does not fit the architecture: " + "; ".join(parts))
