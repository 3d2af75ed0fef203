"""Category -> class mappings loaded from data files (never ``if`` chains).

A mapping file is a CSV with columns ``key,value,class`` (``#`` starts a
comment line). ``key`` names a tag or attribute (empty: any); ``value`` is an
exact value or a shell-style pattern (``*``, ``?``, e.g. ``11*`` for GB/T codes
starting with 11). Rules are tried in file order and the first match wins, so
specific rules go above general ones. ``class`` is a class name, or ``none``
for categories that are known but deliberately not used.

A user CSV with the two columns ``value,class`` is accepted as well.
"""
from __future__ import annotations

import csv
import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import InputError

TAXONOMY_DIR = Path(__file__).resolve().parent.parent / "taxonomies"
IGNORED = "none"


@dataclass(frozen=True)
class Rule:
    key: str
    pattern: str
    cls: str

    def matches(self, key: str, value: str) -> bool:
        if self.key and self.key != key:
            return False
        if any(ch in self.pattern for ch in "*?["):
            return fnmatch.fnmatchcase(value, self.pattern)
        return value == self.pattern


@dataclass
class CategoryMapping:
    """Ordered rules mapping (key, value) tags to class names."""

    name: str
    rules: list[Rule]
    classes: Sequence[str] = field(default_factory=tuple)

    @classmethod
    def from_csv(cls, path: str | Path, classes: Sequence[str], name: str | None = None,
                 what: str = "MAPPING_FILE") -> "CategoryMapping":
        """Read a ``key,value,class`` or ``value,class`` CSV; class names must be in
        ``classes`` (or ``none``)."""
        p = Path(path)
        if not p.is_file():
            raise InputError(what, f"file '{p}' does not exist.", "give a CSV with columns value,class.")
        try:
            text = p.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(what, f"'{p}' could not be read as UTF-8 text ({exc}).") from exc
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        rows = list(csv.reader(lines))
        if not rows:
            raise InputError(what, f"'{p}' holds no rule.", "add lines such as 'shop,commercial'.")
        header = [h.strip().lower() for h in rows[0]]
        if header in (["key", "value", "class"], ["value", "class"]):
            rows = rows[1:]
        allowed = set(classes) | {IGNORED}
        rules = []
        for n, row in enumerate(rows, start=1):
            row = [c.strip() for c in row]
            if len(row) == 2:
                key, value, klass = "", row[0], row[1]
            elif len(row) == 3:
                key, value, klass = row
            else:
                raise InputError(what, f"'{p}' rule {n} has {len(row)} columns ({row}).",
                                 "use value,class or key,value,class.")
            klass = klass.lower()
            if klass not in allowed:
                raise InputError(what, f"'{p}' rule {n} names unknown class '{klass}'.",
                                 f"use one of {', '.join(sorted(allowed))}.")
            rules.append(Rule(key, value, klass))
        return cls(name or p.stem, rules, tuple(classes))

    @property
    def keyed(self) -> bool:
        """True when rules name tag keys (OSM-style); then every attribute of a
        record is offered as a tag, else only the category field's value."""
        return any(r.key for r in self.rules)

    def classify_record(self, record: dict, category_field: str) -> str | None:
        """Class of one feature given as ``{field: value}``."""
        if self.keyed:
            return self.classify(record_tags(record, category_field))
        value = record.get(category_field)
        if value is None:
            return None
        tags = [(category_field, str(value).strip())]
        # hierarchical values such as "food_and_drink > restaurant": most specific first
        parts = [s.strip() for s in re.split(r"\s*[>/|]\s*", str(value)) if s.strip()]
        if len(parts) > 1:
            tags += [(category_field, s) for s in reversed(parts)]
        return self.classify(tags)

    def classify(self, tags: Iterable[tuple[str, str]]) -> str | None:
        """Class of the first rule (in file order) that matches any of ``tags``;
        ``None`` if nothing matches. Returns ``"none"`` for ignored categories."""
        tags = [(k, v) for k, v in tags if v not in (None, "")]
        for rule in self.rules:
            for key, value in tags:
                if rule.matches(key, value):
                    return rule.cls
        return None


_HSTORE = re.compile(r'"((?:[^"\\]|\\.)*)"\s*=>\s*"((?:[^"\\]|\\.)*)"')


def parse_osm_tags(other_tags: str | None) -> list[tuple[str, str]]:
    """Tags of GDAL/QGIS's OSM ``other_tags`` field (``"k"=>"v","k2"=>"v2"``)."""
    if not other_tags:
        return []
    return [(k.replace('\\"', '"'), v.replace('\\"', '"')) for k, v in _HSTORE.findall(other_tags)]


def record_tags(record: dict, category_field: str) -> list[tuple[str, str]]:
    """(key, value) tags of one feature: the category field's value under its own
    name, with ``other_tags`` (or any hstore-looking value) expanded into its tags,
    plus every other non-empty plain attribute of ``record``."""
    tags: list[tuple[str, str]] = []
    value = record.get(category_field)
    if isinstance(value, str) and "=>" in value:
        tags.extend(parse_osm_tags(value))
    elif value not in (None, ""):
        tags.append((category_field, str(value)))
    for k, v in record.items():
        if k == category_field or v in (None, ""):
            continue
        if isinstance(v, str) and "=>" in v:
            tags.extend(parse_osm_tags(v))
        else:
            tags.append((k, str(v)))
    return tags


def list_presets(kind: str) -> list[str]:
    """Names of the preset files shipped in ``taxonomies/<kind>/``."""
    return sorted(p.stem for p in (TAXONOMY_DIR / kind).glob("*.csv"))


def load_preset(kind: str, name: str, classes: Sequence[str], what: str = "PRESET") -> CategoryMapping:
    """Load the shipped preset ``taxonomies/<kind>/<name>.csv``."""
    path = TAXONOMY_DIR / kind / f"{name}.csv"
    if not path.is_file():
        raise InputError(what, f"unknown preset '{name}'.", f"use one of {', '.join(list_presets(kind))}.")
    return CategoryMapping.from_csv(path, classes, name, what)


def load_mapping(kind: str, preset: str, presets: Sequence[str], mapping_file: str | None,
                 classes: Sequence[str], preset_param: str, classes_hint: str) -> CategoryMapping:
    """A shipped preset of ``kind`` or (``preset`` "csv") the user's ``mapping_file``, refused by
    parameter name when the preset is unknown or the file is missing. ``classes_hint`` names the
    classes a CSV may use, for the error message."""
    if preset == "csv":
        if not mapping_file:
            raise InputError("MAPPING_FILE", f"is required with {preset_param}=csv.",
                             f"give a CSV with columns value,class ({classes_hint}).")
        return CategoryMapping.from_csv(mapping_file, classes, what="MAPPING_FILE")
    if preset not in presets:
        raise InputError(preset_param, f"unknown preset '{preset}'.", f"use one of {', '.join(presets)}.")
    return load_preset(kind, preset, classes, what=preset_param)
