"""Training loop details: early stopping keeps the best epoch's weights, cosine
annealing per step, torchvision-style pretrained encoders, atomic resume state."""
import importlib.util
import math
from pathlib import Path

import pytest
import torch

from edifice.core.use import training as T
from edifice.core.distributed import state_hash
from edifice.core.errors import InputError
from edifice.core.use.training import train_building_use
from edifice.core.use.training_dataset import create_training_dataset
from edifice.models.checkpoint import load_checkpoint
from edifice.models.resnet import ResNetEncoder

torch.set_num_threads(1)
_spec = importlib.util.spec_from_file_location("_use_scene", Path(__file__).with_name("_use_scene.py"))
S = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(S)

KW = dict(encoder="resnet18", base_width=4, batch_size=4, device="cpu", seed=3)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    d = tmp_path_factory.mktemp("stop")
    sc = S.make_scene(d, size=256, seed=2)
    create_training_dataset(sc["imagery"], sc["buildings"], str(d / "ds"), "building", poi_points_path=sc["pois"],
                            poi_category_field="shop", poi_max_distances=(12, 12, 20), chip_size=64, split_tile_m=64)
    return str(d / "ds")


def test_early_stopping_keeps_best_epoch_and_cosine_lr(ds, tmp_path, monkeypatch):
    """Validation loss scripted to improve for 2 epochs and then get worse: with
    patience 1 training stops after epoch 3 and the checkpoint holds epoch 2's
    weights (not the last ones)."""
    real = T.evaluate
    scripted = [1.0, 0.8, 0.9]  # epoch losses; later calls (final metrics) keep the real loss
    hashes, steps = [], []

    def fake_evaluate(model, *a, **k):
        out = real(model, *a, **k)
        hashes.append(state_hash(model.state_dict()))
        if len(hashes) <= len(scripted):
            out["loss"] = scripted[len(hashes) - 1]
        return out

    monkeypatch.setattr(T, "evaluate", fake_evaluate)
    real_step = torch.optim.lr_scheduler.CosineAnnealingLR.step

    def spy_step(self, *a, **k):
        real_step(self, *a, **k)
        steps.append(self.optimizer.param_groups[0]["lr"])

    monkeypatch.setattr(torch.optim.lr_scheduler.CosineAnnealingLR, "step", spy_step)
    r = train_building_use(ds, str(tmp_path / "m.pt"), epochs=6, patience=1, learning_rate=1e-2, **KW)
    assert r["stopped_early"] is True
    assert r["epochs_run"] == 3 and r["best_epoch"] == 2
    assert [h["improved"] for h in r["history"]] == [True, True, False]
    assert hashes[1] != hashes[2]  # epoch 3 did change the weights
    state, card = load_checkpoint(tmp_path / "m.pt")
    assert state_hash(state) == hashes[1]
    assert card["training"]["stopped_early"] is True and card["training"]["best_epoch"] == 2
    # the final metrics were computed on the restored best weights
    assert hashes[3] == hashes[1]
    # cosine annealing over all planned steps: lr_t = lr0 (1 + cos(pi t / T)) / 2, decreasing every step
    assert steps[0] == 1e-2  # the scheduler's own first step, at construction
    steps = steps[1:]
    per_epoch = len(steps) // 3
    total = per_epoch * 6
    assert len(steps) == 3 * per_epoch and per_epoch >= 2
    assert all(b < a for a, b in zip(steps, steps[1:]))
    for t, lr in enumerate(steps, start=1):
        assert lr == pytest.approx(1e-2 * (1 + math.cos(math.pi * t / total)) / 2, rel=1e-6)
    assert [h["lr"] for h in r["history"]] == [steps[per_epoch - 1], steps[2 * per_epoch - 1], steps[-1]]


def _torchvision_state(depth: str, seed: int) -> dict:
    """A state dict named like torchvision's resnet*.pth: conv1, bn1, layer1..4,
    fc.weight / fc.bias; no num_batches_tracked (as in the published files)."""
    torch.manual_seed(seed)
    enc = ResNetEncoder(depth, in_channels=3, base_width=64)
    sd = {k: v.clone() for k, v in enc.state_dict().items() if not k.endswith("num_batches_tracked")}
    for k, v in sd.items():  # make every tensor distinctive (running stats too)
        sd[k] = v + torch.randn_like(v.float()).to(v.dtype) * 0.01 if v.is_floating_point() else v
    sd["fc.weight"] = torch.randn(1000, 512)
    sd["fc.bias"] = torch.randn(1000)
    return sd


def test_pretrained_torchvision_encoder(ds, tmp_path, monkeypatch):
    sd = _torchvision_state("resnet34", 0)
    assert {k.split(".")[0] for k in sd} == {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"}
    path = tmp_path / "resnet34-tv.pth"
    torch.save(sd, path)
    loaded = {}
    real = T._load_pretrained

    def spy(model, p):
        real(model, p)
        loaded.update({k: v.detach().clone() for k, v in model.encoder.state_dict().items()})

    monkeypatch.setattr(T, "_load_pretrained", spy)
    r = train_building_use(ds, str(tmp_path / "p.pt"), epochs=1, encoder="resnet34", base_width=64, batch_size=4,
                           device="cpu", seed=0, augment=False, pretrained_encoder=str(path))
    assert r["epochs_run"] == 1 and loaded
    # before training: every encoder tensor is the file's; conv1 widened to the 6 bands
    w = loaded["conv1.weight"]
    assert w.shape == (64, 6, 7, 7)
    assert torch.equal(w[:, :3], sd["conv1.weight"])
    for c in range(3, 6):  # POI bands: mean of the RGB filters
        assert torch.allclose(w[:, c], sd["conv1.weight"].mean(dim=1), atol=1e-7)
    for k, v in sd.items():
        if k.startswith("fc.") or k == "conv1.weight":
            continue
        assert torch.equal(loaded[k], v), k
    assert not any(k.startswith("fc.") for k in loaded)
    # the trained model started from there (weights moved, but not far from the file)
    state, _ = load_checkpoint(tmp_path / "p.pt")
    enc_w = state["encoder.conv1.weight"]
    assert not torch.equal(enc_w, w) and float((enc_w - w).abs().mean()) < float(w.abs().mean())
    # a torchvision ResNet-18 file for a ResNet-34 model is refused, naming the fix
    p18 = tmp_path / "resnet18-tv.pth"
    torch.save(_torchvision_state("resnet18", 1), p18)
    with pytest.raises(InputError) as e:
        train_building_use(ds, str(tmp_path / "q.pt"), epochs=1, encoder="resnet34", base_width=64, batch_size=4,
                           device="cpu", pretrained_encoder=str(p18))
    assert e.value.name == "PRETRAINED_ENCODER" and "resnet34" in e.value.problem
    assert "same ResNet depth" in e.value.fix
    assert not (tmp_path / "q.pt").exists()
    # not a state dict at all
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(InputError, match="PRETRAINED_ENCODER"):
        train_building_use(ds, str(tmp_path / "q.pt"), epochs=1, **KW, pretrained_encoder=str(bad))


def test_resume_state_written_atomically(ds, tmp_path, monkeypatch):
    """A failure while writing the epoch-2 resume state leaves epoch 1's intact, and no partial file."""
    real_save = torch.save
    calls = []

    def flaky_save(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get("format") == T.STATE_FORMAT:
            calls.append(obj["epoch"])
            if obj["epoch"] == 2:
                with open(f, "wb") as fh:
                    fh.write(b"half")
                raise OSError("disk full")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", flaky_save)
    with pytest.raises(OSError, match="disk full"):
        train_building_use(ds, str(tmp_path / "a.pt"), epochs=2, **KW)
    assert calls == [1, 2]
    state = torch.load(tmp_path / "a.pt.resume.pt", map_location="cpu", weights_only=True)
    assert state["format"] == T.STATE_FORMAT and state["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "a.pt.resume.pt"]
