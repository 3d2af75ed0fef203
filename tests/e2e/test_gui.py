"""The plugin in the real QGIS desktop (under Xvfb): loaded by the GUI, provider
registered through initGui, algorithm and batch dialogs open."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_plugin_loads_in_qgis_desktop(qp_env, tmp_path):
    if shutil.which("xvfb-run") is None:
        pytest.fail("xvfb-run is missing: run scripts/setup.sh")
    env = {k: v for k, v in qp_env.items() if k != "QT_QPA_PLATFORM"}  # a real (virtual) display
    env["EDIFICE_GUI_RESULT"] = str(tmp_path / "gui.json")
    r = subprocess.run(["xvfb-run", "-a", "qgis", "--nologo", "--noversioncheck", "--code",
                        str(ROOT / "tests" / "data" / "gui_check.py")],
                       env=env, capture_output=True, text=True, timeout=240)
    assert (tmp_path / "gui.json").exists(), r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads((tmp_path / "gui.json").read_text())
    assert res["plugin_loaded"] and res["iface"]
    assert {"edifice:retinex", "edifice:poiprobability"} <= set(res["algs"])
    assert "error" not in res, res.get("error")
    assert all(res["dialogs"].values()), res["dialogs"]
