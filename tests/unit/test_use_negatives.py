"""Issue 16 item 10: training data shows building-free ground as negatives (background chips), a
footprint-only dataset trains with λ_U = 0 by default, and small datasets may keep no test subset."""
from pathlib import Path

import numpy as np
import pytest
import torch

from edifice.core.errors import InputError
from edifice.core.use.training import train_building_use
from edifice.core.use.training_dataset import create_training_dataset, spatial_split
from edifice.models.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
KAMPALA = ROOT / "samples" / "kampala"
torch.set_num_threads(1)


def _dataset(tmp_path, **kw):
    return create_training_dataset(str(KAMPALA / "kampala_rgb_50cm.tif"), str(KAMPALA / "buildings_osm.geojson"),
                                   str(tmp_path / "ds"), None, chip_size=64, split_tile_m=64, **kw)


def test_background_chips_are_building_free_valid_ground(tmp_path):
    m = _dataset(tmp_path, background_ratio=0.5)
    bg = [c for c in m["chips"] if c["kind"] == "background"]
    fg = [c for c in m["chips"] if c["kind"] == "buildings"]
    # Kampala's covered area is dense: fewer building-free chips exist than 0.5 per building chip asks for
    assert 0 < len(bg) <= round(0.5 * len(fg)) and m["background_ratio"] == 0.5
    for c in bg:
        with np.load(tmp_path / "ds" / c["file"]) as z:
            a = z["footprint"][:c["height"], :c["width"]]
        assert (a == 1).sum() < 16 and (a == 0).mean() >= 0.4     # ground, mostly valid imagery
    assert sum(m["split"]["subsets"][s]["background_chips"] for s in ("train", "val", "test")) == len(bg)
    for ratio, want in ((0.0, 0), (0.02, 1)):                   # round(0.02 x 46) = 1
        other = create_training_dataset(str(KAMPALA / "kampala_rgb_50cm.tif"), str(KAMPALA / "buildings_osm.geojson"),
                                        str(tmp_path / f"ds{ratio}"), None, chip_size=64, split_tile_m=64,
                                        background_ratio=ratio)
        assert len(other["chips"]) == len(fg) + want and round(ratio * len(fg)) == want


def test_footprint_only_trains_without_the_use_loss_by_default(tmp_path):
    _dataset(tmp_path)
    ck = tmp_path / "m.pt"
    train_building_use(str(tmp_path / "ds"), str(ck), variant="imagery_multitask", encoder="resnet18", base_width=4,
                       epochs=1, batch_size=8, device="cpu", augment=False)
    assert load_checkpoint(str(ck))[1]["training"]["config"]["lambda_use"] == 0.0


def test_no_test_subset_for_small_datasets(tmp_path):
    m = _dataset(tmp_path, split_ratios=(8, 2, 0))
    sub = m["split"]["subsets"]
    assert sub["test"]["buildings"] == 0 and sub["test"]["chips"] == 0 and sub["train"]["buildings"] > 0
    assert set(spatial_split(np.array([[i, 0] for i in range(10)]), (8, 2, 0)).values()) == {0, 1}
    with pytest.raises(InputError, match="SPLIT_RATIOS"):
        spatial_split(np.array([[i, 0] for i in range(10)]), (8, 0, 2))
