"""`edifice evaluate-classification` / `evaluate-regression` and the option parsing of core.evaluation.runs."""
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from edifice.core.cli import main
from edifice.core.errors import InputError
from edifice.core.evaluation.runs import parse_bins, parse_class_names, parse_levels, parse_taxonomy

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "eubucco"


def test_classification_subcommand_writes_reports(tmp_path, capsys):
    rc = main(["evaluate-classification", str(SAMPLES / "buildings_gov.gpkg"), str(SAMPLES / "buildings_osm.gpkg"),
               "--reference-field", "type", "--prediction-field", "type", "--taxonomy", "eubucco_type",
               "--score-level", "rci,type", "--unknown", "error", "--min-overlap", "0.5", "--n-boot", "0",
               "--json", str(tmp_path / "u.json"), "--html", str(tmp_path / "u.html"), "--csv", str(tmp_path / "u.csv")])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    full = json.loads((tmp_path / "u.json").read_text())
    assert full["levels"] == ["rci", "type"] and full["classes"] == ["residential", "commercial", "industrial", "other"]
    assert summary["levels"]["rci"]["overall_accuracy"] == full["overall_accuracy"]
    assert summary["matched"] == full["matched"] > 0
    assert (tmp_path / "u.html").stat().st_size > 1000 and (tmp_path / "u.csv").read_text().startswith("level,class")


def test_unknown_labels_refused_exit_2(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("id,ref,pred\n1,residential,castle\n2,commercial,commercial\n")
    rc = main(["evaluate-classification", str(table), str(table), "--level", "table", "--reference-field", "ref",
               "--prediction-field", "pred", "--taxonomy", "eubucco_type", "--unknown", "error",
               "--json", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "'castle' (1)" in err and "not in taxonomy 'eubucco_type'" in err
    assert not (tmp_path / "x.json").exists()


def test_regression_subcommand_raster_vs_raster(tmp_path, capsys):
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 30, (40, 40)).astype(np.float32)
    pred = ref + 2.0
    for name, a in (("r.tif", ref), ("p.tif", pred)):
        with rasterio.open(tmp_path / name, "w", driver="GTiff", width=40, height=40, count=1, dtype="float32",
                           crs="EPSG:32633", transform=Affine(5, 0, 0, 0, -5, 200)) as dst:
            dst.write(a, 1)
    rc = main(["evaluate-regression", str(tmp_path / "r.tif"), str(tmp_path / "p.tif"), "--bins", "0,10,20"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["n"] == 1600
    assert out["me"] == pytest.approx(2.0, abs=1e-5) and out["rmse"] == pytest.approx(2.0, abs=1e-5)


def test_option_parsing():
    tax = parse_taxonomy("osm_building")
    assert parse_levels(None, tax) == ["rci"]
    assert parse_levels("all", tax) == list(reversed(tax.levels))
    assert parse_levels("RCI, building", tax) == ["rci", "building"]
    with pytest.raises(InputError, match="no level 'floors'"):
        parse_levels("floors", tax)
    with pytest.raises(InputError, match="need a taxonomy"):
        parse_levels("rci", None)
    assert parse_class_names("none,residential") == ["none", "residential"]
    assert parse_class_names("1=residential, 2=commercial") == {1: "residential", 2: "commercial"}
    with pytest.raises(InputError, match="CLASS_NAMES"):
        parse_class_names("1=residential,commercial")
    assert parse_bins("0,5,10") == [0.0, 5.0, 10.0] and parse_bins("none") is None
    with pytest.raises(InputError, match="increasing"):
        parse_bins("5,0")
