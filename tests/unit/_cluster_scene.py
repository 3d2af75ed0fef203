"""Shared by the cluster tests in QGIS and through qgis_process: a tiny imagery-only checkpoint
and the single-machine reference run through the CLI, with one math thread and batches of one
window (the settings the Dask workers of the tests get), so that pixels compare exactly."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ["--window", "256", "--overlap", "32", "--batch-size", "1", "--device", "cpu"]


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


procs = load("_dask_procs", Path(__file__).with_name("_dask_procs.py"))


def tiny_checkpoint(path: Path) -> Path:
    conftest = load("_edifice_root_conftest", ROOT / "tests" / "conftest.py")
    return conftest.make_tiny_use_checkpoint(path, variant="imagery_multitask", window=256)


def single_machine_use_class(imagery: Path, checkpoint: Path, out: Path) -> Path:
    r = subprocess.run([sys.executable, "-m", "edifice.core.cli", "map-building-use", str(imagery), str(checkpoint),
                        *SETTINGS, "--use-class", str(out)], capture_output=True, text=True, env=procs.cli_env(),
                       timeout=600)
    assert r.returncode == 0, r.stderr
    return out


def one_worker_cluster(folder: Path):
    """A scheduler and one worker (processes on 127.0.0.1), ready; stop it with ``.stop()``."""
    dask = procs.DaskProcs(folder)
    try:
        dask.add_worker("w")
        dask.wait_for_workers(1)
    except BaseException:
        dask.stop()
        raise
    return dask
