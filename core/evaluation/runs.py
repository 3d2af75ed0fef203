"""One-call evaluation runs for the Processing algorithms and the CLI.

:func:`evaluate_classification` and :func:`evaluate_regression` pick the entry
point of :mod:`edifice.core.evaluation.classification` / :mod:`edifice.core.evaluation.regression`
from the level of comparison and the kinds of input (raster or vector), parse
the options users type as text (levels, class names, height bins) and return
the result dict (reports written when paths are given). The QGIS adapters and
``edifice evaluate-*`` call these two functions and nothing else.
"""
from __future__ import annotations

import os

from ..errors import InputError
from ..progress import Progress
from ..taxonomy import UNKNOWN_POLICIES, Taxonomy, load_taxonomy

#: Levels of comparison for classification.
COMPARISONS = ("building", "pixel", "table")
#: Names users may give for "every level of the taxonomy".
ALL_LEVELS = ("all", "*")


# --------------------------------------------------------------------------
# parsing of text options
# --------------------------------------------------------------------------

def parse_taxonomy(value, what: str = "TAXONOMY") -> Taxonomy | None:
    """A shipped taxonomy name or a CSV path -> :class:`Taxonomy`; None/'' -> None
    (labels are used as they are)."""
    if value in (None, ""):
        return None
    if isinstance(value, Taxonomy):
        return value
    return load_taxonomy(str(value), what)


def parse_levels(text, taxonomy: Taxonomy | None, what: str = "SCORE_LEVEL") -> list[str] | None:
    """Levels to score at, first one reported at the top of the result.

    ``''``/None: the coarsest level only (R/C/I for the shipped taxonomies);
    ``all``: every level, coarsest first; otherwise comma-separated level names.
    Without a taxonomy (labels as they are) there is one level, ``class``."""
    items = [] if text in (None, "") else [s.strip() for s in str(text).replace(";", ",").split(",") if s.strip()]
    if taxonomy is None:
        bad = [s for s in items if s.lower() not in ("class",) + ALL_LEVELS]
        if bad:
            raise InputError(what, f"level(s) {bad} need a taxonomy; without one the labels are scored as "
                                   "they are (level 'class').",
                             "choose a taxonomy for the reference, or leave the level empty.")
        return None
    if not items:
        return [taxonomy.levels[-1]]
    if len(items) == 1 and items[0].lower() in ALL_LEVELS:
        return list(reversed(taxonomy.levels))
    out = []
    for s in items:
        try:
            name = taxonomy.levels[taxonomy.level_index(s)]
        except InputError:
            raise InputError(what, f"taxonomy '{taxonomy.name}' has no level '{s}'.",
                             f"use one of {', '.join(taxonomy.levels)}, or 'all'.") from None
        if name not in out:
            out.append(name)
    return out


def parse_class_names(text, what: str = "CLASS_NAMES"):
    """Raster value -> label: ``a,b,c`` (value 0 is ``a``, 1 is ``b``...) or
    ``1=residential,2=commercial``; ''/None -> None (the value is the label)."""
    if text in (None, ""):
        return None
    if isinstance(text, (list, dict)):
        return text
    items = [s.strip() for s in str(text).replace(";", ",").split(",")]
    if not any("=" in s for s in items):
        return items
    out = {}
    for s in items:
        if not s:
            continue
        key, sep, name = s.partition("=")
        try:
            value = float(key)
        except ValueError:
            value = None
        if not sep or value is None or not name.strip():
            raise InputError(what, f"'{s}' is not of the form value=name.",
                             "write e.g. 1=residential,2=commercial,3=industrial (or just names in value order).")
        out[int(value) if value.is_integer() else value] = name.strip()
    return out


def parse_bins(text, what: str = "BINS") -> list[float] | None:
    """Height-bin edges in metres (``0,3,6,...``); ''/None -> the default bins;
    ``none`` -> no bins."""
    from .regression import HEIGHT_BINS

    if text in (None, ""):
        return list(HEIGHT_BINS)
    if isinstance(text, (list, tuple)):
        return [float(x) for x in text]
    if str(text).strip().lower() == "none":
        return None
    try:
        edges = [float(s) for s in str(text).replace(";", ",").split(",") if s.strip()]
    except ValueError:
        raise InputError(what, f"'{text}' is not a list of numbers.", "write edges in metres, e.g. 0,3,6,9,12.") from None
    if not edges or any(b <= a for a, b in zip(edges, edges[1:])):
        raise InputError(what, f"bin edges {edges} must be increasing.", "write e.g. 0,3,6,9,12.")
    return edges


def input_kind(path, layer=None, what: str = "INPUT") -> str:
    """``'vector'`` (any OGR layer or table, geometry or not) or ``'raster'``."""
    p = str(path)
    if not os.path.exists(p) and "://" not in p and not p.startswith("/vsi"):
        raise InputError(what, f"file '{p}' does not exist.", "check the path.")
    import pyogrio

    try:
        pyogrio.read_info(p, layer=layer)
        return "vector"
    except Exception:  # noqa: BLE001 - not an OGR source: try GDAL raster below
        pass
    import rasterio

    try:
        with rasterio.open(p):
            return "raster"
    except Exception as exc:  # noqa: BLE001
        raise InputError(what, f"'{p}' is neither a readable vector layer nor a raster ({exc}).",
                         "give a GeoPackage/shapefile/CSV or a GeoTIFF.") from exc


def _same_source(a, la, b, lb) -> bool:
    if a in (None, "") or b in (None, ""):
        return False
    try:
        same = os.path.samefile(str(a), str(b))
    except OSError:
        same = str(a) == str(b)
    return same and (la or None) == (lb or None)


def _require_first_layer(path, layer, what: str) -> None:
    """Table evaluation reads the first layer of a file: refuse another one."""
    if layer in (None, "", 0):
        return
    import pyogrio

    try:
        first = str(pyogrio.list_layers(str(path))[0][0])
    except Exception:  # noqa: BLE001 - unreadable files are reported by the reader
        return
    if first != str(layer):
        raise InputError(what, f"table evaluation reads the first layer of a file ('{first}'), not '{layer}'.",
                         "export the table to its own file (CSV or GeoPackage).")


# --------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------

def evaluate_classification(comparison: str, reference, prediction, reference_field: str | None = None,
                            prediction_field: str | None = None, *, reference_layer=None, prediction_layer=None,
                            reference_kind: str | None = None, id_field: str | None = None,
                            prediction_id_field: str | None = None, taxonomy=None, prediction_taxonomy=None,
                            levels=None, unknown: str = "other", min_overlap: float = 0.1,
                            class_names=None, reference_class_names=None, building_mask=None, band: int = 1,
                            n_boot: int = 1000, seed: int = 0, json_path=None, html_path=None, csv_path=None,
                            title: str | None = None, progress: Progress | None = None) -> dict:
    """Score predicted building use against a reference.

    ``comparison``: ``building`` (predicted polygons matched to reference
    polygons by largest overlap; the same layer on both sides compares two of
    its fields), ``table`` (rows joined on ``id_field``; the same table on both
    sides compares two of its fields) or ``pixel`` (a class raster against a
    reference raster or reference polygons rasterised on its grid).
    ``taxonomy`` / ``prediction_taxonomy``: shipped name, CSV path, Taxonomy
    or None (labels as they are; the prediction side defaults to the
    reference's). ``levels``: see :func:`parse_levels`. ``unknown``: ``other``
    (map labels outside the taxonomy to 'other'), ``error`` (refuse, listing
    them) or ``ignore``.
    """
    comparison = str(comparison).lower()
    if comparison not in COMPARISONS:
        raise InputError("LEVEL", f"'{comparison}' is not a level of comparison.", f"use one of {', '.join(COMPARISONS)}.")
    if unknown not in UNKNOWN_POLICIES:
        raise InputError("UNKNOWN_LABELS", f"'{unknown}' is not a policy.", f"use one of {', '.join(UNKNOWN_POLICIES)}.")
    tax = parse_taxonomy(taxonomy, "REFERENCE_TAXONOMY")
    ptax = parse_taxonomy(prediction_taxonomy, "PREDICTION_TAXONOMY")
    lv = parse_levels(levels, tax)
    common = dict(taxonomy=tax, levels=lv, prediction_taxonomy=ptax, unknown=unknown, n_boot=n_boot, seed=seed,
                  json_path=json_path, html_path=html_path, csv_path=csv_path, progress=progress)
    if comparison == "pixel":
        from .classification import evaluate_class_raster

        kind = reference_kind or input_kind(reference, reference_layer, "REFERENCE")
        return evaluate_class_raster(
            prediction, reference_raster=reference if kind == "raster" else None,
            reference_vector=reference if kind == "vector" else None, reference_field=reference_field,
            class_names=parse_class_names(class_names, "CLASS_NAMES"),
            reference_class_names=parse_class_names(reference_class_names, "REFERENCE_CLASS_NAMES"),
            building_mask=building_mask or None, reference_layer=reference_layer, band=band,
            title=title or "Building use: class raster vs reference (pixels)", **common)
    if not reference_field:
        raise InputError("REFERENCE_FIELD", "no field with the reference use was given.", "give the field name.")
    if not prediction_field:
        raise InputError("PREDICTION_FIELD", "no field with the predicted use was given.", "give the field name.")
    same = _same_source(reference, reference_layer, prediction, prediction_layer)
    if comparison == "building":
        from .classification import evaluate_buildings

        return evaluate_buildings(reference, reference_field, None if same else prediction, prediction_field,
                                  min_overlap=min_overlap, reference_layer=reference_layer,
                                  prediction_layer=None if same else prediction_layer,
                                  title=title or "Building use: prediction vs reference (buildings)", **common)
    from .classification import evaluate_table

    for path, layer, what in ((reference, reference_layer, "REFERENCE"), (prediction, prediction_layer, "PREDICTION")):
        _require_first_layer(path, layer, what)
    return evaluate_table(reference, reference_field, prediction_field, id_field=id_field or None,
                          prediction_path=None if same else prediction,
                          prediction_id_field=prediction_id_field or None,
                          title=title or "Building use: prediction vs reference (table)", **common)


# --------------------------------------------------------------------------
# regression
# --------------------------------------------------------------------------

def evaluate_regression(reference, prediction, reference_field: str | None = None,
                        prediction_field: str | None = None, *, reference_layer=None, prediction_layer=None,
                        reference_kind: str | None = None, prediction_kind: str | None = None,
                        building_mask=None, min_reference: float | None = None, min_overlap: float = 0.1,
                        band: int = 1, reference_band: int = 1, all_touched: bool = False, bins=None,
                        seed: int = 0, json_path=None, html_path=None, csv_path=None, title: str | None = None,
                        progress: Progress | None = None) -> dict:
    """Score predicted heights (or any continuous value, e.g. footprint
    fraction) against a reference; the comparison follows from the inputs:

    * reference raster, prediction raster: pixel by pixel (same grid);
    * reference polygons with ``reference_field``, prediction raster: zonal
      mean of the raster under each reference building;
    * reference polygons, prediction polygons with ``prediction_field``:
      largest-overlap matching.
    """
    rk = reference_kind or input_kind(reference, reference_layer, "REFERENCE")
    pk = prediction_kind or input_kind(prediction, prediction_layer, "PREDICTION")
    edges = parse_bins(bins)
    out = dict(bins=edges, seed=seed, json_path=json_path, html_path=html_path, csv_path=csv_path, progress=progress)
    if rk == "raster":
        if pk != "raster":
            raise InputError("PREDICTION", "a reference raster can only be compared with a prediction raster.",
                             "give a height raster as PREDICTION, or reference polygons with a height field.")
        from .regression import evaluate_height_rasters

        return evaluate_height_rasters(prediction, reference, building_mask=building_mask or None, band=band,
                                       reference_band=reference_band, min_reference=min_reference,
                                       title=title or "Height: prediction raster vs reference raster", **out)
    if not reference_field:
        raise InputError("REFERENCE_FIELD", "reference polygons need the field with the reference height.",
                         "give the field name (metres).")
    from .regression import evaluate_building_heights

    if pk == "raster":
        return evaluate_building_heights(reference, reference_field, prediction_raster=prediction, band=band,
                                         all_touched=all_touched, reference_layer=reference_layer,
                                         title=title or "Height per building: raster vs reference", **out)
    if not prediction_field:
        raise InputError("PREDICTION_FIELD", "predicted polygons need the field with the predicted height.",
                         "give the field name (metres).")
    return evaluate_building_heights(reference, reference_field, prediction_path=prediction,
                                     prediction_height_field=prediction_field, min_overlap=min_overlap,
                                     reference_layer=reference_layer, prediction_layer=prediction_layer,
                                     title=title or "Height per building: prediction vs reference", **out)


# --------------------------------------------------------------------------
# a short summary for logs and the CLI
# --------------------------------------------------------------------------

def summary(result: dict) -> dict:
    """The headline figures of a result (JSON-able, small)."""
    keys = ("comparison", "matched", "unmatched_reference", "unmatched_prediction")
    out = {k: result[k] for k in keys if k in result}
    if result.get("kind") == "regression":
        out.update({k: result.get(k) for k in ("n", "rmse", "wrmse", "mae", "me", "nmad", "cc", "r2", "wr2")})
        return out
    out["levels"] = {}
    for level in result.get("levels") or [""]:
        s = (result.get("by_level") or {}).get(level, result)
        out["levels"][level or "class"] = {
            "n": s.get("n"), "ignored": s.get("ignored"), "overall_accuracy": s.get("overall_accuracy"),
            "kappa": s.get("kappa"), "macro_f1": (s.get("averages") or {}).get("macro", {}).get("f1"),
            "f1": {c: v["f1"] for c, v in (s.get("per_class") or {}).items()}}
    return out


def summary_lines(result: dict) -> list[str]:
    """:func:`summary` as a few human-readable lines."""
    s = summary(result)
    lines = []
    if "matched" in s:
        lines.append(f"matched {s['matched']}, unmatched reference {s.get('unmatched_reference', 0)}, "
                     f"unmatched prediction {s.get('unmatched_prediction', 0)}")
    if result.get("kind") == "regression":
        f = {k: ("–" if v is None else f"{v:.3f}") for k, v in s.items() if k in
             ("rmse", "wrmse", "mae", "me", "nmad", "cc", "r2", "wr2")}
        lines.append(f"n {s['n']}: RMSE {f['rmse']}, wRMSE {f['wrmse']}, MAE {f['mae']}, ME {f['me']}, "
                     f"NMAD {f['nmad']}, CC {f['cc']}, R² {f['r2']}, wR² {f['wr2']}")
        return lines
    for level, v in s["levels"].items():
        f1 = ", ".join(f"{c} {x:.3f}" for c, x in v["f1"].items())
        lines.append(f"[{level}] n {v['n']} (ignored {v['ignored']}): overall accuracy {v['overall_accuracy']:.3f}, "
                     f"kappa {v['kappa']:.3f}, macro F1 {v['macro_f1']:.3f}; F1 {f1}")
    return lines


__all__ = ["COMPARISONS", "evaluate_classification", "evaluate_regression", "parse_taxonomy", "parse_levels",
           "parse_class_names", "parse_bins", "input_kind", "summary", "summary_lines"]
