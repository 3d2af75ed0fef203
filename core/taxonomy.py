"""Hierarchical building-use taxonomies with roll-ups, loaded from data files.

A taxonomy file is a CSV (``#`` starts a comment line) whose header names the
levels from fine to coarse, e.g. ``building_class,land_use,rci``. Each row maps
a label of the first level to its ancestor at every coarser level. The first
column may be a shell-style pattern (``A*``); rows are tried in file order and
the first match wins; matching ignores case and surrounding blanks. A coarse
value must always roll up to the same coarser value (the file is a tree).

Two class names are reserved at every level: ``other`` is an ordinary scored
class (also where unknown labels go when asked to), ``none`` marks labels that
are known but carry no use (OSM ``building=yes``, vacant land): items with it
are excluded from scoring and counted as ignored.

Shipped presets live in ``taxonomies/buildings/``: ``nyc_building_class``
(-> City Planning land use -> R/C/I), ``osm_building`` (-> group -> R/C/I),
``eubucco_type`` (-> R/C/I) and ``buildingsense_template`` (fine -> coarse ->
R/C/I; users paste the supplement's lists).
"""
from __future__ import annotations

import csv
import fnmatch
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .errors import InputError

BUILDING_TAXONOMY_DIR = Path(__file__).resolve().parent / "taxonomies" / "buildings"
OTHER = "other"
IGNORED = "none"
#: How labels that no rule matches are treated.
UNKNOWN_POLICIES = ("other", "error", "ignore")


def _norm(label) -> str:
    return "" if label is None else str(label).strip()


@dataclass
class MappedLabels:
    """Labels of one side (reference or prediction) mapped to one level.

    ``labels``: the class of each item (``none`` for ignored or missing items);
    ``unknown``: {original label: count} of labels no rule matched;
    ``missing``: count of empty/None labels (treated as ``none``)."""

    labels: list[str]
    unknown: dict[str, int] = field(default_factory=dict)
    missing: int = 0


@dataclass
class Taxonomy:
    """Ordered rows ``(pattern, (value at level 0, 1, ...))`` with level names."""

    name: str
    levels: tuple[str, ...]
    rows: list[tuple[str, tuple[str, ...]]]

    # -- construction -------------------------------------------------------
    @classmethod
    def from_csv(cls, path: str | Path, name: str | None = None, what: str = "TAXONOMY") -> "Taxonomy":
        """Read a taxonomy CSV (see the module docstring); errors name ``what``."""
        p = Path(path)
        if not p.is_file():
            raise InputError(what, f"file '{p}' does not exist.",
                             f"give a CSV with a header of level names, or one of: {', '.join(list_taxonomies())}.")
        try:
            text = p.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(what, f"'{p}' could not be read as UTF-8 text ({exc}).") from exc
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        table = [[c.strip() for c in row] for row in csv.reader(lines)]
        if len(table) < 2 or len(table[0]) < 2:
            raise InputError(what, f"'{p}' needs a header with at least two level names and one row.",
                             "write e.g. 'fine,rci' then lines such as 'apartments,residential'.")
        levels = tuple(h.lower() for h in table[0])
        if len(set(levels)) != len(levels) or "" in levels:
            raise InputError(what, f"'{p}' has empty or repeated level names {list(levels)}.")
        rows = []
        for n, row in enumerate(table[1:], start=2):
            if len(row) != len(levels) or any(not c for c in row):
                raise InputError(what, f"'{p}' data line {n} has {row}, expected {len(levels)} non-empty values.",
                                 f"give one value per level: {', '.join(levels)}.")
            rows.append((row[0], tuple([row[0]] + [c.lower() if c.lower() in (OTHER, IGNORED) else c
                                                   for c in row[1:]])))
        tax = cls(name or p.stem, levels, rows)
        tax._check_tree(what, p)
        return tax

    @classmethod
    def flat(cls, classes: Sequence[str], name: str = "classes") -> "Taxonomy":
        """A one-level taxonomy whose labels are exactly ``classes``."""
        return cls(name, ("class",), [(str(c), (str(c),)) for c in classes])

    def _check_tree(self, what: str, p: Path) -> None:
        for i in range(1, len(self.levels) - 1):
            parent: dict[str, str] = {}
            for _, values in self.rows:
                a, b = values[i], values[i + 1]
                if a in (IGNORED, OTHER):
                    continue
                if parent.setdefault(a, b) != b:
                    raise InputError(what, f"'{p}': {self.levels[i]} '{a}' rolls up to both "
                                           f"'{parent[a]}' and '{b}' at level {self.levels[i + 1]}.",
                                     "give every coarse value a single parent.")

    # -- queries ------------------------------------------------------------
    def level_index(self, level: str | int | None) -> int:
        """Index of ``level`` (name or number; None = coarsest)."""
        if level is None:
            return len(self.levels) - 1
        if isinstance(level, int):
            if -len(self.levels) <= level < len(self.levels):
                return level % len(self.levels)
        else:
            key = str(level).strip().lower()
            if key in self.levels:
                return self.levels.index(key)
        raise InputError("LEVEL", f"taxonomy '{self.name}' has no level '{level}'.",
                         f"use one of {', '.join(self.levels)}.")

    def classes(self, level: str | int | None = None, extra: Iterable[str] = ()) -> list[str]:
        """Scored classes of ``level`` in file order (patterns left out), then
        ``extra`` labels not yet listed, with ``other`` last; never ``none``."""
        i = self.level_index(level)
        seen: list[str] = []
        for pattern, values in self.rows:
            v = values[i]
            if i == 0 and _is_pattern(pattern):
                continue
            if v not in seen and v not in (IGNORED, OTHER):
                seen.append(v)
        for v in extra:
            if v not in seen and v not in (IGNORED, OTHER):
                seen.append(v)
        has_other = any(values[i] == OTHER for _, values in self.rows) or OTHER in set(extra)
        return seen + ([OTHER] if has_other else [])

    def lookup(self, label) -> tuple[str, ...] | None:
        """Values at every level for one label; ``None`` if no row matches.
        Exact rows are tried before pattern rows (each in file order)."""
        s = _norm(label)
        low = s.lower()
        for pattern, values in self.rows:
            if not _is_pattern(pattern) and low == pattern.lower():
                return values
        for pattern, values in self.rows:
            if _is_pattern(pattern) and fnmatch.fnmatchcase(low, pattern.lower()):
                return (s,) + values[1:]
        return None

    def lookup_at(self, label, level: int) -> str | None:
        """Class of ``label`` at level index ``level``; ``None`` if unknown.

        Order: an exact first-level row; a class name of a level between the
        second and ``level`` (a prediction already given as ``commercial``
        rolls up from there); a pattern row."""
        low = _norm(label).lower()
        for pattern, values in self.rows:
            if not _is_pattern(pattern) and low == pattern.lower():
                return values[level]
        if low in (OTHER, IGNORED):
            return low
        for j in range(1, level + 1):
            for _, values in self.rows:
                if values[j].lower() == low:
                    return values[level]
        values = self.lookup(label)
        return None if values is None else values[level]

    def map(self, labels: Sequence, level: str | int | None = None, unknown: str = "other",
            what: str = "LABELS", weights: Sequence[int] | None = None) -> MappedLabels:
        """Map raw labels to the classes of ``level``.

        ``unknown`` says what happens to labels that match no row: ``"other"``
        maps them to class ``other``, ``"ignore"`` excludes them (class
        ``none``), ``"error"`` raises :class:`InputError` listing them with counts.
        Empty or None labels are always excluded (class ``none``) and counted as missing.
        ``weights`` (one count per label) make the counts those of repeated labels.
        """
        if unknown not in UNKNOWN_POLICIES:
            raise InputError("UNKNOWN_LABELS", f"'{unknown}' is not a policy.",
                             f"use one of {', '.join(UNKNOWN_POLICIES)}.")
        i = self.level_index(level)
        cache: dict[str, str | None] = {}
        out: list[str] = []
        unknown_counts: Counter = Counter()
        missing = 0
        for n, lab in enumerate(labels):
            w = 1 if weights is None else int(weights[n])
            s = _norm(lab)
            if not s:
                missing += w
                out.append(IGNORED)
                continue
            if s not in cache:
                cache[s] = self.lookup_at(s, i)
            v = cache[s]
            if v is None:
                if w:
                    unknown_counts[s] += w
                v = OTHER if unknown == "other" else IGNORED
            out.append(v)
        if unknown_counts and unknown == "error":
            listed = ", ".join(f"'{k}' ({n})" for k, n in unknown_counts.most_common(20))
            more = "" if len(unknown_counts) <= 20 else f" and {len(unknown_counts) - 20} more"
            raise InputError(what, f"{sum(unknown_counts.values())} labels are not in taxonomy "
                                   f"'{self.name}': {listed}{more}.",
                             "add them to the taxonomy file, or choose to map unknown labels to 'other'.")
        return MappedLabels(out, dict(unknown_counts.most_common()), missing)


def _is_pattern(s: str) -> bool:
    return any(ch in s for ch in "*?[")


def list_taxonomies() -> list[str]:
    """Names of the shipped building taxonomies."""
    return sorted(p.stem for p in BUILDING_TAXONOMY_DIR.glob("*.csv"))


def load_taxonomy(name_or_path: str | Path, what: str = "TAXONOMY") -> Taxonomy:
    """A shipped taxonomy by name (``osm_building``) or a user CSV by path."""
    s = str(name_or_path)
    shipped = BUILDING_TAXONOMY_DIR / f"{s}.csv"
    if "/" not in s and "\\" not in s and shipped.is_file():
        return Taxonomy.from_csv(shipped, s, what)
    return Taxonomy.from_csv(Path(s), None, what)


def resolve_taxonomy(taxonomy: "Taxonomy | str | Path | None", labels: Iterable[str] = (),
                     classes: Sequence[str] | None = None) -> Taxonomy:
    """A :class:`Taxonomy` from an object, a name/path, explicit ``classes``, or
    (all None) the sorted distinct non-empty ``labels``."""
    if isinstance(taxonomy, Taxonomy):
        return taxonomy
    if taxonomy not in (None, ""):
        return load_taxonomy(taxonomy)
    if classes is None:
        classes = sorted({_norm(x) for x in labels} - {""})
    return Taxonomy.flat(classes)
