"""Load the native libraries that wheels bundle (shapely's GEOS, pyogrio's GDAL) so that
they cannot be mixed with the GEOS and GDAL that QGIS links.

``qgis_process`` and the QGIS application load Debian's libgeos and libgdal into the
global symbol scope. The shapely and pyogrio wheels bundle newer copies under other file
names but with the same symbol names, so without care the dynamic linker binds part of a
wheel's library to QGIS's:

- shapely: geometries come back wrong (e.g. a box whose ``__geo_interface__`` has no
  coordinates, so nothing is rasterised);
- pyogrio: it runs QGIS's GDAL (3.6) with the wheel's GDAL data (made for 3.12, without
  ``header.dxf``); its import then fails with "Could not correctly detect GDAL data files
  installed by pyogrio wheel" in any thread whose GDAL file finder was not initialised by
  QGIS (a Processing dialog's background task), and the whole run is lost.

Importing their extension modules once, on the main thread at plugin load, with
``RTLD_DEEPBIND`` makes the bundled libraries resolve their own symbols first: pyogrio
then reports and uses its own GDAL and GDAL data. Idempotent; a module that is missing or
already imported is left as it is (then it is too late for it).
"""
from __future__ import annotations

import importlib
import os
import sys

_SHAPELY = ("shapely", "shapely.lib", "shapely._geometry_helpers", "shapely._geos")
_PYOGRIO = ("pyogrio", "pyogrio.raw", "pyogrio.errors")


def _import_deepbind(modules) -> bool:
    """Import ``modules`` (the package first) with RTLD_DEEPBIND; True when the package was imported here."""
    if modules[0] in sys.modules or not hasattr(os, "RTLD_DEEPBIND") or not hasattr(sys, "setdlopenflags"):
        return False
    old = sys.getdlopenflags()
    sys.setdlopenflags(old | os.RTLD_DEEPBIND)
    try:
        for name in modules:
            try:
                importlib.import_module(name)
            except ImportError:
                if name == modules[0]:
                    return False
    finally:
        sys.setdlopenflags(old)
    return True


def isolate_shapely() -> bool:
    """Import shapely with RTLD_DEEPBIND if it is not imported yet; True when done here."""
    return _import_deepbind(_SHAPELY)


def isolate_pyogrio() -> bool:
    """Import pyogrio (after shapely, as pyogrio itself does) with RTLD_DEEPBIND if it is not
    imported yet; True when done here. Call it on the main thread."""
    isolate_shapely()
    return _import_deepbind(_PYOGRIO)


def isolate_native_libs() -> list[str]:
    """Isolate every wheel library QGIS also links; the errors of those that fail to load
    (e.g. pyogrio's GDAL data check), as 'module: message' lines."""
    errors = []
    for name, isolate in (("shapely", isolate_shapely), ("pyogrio", isolate_pyogrio)):
        try:
            isolate()
        except Exception as exc:  # noqa: BLE001 - reported to the user by the provider
            errors.append(f"{name}: {exc}")
    return errors
