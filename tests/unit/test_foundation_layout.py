"""House rules that a test can check: core never imports qgis, the plugin imports no torch."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd="/").stdout.strip()


def test_core_modules_do_not_import_qgis():
    mods = sorted(p.stem for p in (ROOT / "core").glob("*.py") if p.stem not in ("__init__", "cli"))
    code = ("import importlib, sys\n"
            f"for m in {mods!r}: importlib.import_module('edifice.core.' + m)\n"
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('qgis', 'PyQt5')))")
    assert _run(code) == "[]"


def test_importing_plugin_does_not_import_torch():
    code = ("import sys, edifice\n"
            "assert callable(edifice.classFactory)\n"
            "print('torch' in sys.modules)")
    assert _run(code) == "False"


def test_metadata_declares_processing_provider():
    text = (ROOT / "metadata.txt").read_text()
    assert "hasProcessingProvider=yes" in text
    assert "\nname=Edifice" in text
