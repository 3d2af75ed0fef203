"""The dependency manager (qgis_plugin/dependencies.py): QGIS's Python on the Linux, OSGeo4W and
macOS layouts, the package folder, the torch build choice, and real installs with pip from a
local index served on 127.0.0.1 (tiny wheels built in the test)."""
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from edifice.core.errors import Cancelled, EdificeError
from edifice.core.progress import Progress
from edifice.qgis_plugin import dependencies as deps

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("local_index", ROOT / "tests" / "servers" / "local_index.py")
local_index = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(local_index)


# --- which Python QGIS runs ----------------------------------------------------------------------------
def _only(*paths):
    return lambda p: p in paths


def test_linux_uses_the_prefix_python_not_path_python():
    # Debian: sys.executable inside QGIS may be a venv's python3 on PATH; QGIS's own is under sys.prefix
    py = deps.qgis_python("linux", "/usr", "/home/u/venv/bin/python3", (3, 11),
                          _only("/usr/bin/python3.11", "/home/u/venv/bin/python3"))
    assert py == "/usr/bin/python3.11"


def test_osgeo4w_uses_python_exe_of_the_prefix():
    prefix = r"C:\OSGeo4W\apps\Python312"
    py = deps.qgis_python("win32", prefix, r"C:\OSGeo4W\bin\qgis-bin.exe", (3, 12),
                          _only(prefix + "\\python.exe"))
    assert py == prefix + "\\python.exe"


def test_macos_app_bundle_python():
    exe = "/Applications/QGIS.app/Contents/MacOS/QGIS"
    prefix = "/Applications/QGIS.app/Contents/Frameworks/Python.framework/Versions/3.9"
    py = deps.qgis_python("darwin", prefix, exe, (3, 9), _only("/Applications/QGIS.app/Contents/MacOS/bin/python3"))
    assert py == "/Applications/QGIS.app/Contents/MacOS/bin/python3"
    py = deps.qgis_python("darwin", prefix, exe, (3, 9), _only(prefix + "/bin/python3.9"))
    assert py == prefix + "/bin/python3.9"


def test_no_python_found_is_a_clear_error():
    with pytest.raises(EdificeError, match="Python interpreter was not found"):
        deps.qgis_python("win32", r"C:\QGIS\apps\Python39", r"C:\QGIS\bin\qgis-bin.exe", (3, 9), lambda p: False)


def test_package_folder_is_per_profile_and_python(monkeypatch):
    monkeypatch.delenv("EDIFICE_DEPS_DIR", raising=False)
    assert deps.default_target("/home/u/.local/share/QGIS/QGIS3/profiles/default", (3, 12)) == \
        Path("/home/u/.local/share/QGIS/QGIS3/profiles/default/edifice/python3.12-packages")
    monkeypatch.setenv("EDIFICE_DEPS_DIR", "/opt/edifice-deps")
    assert deps.default_target("/x", (3, 12)) == Path("/opt/edifice-deps")


def test_activate_appends_once(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert not deps.activate(tmp_path / "absent")
    assert deps.activate(tmp_path) and deps.activate(tmp_path)
    assert sys.path[-1] == str(tmp_path) and sys.path.count(str(tmp_path)) == 1


# --- torch build ------------------------------------------------------------------------------------------
class _Run:
    def __init__(self, stdout="", rc=0, exc=None):
        self.stdout, self.returncode, self.exc = stdout, rc, exc

    def __call__(self, *a, **k):
        if self.exc:
            raise self.exc
        return self


def test_cuda_version_from_nvidia_smi():
    smi = "| NVIDIA-SMI 550.54.15   Driver Version: 550.54.15   CUDA Version: 12.4     |"
    assert deps.detect_cuda(_Run(smi)) == "12.4"
    assert deps.detect_cuda(_Run(exc=FileNotFoundError("nvidia-smi"))) is None
    assert deps.detect_cuda(_Run("NVIDIA-SMI has failed", rc=9)) is None


def test_torch_variant_choice():
    assert deps.torch_variant("auto", None)[0] == "cpu"
    assert deps.torch_variant("auto", "12.9")[0] == "cu128"
    assert deps.torch_variant("cuda", "13.1")[0] == "cu130"
    assert deps.torch_variant("cpu", "12.9")[0] == "cpu"
    variant, why = deps.torch_variant("auto", "11.4")
    assert variant == "cpu" and "11.4" in why
    with pytest.raises(EdificeError, match="no NVIDIA driver"):
        deps.torch_variant("cuda", None)
    with pytest.raises(EdificeError, match="update the NVIDIA driver"):
        deps.torch_variant("cuda", "11.4")


def test_plan_installs_only_missing_packages_and_torch_from_its_index(tmp_path):
    plan, notes = deps.plan_install("/usr/bin/python3.11", tmp_path, ("core", "torch"),
                                    modules_present={"numpy", "scipy", "pyproj", "requests", "affine"},
                                    torch="auto", cuda="12.6")
    (torch_reqs, torch_index), (core_reqs, core_index) = plan.steps
    assert torch_reqs == ["torch==2.13.0"] and torch_index == "https://download.pytorch.org/whl/cu126"
    assert core_reqs == ["rasterio==1.4.4", "shapely==2.2.0", "pyogrio==0.13.0", "scikit-learn==1.9.1"]
    assert core_index is None and not plan.isolated
    assert set(plan.modules) == {"rasterio", "shapely", "pyogrio", "torch", "sklearn"}
    assert "cu126" in notes[0]
    cmd = deps.pip_command(plan, torch_reqs, torch_index)
    assert cmd[:4] == ["/usr/bin/python3.11", "-m", "pip", "install"]
    assert cmd[cmd.index("--target") + 1] == str(tmp_path)
    assert cmd[cmd.index("--index-url") + 1] == torch_index and cmd[-1] == "torch==2.13.0"


def test_pins_match_requirements_lock():
    lock = dict(re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line).groups()
                for line in (ROOT / "requirements.lock").read_text().splitlines() if re.match(r"[A-Za-z]", line))
    lock = {k.lower(): v for k, v in lock.items()}
    for p in deps.PACKAGES:
        name, version = p.requirement.split("==")
        if name not in ("affine", "pyproj"):  # affine < 3 for Debian's attrs; pyproj is Debian's in .venv
            assert lock[name.lower()] == version, p


def test_missing_message_names_packages_and_fixes():
    msg = deps.missing_message("Map building use", ["rasterio", "sklearn"], "/usr/bin/python3.11", "/p/deps")
    assert "rasterio, scikit-learn" in msg and deps.FIX_MENU in msg and deps.FIX_HEADLESS in msg
    assert '/usr/bin/python3.11 -m pip install --target "/p/deps" rasterio==1.4.4 scikit-learn==1.9.1' in msg


# --- real installs from a local index ----------------------------------------------------------------------
class _Recorder(Progress):
    def __init__(self, cancel_after=None):
        self.fractions, self.cancel_after, self.calls = [], cancel_after, 0

    def set_fraction(self, f):
        self.fractions.append(f)

    def is_cancelled(self):
        self.calls += 1
        return self.cancel_after is not None and self.calls > self.cancel_after

    def info(self, m):
        pass

    def warning(self, m):
        pass


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    work = tmp_path_factory.mktemp("wheels")
    wheels = [local_index.build_wheel(work, "edifice-dummy-dep", "2.0", "VALUE = 42"),
              local_index.build_wheel(work, "edifice-dummy-app", "1.0",
                                      "from edifice_dummy_dep import VALUE", requires=["edifice-dummy-dep>=2"]),
              local_index.build_wheel(work, "edifice-dummy-broken", "1.0", "raise ImportError('needs libfoo.so')")]
    server = local_index.IndexServer(local_index.make_index(wheels, work / "index"))
    yield server
    server.stop()


def _plan(tmp_path, index_url, *specs):
    extra = deps.extra_packages(" ".join(specs))
    return deps.plan_install(sys.executable, tmp_path / "deps", groups=(), index_url=index_url, extra=extra)[0]


def test_install_into_a_fresh_folder_and_verify(index, tmp_path):
    plan = _plan(tmp_path, index.url, "edifice-dummy-app==1.0")
    log = []
    report = deps.run_install(plan, _Recorder(), log.append)
    assert (tmp_path / "deps" / "edifice_dummy_app" / "__init__.py").is_file()
    assert (tmp_path / "deps" / "edifice_dummy_dep" / "__init__.py").is_file()  # its dependency, from the index
    assert report["edifice_dummy_app"].startswith("ok 1.0 from " + str(tmp_path / "deps"))
    assert log[0].startswith(f"$ {sys.executable} -m pip install --target {tmp_path / 'deps'}")
    assert "--isolated" in log[0] and f"--index-url {index.url}" in log[0]
    assert any("Successfully installed" in line for line in log)


def test_verification_failure_names_the_module(index, tmp_path):
    plan = _plan(tmp_path, index.url, "edifice-dummy-broken==1.0")
    log = []
    with pytest.raises(EdificeError, match="edifice_dummy_broken cannot be imported"):
        deps.run_install(plan, _Recorder(), log.append)
    assert any("needs libfoo.so" in line for line in log)


def test_unknown_package_reports_pip_error(index, tmp_path):
    plan = _plan(tmp_path, index.url, "edifice-dummy-app==9.9")
    with pytest.raises(EdificeError, match="pip failed: .*edifice-dummy-app==9.9"):
        deps.run_install(plan, _Recorder(), lambda line: None)


def test_unreachable_index_fails(tmp_path):
    server = local_index.IndexServer(tmp_path)
    url = server.url
    server.stop()  # nothing listens there any more
    plan = _plan(tmp_path, url, "edifice-dummy-app==1.0")
    plan.retries = 0
    with pytest.raises(EdificeError, match="pip failed"):
        deps.run_install(plan, _Recorder(), lambda line: None)


def test_cancel_stops_pip(index, tmp_path):
    plan = _plan(tmp_path, index.url, "edifice-dummy-app==1.0")
    with pytest.raises(Cancelled):
        deps.run_install(plan, _Recorder(cancel_after=2), lambda line: None)


def test_nothing_missing_installs_nothing(tmp_path):
    log = []
    assert deps.run_install(deps.InstallPlan(sys.executable, tmp_path / "deps"), _Recorder(), log.append) == {}
    assert not (tmp_path / "deps").exists() and "Nothing to install" in log[0]


# --- too-old packages of QGIS's Python (e.g. Debian 12's shapely 1.8) -----------------------------------
def test_too_old_package_counts_as_missing(monkeypatch):
    from importlib import metadata

    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda d: "1.8.5.post1" if d == "shapely" else real(d))
    assert deps.outdated("shapely") == "1.8.5.post1" and deps.outdated("numpy") is None
    assert deps.missing_modules(["numpy", "shapely"]) == ["shapely"]
    assert "shapely (too old: 1.8.5.post1)" in deps.missing_message("T", ["shapely"])


def test_replacing_a_too_old_package_puts_the_folder_first(index, tmp_path, monkeypatch):
    plan, notes = deps.plan_install(sys.executable, tmp_path / "deps", ("core",),
                                    modules_present={p.module for p in deps.PACKAGES}, modules_outdated={"shapely"},
                                    index_url=index.url)
    assert plan.steps == [(["shapely==2.2.0"], index.url)] and plan.first and "too old shapely" in notes[0]
    # a real install (a dummy package standing for it) with the folder first: marker, verified, activated first
    plan = _plan(tmp_path, index.url, "edifice-dummy-app==1.0")
    plan.first = True
    report = deps.run_install(plan, _Recorder(), lambda line: None)
    assert report["edifice_dummy_app"].startswith("ok 1.0")
    assert (tmp_path / "deps" / deps.PRIORITY_MARKER).is_file()
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert deps.activate(tmp_path / "deps") and sys.path[0] == str(tmp_path / "deps")


def _dist_info(folder, name, version):
    d = folder / f"{name}-{version}.dist-info"
    d.mkdir(parents=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_an_older_copy_outside_the_folder_is_found(tmp_path):
    """What the desktop test met: torch in the folder needs sympy >= 1.13, and Debian 12's sympy 1.11
    (in QGIS's Python) hid the folder's 1.14 while the folder was appended to the path."""
    from importlib import metadata

    have = metadata.version("pluggy")
    _dist_info(tmp_path / "newer", "pluggy", "99.0")
    _dist_info(tmp_path / "older", "pluggy", "0.1")
    assert deps.shadowed_older(sys.executable, tmp_path / "newer") == {"pluggy": (have, "99.0")}
    assert deps.shadowed_older(sys.executable, tmp_path / "older") == {}


def test_install_constrains_dependencies_to_the_pins(index, tmp_path):
    plan = _plan(tmp_path, index.url, "edifice-dummy-app==1.0")
    log = []
    deps.run_install(plan, _Recorder(), log.append)
    cmd = next(line for line in log if line.startswith("$ "))
    constraints = cmd.split("--constraint ", 1)[1].split()[0]
    assert "numpy==1.26.4" in open(constraints).read().splitlines()  # pip never pulls numpy 2 in as a dependency


def test_wheelhouse_takes_the_locks_runtime_lines():
    reqs = local_index.runtime_requirements((ROOT / "requirements.lock").read_text())
    assert "torch==2.13.0" in reqs and "numpy==1.26.4" in reqs and "llvmlite==0.43.0" in reqs
    assert not any(r.startswith(("kneed", "PyKrige", "osmium")) or "#" in r for r in reqs)  # "# tests only"
