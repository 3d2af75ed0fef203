"""Evaluation reports: JSON for scripts, a flat CSV table, a self-contained HTML page.

Each writer takes the dict returned by an evaluation entry point
(:mod:`edifice.core.evaluation.classification`, :mod:`edifice.core.evaluation.regression`) and
writes atomically (temporary name, then move). The HTML page needs nothing
outside itself: charts are inline SVG, styles inline, no script, no URL.
"""
from __future__ import annotations

import contextlib
import csv
import html
import io
import json
import math
from pathlib import Path
from typing import Any

from ..raster_io import atomic_output

_AVERAGE_KEYS = ("precision", "recall", "f1", "accuracy")


def _clean(obj: Any) -> Any:
    """Replace NaN/inf by None and numpy scalars by Python ones (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _write_text(path, text: str) -> str:
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return str(path)


def write_json_report(result: dict, path) -> str:
    """Write ``result`` as indented, strict JSON (NaN -> null). Returns the path."""
    return _write_text(path, json.dumps(_clean(result), indent=2, allow_nan=False) + "\n")


# --------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------

def metrics_rows(result: dict) -> list[dict]:
    """Flat rows ``{"level", "class", "metric", "value"}``: overall metrics
    (class empty), per-class metrics, confusion-matrix cells
    (metric ``predicted_as:<class>``) and, for heights, per-bin rows."""
    rows: list[dict] = []

    def add(level, klass, metric, value):
        rows.append({"level": level, "class": klass, "metric": metric, "value": _clean(value)})

    if result.get("kind") == "regression":
        for key in ("n", "rmse", "wrmse", "mae", "me", "nmad", "cc", "r2", "wr2",
                    "matched", "unmatched_reference", "unmatched_prediction"):
            if key in result:
                add("", "", key, result[key])
        for b in result.get("bins", []):
            name = f"{b['lower']:g}-{b['upper']:g} m" if b["upper"] is not None else f">={b['lower']:g} m"
            for key in ("n", "me", "mae", "rmse"):
                add("height_bin", name, key, b[key])
        return rows
    by_level = result.get("by_level") or {result.get("level", ""): result}
    for key in ("matched", "unmatched_reference", "unmatched_prediction"):
        if key in result:
            add("", "", key, result[key])
    for level, s in by_level.items():
        for key in ("n", "ignored", "overall_accuracy", "kappa"):
            if key in s:
                add(level, "", key, s[key])
        for avg, vals in s.get("averages", {}).items():
            for key in _AVERAGE_KEYS:
                add(level, "", f"{avg}_{key}", vals[key])
        ci = s.get("confidence_intervals") or {}
        for key, val in ci.items():
            if isinstance(val, list) and len(val) == 2:
                add(level, "", f"{key}_ci_low", val[0])
                add(level, "", f"{key}_ci_high", val[1])
        for c, m in s.get("per_class", {}).items():
            for key in ("accuracy", "precision", "recall", "f1", "support"):
                add(level, c, key, m[key])
            for key, (lo, hi) in (ci.get("per_class", {}).get(c) or {}).items():
                add(level, c, f"{key}_ci_low", lo)
                add(level, c, f"{key}_ci_high", hi)
        classes = s.get("classes", [])
        for i, c in enumerate(classes):
            for j, d in enumerate(classes):
                add(level, c, f"predicted_as:{d}", s["confusion_matrix"][i][j])
        for side in ("reference", "prediction"):
            for lab, n in (s.get(f"unknown_{side}") or {}).items():
                add(level, lab, f"unknown_{side}_label_count", n)
    return rows


def csv_table(result: dict) -> str:
    """:func:`metrics_rows` as CSV text with header level,class,metric,value."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["level", "class", "metric", "value"], lineterminator="\n")
    w.writeheader()
    for row in metrics_rows(result):
        v = row["value"]
        row["value"] = "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)
        w.writerow(row)
    return buf.getvalue()


def write_csv_table(result: dict, path) -> str:
    """Write :func:`csv_table` atomically. Returns the path."""
    return _write_text(path, csv_table(result))


# --------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------

_CSS = """body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2}td.l,th.l{text-align:left}h2{border-bottom:2px solid #ddd;margin-top:1.5em}
.note{color:#555;font-size:90%}svg text{font-family:sans-serif}"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _f(v, digits=3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return _e(v)


def _colour(frac: float) -> str:
    """White -> dark blue for frac in [0, 1]."""
    frac = min(max(frac, 0.0), 1.0)
    r = int(247 - frac * (247 - 8))
    g = int(251 - frac * (251 - 48))
    b = int(255 - frac * (255 - 107))
    return f"rgb({r},{g},{b})"


def confusion_svg(classes: list[str], cm: list[list[int]]) -> str:
    """Confusion-matrix heat map (rows = reference, columns = prediction),
    coloured by row share (recall), with counts in the cells."""
    k = len(classes)
    cell = max(22, min(60, 600 // max(k, 1)))
    lab = min(220, 8 + 7 * max((len(c) for c in classes), default=4))
    w, h = lab + k * cell + 20, lab + k * cell + 40
    out = [f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">',
           f'<text x="{lab + k * cell / 2}" y="14" text-anchor="middle" font-size="13">prediction</text>',
           f'<text x="12" y="{lab + k * cell / 2}" text-anchor="middle" font-size="13" '
           f'transform="rotate(-90 12 {lab + k * cell / 2})">reference</text>']
    fs = 11 if cell >= 30 else 8
    for j, c in enumerate(classes):
        x = lab + j * cell + cell / 2
        out.append(f'<text x="{x}" y="{lab - 4}" font-size="{fs}" text-anchor="start" '
                   f'transform="rotate(-60 {x} {lab - 4})">{_e(c)}</text>')
    for i, c in enumerate(classes):
        row = cm[i]
        tot = sum(row)
        y = lab + i * cell
        out.append(f'<text x="{lab - 4}" y="{y + cell / 2 + 4}" font-size="{fs}" text-anchor="end">{_e(c)}</text>')
        for j, v in enumerate(row):
            frac = v / tot if tot else 0.0
            x = lab + j * cell
            out.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{_colour(frac)}" '
                       f'stroke="#999" stroke-width="0.5"><title>{_e(c)} → {_e(classes[j])}: {v}</title></rect>')
            out.append(f'<text x="{x + cell / 2}" y="{y + cell / 2 + 4}" font-size="{fs}" text-anchor="middle" '
                       f'fill="{"#fff" if frac > 0.55 else "#222"}">{v}</text>')
    out.append("</svg>")
    return "".join(out)


def bars_svg(classes: list[str], series: dict[str, list[float]], ymax: float = 1.0, ymin: float = 0.0) -> str:
    """Grouped vertical bar chart (one group per class), values in [ymin, ymax].

    The bars start at the zero line (drawn, ``class="zero"``): positive values
    rise above it, negative ones (``ymin < 0``) hang below it."""
    colours = ["#4c78a8", "#f58518", "#54a24b", "#b279a2"]
    k, s = len(classes), len(series)
    gw = max(30, 14 * s + 10)
    ph, top, left, bottom = 200, 20, 40, 110
    w, h = left + k * gw + 130, top + ph + bottom
    span = (ymax - ymin) or 1.0

    def yof(v):
        return top + ph - ph * (min(max(v, ymin), ymax) - ymin) / span

    out = [f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">']
    for t in range(0, 6):
        v = ymin + span * t / 5
        y = top + ph - ph * t / 5
        out.append(f'<line x1="{left}" x2="{left + k * gw}" y1="{y}" y2="{y}" stroke="#e5e5e5"/>'
                   f'<text x="{left - 4}" y="{y + 4}" font-size="10" text-anchor="end">{v:.2g}</text>')
    y0 = yof(0.0)
    for i, c in enumerate(classes):
        x0 = left + i * gw + 5
        for n, (name, vals) in enumerate(series.items()):
            v = vals[i] or 0.0
            yv = yof(v)
            y, bh = min(y0, yv), abs(yv - y0)
            out.append(f'<rect x="{x0 + n * 14}" y="{y:.2f}" width="12" height="{bh:.2f}" '
                       f'fill="{colours[n % 4]}"><title>{_e(c)} {_e(name)}: {v:.3f}</title></rect>')
        xc = left + i * gw + gw / 2
        out.append(f'<text x="{xc}" y="{top + ph + 12}" font-size="10" text-anchor="end" '
                   f'transform="rotate(-45 {xc} {top + ph + 12})">{_e(c)}</text>')
    if ymin <= 0 <= ymax:
        out.append(f'<line class="zero" x1="{left}" x2="{left + k * gw}" y1="{y0:.2f}" y2="{y0:.2f}" '
                   f'stroke="#333" stroke-width="1"/>')
    for n, name in enumerate(series):
        y = top + 12 + n * 16
        out.append(f'<rect x="{left + k * gw + 15}" y="{y - 9}" width="10" height="10" fill="{colours[n % 4]}"/>'
                   f'<text x="{left + k * gw + 30}" y="{y}" font-size="11">{_e(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def scatter_svg(reference: list[float], prediction: list[float], unit: str = "m") -> str:
    """Scatter of prediction vs reference with the 1:1 line."""
    size, pad = 360, 45
    vals = [v for v in reference + prediction if v is not None]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0

    def sx(v):
        return pad + (v - lo) / (hi - lo) * size

    def sy(v):
        return pad + size - (v - lo) / (hi - lo) * size

    out = [f'<svg width="{size + 2 * pad}" height="{size + 2 * pad}" role="img">',
           f'<rect x="{pad}" y="{pad}" width="{size}" height="{size}" fill="none" stroke="#999"/>',
           f'<line x1="{sx(lo)}" y1="{sy(lo)}" x2="{sx(hi)}" y2="{sy(hi)}" stroke="#d62728" stroke-dasharray="4 3"/>']
    for r, p in zip(reference, prediction):
        out.append(f'<circle cx="{sx(r):.1f}" cy="{sy(p):.1f}" r="2" fill="#4c78a8" fill-opacity="0.5"/>')
    for t in range(6):
        v = lo + (hi - lo) * t / 5
        out.append(f'<text x="{sx(v)}" y="{pad + size + 14}" font-size="10" text-anchor="middle">{v:.3g}</text>'
                   f'<text x="{pad - 4}" y="{sy(v) + 3}" font-size="10" text-anchor="end">{v:.3g}</text>')
    out.append(f'<text x="{pad + size / 2}" y="{size + 2 * pad - 6}" font-size="12" text-anchor="middle">'
               f'reference ({_e(unit)})</text><text x="12" y="{pad + size / 2}" font-size="12" text-anchor="middle" '
               f'transform="rotate(-90 12 {pad + size / 2})">prediction ({_e(unit)})</text></svg>')
    return "".join(out)


def _table(header: list[str], rows: list[list], left_cols: int = 1) -> str:
    h = "".join(f'<th class="{"l" if i < left_cols else ""}">{_e(x)}</th>' for i, x in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left_cols else ""}">{x}</td>'
                                    for i, x in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _ci(ci: dict | None, key: str) -> str:
    v = (ci or {}).get(key)
    return f"{v[0]:.3f} – {v[1]:.3f}" if isinstance(v, list) and len(v) == 2 else "–"


def _classification_html(result: dict) -> str:
    parts = []
    m = result.get("matching") or {}
    if m:
        parts.append("<h2>Matching</h2>" + _table(["", "count"], [[_e(k), _f(v)] for k, v in m.items()
                                                                  if not isinstance(v, (list, dict))]))
    by_level = result.get("by_level") or {"": result}
    for level, s in by_level.items():
        ci = s.get("confidence_intervals")
        conf = f"{100 * ci['confidence']:.0f} % CI" if ci and "confidence" in ci else "CI"
        parts.append(f"<h2>Level: {_e(level or 'classes')}</h2>")
        av = s.get("averages", {})
        rows = [["items scored", _f(s.get("n")), ""], ["ignored (use unknown / none)", _f(s.get("ignored")), ""],
                ["overall accuracy", _f(s["overall_accuracy"]), _ci(ci, "overall_accuracy")],
                ["Cohen's kappa", _f(s["kappa"]), _ci(ci, "kappa")]]
        for avg in ("macro", "weighted", "micro"):
            if avg in av:
                rows.append([f"{avg} F1", _f(av[avg]["f1"]), _ci(ci, f"{avg}_f1")])
                rows.append([f"{avg} precision", _f(av[avg]["precision"]), _ci(ci, f"{avg}_precision")])
                rows.append([f"{avg} recall", _f(av[avg]["recall"]), _ci(ci, f"{avg}_recall")])
        parts.append(_table(["metric", "value", conf], rows))
        parts.append("<h3>Confusion matrix (rows = reference, columns = prediction)</h3>")
        parts.append(confusion_svg(s["classes"], s["confusion_matrix"]))
        pc = s["per_class"]
        pci = (ci or {}).get("per_class", {})
        rows = []
        for c in s["classes"]:
            v = pc[c]
            rows.append([_e(c), _f(v["support"]), _f(v["accuracy"]), _f(v["precision"]), _f(v["recall"]),
                         _f(v["f1"]), _ci(pci.get(c), "f1")])
        parts.append("<h3>Per class (one-vs-rest)</h3>")
        parts.append(_table(["class", "support", "accuracy", "precision", "recall", "F1", f"F1 {conf}"], rows))
        parts.append(bars_svg(s["classes"], {"precision": [pc[c]["precision"] for c in s["classes"]],
                                             "recall": [pc[c]["recall"] for c in s["classes"]],
                                             "F1": [pc[c]["f1"] for c in s["classes"]]}))
        notes = []
        if s.get("absent_from_reference"):
            notes.append("Classes absent from the reference (recall and F1 reported as 0, left out of macro "
                         "averages if also never predicted): " + _e(", ".join(s["absent_from_reference"])))
        for side in ("reference", "prediction"):
            unk = s.get(f"unknown_{side}") or {}
            if unk:
                notes.append(f"Labels of the {side} not in the taxonomy ({sum(unk.values())} items): "
                             + _e(", ".join(f"{k} ({n})" for k, n in list(unk.items())[:30])))
        if notes:
            parts.append("".join(f'<p class="note">{n}</p>' for n in notes))
    return "".join(parts)


def _regression_html(result: dict) -> str:
    unit = "m"
    keys = [("n", "pairs"), ("rmse", "RMSE"), ("wrmse", "wRMSE (KDE-weighted)"), ("mae", "MAE"),
            ("me", "ME (bias, prediction − reference)"), ("nmad", "NMAD"), ("cc", "CC (Pearson)"),
            ("r2", "R²"), ("wr2", "wR² (KDE-weighted)")]
    parts = ["<h2>Metrics</h2>", _table(["metric", "value"], [[_e(lab), _f(result.get(k))] for k, lab in keys])]
    m = result.get("matching") or {}
    if m:
        parts.append("<h2>Matching</h2>" + _table(["", "count"], [[_e(k), _f(v)] for k, v in m.items()]))
    sample = result.get("sample") or {}
    if sample.get("reference"):
        parts.append("<h2>Prediction vs reference</h2>")
        parts.append(scatter_svg(sample["reference"], sample["prediction"], unit))
    bins = result.get("bins") or []
    if bins:
        rows, names, bias = [], [], []
        for b in bins:
            name = f"{b['lower']:g}–{b['upper']:g} m" if b["upper"] is not None else f"≥ {b['lower']:g} m"
            rows.append([_e(name), _f(b["n"]), _f(b["me"]), _f(b["mae"]), _f(b["rmse"])])
            names.append(name)
            bias.append(float(b["me"]) if b["me"] is not None else 0.0)
        parts.append("<h2>Bias by reference height</h2>")
        parts.append(_table(["reference height", "n", "ME", "MAE", "RMSE"], rows))
        # signed ME (prediction − reference), as in the table: bars below the zero line under-estimate
        hi, lo = max(max(bias), 0.0), min(min(bias), 0.0)
        if hi == lo:
            hi = 1.0
        parts.append(bars_svg(names, {"ME (m), prediction − reference": bias}, ymax=hi, ymin=lo))
    return "".join(parts)


def html_report(result: dict, title: str | None = None) -> str:
    """The report as one self-contained HTML string."""
    title = title or ("Height evaluation" if result.get("kind") == "regression" else "Building-use evaluation")
    head = [f"<h1>{_e(title)}</h1>"]
    meta = []
    for key in ("comparison", "taxonomy", "unit"):
        if result.get(key):
            meta.append(f"{key}: {_e(result[key])}")
    if result.get("levels"):
        meta.append("levels: " + _e(" → ".join(result["levels"])))
    if meta:
        head.append(f'<p class="note">{" · ".join(meta)}</p>')
    body = _regression_html(result) if result.get("kind") == "regression" else _classification_html(result)
    return html_page(title, "".join(head) + body)


def html_page(title: str, body: str) -> str:
    """A self-contained HTML page (the reports' inline style) with ``body`` (HTML) under ``title``."""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head><body>{body}</body></html>\n")


#: Public names of the HTML helpers for other reports (escape text, a table of rows).
escape_html = _e
html_table = _table


def write_html_report(result: dict, path, title: str | None = None) -> str:
    """Write :func:`html_report` atomically. Returns the path."""
    return _write_text(path, html_report(_clean(result), title))


def write_reports(result: dict, json_path=None, html_path=None, csv_path=None, title: str | None = None) -> dict:
    """Write whichever reports have a path, all or none: every text is rendered and written to its
    temporary first, and none is moved into place unless all were written. Returns {kind: path}."""
    texts = {}
    if json_path:
        texts["json"] = ("OUTPUT_JSON", json_path, json.dumps(_clean(result), indent=2, allow_nan=False) + "\n")
    if csv_path:
        texts["csv"] = ("OUTPUT_TABLE", csv_path, csv_table(result))
    if html_path:
        texts["html"] = ("OUTPUT_HTML", html_path, html_report(_clean(result), title))
    with contextlib.ExitStack() as stack:
        for name, path, text in texts.values():
            Path(stack.enter_context(atomic_output(path, name))).write_text(text, encoding="utf-8")
    return {kind: str(path) for kind, (_, path, _) in texts.items()}
