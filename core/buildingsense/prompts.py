"""Prompts of the building-function classifier: editable templates (TOML data files in
``prompts/``) after the seed's structured prompt (§3.3.3: picture analysis, text analysis,
final result with reason, function and notes) and its seven data combinations (Table S2):
T (text), R (remote sensing), S (street view) and RT, ST, RS, RST.

:func:`build_messages` turns one sample of the manifest into OpenAI chat-completions
``messages`` (one system message, one user message whose parts are the text and the images
as base64 data URLs); :func:`answer_schema` is the JSON schema the answer must follow.
"""
from __future__ import annotations

import base64
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..taxonomy import Taxonomy

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
#: The seed's seven data combinations (R remote sensing, S street view, T text).
COMBINATIONS = ("T", "R", "S", "RT", "ST", "RS", "RST")
MODALITY_NAMES = {"R": "remote sensing images", "S": "street-view images", "T": "building description text"}
ANSWER_FIELDS = ("picture_analysis", "text_analysis", "reason", "function", "confidence", "notes")
MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


@dataclass
class PromptTemplate:
    """The parts of a prompt template file (see ``prompts/buildingsense.toml``)."""

    name: str
    system: str
    intro: str
    sections: dict[str, str]
    task: str
    correction: str
    image_labels: dict[str, str]
    missing: dict[str, str]

    @classmethod
    def from_file(cls, path: str | Path) -> "PromptTemplate":
        p = Path(path)
        try:
            doc = tomllib.loads(p.read_text(encoding="utf-8"))
            t = cls(p.stem, doc["system"], doc["intro"], dict(doc["sections"]), doc["task"]["text"],
                    doc["task"]["correction"], dict(doc["image_labels"]), dict(doc["missing"]))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
            raise InputError("TEMPLATE", f"'{p}' is not a readable prompt template ({type(exc).__name__}: {exc}).",
                             f"copy {PROMPT_DIR / 'buildingsense.toml'} and edit it.") from None
        missing = [k for k in "RST" if k not in t.sections or k not in t.missing]
        if missing:
            raise InputError("TEMPLATE", f"'{p}' lacks the section(s) {', '.join(missing)}.",
                             "give [sections] and [missing] entries R, S and T.")
        return t


def list_templates() -> list[str]:
    return sorted(p.stem for p in PROMPT_DIR.glob("*.toml"))


def load_template(name_or_path: str | Path | None) -> PromptTemplate:
    """A shipped template by name (default ``buildingsense``) or a template file by path."""
    s = str(name_or_path or "buildingsense")
    shipped = PROMPT_DIR / f"{s}.toml"
    if "/" not in s and "\\" not in s and shipped.is_file():
        return PromptTemplate.from_file(shipped)
    if not Path(s).is_file():
        raise InputError("TEMPLATE", f"'{s}' is neither a shipped template ({', '.join(list_templates())}) "
                                     "nor a file.", "give a template name or the path of a .toml template.")
    return PromptTemplate.from_file(s)


def check_combination(combination: str) -> str:
    """``combination`` in the seed's spelling (letters R, S, T in that order, e.g. ``tr`` -> ``RT``)."""
    letters = str(combination).strip().upper()
    c = "".join(sorted(letters, key="RST".index)) if set(letters) <= set("RST") else letters
    if c not in COMBINATIONS:
        raise InputError("COMBINATION", f"'{combination}' is not a data combination.",
                         f"use one of {', '.join(COMBINATIONS)} (R remote sensing, S street view, T text).")
    return c


def category_list(taxonomy: Taxonomy, level: int = 0) -> tuple[list[str], str]:
    """(category names at ``level``, the prompt's lines ``- name (coarse group)``)."""
    names = taxonomy.classes(level)
    if not names:
        raise InputError("TAXONOMY", f"taxonomy '{taxonomy.name}' has no categories at level "
                                     f"'{taxonomy.levels[level]}' (only patterns).",
                         "choose a taxonomy whose first column lists category names, or another level.")
    coarse = level + 1 if level + 1 < len(taxonomy.levels) else None
    lines = []
    for n in names:
        group = taxonomy.lookup_at(n, coarse) if coarse is not None else None
        lines.append(f"- {n}" + (f" ({group})" if group and group != n else ""))
    return names, "\n".join(lines)


def answer_schema(categories: list[str]) -> dict:
    """JSON schema of an answer (``response_format`` of the request), ``function`` one of ``categories``."""
    text = {"type": "string"}
    return {"type": "object", "additionalProperties": False, "required": list(ANSWER_FIELDS),
            "properties": {"picture_analysis": text, "text_analysis": text, "reason": text,
                           "function": {"type": "string", "enum": list(categories)},
                           "confidence": {"type": "number", "minimum": 0, "maximum": 1}, "notes": text}}


def image_data_url(path: Path) -> str:
    """A file as a ``data:<mime>;base64,...`` URL."""
    mime = MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _pois_text(pois: list[dict] | None) -> str:
    if not pois:
        return "(none)"
    return "; ".join(f"{p['name'] or '(unnamed)'} [{p['category'] or '?'}]"
                     + (f" {p['distance_m']:g} m away" if p.get("distance_m") else "") for p in pois)


def _images(sample: dict, combination: str, folder: Path) -> list[tuple[str, Path]]:
    """(label key, file) of the images the combination sends, in order."""
    imgs = sample.get("images") or {}
    out = []
    if "R" in combination:
        out += [(k, folder / imgs[k]) for k in ("rooftop", "buffer") if imgs.get(k)]
    if "S" in combination:
        out += [("street_view", folder / p) for p in imgs.get("street_view") or []]
    return out


def _fill(text: str, values: dict, where: str) -> str:
    try:
        return text.format_map(values)
    except (KeyError, ValueError, IndexError) as exc:
        raise InputError("TEMPLATE", f"the {where} of the template has an unknown or broken placeholder ({exc}).",
                         f"use only {{{'}, {'.join(sorted(values))}}}; write literal braces as {{{{ }}}}.") from None


def sample_values(sample: dict, combination: str, categories_text: str) -> dict:
    """The placeholder values of one sample."""
    sv = sample.get("street_view_point") or {}
    attrs = sample.get("attributes") or {}
    pois = sample.get("pois") or {}
    return {"categories": categories_text, "modalities": ", ".join(MODALITY_NAMES[m] for m in combination),
            "heading": _num(sv.get("heading")), "pitch": _num(sv.get("pitch")), "distance": _num(sv.get("distance_m")),
            "area": _num(sample.get("area_m2")), "location": f"{sample.get('lon')}, {sample.get('lat')}",
            "attributes": "\n".join(f"{k}: {v}" for k, v in attrs.items()) or "(no attributes)",
            "pois_within": _pois_text(pois.get("within")), "pois_near": _pois_text(pois.get("near")), "images": ""}


def _num(v) -> str:
    return "unknown" if v is None else f"{float(v):g}"


def build_messages(sample: dict, folder: Path, combination: str, template: PromptTemplate,
                   categories_text: str) -> tuple[list[dict], dict]:
    """(chat messages, counts ``{"images": n, "missing": [modalities without data]}``) of one sample."""
    images = _images(sample, combination, folder)
    values = sample_values(sample, combination, categories_text)
    values["images"] = "\n".join(f"Image {i}: {template.image_labels.get(k, k)}"
                                 for i, (k, _) in enumerate(images, start=1))
    missing = []
    parts = [_fill(template.intro, values, "intro")]
    for m in combination:
        has = (m == "T") or any((k == "street_view") == (m == "S") for k, _ in images)
        parts.append(_fill(template.sections[m], values, f"section {m}"))
        if not has:
            parts.append(template.missing[m])
            missing.append(m)
    parts.append(_fill(template.task, values, "task"))
    content = [{"type": "text", "text": "\n\n".join(parts)}]
    content += [{"type": "image_url", "image_url": {"url": image_data_url(p)}} for _, p in images]
    messages = [{"role": "system", "content": template.system}, {"role": "user", "content": content}]
    return messages, {"images": len(images), "missing": missing}


def correction_messages(messages: list[dict], raw_answer: str, problem: str, template: PromptTemplate) -> list[dict]:
    """``messages`` followed by the model's unusable answer and the request to answer again."""
    text = _fill(template.correction, {"problem": problem}, "correction")
    return messages + [{"role": "assistant", "content": raw_answer}, {"role": "user", "content": text}]
