"""scripts/package.sh builds an installable plugin zip (one top-level edifice/ folder, only what the
plugin needs, LICENSE, complete metadata from the settable variables) and the pip distribution
builds as a wheel with the package's code and data."""
import configparser
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQUIRED_KEYS = {"name", "qgisminimumversion", "description", "about", "version", "author", "email", "repository",
                 "tracker", "homepage", "changelog", "icon", "hasprocessingprovider", "category"}


def _pyproject_version() -> str:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    env = dict(os.environ, EDIFICE_DIST=str(dist), EDIFICE_REPOSITORY="https://git.example.net/maps/edifice",
               EDIFICE_EMAIL="maps@example.net")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "package.sh")], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    path = Path(r.stdout.strip().splitlines()[-1])
    assert path == dist / f"edifice-{_pyproject_version()}.zip"
    return path


def test_zip_layout_and_exclusions(plugin_zip):
    names = zipfile.ZipFile(plugin_zip).namelist()
    assert all(n.startswith("edifice/") for n in names)
    for needed in ("__init__.py", "metadata.txt", "LICENSE", "icon.svg", "core/cli/__init__.py", "processing_algs/provider.py",
                   "qgis_plugin/plugin.py", "qgis_plugin/dependencies.py", "qgis_plugin/styles/use_class.qml",
                   "core/taxonomies/poi/osm.csv"):
        assert f"edifice/{needed}" in names, needed
    top = {n.split("/")[1] for n in names}
    assert not top & {"tests", "benchmarks", "samples", "scripts", ".venv", ".ci", "dist", "out", ".git"}, top
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".aux.xml"))]
    assert plugin_zip.stat().st_size < 2_000_000  # no samples or checkpoints


def test_license_is_gpl2(plugin_zip):
    text = zipfile.ZipFile(plugin_zip).read("edifice/LICENSE").decode()
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 2, June 1991" in text
    assert "GPL-2.0-or-later" in (ROOT / "pyproject.toml").read_text()


def test_metadata_complete_from_variables(plugin_zip):
    meta = configparser.ConfigParser()
    meta.read_string(zipfile.ZipFile(plugin_zip).read("edifice/metadata.txt").decode())
    general = meta["general"]
    assert REQUIRED_KEYS <= set(general), REQUIRED_KEYS - set(general)
    assert general["version"] == _pyproject_version()
    assert general["repository"] == "https://git.example.net/maps/edifice"
    assert general["tracker"] == "https://git.example.net/maps/edifice/issues"
    assert general["homepage"] == "https://git.example.net/maps/edifice"
    assert general["email"] == "maps@example.net"
    assert general["changelog"].strip()
    # the repository's own metadata has no placeholders left
    own = configparser.ConfigParser()
    own.read(ROOT / "metadata.txt")
    assert not [k for k, v in own["general"].items() if "example.org" in v]


def test_unpacked_plugin_imports(plugin_zip, tmp_path):
    zipfile.ZipFile(plugin_zip).extractall(tmp_path)
    r = subprocess.run([sys.executable, "-c", "import edifice, edifice.core.cli, edifice.qgis_plugin.dependencies as d;"
                        "print(edifice.__file__)"], env=dict(os.environ, PYTHONPATH=str(tmp_path)),
                       capture_output=True, text=True, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "edifice" / "__init__.py")


def test_wheel_builds_with_code_data_and_license(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                        str(tmp_path), str(ROOT)], capture_output=True, text=True, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    wheel = next(tmp_path.glob(f"edifice-{_pyproject_version()}-py3-none-any.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("edifice/__init__.py", "edifice/core/diagnostics.py", "edifice/qgis_plugin/dependencies.py",
                   "edifice/qgis_plugin/styles/use_class.qml", "edifice/metadata.txt"):
        assert needed in names, needed
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names), names
    assert not [n for n in names if n.startswith(("edifice/tests/", "edifice/samples/", "edifice/benchmarks/"))]
