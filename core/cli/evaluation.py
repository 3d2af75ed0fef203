"""``edifice evaluate-classification`` and ``edifice evaluate-regression``: the
same core runs as the Processing algorithms ``edifice:evaluateclassification``
and ``edifice:evaluateregression`` (:mod:`edifice.core.evaluation.runs`)."""
from __future__ import annotations

import argparse

from ..progress import TerminalProgress


def _cmd_classification(a) -> dict:
    from ..evaluation.runs import evaluate_classification, summary, summary_lines

    progress = TerminalProgress()
    res = evaluate_classification(
        a.level, a.reference, a.prediction, a.reference_field, a.prediction_field,
        reference_layer=a.reference_layer, prediction_layer=a.prediction_layer, id_field=a.id_field,
        prediction_id_field=a.prediction_id_field, taxonomy=a.taxonomy, prediction_taxonomy=a.prediction_taxonomy,
        levels=a.score_level, unknown=a.unknown, min_overlap=a.min_overlap, class_names=a.class_names,
        reference_class_names=a.reference_class_names, building_mask=a.building_mask, band=a.band,
        n_boot=a.n_boot, seed=a.seed, json_path=a.json, html_path=a.html, csv_path=a.csv, title=a.title,
        progress=progress)
    for line in summary_lines(res):
        progress.info(line)
    for text in res.get("warnings") or []:
        progress.warning(text)
    return dict(summary(res), reports={k: v for k, v in (("json", a.json), ("html", a.html), ("csv", a.csv)) if v})


def _cmd_regression(a) -> dict:
    from ..evaluation.runs import evaluate_regression, summary, summary_lines

    progress = TerminalProgress()
    res = evaluate_regression(
        a.reference, a.prediction, a.reference_field, a.prediction_field, reference_layer=a.reference_layer,
        prediction_layer=a.prediction_layer, building_mask=a.building_mask, min_reference=a.min_reference,
        min_overlap=a.min_overlap, band=a.band, reference_band=a.reference_band, all_touched=a.all_touched,
        bins=a.bins, seed=a.seed, json_path=a.json, html_path=a.html, csv_path=a.csv, title=a.title,
        progress=progress)
    for line in summary_lines(res):
        progress.info(line)
    return dict(summary(res), reports={k: v for k, v in (("json", a.json), ("html", a.html), ("csv", a.csv)) if v})


def _reports(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", default=None, help="write the full result as JSON")
    p.add_argument("--html", default=None, help="write a self-contained HTML report")
    p.add_argument("--csv", default=None, help="write the metrics table (level,class,metric,value)")
    p.add_argument("--title", default=None, help="title of the HTML report")
    p.add_argument("--seed", type=int, default=0)


def add_commands(subparsers) -> None:
    """Add the evaluation subcommands to ``edifice``'s subparsers."""
    from ..evaluation.runs import COMPARISONS
    from ..taxonomy import UNKNOWN_POLICIES, list_taxonomies

    c = subparsers.add_parser(
        "evaluate-classification", help="score predicted building use against a reference",
        description="Confusion matrix (rows = reference), per-class precision/recall/F1, overall accuracy and "
                    "kappa at taxonomy levels. Shipped taxonomies: " + ", ".join(list_taxonomies()) + ".")
    c.add_argument("reference", help="reference polygons, table or raster")
    c.add_argument("prediction", help="predicted polygons, table or class raster (may be the reference file)")
    c.add_argument("--level", choices=COMPARISONS, default="building",
                   help="level of comparison: building (overlap matching), pixel (class raster), table (ids)")
    c.add_argument("--reference-field", default=None, help="field with the reference use")
    c.add_argument("--prediction-field", default=None, help="field with the predicted use")
    c.add_argument("--reference-layer", default=None)
    c.add_argument("--prediction-layer", default=None)
    c.add_argument("--id-field", default=None, help="table level: id field joining two tables")
    c.add_argument("--prediction-id-field", default=None, help="id field of the prediction table (default --id-field)")
    c.add_argument("--taxonomy", default=None, help="reference taxonomy: shipped name or CSV path (default: "
                                                      "labels as they are)")
    c.add_argument("--prediction-taxonomy", default=None, help="prediction taxonomy (default: the reference's)")
    c.add_argument("--score-level", default=None,
                   help="level(s) to score at, e.g. rci or type,rci or all (default: the coarsest)")
    c.add_argument("--unknown", choices=UNKNOWN_POLICIES, default="other",
                   help="labels outside the taxonomy: other (map to 'other'), error (refuse, listing them), ignore")
    c.add_argument("--min-overlap", type=float, default=0.1,
                   help="building level: fraction of a reference footprint a prediction must cover (0-1)")
    c.add_argument("--class-names", default=None, help="pixel level: raster value -> label, 'a,b,c' or '1=a,2=b'")
    c.add_argument("--reference-class-names", default=None, help="pixel level: same for a reference raster")
    c.add_argument("--building-mask", default=None, help="pixel level: score only pixels inside these polygons")
    c.add_argument("--band", type=int, default=1)
    c.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for confidence intervals (0: none)")
    _reports(c)
    c.set_defaults(func=_cmd_classification)

    r = subparsers.add_parser(
        "evaluate-regression", help="score predicted heights (or footprint) against a reference",
        description="RMSE, wRMSE, MAE, ME, NMAD, CC, R², wR² and bias per height bin: raster vs raster, or per "
                    "building (reference polygons with a height field vs a raster or predicted polygons).")
    r.add_argument("reference", help="reference raster, or reference polygons with --reference-field")
    r.add_argument("prediction", help="prediction raster, or predicted polygons with --prediction-field")
    r.add_argument("--reference-field", default=None)
    r.add_argument("--prediction-field", default=None)
    r.add_argument("--reference-layer", default=None)
    r.add_argument("--prediction-layer", default=None)
    r.add_argument("--building-mask", default=None, help="raster vs raster: score only pixels inside these polygons")
    r.add_argument("--min-reference", type=float, default=None, help="raster vs raster: drop reference values below")
    r.add_argument("--min-overlap", type=float, default=0.1)
    r.add_argument("--band", type=int, default=1)
    r.add_argument("--reference-band", type=int, default=1)
    r.add_argument("--all-touched", action="store_true", help="zonal mean over every touched pixel")
    r.add_argument("--bins", default=None, help="height-bin edges in metres (default 0,3,...,30; 'none': no bins)")
    _reports(r)
    r.set_defaults(func=_cmd_regression)
