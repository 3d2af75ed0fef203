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


# --- THU height/footprint sample (samples/thu) --------------------------------------------------------
#: Extent (degrees) and padding the THU tests and the demo use; inside the bundled crops.
THU_EXTENT = (116.305, 39.987, 116.335, 40.017)
THU_PADDING = 0.005


@pytest.fixture(scope="session")
def thu_dir(tmp_path_factory) -> Path:
    """A copy of samples/thu (real S-1 and SRTM crops, synthetic S-2) in a temporary folder."""
    dst = tmp_path_factory.mktemp("thu")
    for f in ("thu_s1_2020.tif", "thu_s2_synthetic.tif", "thu_srtm.tif"):
        shutil.copy(SAMPLES / "thu" / f, dst / f)
    return dst


def _random_checkpoint_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_random_shafts_checkpoint",
                                                  ROOT / "scripts" / "make_random_shafts_checkpoint.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def thu_checkpoint(thu_dir, tmp_path_factory) -> Path:
    """SHAFTS 100 m multi-task checkpoint with RANDOM weights (seed 0), output layers rescaled on the THU
    sample so the outputs have contrast (scripts/make_random_shafts_checkpoint.py). Not a trained model."""
    path = tmp_path_factory.mktemp("ckpt") / "random_100m.pth"
    _random_checkpoint_module().make_random_checkpoint(
        path, 100, 0, (thu_dir / "thu_s1_2020.tif", thu_dir / "thu_s2_synthetic.tif", thu_dir / "thu_srtm.tif",
                       THU_EXTENT), THU_PADDING)
    return path


@pytest.fixture(scope="session")
def thu_extent() -> tuple[tuple[float, float, float, float], float]:
    """(extent xmin, ymin, xmax, ymax in degrees, padding in degrees) used with the THU sample."""
    return THU_EXTENT, THU_PADDING
