"""Issue 16 item 1: a 0.5 m model trained on the default 256 px chips is mapped with the seed's
1024 px windows and 128 px margin (the card records the chip size it was trained on), and the
log says what was chosen and why."""
from __future__ import annotations

from pathlib import Path

import torch

from edifice.core.use.building_use_map import map_building_use
from edifice.core.progress import RecordingProgress
from edifice.core.use.training import default_map_window, train_building_use
from edifice.core.use.training_dataset import create_training_dataset
from edifice.models.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
BUILDINGS = ROOT / "samples" / "kampala" / "buildings_osm.geojson"
torch.set_num_threads(1)


def test_default_window_rule():
    assert default_map_window(256, 0.5)[0] == 1024
    assert default_map_window(2048, 0.5)[0] == 2048  # never smaller than the chips
    assert default_map_window(64, 10.0)[0] == 64     # coarse models keep their chip size


def test_default_chain_maps_with_the_seeds_window(tmp_path, kampala_rgb):
    ds = tmp_path / "ds"
    create_training_dataset(str(kampala_rgb), str(BUILDINGS), str(ds), None, split_tile_m=64.0)
    ck = tmp_path / "m.pt"
    train_building_use(str(ds), str(ck), variant="imagery_multitask", encoder="resnet18", base_width=4, epochs=1,
                       batch_size=8, lambda_use=0.0, device="cpu", augment=False)
    _, card = load_checkpoint(str(ck))
    assert card["training_chip_size"] == 256 and card["window"] == 1024
    log = RecordingProgress()
    map_building_use(str(kampala_rgb), str(ck), footprint_mask=str(tmp_path / "fp.tif"), device="cpu", progress=log)
    text = "\n".join(log.lines)
    assert "Windows of 1024 px, 128 px margin" in text
    assert "Window 1024 px: the seed's 1024 px window" in text and "256 px chips" in text
