"""A QGIS whose Python lacks Edifice's dependencies (Debian's python3 without the .venv, as after
installing the plugin from a zip): every tool is still listed, a tool that misses a package says
which and how to fix it, and edifice:installdependencies installs from a local index on 127.0.0.1
into the profile's package folder, which the next QGIS start puts on the path."""
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
QGIS_PROCESS = "/usr/bin/qgis_process.bin"
_spec = importlib.util.spec_from_file_location("local_index", ROOT / "tests" / "servers" / "local_index.py")
local_index = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(local_index)


@pytest.fixture(scope="module")
def bare_env(qp_env, tmp_path_factory):
    """qp_env with Debian's own python3 (no rasterio, shapely, pyogrio, torch) and a fresh profile."""
    venv_bin = str(ROOT / ".venv" / "bin")
    env = dict(qp_env, QGIS_CUSTOM_CONFIG_PATH=str(tmp_path_factory.mktemp("bare_profile")))
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != Path(venv_bin))
    env.pop("VIRTUAL_ENV", None)
    r = subprocess.run([QGIS_PROCESS, "plugins", "enable", "edifice"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return env


def _run(env, *args):
    return subprocess.run([QGIS_PROCESS, *args], env=env, capture_output=True, text=True, timeout=300)


def _edifice_ids(env):
    r = _run(env, "list")
    assert r.returncode == 0, r.stderr
    return {w for line in r.stdout.splitlines() for w in line.split() if w.startswith("edifice:")}


def test_no_tool_vanishes_and_missing_packages_are_named(qp_env, bare_env, kampala_rgb, tmp_path):
    check = subprocess.run(["python3", "-c", "import rasterio"], env=bare_env, capture_output=True)
    assert check.returncode != 0, "this test needs a python3 without rasterio on PATH"
    assert _edifice_ids(bare_env) == _edifice_ids(qp_env)
    r = _run(bare_env, "run", "edifice:retinex", "--", f"INPUT={kampala_rgb}", f"OUTPUT={tmp_path / 'r.tif'}")
    assert r.returncode == 1
    assert "rasterio" in r.stdout + r.stderr and "edifice:installdependencies" in r.stdout + r.stderr
    assert not (tmp_path / "r.tif").exists()


def test_install_from_local_index_then_on_path(bare_env, tmp_path):
    """The headless installer (qgis_process) and Diagnostics, with a tiny package: the desktop test
    (test_desktop_install.py) installs the real wheelhouse through the dialog; this one covers the
    command line, EXTRA packages and the report that the folder is on the path, in seconds."""
    wheel = local_index.build_wheel(tmp_path, "edifice-dummy-app", "1.0", "")
    server = local_index.IndexServer(local_index.make_index([wheel], tmp_path / "index"))
    try:
        r = _run(bare_env, "--json", "run", "edifice:installdependencies", "--", "CORE=false", "PYTORCH=false",
                 "CHARTS=false", "EXTRA=edifice-dummy-app==1.0", f"INDEX_URL={server.url}")
    finally:
        server.stop()
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    results = json.loads(r.stdout)["results"]
    folder = Path(results["PACKAGE_FOLDER"])
    assert folder.is_relative_to(Path(bare_env["QGIS_CUSTOM_CONFIG_PATH"]))  # the profile's own folder
    assert (folder / "edifice_dummy_app" / "__init__.py").is_file()
    assert results["REPORT"].startswith("edifice_dummy_app: ok 1.0")
    # a new QGIS process: the plugin appends the folder to the path at load; diagnostics say so
    r = _run(bare_env, "--json", "run", "edifice:diagnostics")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)["results"]["REPORT"]
    assert f"{folder} (on sys.path)" in report
    assert "Device 'auto' picks" in report and "rasterio" in report


def test_failed_install_reports_pip_error(bare_env, tmp_path):
    server = local_index.IndexServer(local_index.make_index([], tmp_path))  # an empty index
    try:
        r = _run(bare_env, "run", "edifice:installdependencies", "--", "CORE=false", "PYTORCH=false",
                 "CHARTS=false", "EXTRA=edifice-dummy-absent==1.0", f"INDEX_URL={server.url}",
                 f"TARGET={tmp_path / 'deps'}")
    finally:
        server.stop()
    assert r.returncode == 1
    assert "pip failed" in r.stdout + r.stderr and "edifice-dummy-absent" in r.stdout + r.stderr
