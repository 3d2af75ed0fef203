"""Evaluation end to end through qgis_process.bin, checked against an independent
computation (tests/_eval_truth.py: shapely matching + scikit-learn scores)."""
from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from pyproj import Transformer

pytestmark = pytest.mark.e2e
_spec = importlib.util.spec_from_file_location("_eval_truth", Path(__file__).resolve().parents[1] / "_eval_truth.py")
truth = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(truth)
EUBUCCO_TAXONOMY = "2"  # enum: 0 none, 1 custom file, 2 eubucco_type, 3 osm_building, ...


@pytest.fixture(scope="module")
def expected():
    return truth.eubucco_expected(min_overlap=0.5)


def _run(qp, alg, tmp_path, *params):
    out = {k: str(tmp_path / f"e.{ext}") for k, ext in (("OUTPUT_JSON", "json"), ("OUTPUT_HTML", "html"),
                                                         ("OUTPUT_TABLE", "csv"))}
    r = qp("--json", "run", f"edifice:{alg}", "--", *params, *(f"{k}={v}" for k, v in out.items()))
    return r, out


def _results(r) -> dict:
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(r.stdout[r.stdout.index("{"):])["results"]


def _use(prediction=truth.OSM, reference=truth.GOV, *extra):
    return (f"PREDICTION={prediction}", "PREDICTION_FIELD=type", f"REFERENCE={reference}", "REFERENCE_FIELD=type",
            f"REFERENCE_TAXONOMY={EUBUCCO_TAXONOMY}", "SCORE_LEVEL=rci", "UNKNOWN_LABELS=1", "MIN_OVERLAP=0.5",
            "N_BOOT=200", *extra)


def test_eubucco_official_vs_osm_type_at_rci(qp, expected, tmp_path):
    r, out = _run(qp, "evaluateclassification", tmp_path, "LEVEL=0", *_use())
    res = _results(r)
    got = json.loads(Path(out["OUTPUT_JSON"]).read_text())
    assert got["classes"] == expected["classes"]
    assert got["confusion_matrix"] == expected["confusion_matrix"]
    for c in expected["classes"]:
        assert got["per_class"][c]["f1"] == pytest.approx(expected["f1"][c], abs=1e-12)
    assert got["overall_accuracy"] == pytest.approx(expected["overall_accuracy"], abs=1e-12) == res["OVERALL_ACCURACY"]
    assert got["kappa"] == pytest.approx(expected["kappa"], abs=1e-12) == res["KAPPA"]
    for key in ("matched", "unmatched_reference", "unmatched_prediction"):
        assert got[key] == expected[key] == res[key.upper()]
    rows = list(csv.DictReader(open(out["OUTPUT_TABLE"], newline="")))
    assert {r["metric"] for r in rows} >= {"overall_accuracy", "kappa", "f1", "predicted_as:residential"}
    assert "<svg" in Path(out["OUTPUT_HTML"]).read_text()
    print(f"\nEUBUCCO R/C/I (qgis_process): OA {got['overall_accuracy']:.4f}, kappa {got['kappa']:.4f}, "
          f"F1 { {c: round(v['f1'], 4) for c, v in got['per_class'].items()} }, matched {got['matched']}, unmatched official {got['unmatched_reference']}, "
          f"unmatched OSM {got['unmatched_prediction']}, n {got['n']} (ignored {got['ignored']})")


def test_prediction_in_another_crs_is_reprojected(qp, expected, tmp_path):
    geoms, fields, _ = truth.read_layer(truth.OSM)
    tr = Transformer.from_crs("EPSG:3035", "EPSG:4326", always_xy=True)
    moved = shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    path = tmp_path / "osm_4326.gpkg"
    truth.write_layer(path, moved, {"type": fields["type"]}, "EPSG:4326")
    r, out = _run(qp, "evaluateclassification", tmp_path, "LEVEL=0", *_use(prediction=path))
    _results(r)
    got = json.loads(Path(out["OUTPUT_JSON"]).read_text())
    assert got["confusion_matrix"] == expected["confusion_matrix"]
    assert (got["matched"], got["unmatched_prediction"]) == (expected["matched"], expected["unmatched_prediction"])


def test_no_overlap_fails_clearly_and_writes_nothing(qp, tmp_path):
    geoms, fields, crs = truth.read_layer(truth.OSM)
    path = tmp_path / "far.gpkg"
    truth.write_layer(path, shapely.transform(geoms, lambda xy: xy + [300000.0, 0.0]), {"type": fields["type"]}, crs)
    r, out = _run(qp, "evaluateclassification", tmp_path, "LEVEL=0", *_use(prediction=path))
    assert r.returncode != 0
    assert "no predicted polygon overlaps a reference polygon" in r.stdout + r.stderr
    assert not any(Path(p).exists() for p in out.values())


def test_labels_outside_the_taxonomy_are_refused_with_their_list(qp, tmp_path):
    table = tmp_path / "labels.csv"
    rows = [("1", "residential", "residential"), ("2", "public", "castle"), ("3", "industrial", "castle"),
            ("4", "commercial", "moonbase"), ("5", "others", "others")]
    with open(table, "w", newline="") as fh:
        csv.writer(fh).writerows([("id", "official", "predicted"), *rows])
    params = (f"PREDICTION={table}", "PREDICTION_FIELD=predicted", f"REFERENCE={table}", "REFERENCE_FIELD=official",
              f"REFERENCE_TAXONOMY={EUBUCCO_TAXONOMY}", "N_BOOT=0")
    r, out = _run(qp, "evaluateclassification", tmp_path, "LEVEL=2", "UNKNOWN_LABELS=1", *params)
    msg = r.stdout + r.stderr
    assert r.returncode != 0
    assert "3 labels are not in taxonomy 'eubucco_type': 'castle' (2), 'moonbase' (1)" in msg
    assert not any(Path(p).exists() for p in out.values())
    r, out = _run(qp, "evaluateclassification", tmp_path, "LEVEL=2", "UNKNOWN_LABELS=0", *params)
    _results(r)
    got = json.loads(Path(out["OUTPUT_JSON"]).read_text())
    # castle/moonbase -> other: residential ok, public(C)->other, industrial->other, commercial->other, others ok
    assert got["unknown_prediction"] == {"castle": 2, "moonbase": 1}
    assert got["overall_accuracy"] == pytest.approx(2 / 5)


def test_tables_without_common_ids_fail_clearly(qp, tmp_path):
    for name, ids in (("a.csv", ["1", "2", "3"]), ("b.csv", ["7", "8", "9"])):
        with open(tmp_path / name, "w", newline="") as fh:
            csv.writer(fh).writerows([("id", "use"), *((i, "residential") for i in ids)])
    r, _ = _run(qp, "evaluateclassification", tmp_path, "LEVEL=2", f"PREDICTION={tmp_path / 'b.csv'}",
                "PREDICTION_FIELD=use", f"REFERENCE={tmp_path / 'a.csv'}", "REFERENCE_FIELD=use", "ID_FIELD=id")
    assert r.returncode != 0 and "no id in common" in r.stdout + r.stderr


def test_heights_per_building(qp, expected, tmp_path):
    r, out = _run(qp, "evaluateregression", tmp_path, f"PREDICTION={truth.OSM}", "PREDICTION_FIELD=height",
                  f"REFERENCE={truth.GOV}", "REFERENCE_FIELD=height", "MIN_OVERLAP=0.5")
    res = _results(r)
    got = json.loads(Path(out["OUTPUT_JSON"]).read_text())
    exp = truth.regression_expected(*expected["heights"])
    for key in ("n", "rmse", "mae", "me", "cc"):
        assert got[key] == pytest.approx(exp[key], rel=1e-9)
    assert res["RMSE"] == pytest.approx(exp["rmse"])
    for key in ("wrmse", "nmad", "r2", "wr2"):
        assert got[key] is not None
    assert [b["n"] for b in got["bins"]] == [int(((expected["heights"][0] >= lo) & (expected["heights"][0] < hi)).sum())
                                            for lo, hi in zip(range(0, 33, 3), list(range(3, 33, 3)) + [np.inf])]


def test_report_outputs_are_optional(qp, expected, tmp_path):
    """Issue 16 item 8: evaluateclassification (and evaluateregression) run with none, or only some, of
    the table / JSON / HTML outputs; the numbers come back as outputs all the same."""
    r = qp("--json", "run", "edifice:evaluateclassification", "--", "LEVEL=0", *_use())
    res = _results(r)
    assert res["OVERALL_ACCURACY"] == pytest.approx(expected["overall_accuracy"], abs=1e-12)
    assert not {"OUTPUT_TABLE", "OUTPUT_JSON", "OUTPUT_HTML"} & {k for k, v in res.items() if v}
    js = tmp_path / "only.json"
    res = _results(qp("--json", "run", "edifice:evaluateclassification", "--", "LEVEL=0", *_use(),
                      f"OUTPUT_JSON={js}"))
    assert res["OUTPUT_JSON"] == str(js) and json.loads(js.read_text())["kappa"] == pytest.approx(expected["kappa"])
    assert list(tmp_path.iterdir()) == [js]
