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
import json
import os
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


def validate_card(card: dict) -> dict:
    missing = [k for k in REQUIRED_CARD_KEYS if k not in card]
    if missing:
        raise CheckpointError(f"model card lacks {', '.join(missing)}")
    arch = card["architecture"]
    if not isinstance(arch, dict) or "name" not in arch:
        raise CheckpointError("model card 'architecture' must be a dict with a 'name'")
    return card


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
        raise CheckpointError(f"'{p}' is not a loadable PyTorch checkpoint or holds objects that "
                              f"are not allowed in a weights-only load ({type(exc).__name__}: {exc})") from exc


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
    own = model.state_dict()
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
    model.load_state_dict(state_dict, strict=True)
