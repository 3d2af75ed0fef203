"""λ_B / λ_U (Eq. 7): the loss weighting, its checks, and the CLI options that set them."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from edifice.core.cli import build_parser, main
from edifice.core.errors import InputError
from edifice.core.use.losses import building_use_loss, dice_binary, dice_multiclass
from edifice.core.use.training import train_building_use
from edifice.models.checkpoint import load_checkpoint

torch.set_num_threads(1)
_spec = importlib.util.spec_from_file_location("_use_scene", Path(__file__).with_name("_use_scene.py"))
S = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(S)


def _batch():
    g = torch.Generator().manual_seed(0)
    out = {"use": torch.randn(2, 3, 8, 8, generator=g), "footprint": torch.randn(2, 1, 8, 8, generator=g)}
    a = torch.randint(0, 2, (2, 8, 8), generator=g)
    b = torch.where(a == 1, torch.randint(1, 4, (2, 8, 8), generator=g), torch.zeros_like(a))
    b[0, 0, :3] = 255
    return out, a, b


def test_building_use_loss_weights():
    out, a, b = _batch()
    lb, lu = float(dice_binary(out["footprint"], a)), float(dice_multiclass(out["use"], b))
    assert lb > 0.1 and lu > 0.1 and abs(lb - lu) > 1e-3  # the two terms are distinguishable
    loss, parts = building_use_loss(out, a, b, lambda_footprint=2.5, lambda_use=0.0)
    assert float(loss) == pytest.approx(2.5 * lb, rel=1e-6)
    assert parts == pytest.approx({"footprint": lb, "use": lu})
    loss, _ = building_use_loss(out, a, b, lambda_footprint=0.0, lambda_use=0.7)
    assert float(loss) == pytest.approx(0.7 * lu, rel=1e-6)
    loss, _ = building_use_loss(out, a, b, lambda_footprint=0.3, lambda_use=1.9)
    assert float(loss) == pytest.approx(0.3 * lb + 1.9 * lu, rel=1e-6)
    # single-task model (no footprint head): λ_B has no effect
    loss, parts = building_use_loss({"use": out["use"]}, a, b, lambda_footprint=5.0, lambda_use=2.0)
    assert float(loss) == pytest.approx(2.0 * lu, rel=1e-6) and "footprint" not in parts
    # gradients follow the weights: with λ_U = 0 the use head gets none
    out = {k: v.clone().requires_grad_(True) for k, v in out.items()}
    building_use_loss(out, a, b, lambda_footprint=1.0, lambda_use=0.0)[0].backward()
    assert float(out["use"].grad.abs().sum()) == 0.0 and float(out["footprint"].grad.abs().sum()) > 0


def test_cli_options_parse():
    a = build_parser().parse_args(["train-building-use", "ds", "m.pt", "--lambda-footprint", "0.5",
                                   "--lambda-use", "2"])
    assert (a.lambda_footprint, a.lambda_use) == (0.5, 2.0)
    a = build_parser().parse_args(["train-building-use", "ds", "m.pt"])
    assert (a.lambda_footprint, a.lambda_use) == (1.0, None)  # λ_U automatic (issue 16 item 10)


def test_lambdas_reach_training_and_are_checked(tmp_path, capsys):
    from edifice.core.use.training_dataset import create_training_dataset

    sc = S.make_scene(tmp_path, size=192, seed=2)
    ds = tmp_path / "ds"
    create_training_dataset(sc["imagery"], sc["buildings"], str(ds), "building", poi_points_path=sc["pois"],
                            poi_category_field="shop", poi_max_distances=(12, 12, 20), chip_size=64,
                            split_tile_m=64)
    ck = tmp_path / "m.pt"
    rc = main(["train-building-use", str(ds), str(ck), "--encoder", "resnet18", "--base-width", "4", "--epochs", "1",
               "--batch-size", "4", "--device", "cpu", "--lambda-footprint", "0.25", "--lambda-use", "3"])
    assert rc == 0, capsys.readouterr().err
    cfg = load_checkpoint(ck)[1]["training"]["config"]
    assert (cfg["lambda_footprint"], cfg["lambda_use"]) == (0.25, 3.0)
    json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # same run with λ_B = 0: only the use loss -> validation loss is 3 x L_U, i.e. a different number
    r0 = train_building_use(str(ds), str(tmp_path / "u.pt"), epochs=1, encoder="resnet18", base_width=4,
                            batch_size=4, device="cpu", lambda_footprint=0.0, lambda_use=3.0)
    r1 = train_building_use(str(ds), str(tmp_path / "v.pt"), epochs=1, encoder="resnet18", base_width=4,
                            batch_size=4, device="cpu", lambda_footprint=0.25, lambda_use=3.0)
    assert r0["best_val_loss"] != pytest.approx(r1["best_val_loss"])
    for kw, name in ((dict(lambda_footprint=-1.0), "LAMBDA_FOOTPRINT"), (dict(lambda_use=float("nan")), "LAMBDA_USE"),
                     (dict(lambda_footprint=0.0, lambda_use=0.0), "LAMBDA_USE")):
        with pytest.raises(InputError) as e:
            train_building_use(str(ds), str(tmp_path / "x.pt"), epochs=1, device="cpu", **kw)
        assert e.value.name == name
    with pytest.raises(InputError, match="no footprint head"):
        train_building_use(str(ds), str(tmp_path / "x.pt"), variant="imagery_poi_single", epochs=1, device="cpu",
                           lambda_use=0.0)
    rc = main(["train-building-use", str(ds), str(tmp_path / "x.pt"), "--lambda-use", "-2", "--device", "cpu"])
    assert rc == 2 and "LAMBDA_USE" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
