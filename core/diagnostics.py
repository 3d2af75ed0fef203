"""What Edifice runs on: Python, the GDAL builds of the wheels, PyTorch, CUDA, GPUs and the device
``auto`` picks and why (for bug reports and for "why is my GPU not used"). No qgis: the QGIS side
(QGIS's version and GDAL) is added by the Processing algorithm edifice:diagnostics."""
from __future__ import annotations

import importlib
import platform
import subprocess
import sys

from .devices import explain_auto_device

#: modules whose version is reported
MODULES = ("numpy", "scipy", "rasterio", "shapely", "pyogrio", "pyproj", "torch", "sklearn", "pyqtgraph")


def _version_of(module: str) -> str:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - a broken package is exactly what this reports
        return f"missing ({type(exc).__name__}: {exc})"
    return f"{getattr(mod, '__version__', '?')} ({getattr(mod, '__file__', '?')})"


def wheel_gdal_versions() -> dict[str, str]:
    """The GDAL each wheel runs with (may differ from the one QGIS links)."""
    out = {}
    try:
        import rasterio

        out["GDAL (rasterio)"] = f"{rasterio.__gdal_version__}"
    except Exception as exc:  # noqa: BLE001
        out["GDAL (rasterio)"] = f"unavailable ({exc})"
    try:
        import pyogrio

        out["GDAL (pyogrio)"] = f"{pyogrio.__gdal_version_string__}, data {pyogrio.get_gdal_data_path()}"
    except Exception as exc:  # noqa: BLE001
        out["GDAL (pyogrio)"] = f"unavailable ({exc})"
    return out


def gpu_lines(run=subprocess.run) -> list[str]:
    """One line per NVIDIA GPU from nvidia-smi (name, memory, driver), or why there is none."""
    try:
        r = run(["nvidia-smi", "--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ["no NVIDIA driver (nvidia-smi not found)"]
    lines = [ln.strip() for ln in (r.stdout or "").splitlines() if ln.strip()]
    return lines if r.returncode == 0 and lines else [f"nvidia-smi found no GPU ({(r.stderr or '').strip()[:200]})"]


def torch_lines() -> dict[str, str]:
    """PyTorch's build, CUDA and devices as it sees them."""
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        return {"PyTorch": f"missing ({exc})"}
    out = {"PyTorch": torch.__version__, "PyTorch CUDA build": str(torch.version.cuda or "none (CPU build)"),
           "CUDA available to PyTorch": str(torch.cuda.is_available())}
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        p = torch.cuda.get_device_properties(i)
        out[f"cuda:{i}"] = f"{p.name}, {p.total_memory / 2**30:.1f} GiB"
    out["CPU threads (torch)"] = str(torch.get_num_threads())
    return out


def collect_diagnostics(extra: dict | None = None) -> dict[str, str]:
    """An ordered {item: value} report; ``extra`` (e.g. QGIS's version and GDAL) goes first."""
    report = dict(extra or {})
    report["Python"] = f"{sys.version.split()[0]} ({sys.executable}, prefix {sys.prefix})"
    report["Platform"] = platform.platform()
    for m in MODULES:
        report[m] = _version_of(m)
    report.update(wheel_gdal_versions())
    report.update(torch_lines())
    report["GPUs (nvidia-smi)"] = "; ".join(gpu_lines())
    device, why = explain_auto_device()
    report["Device 'auto' picks"] = f"{device}: {why}"
    return report


def format_report(report: dict[str, str]) -> str:
    """The report as 'item: value' lines."""
    width = max((len(k) for k in report), default=0)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in report.items())


def add_command(sub) -> None:
    """``edifice diagnostics``: the report as JSON (same items as edifice:diagnostics, without QGIS's)."""
    d = sub.add_parser("diagnostics", help="what Edifice runs on: Python, GDAL, PyTorch, CUDA, GPUs, device 'auto'")
    d.set_defaults(func=lambda a: collect_diagnostics())
