"""Shared fixtures. Unit tests never import qgis; tests marked qgis/e2e use real QGIS."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


@pytest.fixture
def kampala_rgb(tmp_path) -> Path:
    """A copy of the bundled Kampala 0.5 m RGB sample (EPSG:32636, uint8, nodata 0)."""
    dst = tmp_path / "kampala_rgb_50cm.tif"
    shutil.copy(SAMPLES / "kampala" / "kampala_rgb_50cm.tif", dst)
    return dst


@pytest.fixture
def helsinki_pbf(tmp_path) -> Path:
    """A copy of the bundled Helsinki OSM extract (read its 'points' layer)."""
    dst = tmp_path / "Helsinki.osm.pbf"
    shutil.copy(SAMPLES / "helsinki" / "Helsinki.osm.pbf", dst)
    return dst
