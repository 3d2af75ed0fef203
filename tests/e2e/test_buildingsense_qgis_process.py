"""Street-view points -> samples -> building function through qgis_process.bin, against the stand-in
OpenAI-compatible server (a real process); the key from the environment variable EDIFICE_LLM_API_KEY
(no AUTHCFG) reaches the server as a bearer token and appears in no output or log."""
from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pyogrio.raw
import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "tests" / "servers" / "llm_standin.py"
QGIS_PROCESS = "/usr/bin/qgis_process.bin"
_spec = importlib.util.spec_from_file_location("_bsense_scene", ROOT / "tests" / "unit" / "_bsense_scene.py")
scene_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scene_mod)
KEY = "sk-e2e-9b7d5f3a1c2e4a6b8d0f"


def _run(env, alg, *params):
    r = subprocess.run([QGIS_PROCESS, "--json", "run", f"edifice:{alg}", "--", *params], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r, json.loads(r.stdout[r.stdout.index("{"):])["results"]


def test_points_samples_classify(qp_env, standin, tmp_path):
    sc = scene_mod.make_scene(tmp_path / "scene", 5)
    server = standin(SERVER, "--key", KEY, "--combination", "ST")
    env = dict(qp_env, EDIFICE_LLM_API_KEY=KEY, EDIFICE_CACHE_DIR=str(tmp_path / "cache"))
    pts = tmp_path / "points.gpkg"
    r1, _ = _run(env, "streetviewpoints", f"BUILDINGS={sc['buildings']}", f"ROADS={sc['roads']}", "ID_FIELD=bid",
                 "HEIGHT_FIELD=height", f"OUTPUT={pts}")
    samples = tmp_path / "samples"
    r2, res = _run(env, "buildingsamples", f"BUILDINGS={sc['buildings']}", "ID_FIELD=bid",
                   f"STREET_VIEW_FOLDER={sc['street_view']}", f"STREET_VIEW_POINTS={pts}", f"POIS={sc['pois']}",
                   "ATTRIBUTES=use,year", f"OUTPUT_FOLDER={samples}")
    assert res["SAMPLES"] == 5
    out = tmp_path / "f.gpkg"
    r3, res = _run(env, "classifybuildingfunction", f"SAMPLES={samples}", f"URL={server.url}/v1",
                   "MODEL=stand-in-vl", "COMBINATION=4", "CONCURRENCY=2", f"OUTPUT={out}")
    assert res["CLASSIFIED"] == 5 and res["REQUESTS_SENT"] == 5
    meta, _, _, data = pyogrio.raw.read(str(out))
    rec = dict(zip(meta["fields"], data))
    assert list(rec["function"]) == sc["uses"] and set(rec["combination"]) == {"ST"}
    assert all(r["headers"]["authorization"] == f"Bearer {KEY}" for r in server.requests())
    assert "Tokens this run:" in r3.stdout + r3.stderr
    for r in (r1, r2, r3):
        assert KEY not in r.stdout + r.stderr
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f
