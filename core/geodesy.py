"""Geodesy helpers: WGS84 Earth-centred coordinates and chord/arc conversion.

Nearest-neighbour search on Earth-centred, Earth-fixed (ECEF) coordinates of
points on the WGS84 ellipsoid finds the geodesically nearest point; the 3-D
chord c converts to the surface distance s = 2 R asin(c / 2R), within 1e-5
relative of the ellipsoidal geodesic for distances below 100 km.
"""
from __future__ import annotations

import numpy as np
from pyproj import CRS, Transformer

WGS84_A = 6378137.0
WGS84_F = 1 / 298.257223563
WGS84_E2 = WGS84_F * (2 - WGS84_F)
MEAN_RADIUS = 6371008.8


def lonlat_to_ecef(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """(..., 3) ECEF metres of WGS84 longitude/latitude in degrees, on the ellipsoid."""
    lam, phi = np.radians(lon), np.radians(lat)
    sphi, cphi = np.sin(phi), np.cos(phi)
    n = WGS84_A / np.sqrt(1 - WGS84_E2 * sphi * sphi)
    return np.stack([n * cphi * np.cos(lam), n * cphi * np.sin(lam), n * (1 - WGS84_E2) * sphi], axis=-1)


def chord_to_arc(chord: np.ndarray) -> np.ndarray:
    """Surface distance (m) for a 3-D chord length (m) on a sphere of mean radius."""
    return 2 * MEAN_RADIUS * np.arcsin(np.minimum(chord / (2 * MEAN_RADIUS), 1.0))


def arc_to_chord(arc: float) -> float:
    return float(2 * MEAN_RADIUS * np.sin(min(arc / (2 * MEAN_RADIUS), np.pi / 2)))


def to_lonlat(crs_wkt: str) -> Transformer:
    """Transformer from ``crs_wkt`` to WGS84 longitude/latitude (x = lon)."""
    return Transformer.from_crs(CRS.from_user_input(crs_wkt), CRS.from_epsg(4326), always_xy=True)


def approx_pixel_metres(crs_wkt: str, res: float, lat: float = 0.0) -> float:
    """Rough size in metres of ``res`` CRS units (for choosing sampling steps)."""
    crs = CRS.from_user_input(crs_wkt)
    if crs.is_geographic:
        return res * 111320.0 * max(np.cos(np.radians(lat)), 0.01)
    factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    return res * (factor or 1.0)
