"""The building-level train/val/test split: achieved ratios recorded, and a warning
with the fix when few split tiles make them drift more than 10 points."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import shapely

from edifice.core.progress import Progress
from edifice.core.use.training_dataset import create_training_dataset

_spec = importlib.util.spec_from_file_location("_use_scene", Path(__file__).with_name("_use_scene.py"))
S = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(S)


class _Log(Progress):
    def __init__(self):
        self.warnings = []

    def info(self, message):
        pass

    def warning(self, message):
        self.warnings.append(message)


def _uneven(tmp_path):
    """256 m scene, 64 buildings; keep all 16 of the top-left 128 m tile and 2 of each other tile."""
    sc = S.make_scene(tmp_path, size=256, seed=1)
    info = pyogrio.raw.read(sc["buildings"])
    geoms = shapely.from_wkb(info[2])
    values = info[3][0]
    c = shapely.get_coordinates(shapely.point_on_surface(geoms))
    tile = (np.floor((S.Y0 - c[:, 1]) / 128).astype(int), np.floor((c[:, 0] - S.X0) / 128).astype(int))
    keep, seen = [], {}
    for i, t in enumerate(zip(*tile)):
        seen[t] = seen.get(t, 0) + 1
        if t == (0, 0) or seen[t] <= 2:
            keep.append(i)
    path = tmp_path / "uneven.gpkg"
    S.write_polygons(path, geoms[keep], {"building": list(values[keep])})
    return sc["imagery"], str(path), len(keep)


def test_few_tiles_warn_and_record_ratios(tmp_path):
    img, bld, n = _uneven(tmp_path)
    assert n == 22
    log = _Log()
    m = create_training_dataset(img, bld, str(tmp_path / "ds"), "building", chip_size=64, split_tile_m=128,
                                progress=log)
    split = m["split"]
    counts = [split["subsets"][s]["buildings"] for s in ("train", "val", "test")]
    assert split["achieved_ratios"] == [round(v / n, 4) for v in counts]
    # 16 of 22 buildings (73 %) sit in one tile: some subset is > 10 points off 60/20/20
    assert max(abs(a - t) for a, t in zip(split["achieved_ratios"], (0.6, 0.2, 0.2))) > 0.10
    assert len(log.warnings) == 1
    w = log.warnings[0]
    assert "not the 60/20/20 % asked for" in w and "only 4" in w
    assert "SPLIT_TILE" in w and "now 128 m; e.g. 64 m" in w
    saved = json.loads((tmp_path / "ds" / "manifest.json").read_text())["split"]
    assert saved["ratio_warning"] == w and saved["achieved_ratios"] == split["achieved_ratios"]


def test_balanced_split_does_not_warn(tmp_path):
    sc = S.make_scene(tmp_path, size=256, seed=1)
    log = _Log()
    m = create_training_dataset(sc["imagery"], sc["buildings"], str(tmp_path / "ds"), "building", chip_size=64,
                                split_tile_m=64, progress=log)
    r = m["split"]["achieved_ratios"]
    assert max(abs(a - t) for a, t in zip(r, (0.6, 0.2, 0.2))) <= 0.10 and sum(r) == pytest.approx(1.0, abs=1e-3)
    assert log.warnings == [] and "ratio_warning" not in m["split"]
