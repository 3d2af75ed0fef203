"""Issue 16 item 6: the train/val/test split counts only buildings over valid imagery, keeps every
class in every subset where the data allow (stratified spatial split), and a subset without chips
is refused with the fix instead of being written (and training then reporting NaN)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import rasterio

from edifice.core.errors import InputError
from edifice.core.use.training_dataset import _check_subsets_have_chips, create_training_dataset, spatial_split

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("_use_scene", Path(__file__).with_name("_use_scene.py"))
S = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(S)


def test_buildings_over_nodata_do_not_count(tmp_path):
    sc = S.make_scene(tmp_path, size=256, seed=1)
    with rasterio.open(sc["imagery"], "r+") as ds:   # right quarter of the scene: nodata
        ds.nodata = 0
        a = ds.read()
        a[:, :, 192:] = 0
        a[a == 0] = 0
        ds.write(a)
    m = create_training_dataset(sc["imagery"], sc["buildings"], str(tmp_path / "ds"), "building", chip_size=64,
                                split_tile_m=64)
    total = sum(m["split"]["subsets"][s]["buildings"] for s in ("train", "val", "test"))
    over = m["buildings"]["over_nodata"]
    assert over == 16 and total == len(sc["classes"]) - over   # 2 columns x 8 rows of 32 m spaced buildings
    assert sum(m["split"]["achieved_ratios"]) == pytest.approx(1.0, abs=1e-3)


def test_stratified_split_keeps_every_class_in_every_subset():
    # 30 tiles of 10 residential buildings; class 3 (industrial) in 3 of them only, 1 building each
    tiles = np.array([[t, 0] for t in range(30) for _ in range(10)])
    classes = np.ones(len(tiles), int)
    for t in (4, 11, 19):
        classes[t * 10] = 3
    out = spatial_split(tiles, seed=0, classes=classes)
    subset_of = np.array([out[(int(r), int(c))] for r, c in tiles])
    assert {int(s) for s in subset_of[classes == 3]} == {0, 1, 2}
    frac = np.bincount(subset_of, minlength=3) / len(subset_of)
    assert np.allclose(frac, [0.6, 0.2, 0.2], atol=0.05)


def test_every_subset_gets_a_tile_even_when_one_tile_dominates():
    tiles = np.array([[0, 0]] * 50 + [[0, 1]] * 2 + [[1, 0]] * 2)
    out = spatial_split(tiles, seed=0)
    assert sorted(out.values()) == [0, 1, 2]


def test_kampala_defaults_refused_before_writing(tmp_path):
    """Kampala with the defaults used to write 'test: 7 buildings / 0 chips'."""
    out = tmp_path / "ds"
    with pytest.raises(InputError, match="usable building.*too few.*smaller split tile"):
        create_training_dataset(str(ROOT / "samples" / "kampala" / "kampala_rgb_50cm.tif"),
                                str(ROOT / "samples" / "kampala" / "buildings_osm.geojson"), str(out), None)
    assert not out.exists() and not list(tmp_path.glob(".ds*"))


def test_subset_without_chips_is_refused_with_the_fix():
    per = {"train": {"buildings": 150, "chips": 9}, "val": {"buildings": 21, "chips": 2},
           "test": {"buildings": 7, "chips": 0}}
    with pytest.raises(InputError, match=r"the test subset\(s\) got no chip.*test: 7 buildings / 0 chips.*"
                                         r"now 256 m; e.g. 128 m"):
        _check_subsets_have_chips(per, 256.0, 128.0)
    per["test"]["chips"] = 1
    _check_subsets_have_chips(per, 256.0, 128.0)
