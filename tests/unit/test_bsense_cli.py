"""``edifice street-view-points`` and ``edifice building-samples`` (with images fetched from a stand-in
street-view API, key from the environment) as a user runs them; errors are one line, exit status 2."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("_bsense_scene", Path(__file__).with_name("_bsense_scene.py"))
scene_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scene_mod)
KEY = "sv-cli-5a4b3c2d1e0f"


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "edifice.core.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_points_then_samples_with_fetched_street_views(tmp_path, standin):
    sc = scene_mod.make_scene(tmp_path / "scene", 3)
    server = standin(ROOT / "tests" / "servers" / "streetview_standin.py", "--key", KEY)
    pts = tmp_path / "p.gpkg"
    r = cli("street-view-points", sc["buildings"], sc["roads"], pts, "--id-field", "bid", "--height-field", "height")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["points"] == 3
    env = dict(os.environ, EDIFICE_STREETVIEW_API_KEY=KEY, EDIFICE_CACHE_DIR=str(tmp_path / "cache"))
    r = cli("building-samples", sc["buildings"], tmp_path / "s", "--id-field", "bid", "--street-view-points", pts,
            "--street-view-url", server.url + "/streetview?size={size}&location={lat},{lon}&heading={heading}"
            "&pitch={pitch}&fov={fov}", "--street-view-size", "24x24", env=env)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["street_view"] == 3 and len(server.requests()) == 3
    assert KEY not in r.stdout + r.stderr
    assert not any(KEY.encode() in f.read_bytes() for f in (tmp_path / "s").rglob("*") if f.is_file())
    r = cli("building-samples", sc["buildings"], tmp_path / "t", "--id-field", "bid", "--street-view-points", pts,
            "--street-view-url", server.url + "/streetview?location={lat},{lon}", env=dict(env, EDIFICE_CACHE_DIR=str(
                tmp_path / "c2"), EDIFICE_STREETVIEW_API_KEY="wrong"))
    assert r.returncode == 2 and r.stderr.startswith("edifice: error: Street-view API: HTTP 403")
    assert "wrong" not in r.stderr and not (tmp_path / "t").exists()


def test_errors_are_one_line(tmp_path):
    r = cli("street-view-points", tmp_path / "none.gpkg", tmp_path / "r.gpkg", tmp_path / "o.gpkg")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "BUILDINGS: file" in r.stderr and "does not exist" in r.stderr
    r = cli("classify-building-function", tmp_path, tmp_path / "o.gpkg", "--url", "http://127.0.0.1:9/v1",
            "--model", "m", "--api-key-file", tmp_path / "missing.txt")
    assert r.returncode == 2 and "KEY_FILE" in r.stderr
