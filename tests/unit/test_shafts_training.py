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


def test_extract_training_samples_from_files(tmp_path):
    import rasterio
    from affine import Affine
    from pyproj import Transformer
    from rasterio.crs import CRS

    from edifice.core.shafts_training import extract_training_samples

    def write(path, data, x0, y0, res, crs, nodata=None):
        with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                           count=data.shape[0], dtype=data.dtype, crs=crs,
                           transform=Affine(res, 0, x0, 0, -res, y0), nodata=nodata) as d:
            d.write(data)
        return str(path)

    rng = np.random.default_rng(0)
    wgs = CRS.from_epsg(4326)
    r = 8.9831528e-5
    s1 = write(tmp_path / "s1.tif", rng.uniform(-20, 0, (2, 120, 120)).astype(np.float32), 116.315, 39.99, r, wgs)
    s2 = write(tmp_path / "s2.tif", rng.uniform(0, 3000, (4, 120, 120)).astype(np.float32), 116.315, 39.99, r, wgs)
    dem = write(tmp_path / "dem.tif", rng.uniform(40, 60, (1, 40, 40)).astype(np.float32), 116.315, 39.99,
                2.7777778e-4, wgs)
    x0, y0 = Transformer.from_crs(4326, 32650, always_xy=True).transform(116.319, 39.986)
    lam = np.array([[[0.2, 0.001, 0.3], [0.25, 0.1, -9999]]], np.float32)   # 0.001 fails λp > 1/400
    hav = np.array([[[10, 12, 600], [8, 30, 9]]], np.float32)               # 600 m fails H <= 500
    utm = CRS.from_epsg(32650)
    fp = write(tmp_path / "lp.tif", lam, x0, y0, 100.0, utm, nodata=-9999)
    hp = write(tmp_path / "h.tif", hav, x0, y0, 100.0, utm, nodata=-9999)
    smp = extract_training_samples(s1, s2, dem, fp, hp, 100, padding=0.004)
    assert len(smp) == 3 and smp.x.shape == (3, 6, 20, 20) and smp.x.dtype == np.uint8
    np.testing.assert_allclose(sorted(smp.height), [8, 10, 30])
    assert smp.dem.shape == (3, 1, 20, 20) and np.isfinite(smp.dem).all()
