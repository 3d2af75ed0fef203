"""Reports: strict JSON, flat CSV, self-contained HTML with the numbers."""
import csv
import json
import re

import numpy as np

from edifice.core.evaluation import classification as E
from edifice.core.evaluation import regression as H
from edifice.core.evaluation import reports as R


def _classification():
    ref = ["house"] * 6 + ["retail"] * 3 + ["factory"] * 2 + ["yes", "castle"]
    pred = ["house"] * 5 + ["retail"] + ["retail", "retail", "house"] + ["factory", "house"] + ["house", "house"]
    return E.score_labels(ref, pred, "osm_building", ["rci", "building"], n_boot=200)


def test_reports_written_and_readable(tmp_path):
    res = _classification()
    paths = R.write_reports(res, tmp_path / "r.json", tmp_path / "r.html", tmp_path / "r.csv", title="Test <run>")
    data = json.loads((tmp_path / "r.json").read_text())
    for key in ("classes", "confusion_matrix", "per_class", "overall_accuracy", "kappa", "by_level"):
        assert key in data
    assert data["classes"] == ["residential", "commercial", "industrial", "other"]
    rows = list(csv.DictReader(open(paths["csv"])))
    oa = [r for r in rows if r["level"] == "rci" and r["metric"] == "overall_accuracy"]
    assert float(oa[0]["value"]) == round(res["overall_accuracy"], 6)
    assert any(r["metric"] == "f1" and r["class"] == "house" for r in rows)
    page = (tmp_path / "r.html").read_text()
    assert "Test &lt;run&gt;" in page
    assert f"{res['overall_accuracy']:.3f}" in page and f"{res['kappa']:.3f}" in page
    assert f"{res['per_class']['residential']['f1']:.3f}" in page
    assert "<svg" in page and "castle (1)" in page
    assert not re.search(r"https?://|<script|<link|src=", page)
    assert not list(tmp_path.glob(".*partial*"))


def test_regression_report_and_one_call(tmp_path):
    rng = np.random.default_rng(0)
    r = rng.uniform(2, 40, 200)
    res = H.regression_metrics(r, r + rng.normal(0, 2, 200))
    res["sample"] = {"reference": r.tolist(), "prediction": (r + 1).tolist()}
    page = R.html_report(res)
    assert f"{res['rmse']:.3f}" in page and f"{res['nmad']:.3f}" in page and "<circle" in page
    assert not re.search(r"https?://|<script|<link|src=", page)
    R.write_csv_table(res, tmp_path / "h.csv")
    rows = list(csv.DictReader(open(tmp_path / "h.csv")))
    assert any(r["level"] == "height_bin" and r["class"] == "3-6 m" for r in rows)
    # entry points write their reports themselves
    a = tmp_path / "t.csv"
    a.write_text("ref,pred\nresidential,residential\ncommercial,residential\n")
    E.evaluate_table(a, "ref", "pred", json_path=tmp_path / "o.json", html_path=tmp_path / "o.html",
                     csv_path=tmp_path / "o.csv")
    assert json.loads((tmp_path / "o.json").read_text())["matched"] == 2
    assert (tmp_path / "o.html").stat().st_size > 1000
