"""The dependency manager: which Python packages Edifice needs, which are missing, and how to
install them into a plugin-private folder with the Python that QGIS runs.

No qgis import here (the path logic is unit-tested on its own). The folder is
``<QGIS profile>/edifice/python3.X-packages``: outside the plugin folder so that a plugin
update keeps it, one per Python minor version so that a QGIS upgrade never loads binaries
built for another Python. It is *appended* to ``sys.path`` at plugin load: the packages QGIS's
Python already has (numpy, GDAL bindings, pyproj) keep priority, the folder fills the gaps.

Layouts (``qgis_python``):
- Linux (Debian/Ubuntu, Fedora, a venv on PATH): ``sys.executable`` inside QGIS is whatever
  ``python3`` is first on PATH, not necessarily QGIS's: use ``<sys.prefix>/bin/python3.X``.
  ``pip install --target`` bypasses Debian's "externally managed" guard (PEP 668).
- Windows (OSGeo4W and the standalone installer): ``sys.executable`` is ``qgis-bin.exe``;
  the interpreter is ``<sys.prefix>\\python.exe`` (e.g. ``C:\\OSGeo4W\\apps\\Python312``).
- macOS (qgis.org's QGIS.app): ``sys.executable`` is ``QGIS.app/Contents/MacOS/QGIS``; the
  interpreter is ``<sys.prefix>/bin/python3.X`` or ``QGIS.app/Contents/MacOS/bin/python3``.
"""
from __future__ import annotations

import importlib.util
import json
import ntpath
import os
import posixpath
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import Cancelled, EdificeError


@dataclass(frozen=True)
class Package:
    """One dependency: the module Edifice imports, the pip requirement that provides it, its group."""
    module: str
    requirement: str
    group: str  # "core" (every tool), "torch" (models), "gui" (charts of the docks)
    minimum: str = ""  # oldest version Edifice works with (an older one, e.g. Debian's, counts as missing)

    @property
    def distribution(self) -> str:
        return re.split(r"[=<>!~\[ ]", self.requirement, 1)[0]


#: Pinned runtime dependencies (same pins as requirements.lock; a unit test keeps them in step).
#: affine stays < 3: affine 3 needs attrs >= 23.2 and Debian 12's attrs 22.2 keeps priority.
PACKAGES = (
    Package("numpy", "numpy==1.26.4", "core", "1.24"),
    Package("scipy", "scipy==1.13.1", "core", "1.10"),
    Package("rasterio", "rasterio==1.4.4", "core", "1.3"),
    Package("affine", "affine==2.4.0", "core"),
    Package("shapely", "shapely==2.2.0", "core", "2.0"),
    Package("pyogrio", "pyogrio==0.13.0", "core", "0.7"),
    Package("pyproj", "pyproj==3.7.1", "core", "3.4"),
    Package("requests", "requests==2.32.5", "core"),
    Package("torch", "torch==2.13.0", "torch", "2.1"),
    Package("sklearn", "scikit-learn==1.9.1", "torch", "1.3"),
    Package("pyqtgraph", "pyqtgraph==0.14.0", "gui", "0.13"),
)
GROUPS = ("core", "torch", "gui")
#: PyTorch wheel variants by the CUDA version they need, newest first (download.pytorch.org/whl/<variant>).
TORCH_CUDA_VARIANTS = (("cu130", (13, 0)), ("cu128", (12, 8)), ("cu126", (12, 6)))
TORCH_INDEX = "https://download.pytorch.org/whl/{variant}"
FIX_MENU = "Plugins > Edifice > Install dependencies…"
FIX_HEADLESS = "qgis_process run edifice:installdependencies"


def package_for(module: str) -> Package:
    """The :class:`Package` that provides ``module`` (a bare one for modules not in the table)."""
    for p in PACKAGES:
        if p.module == module:
            return p
    return Package(module, module, "core")


def missing_modules(modules) -> list[str]:
    """The modules of ``modules`` that Python cannot find, or finds older than Edifice's minimum
    (e.g. Debian 12's shapely 1.8), without importing them."""
    return [m for m in modules if importlib.util.find_spec(m) is None or outdated(m)]


def outdated(module: str) -> str | None:
    """The installed version of ``module``'s distribution when it is older than the minimum, else None."""
    from importlib import metadata

    p = package_for(module)
    if not p.minimum:
        return None
    try:
        have = metadata.version(p.distribution)
    except metadata.PackageNotFoundError:
        return None  # found without metadata: nothing to compare
    return have if _version_tuple(have) < _version_tuple(p.minimum) else None


def _version_tuple(version: str) -> tuple:
    """'1.8.5.post1' -> (1, 8, 5): the leading numbers, for comparing release versions."""
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:3])


def missing_message(tool: str, missing, python: str | None = None, target: str | None = None) -> str:
    """What a user reads when ``tool`` cannot run: the missing packages and three ways to fix it."""
    reqs = " ".join(package_for(m).requirement for m in missing)
    names = ", ".join(package_for(m).distribution + (f" (too old: {outdated(m)})" if outdated(m) else "")
                      for m in missing)
    shell = f"{python or 'python3'} -m pip install --target \"{target or '<folder>'}\" {reqs}"
    return (f"{tool} needs Python packages that QGIS's Python lacks: {names}. "
            f"Fix: {FIX_MENU} (in the QGIS desktop), or run '{FIX_HEADLESS}', or in a shell: {shell}")


# --- where things are --------------------------------------------------------------------------------
def qgis_python(platform: str = sys.platform, prefix: str = sys.prefix, executable: str = sys.executable,
                version: tuple = tuple(sys.version_info[:2]), exists=os.path.exists) -> str:
    """Path of the Python interpreter that QGIS embeds (the one to run pip with), for the
    Linux, Windows (OSGeo4W) and macOS (QGIS.app) layouts; see the module docstring."""
    major, minor = version[0], version[1]
    path = ntpath if platform.startswith("win") else posixpath  # the layout's separators, testable anywhere
    if platform.startswith("win"):
        candidates = [path.join(prefix, "python.exe"), path.join(prefix, "python3.exe")]
    else:
        candidates = [path.join(prefix, "bin", f"python{major}.{minor}"), path.join(prefix, "bin", "python3")]
        if platform == "darwin" and ".app/Contents/" in executable:
            app = executable.split(".app/Contents/", 1)[0] + ".app"
            candidates += [path.join(app, "Contents", "MacOS", "bin", f"python{major}.{minor}"),
                           path.join(app, "Contents", "MacOS", "bin", "python3")]
    if path.basename(executable).lower().startswith("python"):
        candidates.append(executable)
    for c in candidates:
        if exists(c):
            return c
    raise EdificeError(f"QGIS's Python interpreter was not found (looked for {', '.join(candidates)}). "
                       "Fix: install the packages by hand with the Python that QGIS uses "
                       "(Help > About shows its version).")


def default_target(settings_dir: str, version: tuple = tuple(sys.version_info[:2])) -> Path:
    """The plugin-private package folder of a QGIS profile (``settings_dir`` =
    ``QgsApplication.qgisSettingsDirPath()``); ``$EDIFICE_DEPS_DIR`` overrides it."""
    if os.environ.get("EDIFICE_DEPS_DIR"):
        return Path(os.environ["EDIFICE_DEPS_DIR"])
    return Path(settings_dir) / "edifice" / f"python{version[0]}.{version[1]}-packages"


#: marker file in a package folder whose packages must win over QGIS's own (they replace too-old ones)
PRIORITY_MARKER = "EDIFICE_FIRST_ON_PATH"


def activate(target) -> bool:
    """Put ``target`` on ``sys.path`` (once) when it exists: appended, or first when the installer
    replaced too-old packages of QGIS's Python there (:data:`PRIORITY_MARKER`). True when on the path."""
    target = str(target)
    if not os.path.isdir(target):
        return False
    if target not in sys.path:
        if os.path.exists(os.path.join(target, PRIORITY_MARKER)):
            sys.path.insert(0, target)
        else:
            sys.path.append(target)
        importlib.invalidate_caches()
    return True


# --- torch: CPU or CUDA --------------------------------------------------------------------------------
def detect_cuda(run=subprocess.run) -> str | None:
    """The CUDA version the NVIDIA driver supports (``nvidia-smi``'s "CUDA Version: X.Y"), or None
    without a driver or GPU."""
    try:
        out = run(["nvidia-smi"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", out.stdout or "")
    return f"{m.group(1)}.{m.group(2)}" if out.returncode == 0 and m else None


def torch_variant(choice: str, cuda: str | None) -> tuple[str, str]:
    """(``cpu`` or ``cuXYZ``, why) for a user's choice ``cpu``, ``cuda`` or ``auto`` and the
    driver's CUDA version (None: no NVIDIA driver)."""
    if choice == "cpu":
        return "cpu", "CPU build chosen"
    if cuda is None:
        if choice == "cuda":
            raise EdificeError("A CUDA build of PyTorch was asked for but nvidia-smi found no NVIDIA driver. "
                               "Fix: install the NVIDIA driver, or choose the CPU build.")
        return "cpu", "no NVIDIA driver found (nvidia-smi), so the CPU build"
    have = tuple(int(x) for x in cuda.split("."))
    for variant, needs in TORCH_CUDA_VARIANTS:
        if have >= needs:
            return variant, f"the NVIDIA driver supports CUDA {cuda}, so the {variant} build"
    oldest = ".".join(map(str, TORCH_CUDA_VARIANTS[-1][1]))
    if choice == "cuda":
        raise EdificeError(f"The NVIDIA driver supports CUDA {cuda}; PyTorch's CUDA builds need {oldest} or newer. "
                           "Fix: update the NVIDIA driver, or choose the CPU build.")
    return "cpu", f"the NVIDIA driver's CUDA {cuda} is older than {oldest}, so the CPU build"


# --- installing ---------------------------------------------------------------------------------------
@dataclass
class InstallPlan:
    """One pip run per step: ``steps`` is a list of (requirements, index URL or None for pip's default)."""
    python: str
    target: Path
    steps: list = field(default_factory=list)
    find_links: tuple = ()
    isolated: bool = False  # ignore the user's pip configuration (an explicit index was given)
    modules: tuple = ()     # verified by import afterwards
    first: bool = False     # the folder goes first on the path (it replaces too-old packages)
    retries: int = 5        # pip's retries per connection


def extra_packages(specs: str) -> list[Package]:
    """Packages from space- or comma-separated pip requirements (``name==1.0``); each is verified
    by importing its name with ``-`` replaced by ``_``."""
    out = []
    for spec in re.split(r"[\s,]+", specs.strip()):
        if spec:
            name = re.split(r"[=<>!~\[ ]", spec, 1)[0]
            out.append(Package(name.replace("-", "_").lower(), spec, "extra"))
    return out


def plan_install(python: str, target, groups=("core",), modules_present=(), torch: str = "auto",
                 cuda: str | None = None, index_url: str | None = None, find_links=(),
                 packages=PACKAGES, extra=(), modules_outdated=()) -> tuple[InstallPlan, list[str]]:
    """The plan to install the missing packages of ``groups`` (those whose module is not in
    ``modules_present``, or is in ``modules_outdated``) plus the ``extra`` packages, and the notes to
    log (e.g. the torch build and why). Replacing an outdated package puts the folder first on the path."""
    wanted = [p for p in packages if p.group in groups
              and (p.module not in modules_present or p.module in modules_outdated)] + list(extra)
    replaced = [p.module for p in wanted if p.module in modules_outdated]
    plan = InstallPlan(python, Path(target), find_links=tuple(find_links), isolated=bool(index_url or find_links),
                       modules=tuple(p.module for p in wanted), first=bool(replaced))
    notes = [f"QGIS's Python has too old {', '.join(replaced)}: the package folder will come first on its path."
             ] if replaced else []
    plain = [p.requirement for p in wanted if p.module != "torch"]
    if plain:
        plan.steps.append((plain, index_url))
    if any(p.module == "torch" for p in wanted):
        variant, why = torch_variant(torch, cuda)
        notes.append(f"PyTorch: {why}.")
        req = next(p.requirement for p in wanted if p.module == "torch")
        plan.steps.insert(0, ([req], index_url or TORCH_INDEX.format(variant=variant)))
    return plan, notes


def pip_command(plan: InstallPlan, requirements, index_url: str | None) -> list[str]:
    """The pip command line of one step of ``plan``."""
    cmd = [plan.python, "-m", "pip", "install", "--target", str(plan.target), "--upgrade",
           "--no-warn-script-location", "--disable-pip-version-check", "--progress-bar", "off", "--retries", str(plan.retries)]
    if plan.isolated:
        cmd.append("--isolated")
    if index_url:
        cmd += ["--index-url", index_url]
    for link in plan.find_links:
        cmd += ["--find-links", str(link)]
    return cmd + list(requirements)


def pip_environment(plan: InstallPlan) -> dict:
    """pip's environment: PYTHON* variables of QGIS's process removed; with ``isolated``
    also the PIP_* ones (the given index only)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    if plan.isolated:
        env = {k: v for k, v in env.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
    return env


def run_install(plan: InstallPlan, progress, log) -> dict:
    """Run ``plan`` (pip's output line by line to ``log``; ``progress`` a core Progress), then
    verify by import; returns :func:`verify`'s report. Raises EdificeError when pip fails or a
    module does not import (the folder keeps what was installed)."""
    if not plan.steps:
        log("Nothing to install: every package is present.")
        return {}
    try:
        plan.target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdificeError(f"The package folder {plan.target} cannot be created ({exc}). "
                           "Fix: choose another folder.") from exc
    constraints = write_constraints(plan.target)
    for i, (reqs, index_url) in enumerate(plan.steps):
        progress.check_cancelled()
        progress.set_fraction(i / (len(plan.steps) + 1))
        _run_pip(pip_command(plan, reqs, index_url) + ["--constraint", str(constraints)], pip_environment(plan),
                 progress, log)
    progress.set_fraction(len(plan.steps) / (len(plan.steps) + 1))
    older = shadowed_older(plan.python, plan.target)
    if older and not plan.first:
        log("QGIS's Python has older " + ", ".join(f"{name} {theirs} (the folder has {ours})" for name, (theirs, ours)
                                                   in sorted(older.items()))
            + " than the installed packages need: the package folder will come first on its path.")
        plan.first = True
    if plan.first:
        (plan.target / PRIORITY_MARKER).write_text("Edifice: these packages replace too-old ones of QGIS's Python.\n")
    report = verify(plan.python, plan.target, plan.modules, first=plan.first)
    for module, result in report.items():
        log(f"{module}: {result}")
    failed = [m for m, r in report.items() if r.startswith("FAILED")]
    if failed:
        raise EdificeError(f"Installed, but {', '.join(failed)} cannot be imported by QGIS's Python "
                           f"(see the log). Fix: remove {plan.target} and install again.")
    progress.set_fraction(1.0)
    return report


def _run_pip(cmd, env, progress, log) -> None:
    """Run one pip command, streaming its output to ``log``; EdificeError with its last lines when it fails."""
    log("$ " + " ".join(cmd))
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    except OSError as exc:
        raise EdificeError(f"pip could not be started ({exc}). Fix: check QGIS's Python at {cmd[0]}.") from exc
    tail = []
    try:
        for line in proc.stdout:
            line = line.rstrip()
            log(line)
            tail = (tail + [line])[-8:]
            progress.check_cancelled()
    except Cancelled:
        proc.kill()
        proc.wait()
        raise
    if proc.wait() != 0:
        if any("No module named pip" in t for t in tail):
            raise EdificeError(f"QGIS's Python ({cmd[0]}) has no pip. Fix: install pip for it "
                               "(Debian/Ubuntu: sudo apt install python3-pip).")
        raise EdificeError("pip failed: " + " | ".join(t for t in tail if t) +
                           ". Fix: check the network or the package index, then install again.")


def write_constraints(target: Path) -> Path:
    """A pip constraints file (next to ``target``) with every pin of :data:`PACKAGES`, so that the
    packages pip pulls in as dependencies get Edifice's versions too (numpy < 2 for QGIS's GDAL)."""
    path = target.parent / f".{target.name}-constraints.txt"
    path.write_text("".join(p.requirement + "\n" for p in PACKAGES))
    return path


_SHADOWED = """
import json, sys
from importlib import metadata
target = sys.argv[1]
ours = {d.metadata["Name"].lower(): d.version for d in metadata.distributions(path=[target])}
theirs = {}
for d in metadata.distributions(path=[p for p in sys.path if p and p != target]):
    theirs.setdefault(d.metadata["Name"].lower(), d.version)
print(json.dumps({n: [theirs[n], v] for n, v in ours.items() if n in theirs}))
"""


def shadowed_older(python: str, target) -> dict:
    """{distribution: (QGIS's Python's version, the folder's)} for each distribution installed in
    ``target`` that an older one of ``python`` would hide while the folder is appended to its path
    (e.g. Debian 12's sympy 1.11 hiding the sympy 1.14 that torch needs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    r = subprocess.run([python, "-c", _SHADOWED, str(target)], capture_output=True, text=True, env=env, timeout=300)
    try:
        both = json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {}
    return {n: (a, b) for n, (a, b) in both.items() if _version_tuple(a) < _version_tuple(b)}


_VERIFY = """
import importlib, json, sys
if sys.argv[2] == "first":
    sys.path.insert(0, sys.argv[1])
else:
    sys.path.append(sys.argv[1])
out = {}
for m in sys.argv[3:]:
    try:
        mod = importlib.import_module(m)
        out[m] = "ok " + str(getattr(mod, "__version__", "")) + " from " + str(getattr(mod, "__file__", ""))
    except Exception as exc:
        out[m] = "FAILED " + type(exc).__name__ + ": " + str(exc)
print(json.dumps(out))
"""


def verify(python: str, target, modules, first: bool = False) -> dict:
    """Import each of ``modules`` in a fresh ``python`` with ``target`` on its path as QGIS will
    have it (appended, or ``first``): {module: "ok <version> from <file>" or "FAILED <error>"}."""
    if not modules:
        return {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    r = subprocess.run([python, "-c", _VERIFY, str(target), "first" if first else "append", *modules],
                       capture_output=True, text=True, env=env, timeout=600)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {m: f"FAILED: the check crashed ({r.returncode}): {r.stderr[-300:]}" for m in modules}


def plugin_target() -> Path:
    """The package folder of the running QGIS profile (:func:`default_target`); outside QGIS,
    under ``~/.local/share/edifice``."""
    try:
        from qgis.core import QgsApplication

        settings = QgsApplication.qgisSettingsDirPath()
    except ImportError:
        settings = os.path.join(os.path.expanduser("~"), ".local", "share")
    return default_target(settings)
