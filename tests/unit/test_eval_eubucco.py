"""Real data: EUBUCCO official vs OSM type and height on the bundled GeoPackages."""
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "eval_eubucco.py"


def test_eubucco_benchmark_runs(tmp_path):
    spec = importlib.util.spec_from_file_location("eval_eubucco", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    use, height = mod.run(tmp_path)
    m = use["matching"]
    assert (m["reference_count"], m["prediction_count"]) == (2454, 3195)
    assert m["matched"] + m["unmatched_reference"] == 2454
    assert use["classes"] == ["residential", "commercial", "industrial", "other"]
    assert use["n"] + use["ignored"] == m["matched"]
    assert 0.9 < use["overall_accuracy"] <= 1.0 and 0.7 < use["kappa"] <= 1.0
    assert height["n"] > 100 and height["rmse"] == pytest.approx(height["rmse"])
    for name in ("eubucco_use.json", "eubucco_use.html", "eubucco_use.csv", "eubucco_height.html"):
        assert (tmp_path / name).stat().st_size > 500
