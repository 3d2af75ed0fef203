"""core/diagnostics.py and `edifice diagnostics`: the report names the device 'auto' picks and
why, as PyTorch sees it, and the GDAL each wheel runs."""
import json
import subprocess
import sys

import torch

from edifice.core import diagnostics
from edifice.core.devices import explain_auto_device


def test_report_items_and_auto_device():
    report = diagnostics.collect_diagnostics({"QGIS": "x"})
    assert list(report)[0] == "QGIS"
    assert report["PyTorch"] == torch.__version__
    device, why = explain_auto_device()
    assert device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert report["Device 'auto' picks"] == f"{device}: {why}"
    if torch.version.cuda is None:
        assert "CPU-only build" in why
    import pyogrio
    import rasterio

    assert report["GDAL (rasterio)"] == rasterio.__gdal_version__
    assert report["GDAL (pyogrio)"].startswith(pyogrio.__gdal_version_string__)


def test_gpu_lines_without_driver():
    def no_smi(*a, **k):
        raise FileNotFoundError("nvidia-smi")

    assert diagnostics.gpu_lines(no_smi) == ["no NVIDIA driver (nvidia-smi not found)"]


def test_cli_diagnostics_prints_json():
    r = subprocess.run([sys.executable, "-m", "edifice.core.cli", "diagnostics"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["numpy"].startswith(__import__("numpy").__version__)
    assert "Device 'auto' picks" in report
