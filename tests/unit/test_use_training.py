"""Losses (Eq. 5-7), synchronised augmentation, device choice, training loop: card, callback,
reproducibility, exact resume, band/variant errors."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from edifice.core.use.augment import augment_sample
from edifice.core.errors import Cancelled, InputError
from edifice.core.use.losses import dice_binary, dice_multiclass, predict_labels
from edifice.core.progress import Progress
from edifice.core.use.training import resolve_device, train_building_use
from edifice.core.use.training_dataset import create_training_dataset
from edifice.models.checkpoint import load_checkpoint
from edifice.models.unet import load_model

torch.set_num_threads(1)
_spec = importlib.util.spec_from_file_location("_use_scene", Path(__file__).with_name("_use_scene.py"))
S = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(S)

BIG = 30.0  # logit that saturates the sigmoid


def test_dice_binary_eq5():
    t = torch.tensor([[[1, 0], [255, 1]]])
    perfect = torch.where(t == 1, BIG, -BIG).float()[:, None]
    assert float(dice_binary(perfect, t, eps=1e-6)) == pytest.approx(0.0, abs=1e-5)
    # the ignored pixel does not count, whatever is predicted there
    other = perfect.clone()
    other[0, 0, 1, 0] = BIG
    assert float(dice_binary(other, t, eps=1e-6)) == pytest.approx(0.0, abs=1e-5)
    half = torch.zeros(1, 1, 2, 2)  # p = 0.5 on the 3 valid pixels, 2 of them building
    assert float(dice_binary(half, t, eps=0.0)) == pytest.approx(1 - 2 * 1.0 / (1.5 + 2), rel=1e-5)


def test_dice_multiclass_eq6_and_labels():
    t = torch.tensor([[[1, 2], [3, 0]]])  # R, C / I, background
    logits = torch.full((1, 3, 2, 2), -BIG)
    logits[0, 0, 0, 0] = logits[0, 1, 0, 1] = logits[0, 2, 1, 0] = BIG
    assert float(dice_multiclass(logits, t, eps=1e-6)) == pytest.approx(0.0, abs=1e-5)
    wrong = logits.clone()
    wrong[0, 2, 1, 0] = -BIG  # I missed: its Dice is 0 -> mean loss 1/3
    assert float(dice_multiclass(wrong, t, eps=1e-9)) == pytest.approx(1 / 3, abs=1e-5)
    ignored = torch.tensor([[[1, 2], [255, 0]]])
    assert float(dice_multiclass(wrong, ignored, eps=1.0)) == pytest.approx(0.0, abs=1e-5)
    assert predict_labels({"use": logits}).tolist() == [[[1, 2], [3, 0]]]
    fp = torch.full((1, 1, 2, 2), BIG)
    fp[0, 0, 0, 1] = -BIG  # footprint says no building -> background even though C is certain
    assert predict_labels({"use": logits, "footprint": fp}).tolist() == [[[1, 0], [3, 1]]]


def test_augmentation_is_synchronised():
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 2, (16, 16), generator=gen)
    b = torch.randint(0, 4, (16, 16), generator=gen)
    x = torch.stack([a.float(), b.float(), torch.arange(256.).view(16, 16)])
    seen = set()
    for _ in range(40):
        xa, aa, ba = augment_sample(x, a, b, gen, p_scale=0.0)
        assert torch.equal(xa[0].long(), aa) and torch.equal(xa[1].long(), ba)
        seen.add(tuple(xa[2, 0, :2].tolist()))
    assert len(seen) == 8  # all eight flips/rotations/transpositions occur
    blocky = torch.kron(torch.randint(0, 2, (4, 4), generator=gen), torch.ones(4, 4, dtype=torch.long))  # 4x4-px blocks
    xb = torch.stack([blocky.float(), blocky.float(), blocky.float()])
    zoom_out = 0
    for _ in range(20):
        xs, as_, bs = augment_sample(xb, blocky, blocky, gen, p_scale=1.0)
        assert xs.shape == xb.shape and as_.shape == blocky.shape and torch.equal(as_, bs)
        keep = as_ != 255
        zoom_out += int((~keep).any())
        agree = (xs[0][keep].round().long() == as_[keep]).float().mean()
        assert agree > 0.85  # image and mask rescaled together (differences only on block edges)
    assert zoom_out > 0  # zooming out pads with ignored labels


def test_device_choice():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="DEVICE"):
        resolve_device("cuda:99")
    with pytest.raises(InputError, match="DEVICE"):
        resolve_device("tpu")


@pytest.fixture(scope="module")
def small_ds(tmp_path_factory):
    d = tmp_path_factory.mktemp("scene")
    sc = S.make_scene(d, size=256, seed=1)
    create_training_dataset(sc["imagery"], sc["buildings"], str(d / "ds"), "building", poi_points_path=sc["pois"],
                            poi_category_field="shop", poi_max_distances=(12, 12, 20), chip_size=64, split_tile_m=64)
    create_training_dataset(sc["imagery"], sc["buildings"], str(d / "ds_rgb"), "building", chip_size=64,
                            split_tile_m=64)
    return d


KW = dict(encoder="resnet18", base_width=4, batch_size=4, device="cpu", seed=5)


class _CancelAfter(Progress):
    def __init__(self, epochs):
        self.epochs, self.seen, self.lines = epochs, 0, []

    def is_cancelled(self):
        return self.seen >= self.epochs

    def info(self, message):
        self.lines.append(message)


def test_training_card_callback_reproducible_and_resume(small_ds, tmp_path):
    records = []
    prog = _CancelAfter(99)
    r1 = train_building_use(str(small_ds / "ds"), str(tmp_path / "a.pt"), epochs=2, epoch_callback=records.append,
                            progress=prog, **KW)
    assert [r["epoch"] for r in records] == [1, 2] and all(np.isfinite(r["train_loss"]) for r in records)
    assert any("Training on cpu" in ln for ln in prog.lines) and any("epoch 2/2" in ln for ln in prog.lines)
    state, card = load_checkpoint(tmp_path / "a.pt")
    assert card["task"] == "building_use" and card["window"] == 64 and card["gsd_m"] == pytest.approx(1.0)
    assert [b["name"] for b in card["bands"]] == ["red", "green", "blue", "p_residential", "p_commercial",
                                                  "p_industrial"]
    assert card["bands"][0]["scale"] == pytest.approx(1 / 255)
    assert {c["name"]: c["color"] for c in card["classes"]}["industrial"].startswith("#")
    for sub in ("validation", "test"):
        pc = card["metrics"][sub]["per_class"]
        assert set(pc) == {"background", "residential", "commercial", "industrial"}
        assert set(pc["residential"]) == {"accuracy", "precision", "recall", "f1", "support"}
    assert card["training"]["device"] == "cpu" and card["training"]["epochs_run"] == 2
    model, _ = load_model(tmp_path / "a.pt")
    assert model.multitask
    # same seed -> same run
    r2 = train_building_use(str(small_ds / "ds"), str(tmp_path / "b.pt"), epochs=2, **KW)
    assert [h["train_loss"] for h in r2["history"]] == [h["train_loss"] for h in r1["history"]]
    s2, _ = load_checkpoint(tmp_path / "b.pt")
    assert all(torch.equal(state[k], s2[k]) for k in state)
    # cancelled after epoch 1, resumed -> identical to the uninterrupted run
    prog = _CancelAfter(1)
    with pytest.raises(Cancelled):
        train_building_use(str(small_ds / "ds"), str(tmp_path / "c.pt"), epochs=2,
                           epoch_callback=lambda r: setattr(prog, "seen", r["epoch"]), progress=prog, **KW)
    assert (tmp_path / "c.pt.resume.pt").is_file()
    r3 = train_building_use(str(small_ds / "ds"), str(tmp_path / "c.pt"), epochs=2,
                            resume_from=str(tmp_path / "c.pt.resume.pt"), **KW)
    assert [h["val_loss"] for h in r3["history"]] == [h["val_loss"] for h in r1["history"]]
    s3, _ = load_checkpoint(tmp_path / "c.pt")
    assert all(torch.equal(state[k], s3[k]) for k in state)


def test_band_count_and_variant_errors(small_ds, tmp_path):
    with pytest.raises(InputError, match="needs 3 POI bands"):
        train_building_use(str(small_ds / "ds_rgb"), str(tmp_path / "x.pt"), epochs=1, **KW)
    r = train_building_use(str(small_ds / "ds_rgb"), str(tmp_path / "rgb.pt"), variant="imagery_single", epochs=1,
                           **KW)
    assert "footprint" not in load_checkpoint(tmp_path / "rgb.pt")[1]["outputs"]
    assert r["metrics"]["test"]["per_class"]["industrial"]["support"] > 0
    with pytest.raises(InputError, match="RESUME_FROM"):
        train_building_use(str(small_ds / "ds"), str(tmp_path / "y.pt"), variant="imagery_poi_single", epochs=1,
                           resume_from=str(tmp_path / "rgb.pt"), **KW)
    with pytest.raises(InputError, match="VARIANT"):
        train_building_use(str(small_ds / "ds"), str(tmp_path / "z.pt"), variant="nope", epochs=1, **KW)
    with pytest.raises(InputError, match="DATASET"):
        train_building_use(str(tmp_path), str(tmp_path / "z.pt"), epochs=1, **KW)


def test_damaged_chip_and_truncated_manifest_are_named(small_ds, tmp_path):
    """A damaged chip used to end in a zipfile traceback, a truncated manifest in a JSON parse error."""
    import json
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(small_ds / "ds_rgb", ds)
    chip = ds / json.loads((ds / "manifest.json").read_text())["chips"][0]["file"]
    chip.write_bytes(chip.read_bytes()[:100])
    with pytest.raises(InputError, match="DATASET: chip '.*' is missing, truncated or damaged"):
        train_building_use(str(ds), str(tmp_path / "x.pt"), variant="imagery_single", epochs=1, **KW)
    assert not (tmp_path / "x.pt").exists()
    text = (ds / "manifest.json").read_text()
    (ds / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(InputError, match="manifest.json' is truncated or damaged"):
        train_building_use(str(ds), str(tmp_path / "x.pt"), variant="imagery_single", epochs=1, **KW)
