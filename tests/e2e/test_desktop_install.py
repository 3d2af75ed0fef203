"""The plugin as an analyst meets it in the QGIS desktop (Xvfb; screenshots kept in the test's
folder): installed from the built zip into a fresh profile whose Python lacks the packages, it
lists every tool and says what is missing with an Install button; with the packages, Map building
use run from its dialog (a background task) loads its polygons and classes styled."""
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
QGIS_PROCESS = "/usr/bin/qgis_process.bin"


def run_desktop(env, mode, tmp_path, params=None) -> dict:
    if shutil.which("xvfb-run") is None:
        pytest.fail("xvfb-run is missing: run scripts/setup.sh")
    env = {k: v for k, v in env.items() if k != "QT_QPA_PLATFORM"}
    env.update(EDIFICE_DESKTOP_MODE=mode, EDIFICE_DESKTOP_RESULT=str(tmp_path / f"{mode}.json"),
               EDIFICE_DESKTOP_SHOT=str(tmp_path / f"{mode}.png"))
    if params is not None:
        (tmp_path / "params.json").write_text(json.dumps(params))
        env["EDIFICE_DESKTOP_PARAMS"] = str(tmp_path / "params.json")
    r = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1280x900x24", "qgis", "--nologo", "--noversioncheck",
                        "--code", str(ROOT / "tests" / "data" / "desktop_check.py")], env=env, capture_output=True,
                       text=True, timeout=300)
    out = tmp_path / f"{mode}.json"
    assert out.exists(), r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert "error" not in res, res["error"]
    assert (tmp_path / f"{mode}.png").stat().st_size > 10_000  # a real screenshot, kept for review
    return res


def test_zip_in_bare_qgis_lists_tools_and_offers_installer(qp_env, tmp_path):
    dist = tmp_path / "dist"
    r = subprocess.run(["bash", str(ROOT / "scripts" / "package.sh")], env=dict(os.environ, EDIFICE_DIST=str(dist)),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    profile = tmp_path / "config"
    plugins = profile / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    zipfile.ZipFile(r.stdout.strip()).extractall(plugins)  # what "Install from ZIP" does
    env = {k: v for k, v in qp_env.items() if k not in ("QGIS_PLUGINPATH", "VIRTUAL_ENV")}
    env["QGIS_CUSTOM_CONFIG_PATH"] = str(profile)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != ROOT / ".venv" / "bin")
    assert subprocess.run(["python3", "-c", "import rasterio"], env=env, capture_output=True).returncode != 0
    enable = subprocess.run([QGIS_PROCESS, "plugins", "enable", "edifice"], env=env, capture_output=True, text=True)
    assert enable.returncode == 0, enable.stderr
    res = run_desktop(env, "bare", tmp_path)
    assert res["plugin_loaded"]
    assert {"edifice:mapbuildinguse", "edifice:retinex", "edifice:installdependencies",
            "edifice:diagnostics"} <= set(res["algs"])
    message = " ".join(res["messages"])
    assert "missing Python packages" in message and "rasterio" in message and "torch" in message, message
    assert "Install dependencies…" in res["buttons"]
    ok, why = res["can_execute"]
    assert not ok and "rasterio" in why and "edifice:installdependencies" in why
    assert res["installer_dialog"]


def test_map_building_use_from_its_dialog_loads_styled_layers(qp_env, kampala_rgb, kampala_pois,
                                                               tiny_use_checkpoint, tmp_path):
    params = {"IMAGERY": str(kampala_rgb), "CHECKPOINT": str(tiny_use_checkpoint), "POI_LAYER": str(kampala_pois),
              "CATEGORY_FIELD": "other_tags", "DEVICE": "cpu", "WINDOW": 256, "OVERLAP": 32,
              "USE_CLASS": str(tmp_path / "use_class.tif"), "POLYGONS": str(tmp_path / "buildings.gpkg")}
    res = run_desktop(qp_env, "dialog", tmp_path, params)
    assert res["loaded"], res
    assert res["layers"]["use_class.tif"] == "paletted"
    assert res["layers"]["buildings.gpkg"] == "categorizedSymbol"
    assert "building polygon(s) written to" in res["log"]
    widget, choices = res["device_widget"]  # the device is chosen from a list
    assert widget == "QComboBox" and {"auto", "cpu", "cuda"} <= set(choices), res["device_widget"]
