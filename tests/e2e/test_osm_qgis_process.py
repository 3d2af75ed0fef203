"""edifice:osmdownload through /usr/bin/qgis_process.bin against the Overpass stand-in (a real process)."""
from __future__ import annotations

import json
import subprocess

import pyogrio
import pytest

QGIS_PROCESS = "/usr/bin/qgis_process.bin"

pytestmark = pytest.mark.e2e


def test_osmdownload_through_qgis_process(qp_env, overpass, helsinki_3067, tmp_path):
    x0, y0, x1, y1 = helsinki_3067
    env = {**qp_env, "EDIFICE_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([QGIS_PROCESS, "--json", "run", "edifice:osmdownload", "--",
                        f"EXTENT={x0},{x1},{y0},{y1} [EPSG:3067]", f"ENDPOINT={overpass.url}/api/interpreter",
                        "MAX_TILE_KM2=0.2", f"POIS={tmp_path / 'pois.gpkg'}", f"BUILDINGS={tmp_path / 'b.gpkg'}",
                        f"ROADS={tmp_path / 'roads.gpkg'}"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout[r.stdout.index("{"):])["results"]
    assert res["POI_COUNT"] > 100 and res["OSM_TIMESTAMP"]
    info = pyogrio.read_info(tmp_path / "b.gpkg")
    assert info["features"] == sum(res[f"{c}_COUNT"] for c in ("RESIDENTIAL", "COMMERCIAL", "INDUSTRIAL", "UNKNOWN"))
    assert pyogrio.read_info(tmp_path / "roads.gpkg")["geometry_type"] == "LineString"
    ua = {q["headers"]["user-agent"] for q in overpass.requests()}
    assert len(ua) == 1 and ua.pop().startswith("Edifice/")


def test_open_data_model_runs_end_to_end_through_qgis_process(qp_env, open_data_town, tmp_path):
    """examples/open_data_building_use.model3 on a synthetic town served by the Overpass stand-in and
    the tile server: every OSM footprint gets a use, and the report scores the held-back test buildings."""
    import shutil
    from pathlib import Path

    model = tmp_path / "open_data.model3"
    shutil.copy(Path(__file__).resolve().parents[2] / "examples" / "open_data_building_use.model3", model)
    x0, y0, x1, y1 = open_data_town.extent
    env = {**qp_env, "EDIFICE_CACHE_DIR": str(tmp_path / "cache")}
    outs = {"usemap:use_class": tmp_path / "use.tif", "assign:buildings": tmp_path / "buildings.gpkg",
            "evaluate:report": tmp_path / "report.html", "evaluate:metrics": tmp_path / "metrics.json"}
    r = subprocess.run([QGIS_PROCESS, "--json", "run", str(model), "--",
                        f"extent={x0},{x1},{y0},{y1} [EPSG:32636]", f"overpass_url={open_data_town.overpass_url}",
                        "imagery_type=0", f"imagery_url={open_data_town.xyz_url}", "max_zoom=19", "gsd=1",
                        "chip_size=64", "split_tile=64", "epochs=1", "base_width=4",
                        *(f"{k}={v}" for k, v in outs.items())], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(r.stdout[r.stdout.index("{"):])["results"]
    assert all(Path(res[k]) == v and v.exists() for k, v in outs.items())
    info = pyogrio.read_info(outs["assign:buildings"])
    assert info["features"] == len(open_data_town.scene["classes"]) and "use_name" in list(info["fields"])
    html = outs["evaluate:report"].read_text(encoding="utf-8")
    assert "overall" in html.lower() and "residential" in html
    # scored on the held-back buildings only: each found its own footprint, all others unmatched
    ev = json.loads(outs["evaluate:metrics"].read_text())
    assert ev["matched"] > 0 and ev["unmatched_reference"] == 0
    assert ev["matched"] + ev["unmatched_prediction"] == info["features"]
