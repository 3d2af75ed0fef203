"""`edifice training-dataset` and `edifice train-building-use` (core/cli/training.py)."""
import importlib.util
import json
from pathlib import Path

import numpy as np

from edifice.core.cli import main
from edifice.models.unet import load_model

_spec = importlib.util.spec_from_file_location("_use_scene", Path(__file__).with_name("_use_scene.py"))
S = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(S)


def test_cli_dataset_and_training(tmp_path, capsys):
    sc = S.make_scene(tmp_path, size=192, seed=2)
    ds = tmp_path / "ds"
    rc = main(["training-dataset", sc["imagery"], sc["buildings"], str(ds), "--poi-points", sc["pois"],
               "--category-field", "shop", "--max-distances", "12,12,20", "--chip-size", "64", "--split-tile", "64"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    res = json.loads(out.out.strip().splitlines()[-1])
    assert res["manifest"] == f"{ds}/manifest.json" and res["bands"][-3:] == ["p_residential", "p_commercial",
                                                                               "p_industrial"]
    truth = np.bincount(sc["classes"], minlength=4)
    for k, name in S.NAMES.items():
        assert sum(res["subsets"][s][name] for s in res["subsets"]) == truth[k]
    assert "train: buildings" in out.err

    ck = tmp_path / "m.pt"
    rc = main(["train-building-use", str(ds), str(ck), "--encoder", "resnet18", "--base-width", "4", "--epochs", "2",
               "--batch-size", "4", "--device", "cpu"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    res = json.loads(out.out.strip().splitlines()[-1])
    assert res["device"] == "cpu" and res["epochs_run"] == 2 and set(res["f1"]) == {"validation", "test"}
    assert "epoch 2/2: train loss" in out.err
    net, card = load_model(ck)
    assert net.in_channels == 6 and len(card["bands"]) == 6

    # bad input: one line on stderr, exit status 2, nothing written
    rc = main(["train-building-use", str(ds), str(tmp_path / "x.pt"), "--variant", "imagery_poi_single",
               "--encoder", "resnet18", "--base-width", "8", "--resume", str(ck), "--epochs", "1", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "RESUME_FROM" in err and not (tmp_path / "x.pt").exists()
    rc = main(["training-dataset", sc["imagery"], sc["buildings"], str(tmp_path / "ds2"), "--use-preset", "csv"])
    assert rc == 2 and "MAPPING_FILE" in capsys.readouterr().err and not (tmp_path / "ds2").exists()
