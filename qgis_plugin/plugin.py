"""The plugin class QGIS instantiates: registers the Processing provider both
in the GUI (``initGui``) and headless (``initProcessing``, used by qgis_process)."""
from __future__ import annotations

from qgis.core import QgsApplication


class EdificePlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None

    def initProcessing(self):  # noqa: N802 (QGIS's name)
        if self.provider is not None:
            return
        from ..processing_algs.provider import EdificeProvider

        self.provider = EdificeProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        self.initProcessing()

    def unload(self):
        import sys
        dock = sys.modules.get(__package__ + ".training_dock")  # only if a training run created it
        if dock is not None:
            dock.unload()
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
