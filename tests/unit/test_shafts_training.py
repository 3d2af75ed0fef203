"""SHAFTS training: losses, augmentation, a learnable synthetic problem, checkpoint round trip."""
import math

import numpy as np
import pytest
import torch

from edifice.core.height.shafts_training import (PatchSamples, _uncertainty_module, adaptive_huber, augment_batch, nmad,
                                          train_shafts)
from edifice.models.shafts import build_shafts_model, load_shafts_checkpoint
from edifice.core.errors import InputError

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


# Independent re-computations from the paper's formulas (SHAFTS, GMD 2023, Sect. 2.3-2.4)
def _nmad_by_hand(y):                          # Eq. 8: 1.4826 · q50(|y − q50(y)|)
    y = np.asarray(y, np.float64)
    return 1.4826 * np.median(np.abs(y - np.median(y)))


def _huber_by_hand(r, delta):                  # Eq. 7, mean over samples
    r = np.abs(np.asarray(r, np.float64))
    return float(np.mean(np.where(r < delta, r * r / (2 * delta), r - delta / 2)))


def _sgdr_lr(lr0, finished, t0=5, t_mult=2):   # Eq. 10 with lr_min = 0 after `finished` epochs
    start, period = 0, t0
    while finished >= start + period:          # T0 = 5, T1 = 10, T2 = 20, ...
        start, period = start + period, period * t_mult
    return 0.5 * lr0 * (1 + math.cos(math.pi * (finished - start) / period))


def _train_mode_outputs(model, samples):
    """The network's outputs on the whole training set as ONE batch in training mode (BatchNorm on batch
    statistics), i.e. what an epoch with batch_size >= N sees before its optimiser step."""
    model.train()
    with torch.no_grad():
        out = model(torch.from_numpy(samples.x).float() / 255.0, torch.from_numpy(samples.dem))
    return {k: v.double().numpy() for k, v in out.items()}


def _initial_model(task="multi", seed=0):
    torch.manual_seed(seed)                    # train_shafts seeds torch this way before building the net
    return build_shafts_model(100, task, 1)


def test_loss_decreases_on_learnable_problem(tmp_path):
    train, val = _synthetic(48, 0), _synthetic(16, 1)
    out = train_shafts(train, val, 100, tmp_path / "m.pt", task="multi", weighting="fixed", epochs=4,
                       batch_size=16, lr=1e-2, augment=False, device="cpu")
    # δ adapts between epochs (Eq. 9), so judge learning by the training RMSE, which does not depend on it
    for k, factor in (("footprint", 0.5), ("height", 0.95)):    # height starts far (~20 m) and moves slowly
        rmse = [h["train_rmse"][k] for h in out["history"]]
        assert rmse[-1] < factor * rmse[0], (k, rmse)
    # cosine annealing (Eq. 10, T0 = 5): "lr" is the rate after the epoch's scheduler step
    for h in out["history"]:
        assert h["lr"] == pytest.approx(_sgdr_lr(1e-2, h["epoch"]), rel=1e-9, abs=1e-12), h
    assert out["history"][0]["lr"] < 1e-2
    ck = load_shafts_checkpoint(tmp_path / "m.pt")
    assert ck.source == "edifice" and ck.resolution_m == 100 and ck.task == "multi"
    assert set(ck.card["metrics"]["val"]) == {"footprint", "height"}
    assert ck.card["training"]["best_epoch"] == out["best_epoch"]


def test_uncertainty_weighting_eq5_by_hand():
    w = _uncertainty_module()
    sig2 = torch.tensor([4.0, 0.5])                           # σ1², σ2²
    with torch.no_grad():
        w.log_var.copy_(torch.log(sig2))                      # the trained parameters are log σ²
    l_fp, l_h = torch.tensor(2.0), torch.tensor(3.0)
    loss = w(l_fp, l_h)
    # Eq. 5: L = Loss_λp / (2σ1²) + Loss_H / (2σ2²) + log σ1 + log σ2
    expected = 2.0 / (2 * 4.0) + 3.0 / (2 * 0.5) + math.log(2.0) + math.log(math.sqrt(0.5))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()                                           # ∂L/∂s_i = ½ − ½ e^(−s_i) L_i
    np.testing.assert_allclose(w.log_var.grad.numpy(), [0.5 - 0.5 * 2.0 / 4.0, 0.5 - 0.5 * 3.0 / 0.5],
                               rtol=1e-6)


def test_uncertainty_weighting_and_single_task_run(tmp_path):
    train, val = _synthetic(12, 2), _synthetic(4, 3)
    lr = 0.01
    out = train_shafts(train, val, 100, tmp_path / "u.pt", weighting="uncertainty", epochs=2, batch_size=12,
                       lr=lr, augment=False, device="cpu")
    h = out["history"]
    assert len(h[0]["log_var"]) == 2
    # epoch 1 is one batch (batch_size = N), so its loss is Eq. 5 at log σ² = 0 (½ L_λp + ½ L_H) of the
    # initial network, with δ = NMAD of the targets (Eq. 8)
    pred = _train_mode_outputs(_initial_model(), train)
    l_fp = _huber_by_hand(pred["footprint"] - train.footprint, _nmad_by_hand(train.footprint))
    l_h = _huber_by_hand(pred["height"] - train.height, _nmad_by_hand(train.height))
    assert l_fp < 1 < l_h                                     # sigmoid footprint; heights 5-35 m vs. ~0 m
    assert h[0]["train_loss"] == pytest.approx(0.5 * l_fp + 0.5 * l_h, rel=1e-4)
    # log σ² are learned: ∂L/∂s = ½(1 − L_i) at s = 0, so Adam's first step (≈ lr · sign) lowers the
    # footprint's (L < 1) and raises the height's (L > 1); they keep moving in the second epoch
    s1, s2 = h[0]["log_var"], h[1]["log_var"]
    assert s1[0] == pytest.approx(-lr, rel=1e-3) and s1[1] == pytest.approx(lr, rel=1e-3), s1
    assert s2[0] < s1[0] < 0 < s1[1] < s2[1], (s1, s2)
    out = train_shafts(train, val, 100, tmp_path / "s.pt", task="height", epochs=1, batch_size=6,
                       lr=1e-3, device="cpu")
    assert load_shafts_checkpoint(tmp_path / "s.pt").task == "height"
    assert "log_var" not in out["history"][0]                 # single task: no loss weighting


def test_warm_restart_and_adaptive_delta(tmp_path):
    """Eq. 10 warm restart after T0 = 5 epochs, and Eq. 9: δ after epoch i is the 90th percentile of that
    epoch's absolute training residuals, recomputed here from the networks the epochs started with."""
    train, val = _synthetic(8, 4), _synthetic(4, 5)
    kw = dict(task="multi", weighting="fixed", batch_size=8, lr=1e-2, augment=False, device="cpu")
    out = train_shafts(train, val, 100, tmp_path / "six.pt", epochs=6, **kw)
    lrs = [h["lr"] for h in out["history"]]
    for n, v in enumerate(lrs, start=1):
        assert v == pytest.approx(_sgdr_lr(1e-2, n), rel=1e-9, abs=1e-12), lrs
    assert lrs[3] < 1e-3 and lrs[4] == pytest.approx(1e-2)    # restart: back to the initial rate
    assert lrs[5] == pytest.approx(0.5e-2 * (1 + math.cos(math.pi / 10)))   # next cycle is T1 = 10 long

    # epoch 1 starts from the initial network: fixed weights (100 : 1), δ = NMAD (Eq. 8)
    pred0 = _train_mode_outputs(_initial_model(), train)
    r0 = {k: np.abs(pred0[k] - getattr(train, k)) for k in ("footprint", "height")}
    loss0 = (100 * _huber_by_hand(r0["footprint"], _nmad_by_hand(train.footprint))
             + _huber_by_hand(r0["height"], _nmad_by_hand(train.height)))
    assert out["history"][0]["train_loss"] == pytest.approx(loss0, rel=1e-4)
    for k in r0:
        assert out["history"][0]["delta"][k] == pytest.approx(np.percentile(r0[k], 90), rel=1e-5), k
        assert out["history"][0]["delta"][k] != pytest.approx(_nmad_by_hand(getattr(train, k)), rel=1e-3)
    # epoch 2 starts from the network after epoch 1 = the checkpoint of a 1-epoch run with the same seed
    train_shafts(train, val, 100, tmp_path / "one.pt", epochs=1, **kw)
    pred1 = _train_mode_outputs(load_shafts_checkpoint(tmp_path / "one.pt").model, train)
    for k in r0:
        r1 = np.abs(pred1[k] - getattr(train, k))
        assert out["history"][1]["delta"][k] == pytest.approx(np.percentile(r1, 90), rel=1e-5), k
        assert not np.allclose(r1, r0[k])                     # the network did change


def test_extract_training_samples_from_files(tmp_path):
    import rasterio
    from affine import Affine
    from pyproj import Transformer
    from rasterio.crs import CRS

    from edifice.core.height.shafts_training import extract_training_samples

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


def test_seeded_training_is_independent_of_the_ambient_thread_count(tmp_path):
    """Issue 16 item 4: the run sets its own intra-op thread count and deterministic algorithms, so
    the caller's torch thread setting (QGIS, OMP_NUM_THREADS, a notebook) does not change the weights."""
    import torch

    from edifice.models.checkpoint import load_checkpoint

    train, val = _synthetic(24, 5), _synthetic(6, 6)
    before = torch.get_num_threads()
    states = []
    for ambient in (1, 2):
        torch.set_num_threads(ambient)
        out = train_shafts(train, val, 100, tmp_path / f"t{ambient}.pt", epochs=2, batch_size=8, device="cpu",
                           threads=2, seed=7)
        assert out["threads"] == 2 and torch.get_num_threads() == ambient  # restored after the run
        states.append(load_checkpoint(str(tmp_path / f"t{ambient}.pt"))[0])
    torch.set_num_threads(before)
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    with pytest.raises(InputError, match="TASK"):
        train_shafts(train, val, 100, tmp_path / "x.pt", task="both", epochs=1, device="cpu")
