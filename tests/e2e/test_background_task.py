"""Regression (issue 10, item 1): building-use tools that write or read vectors with pyogrio,
run from their dialogs as a background task (QgsProcessingAlgRunnerTask) in a freshly
started QGIS desktop, used to fail with "Could not correctly detect GDAL data files
installed by pyogrio wheel". The plugin now loads pyogrio on the main thread with its own
GDAL (processing_algs/native_libs.py)."""
import json
import shutil
import subprocess
from pathlib import Path

import pyogrio
import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
BUILDINGS = ROOT / "samples" / "kampala" / "buildings_osm.geojson"


def run_desktop_tasks(env, jobs, tmp_path) -> dict:
    """Run ``jobs`` in QgsProcessingAlgRunnerTasks in a fresh QGIS desktop under Xvfb."""
    if shutil.which("xvfb-run") is None:
        pytest.fail("xvfb-run is missing: run scripts/setup.sh")
    env = {k: v for k, v in env.items() if k != "QT_QPA_PLATFORM"}  # a real (virtual) display
    env["EDIFICE_TASK_JOBS"] = str(tmp_path / "jobs.json")
    env["EDIFICE_TASK_RESULT"] = str(tmp_path / "task_result.json")
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    r = subprocess.run(["xvfb-run", "-a", "qgis", "--nologo", "--noversioncheck", "--code",
                        str(ROOT / "tests" / "data" / "task_run.py")], env=env, capture_output=True, text=True,
                       timeout=300)
    result = tmp_path / "task_result.json"
    assert result.exists(), r.stdout[-2000:] + r.stderr[-2000:]
    return json.loads(result.read_text())


def test_polygons_and_assign_run_as_background_tasks(qp_env, kampala_rgb, kampala_pois, tiny_use_checkpoint,
                                                      tmp_path):
    probs, polygons, assigned = tmp_path / "up.tif", tmp_path / "buildings.gpkg", tmp_path / "assigned.gpkg"
    res = run_desktop_tasks(qp_env, [
        {"alg": "edifice:mapbuildinguse", "params": {
            "IMAGERY": str(kampala_rgb), "CHECKPOINT": str(tiny_use_checkpoint), "POI_LAYER": str(kampala_pois),
            "CATEGORY_FIELD": "other_tags", "DEVICE": "cpu", "WINDOW": 256, "OVERLAP": 32,
            "USE_PROBABILITIES": str(probs), "POLYGONS": str(polygons)}},
        {"alg": "edifice:assignbuildinguse", "params": {
            "INPUT": str(BUILDINGS), "PROBABILITIES": str(probs), "OUTPUT": str(assigned)}}], tmp_path)
    assert "error" not in res, res["error"]
    mapped, assign = res["jobs"]
    assert mapped["ok"], mapped["log"]
    assert assign["ok"], assign["log"]
    assert "Traceback" not in mapped["log"] + assign["log"]
    assert pyogrio.read_info(polygons)["features"] > 0
    assert pyogrio.read_info(assigned)["features"] == pyogrio.read_info(BUILDINGS)["features"]
    # inside QGIS pyogrio runs its own GDAL (as outside QGIS), not the GDAL QGIS links, with its own data
    assert res["pyogrio"]["gdal"] == pyogrio.__gdal_version_string__
    assert Path(res["pyogrio"]["data"]).resolve().is_relative_to(Path(res["pyogrio"]["module"]).resolve().parent)
