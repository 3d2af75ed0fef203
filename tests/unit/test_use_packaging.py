"""pyproject extras cover the optional modules the plugin's docks import."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gui_extra_has_pyqtgraph():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=!~ \[]", req, maxsplit=1)[0].lower() for req in extras["gui"]}
    assert "pyqtgraph" in names
    # every plugin module that imports pyqtgraph is covered by that extra
    imports = re.compile(r"^\s*(import|from) pyqtgraph", re.M)
    users = [p.name for p in (ROOT / "qgis_plugin").glob("*.py") if imports.search(p.read_text())]
    assert users, "no dock imports pyqtgraph any more: drop the gui extra"
