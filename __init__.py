"""Edifice: building use, height and footprint mapping for QGIS.

This folder is both the QGIS plugin and the ``edifice`` Python package.
Importing it is cheap: no qgis, no torch. QGIS calls :func:`classFactory`.
"""

__version__ = "0.1.0"


def classFactory(iface):  # noqa: N802 (QGIS's name)
    """QGIS entry point (``iface`` is None under qgis_process)."""
    from .core.host_tuning import quiet_cpu_threads
    from .qgis_plugin.plugin import EdificePlugin

    quiet_cpu_threads()  # torch's OpenMP threads sleep instead of spinning (read when torch is imported)

    return EdificePlugin(iface)
