"""Fixtures for end-to-end tests through /usr/bin/qgis_process.bin with the plugin enabled
in a private profile: ``qp_env`` (environment) and ``qp(*args)`` (run it)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QGIS_PROCESS = "/usr/bin/qgis_process.bin"


@pytest.fixture(scope="module")
def qp_env(tmp_path_factory):
    if not Path(QGIS_PROCESS).exists():
        pytest.fail("qgis_process.bin is missing: run scripts/setup.sh")
    profile = tmp_path_factory.mktemp("profile")
    xdg = tmp_path_factory.mktemp("xdg")
    os.chmod(xdg, 0o700)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR=str(xdg),
               QGIS_CUSTOM_CONFIG_PATH=str(profile), QGIS_PLUGINPATH=str(ROOT / ".venv" / "qgis-plugins"),
               PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    r = subprocess.run([QGIS_PROCESS, "plugins", "enable", "edifice"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return env


@pytest.fixture(scope="module")
def qp(qp_env):
    """``qp(*args, timeout=300)`` runs qgis_process.bin with ``args`` in ``qp_env``
    and returns the CompletedProcess (text)."""
    def run(*args, timeout=300):
        return subprocess.run([QGIS_PROCESS, *args], env=qp_env, capture_output=True, text=True, timeout=timeout)
    return run
