"""Issue 16 item 7: an evaluation whose two sides share no class says so (pixel level without
reference class names), and one where nothing is scored (n = 0) gives no metric but an error."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import shapely
from affine import Affine

from edifice.core.errors import InputError
from edifice.core.evaluation.runs import evaluate_classification

_spec = importlib.util.spec_from_file_location("_eval_files", Path(__file__).with_name("_eval_files.py"))
_files = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_files)
T = Affine(10, 0, 4_000_000, 0, -10, 3_000_000)


def _rasters(tmp_path):
    ref = np.array([[1, 1, 2, 2], [1, 3, 3, 2]], np.uint8)     # reference use codes 1 R, 2 C, 3 I
    pred = ref.copy()
    pred[0, 0] = 2
    return (_files.write_raster(tmp_path / "ref.tif", ref, T, nodata=255),
            _files.write_raster(tmp_path / "pred.tif", pred, T, nodata=255))


def test_pixel_level_without_reference_class_names_warns(tmp_path):
    ref, pred = _rasters(tmp_path)
    names = "none,residential,commercial,industrial"
    res = evaluate_classification("pixel", ref, pred, class_names=names, n_boot=0)
    assert res["overall_accuracy"] == 0.0
    assert len(res["warnings"]) == 1 and "--reference-class-names" in res["warnings"][0]
    ok = evaluate_classification("pixel", ref, pred, class_names=names, reference_class_names=names, n_boot=0)
    assert ok["warnings"] == [] and ok["overall_accuracy"] == pytest.approx(7 / 8)


def test_cli_prints_the_warning(tmp_path):
    ref, pred = _rasters(tmp_path)
    r = subprocess.run([sys.executable, "-m", "edifice.core.cli", "evaluate-classification", ref, pred, "--level",
                        "pixel", "--class-names", "none,residential,commercial,industrial", "--n-boot", "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "no class occurs in both the reference (1, 2, 3) and the prediction" in r.stdout + r.stderr


def test_nothing_scored_gives_no_metric(tmp_path):
    geoms = [shapely.box(4_000_000 + 20 * i, 3_000_000, 4_000_010 + 20 * i, 3_000_010) for i in range(3)]
    path = _files.write_polys(tmp_path / "b.gpkg", geoms, {"ref": ["residential", "commercial", "residential"],
                                                           "pred": ["", None, ""]})
    with pytest.raises(InputError, match=r"nothing was scored .* all 3 compared item\(s\)"):
        evaluate_classification("building", path, path, "ref", "pred", n_boot=0)
