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
