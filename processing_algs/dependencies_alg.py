"""edifice:installdependencies (the dependency manager, headless) and edifice:diagnostics
(what Edifice runs on). Both need only the standard library, so they are always runnable."""
from __future__ import annotations

import importlib.util
import sys

from qgis.core import (Qgis, QgsProcessingAlgorithm, QgsProcessingParameterBoolean, QgsProcessingException, QgsProcessingOutputString,
                       QgsProcessingParameterDefinition, QgsProcessingParameterEnum,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterString)

from .base import EdificeAlgorithm

TORCH_CHOICES = ["auto", "cpu", "cuda"]
#: (parameter, label) of each package set, in the order of dependencies.GROUPS
GROUP_PARAMETERS = [("CORE", "Core packages (every tool)"), ("PYTORCH", "PyTorch (the model tools)"),
                    ("CHARTS", "Charts of the docks (pyqtgraph)")]
TORCH_LABELS = ["Automatic (CUDA build when an NVIDIA driver is found)", "CPU only", "CUDA (NVIDIA GPU)"]


class InstallDependenciesAlgorithm(EdificeAlgorithm):
    TORCH, INDEX_URL, FIND_LINKS, TARGET = "TORCH", "INDEX_URL", "FIND_LINKS", "TARGET"
    EXTRA = "EXTRA"
    GROUP, GROUP_ID = "Set-up", "setup"
    HELP = ("Installs the Python packages Edifice needs (pinned versions) into a folder of your QGIS profile, "
            "with the Python that QGIS runs, and checks that each one imports. Only missing packages are "
            "installed; the folder is added to QGIS's Python path at once and at every start. "
            "Package sets: Core packages (every tool), PyTorch (the model tools), Charts of the docks. "
            "PyTorch build: Automatic picks a CUDA build when nvidia-smi reports a driver, else the CPU build. "
            "Package index (advanced): a mirror or local index to use instead of PyPI "
            "(then your pip configuration is ignored). Additional packages (advanced): more pip requirements, each "
            "checked by importing its name (with - as _). Restart QGIS if a tool still reports a missing package.")

    def name(self):
        return "installdependencies"

    def displayName(self):  # noqa: N802
        return "Install dependencies"

    def flags(self):
        return super().flags() | QgsProcessingAlgorithm.FlagNoThreading  # sys.path changes on the main thread

    def initAlgorithm(self, config=None):  # noqa: N802
        for name, label in GROUP_PARAMETERS:
            self.addParameter(QgsProcessingParameterBoolean(name, label, defaultValue=True))
        self.addParameter(QgsProcessingParameterEnum(self.TORCH, "PyTorch build", options=TORCH_LABELS,
                                                     defaultValue=0))
        for p in (QgsProcessingParameterString(self.INDEX_URL, "Package index URL (instead of PyPI)", optional=True),
                  QgsProcessingParameterString(self.FIND_LINKS, "Folder or page of wheels (pip --find-links)",
                                               optional=True),
                  QgsProcessingParameterString(self.TARGET, "Package folder (empty: the profile's)", optional=True),
                  QgsProcessingParameterString(self.EXTRA, "Additional packages (pip requirements, e.g. name==1.0)",
                                               optional=True)):
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)
        self.addOutput(QgsProcessingOutputString("PACKAGE_FOLDER", "Package folder"))
        self.addOutput(QgsProcessingOutputString("REPORT", "Installed packages"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..qgis_plugin import dependencies as deps

        groups = [group for (name, _), group in zip(GROUP_PARAMETERS, deps.GROUPS)
                  if self.parameterAsBool(parameters, name, context)]
        target = self.parameterAsString(parameters, self.TARGET, context).strip() or str(deps.plugin_target())
        present = {p.module for p in deps.PACKAGES if importlib.util.find_spec(p.module) is not None}
        too_old = {p.module for p in deps.PACKAGES if p.module in present and deps.outdated(p.module)}
        plan, notes = self.run_core(
            deps.plan_install, self.run_core(deps.qgis_python), target, groups, present,
            torch=TORCH_CHOICES[self.parameterAsEnum(parameters, self.TORCH, context)],
            cuda=deps.detect_cuda() if "torch" in groups and "torch" not in present else None,
            index_url=self.parameterAsString(parameters, self.INDEX_URL, context).strip() or None,
            find_links=[s for s in [self.parameterAsString(parameters, self.FIND_LINKS, context).strip()] if s],
            extra=deps.extra_packages(self.parameterAsString(parameters, self.EXTRA, context)),
            modules_outdated=too_old)
        for note in notes:
            feedback.pushInfo(note)
        report = self.run_core(deps.run_install, plan, self.progress(feedback), feedback.pushInfo)
        deps.activate(target)
        feedback.pushInfo(f"Package folder {target} is on QGIS's Python path.")
        if plan.first:
            feedback.pushWarning("Restart QGIS: the packages that replace too-old ones take effect at the next start.")
        return {"PACKAGE_FOLDER": target, "REPORT": "; ".join(f"{m}: {r}" for m, r in report.items())}


class DiagnosticsAlgorithm(EdificeAlgorithm):
    OUTPUT = "OUTPUT"
    GROUP, GROUP_ID = "Set-up", "setup"
    HELP = ("Reports what Edifice runs on, for bug reports and to see why a GPU is or is not used: QGIS and its "
            "GDAL, Python and the interpreter used to install packages, the package folder, the versions of "
            "numpy, rasterio, shapely, pyogrio, pyproj and PyTorch, the GDAL that rasterio and pyogrio run, "
            "PyTorch's CUDA build and devices, the GPUs nvidia-smi lists, and the device that 'auto' picks and "
            "why. Optionally saved to a text file.")

    def name(self):
        return "diagnostics"

    def displayName(self):  # noqa: N802
        return "Diagnostics"

    def flags(self):
        return super().flags() | QgsProcessingAlgorithm.FlagNoThreading  # imports native libraries

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT, "Save the report as",
                                                                fileFilter="Text (*.txt)", optional=True,
                                                                createByDefault=False))
        self.addOutput(QgsProcessingOutputString("REPORT", "Report"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.diagnostics import collect_diagnostics, format_report

        text = format_report(collect_diagnostics(qgis_facts()))
        for line in text.splitlines():
            feedback.pushInfo(line)
        out = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        if out:
            try:
                with open(out, "w", encoding="utf-8") as f:
                    f.write(text + "\n")
            except OSError as exc:
                raise QgsProcessingException(f"OUTPUT: {out} cannot be written ({exc}). Fix: choose another file.")
        return {"REPORT": text, self.OUTPUT: out or None}


def qgis_facts() -> dict[str, str]:
    """QGIS's side: its version, the GDAL it links, the Python to install with, the package folder."""
    from .. import __file__ as package_file, __version__
    from ..qgis_plugin import dependencies as deps

    facts = {"Edifice": f"{__version__} ({package_file.rsplit('/', 1)[0]})", "QGIS": Qgis.QGIS_VERSION}
    try:
        from osgeo import gdal

        facts["GDAL (QGIS)"] = gdal.__version__
    except ImportError as exc:
        facts["GDAL (QGIS)"] = f"unknown ({exc})"
    try:
        facts["QGIS's Python for pip"] = deps.qgis_python()
    except Exception as exc:  # noqa: BLE001
        facts["QGIS's Python for pip"] = str(exc)
    target = deps.plugin_target()
    facts["Package folder"] = f"{target} ({'on sys.path' if str(target) in sys.path else 'not on sys.path'})"
    return facts
