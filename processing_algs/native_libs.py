"""Load shapely's bundled GEOS so that it cannot be mixed with the GEOS QGIS links.

``qgis_process`` (and the QGIS application) load Debian's libgeos into the
global symbol scope. The shapely wheel bundles a newer GEOS under other file
names but with the same symbol names, so without care the dynamic linker binds
part of shapely's GEOS to QGIS's: geometries then come back wrong (e.g. a box
whose ``__geo_interface__`` has no coordinates, so nothing is rasterised).
Importing shapely's extension modules once with ``RTLD_DEEPBIND`` makes the
bundled libraries resolve their own symbols first. Idempotent; does nothing if
shapely is missing or already imported (then it is too late: a warning is logged).
"""
from __future__ import annotations

import os
import sys

_MODULES = ("shapely", "shapely.lib", "shapely._geometry_helpers", "shapely._geos")


def isolate_shapely() -> bool:
    """Import shapely with RTLD_DEEPBIND if it is not imported yet; True when done here."""
    if "shapely" in sys.modules or not hasattr(os, "RTLD_DEEPBIND") or not hasattr(sys, "setdlopenflags"):
        return False
    old = sys.getdlopenflags()
    sys.setdlopenflags(old | os.RTLD_DEEPBIND)
    try:
        import importlib

        for name in _MODULES:
            try:
                importlib.import_module(name)
            except ImportError:
                if name == "shapely":
                    return False
    finally:
        sys.setdlopenflags(old)
    return True
