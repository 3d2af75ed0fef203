"""The plugin class QGIS instantiates: registers the Processing provider both
in the GUI (``initGui``) and headless (``initProcessing``, used by qgis_process),
and in the GUI the Edifice menu (dependency manager, diagnostics, the training-loss and
evaluation docks, example models). The plugin-private package folder (see
``dependencies.py``) is put on Python's path before anything imports a dependency."""
from __future__ import annotations

from qgis.core import Qgis, QgsApplication, QgsMessageLog

from . import dependencies

MENU = "&Edifice"


class EdificePlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None
        self.evaluation_dock = None
        self.actions = []
        dependencies.activate(dependencies.plugin_target())

    def initProcessing(self):  # noqa: N802 (QGIS's name)
        if self.provider is not None:
            return
        from ..processing_algs.provider import EdificeProvider

        self.provider = EdificeProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        self.initProcessing()
        if self.iface is None:
            return
        self._add_action("Install dependencies…", self.open_installer)
        self._add_action("Diagnostics…", lambda: self._open_dialog("edifice:diagnostics"))
        self._add_action("Training loss", self.show_training_dock)
        if self.evaluation_dock is None:
            self.evaluation_dock = _evaluation_dock(self.iface)  # None (logged) without numpy/pyqtgraph
        self._add_action("Add example models to the Toolbox", self.add_example_models)
        self._warn_missing()

    def _add_action(self, text, slot):
        from qgis.PyQt.QtWidgets import QAction

        action = QAction(text, self.iface.mainWindow())
        action.triggered.connect(slot)
        self.iface.addPluginToMenu(MENU, action)
        self.actions.append(action)
        return action

    @staticmethod
    def _open_dialog(alg_id: str) -> None:
        import processing

        processing.execAlgorithmDialog(alg_id, {})

    def open_installer(self) -> None:
        """The dependency manager: the Install dependencies dialog (progress, log, cancel)."""
        self._open_dialog("edifice:installdependencies")

    def show_training_dock(self) -> None:
        try:
            from .training_dock import show_dock

            show_dock(self.iface)
        except Exception as exc:  # noqa: BLE001 - pyqtgraph missing or broken
            self.iface.messageBar().pushWarning("Edifice", f"The training-loss dock needs pyqtgraph ({exc}). "
                                                f"Fix: {dependencies.FIX_MENU}")

    def add_example_models(self) -> None:
        """Save the example models into the profile's models folder and reload the Toolbox's Models."""
        from .example_models import install_models

        names = install_models()
        self.iface.messageBar().pushInfo("Edifice", f"Example models added to the Toolbox (Models): {', '.join(names)}")

    def _warn_missing(self) -> None:
        """A message bar with an Install button when tools miss packages (they stay listed)."""
        needed = sorted({m for cls, mods in _algorithm_table() for m in dependencies.missing_modules(mods)})
        if not needed:
            return
        from qgis.PyQt.QtWidgets import QPushButton

        bar = self.iface.messageBar()
        names = ", ".join(dependencies.package_for(m).distribution for m in needed)
        item = bar.createMessage("Edifice", f"missing Python packages: {names}")
        button = QPushButton("Install dependencies…", item)
        button.clicked.connect(self.open_installer)
        item.layout().addWidget(button)
        bar.pushWidget(item, Qgis.Warning, 0)

    def unload(self):
        for action in self.actions:
            self.iface.removePluginMenu(MENU, action)
        self.actions = []
        if self.evaluation_dock is not None:
            from .evaluation_dock import remove_from_interface

            remove_from_interface(self.iface, self.evaluation_dock)
            self.evaluation_dock = None
        import sys
        dock = sys.modules.get(__package__ + ".training_dock")  # only if a training run created it
        if dock is not None:
            dock.unload()
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None


def _algorithm_table():
    from ..processing_algs.provider import ALGORITHMS

    return ALGORITHMS


def _evaluation_dock(iface):
    try:
        from .evaluation_dock import add_to_interface
    except ImportError as exc:
        QgsMessageLog.logMessage(f"Edifice: the evaluation dock is not available ({exc}).", "Edifice", Qgis.Warning)
        return None
    return add_to_interface(iface)
