"""The plugin class QGIS instantiates: registers the Processing provider both
in the GUI (``initGui``) and headless (``initProcessing``, used by qgis_process),
and in the GUI the evaluation dock (pyqtgraph, imported only then)."""
from __future__ import annotations

from qgis.core import QgsApplication


class EdificePlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None
        self.evaluation_dock = None

    def initProcessing(self):  # noqa: N802 (QGIS's name)
        if self.provider is not None:
            return
        from ..processing_algs.provider import EdificeProvider

        self.provider = EdificeProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        self.initProcessing()
        if self.iface is not None and self.evaluation_dock is None:
            from .evaluation_dock import add_to_interface

            self.evaluation_dock = add_to_interface(self.iface)  # None (logged) without pyqtgraph

    def unload(self):
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
