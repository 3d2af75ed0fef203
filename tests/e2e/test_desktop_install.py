"""The plugin as an analyst meets it in the QGIS desktop (Xvfb; screenshots kept in the test's
folder): installed from the built zip into a fresh profile whose Python (Debian's python3, no
.venv) lacks the packages, it lists every tool and says what is missing with an Install button;
that button's installer installs the real pinned packages from a local package index on
127.0.0.1 (a wheelhouse that ``pip download`` builds from requirements.lock, cached under
.venv/wheelhouse) into the profile's package folder; in the next QGIS start, Map building use
run from its dialog (a background task) loads its polygons and classes styled.

Cost: the wheelhouse is downloaded once (~400 MB, a few minutes; then cached); the install
itself takes 1-3 minutes on 2 cores (torch's CPU wheel dominates)."""
import importlib.util
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
_spec = importlib.util.spec_from_file_location("local_index", ROOT / "tests" / "servers" / "local_index.py")
local_index = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(local_index)


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
                       text=True, timeout=1200)
    out = tmp_path / f"{mode}.json"
    assert out.exists(), r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert "error" not in res, res["error"]
    assert (tmp_path / f"{mode}.png").stat().st_size > 10_000  # a real screenshot, kept for review
    return res


@pytest.fixture(scope="module")
def package_index(tmp_path_factory):
    """The real wheelhouse (requirements.lock's runtime lines plus the installer's own pins, e.g.
    affine < 3 for Debian's attrs) served as a PEP 503 index on 127.0.0.1; yields its URL."""
    from edifice.qgis_plugin import dependencies as deps

    files = local_index.build_wheelhouse(ROOT / "requirements.lock", [p.requirement for p in deps.PACKAGES],
                                         ROOT / ".venv" / "wheelhouse")
    root = local_index.make_index(sorted(files.glob("*.whl")), tmp_path_factory.mktemp("index"), link=True)
    server = local_index.IndexServer(root)
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def zip_profile(qp_env, tmp_path_factory):
    """Environment of a QGIS whose Python lacks the packages, with the built zip extracted into a
    fresh profile as "Install from ZIP" does, and enabled."""
    tmp = tmp_path_factory.mktemp("zip_install")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "package.sh")], env=dict(os.environ, EDIFICE_DIST=str(tmp / "dist")),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    profile = tmp / "config"
    plugins = profile / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    zipfile.ZipFile(r.stdout.strip()).extractall(plugins)
    env = {k: v for k, v in qp_env.items() if k not in ("QGIS_PLUGINPATH", "VIRTUAL_ENV")}
    env["QGIS_CUSTOM_CONFIG_PATH"] = str(profile)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != ROOT / ".venv" / "bin")
    assert subprocess.run(["python3", "-c", "import rasterio"], env=env, capture_output=True).returncode != 0
    enable = subprocess.run([QGIS_PROCESS, "plugins", "enable", "edifice"], env=env, capture_output=True, text=True)
    assert enable.returncode == 0, enable.stderr
    return env


@pytest.fixture(scope="module")
def installed(zip_profile, package_index, tmp_path_factory):
    """The first start of that QGIS: what it shows, then its installer run from the message's button."""
    tmp = tmp_path_factory.mktemp("first_start")
    return run_desktop(zip_profile, "bare", tmp, {"INDEX_URL": package_index}), tmp


def test_zip_in_bare_qgis_says_what_is_missing_and_installs_it(installed, zip_profile):
    res, _ = installed
    assert res["plugin_loaded"]
    assert {"edifice:mapbuildinguse", "edifice:retinex", "edifice:installdependencies",
            "edifice:diagnostics"} <= set(res["algs"])
    message = " ".join(res["messages"])
    assert "missing Python packages" in message and "rasterio" in message and "torch" in message, message
    assert "Install dependencies…" in res["buttons"]
    ok, why = res["can_execute"]
    assert not ok and "rasterio" in why and "edifice:installdependencies" in why
    # the button opened the installer; run against the local index it installed the real packages
    assert res["installer_dialog"] == "edifice:installdependencies"
    ok, results = res["install"]
    assert ok, res["install_log"][-3000:]
    folder = Path(results["PACKAGE_FOLDER"])
    assert folder.is_relative_to(Path(zip_profile["QGIS_CUSTOM_CONFIG_PATH"]))  # the profile's own folder
    report = dict(item.split(": ", 1) for item in results["REPORT"].split("; "))
    for module, version in (("rasterio", "1.4.4"), ("shapely", "2.2.0"), ("pyogrio", "0.13.0"),
                            ("torch", "2.13.0+cpu"), ("sklearn", "1.9.1"), ("pyqtgraph", "0.14.0")):
        assert report[module].startswith(f"ok {version} from {folder}"), (module, report.get(module))
    assert "127.0.0.1" in res["install_log"]  # pip used the local index, not PyPI
    assert res["can_execute_after"][0], res["can_execute_after"]  # usable at once, without a restart


def test_map_building_use_from_its_dialog_loads_styled_layers(installed, zip_profile, kampala_rgb, kampala_pois,
                                                               tiny_use_checkpoint, tmp_path):
    """The next start of the same QGIS (Debian's Python, packages from the profile's folder only)."""
    params = {"IMAGERY": str(kampala_rgb), "CHECKPOINT": str(tiny_use_checkpoint), "POI_LAYER": str(kampala_pois),
              "CATEGORY_FIELD": "other_tags", "DEVICE": "cpu",  # WINDOW, OVERLAP not set: the card's
              "USE_CLASS": str(tmp_path / "use_class.tif"), "POLYGONS": str(tmp_path / "buildings.gpkg")}
    res = run_desktop(zip_profile, "dialog", tmp_path, params)
    assert res["loaded"], res["log"][-3000:]
    assert "Window 256 px: the model card's window" in res["log"] and "Windows of 256 px, 32 px margin" in res["log"]
    assert res["layers"]["use_class.tif"] == "paletted"
    assert res["layers"]["buildings.gpkg"] == "categorizedSymbol"
    assert "building polygon(s) written to" in res["log"]
    folder = str(Path(zip_profile["QGIS_CUSTOM_CONFIG_PATH"]) / "profiles" / "default" / "edifice")
    assert all(path.startswith(folder) for path in res["modules"].values()), res["modules"]
    widget, choices = res["device_widget"]  # the device is chosen from a list
    assert widget == "QComboBox" and {"auto", "cpu", "cuda"} <= set(choices), res["device_widget"]
