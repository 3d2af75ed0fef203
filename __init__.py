"""Edifice: building use, height and footprint mapping for QGIS.

This folder is both the QGIS plugin and the ``edifice`` Python package.
Importing it is cheap: no qgis, no torch. QGIS calls :func:`classFactory`.
"""

__version__ = "0.1.0"


def classFactory(iface):  # noqa: N802 (QGIS's name)
    """QGIS entry point (``iface`` is None under qgis_process)."""
    from .qgis_plugin.plugin import EdificePlugin

    return EdificePlugin(iface)
