"""SHAFTS training: losses, augmentation, a learnable synthetic problem, checkpoint round trip."""
import numpy as np
import pytest
import torch

from edifice.core.shafts_training import (PatchSamples, adaptive_huber, augment_batch, nmad, train_shafts)
from edifice.models.shafts import load_shafts_checkpoint

torch.set_num_threads(1)


def test_adaptive_huber_and_nmad_hand_checked():
    pred = torch.tensor([0.0, 0.5, 3.0])
    y = torch.zeros(3)
    # δ = 1: 0, 0.25/2 = 0.125, 3 - 0.5 = 2.5 -> mean 2.625/3
    assert float(adaptive_huber(pred, y, 1.0)) == pytest.approx(2.625 / 3)
    assert nmad([1, 2, 3, 4, 100]) == pytest.approx(1.4826 * 1.0)


def test_augment_keeps_shapes_range_and_flips_dem_with_x():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 6, 20, 20, generator=g)
    d = torch.arange(400, dtype=torch.float32).view(1, 1, 20, 20).repeat(64, 1, 1, 1)
    xa, da = augment_batch(x, d, g)
    assert xa.shape == x.shape and da.shape == d.shape and xa.min() >= 0 and xa.max() <= 1
    flipped = ~(da == d).all(dim=(1, 2, 3))
    assert 10 < int(flipped.sum()) < 54                      # about half flipped
    for i in torch.nonzero(flipped)[:, 0]:                   # the DEM is only ever flipped, not changed
        assert torch.equal(da[i], d[i].flip(-1)) or torch.equal(da[i], d[i].flip(-2))
    assert not torch.equal(xa, x)


def _synthetic(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 6, 20, 20), dtype=np.uint8)
    lvl = rng.uniform(0, 1, n)
    x[:, 2] = (lvl[:, None, None] * 200 + rng.integers(0, 40, (n, 20, 20))).astype(np.uint8)
    dem = (rng.normal(50, 5, size=(n, 1, 20, 20))).astype(np.float32)
    foot = (0.05 + 0.5 * lvl).astype(np.float32)
    height = (5 + 30 * lvl).astype(np.float32)
    return PatchSamples(x, dem, foot, height)


def test_loss_decreases_on_learnable_problem(tmp_path):
    train, val = _synthetic(48, 0), _synthetic(16, 1)
    out = train_shafts(train, val, 100, tmp_path / "m.pt", task="multi", weighting="fixed", epochs=4,
                       batch_size=16, lr=1e-2, augment=False, device="cpu")
    # δ adapts between epochs (Eq. 9), so judge learning by the training RMSE, which does not depend on it
    for k, factor in (("footprint", 0.5), ("height", 0.95)):    # height starts far (~20 m) and moves slowly
        rmse = [h["train_rmse"][k] for h in out["history"]]
        assert rmse[-1] < factor * rmse[0], (k, rmse)
    assert out["history"][0]["lr"] < 1e-2                      # cosine annealing stepped
    ck = load_shafts_checkpoint(tmp_path / "m.pt")
    assert ck.source == "edifice" and ck.resolution_m == 100 and ck.task == "multi"
    assert set(ck.card["metrics"]["val"]) == {"footprint", "height"}
    assert ck.card["training"]["best_epoch"] == out["best_epoch"]


def test_uncertainty_weighting_and_single_task_run(tmp_path):
    train, val = _synthetic(12, 2), _synthetic(4, 3)
    out = train_shafts(train, val, 100, tmp_path / "u.pt", weighting="uncertainty", epochs=1, batch_size=6,
                       device="cpu")
    assert len(out["history"][0]["log_var"]) == 2
    out = train_shafts(train, val, 100, tmp_path / "s.pt", task="height", epochs=1, batch_size=6,
                       lr=1e-3, device="cpu")
    assert load_shafts_checkpoint(tmp_path / "s.pt").task == "height"
