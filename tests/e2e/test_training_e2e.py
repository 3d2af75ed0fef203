"""The building-use training chain in real QGIS: POI maps -> training dataset -> training,
through qgis_process (one algorithm at a time) and the example graphical model."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("_use_scene", ROOT / "tests" / "unit" / "_use_scene.py")
S = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(S)
BANDS = ["red", "green", "blue", "p_residential", "p_commercial", "p_industrial"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("scene")
    sc = S.make_scene(d, size=256, seed=1)
    return sc


def _json(r):
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(r.stdout[r.stdout.index("{"):])


def _subsets_per_building(ds: Path, manifest: dict, buildings_path: str) -> list[set]:
    """For each polygon, the subsets whose chips label any of its pixels as building."""
    h, w = manifest["grid"]["height"], manifest["grid"]["width"]
    lab = {s: np.zeros((h, w), bool) for s in ("train", "val", "test")}
    for ch in manifest["chips"]:
        with np.load(ds / ch["file"]) as z:
            a = z["footprint"][:ch["height"], :ch["width"]]
        lab[ch["subset"]][ch["row"]:ch["row"] + ch["height"], ch["col"]:ch["col"] + ch["width"]] |= a == 1
    t = manifest["grid"]["transform"]  # a, b, c, d, e, f
    out = []
    for g in shapely.from_wkb(pyogrio.raw.read(buildings_path)[2]):
        x0, y0, x1, y1 = g.bounds
        c0, c1 = int(round((x0 - t[2]) / t[0])), int(round((x1 - t[2]) / t[0]))
        r0, r1 = int(round((y1 - t[5]) / t[4])), int(round((y0 - t[5]) / t[4]))
        out.append({s for s, m in lab.items() if m[r0:r1, c0:c1].any()})
    return out


def test_graphical_model_poi_dataset_training(qp, scene, tmp_path):
    from edifice.models.unet import load_model

    model = tmp_path / "chain.model3"
    shutil.copy(ROOT / "examples" / "poi_dataset_training.model3", model)
    maps, ds, ck = tmp_path / "maps.tif", tmp_path / "ds", tmp_path / "model.pt"
    r = qp("--json", "run", str(model), "--", f"imagery={scene['imagery']}", f"pois={scene['pois']}",
           "category_field=shop", "max_distances=12,12,20", f"buildings={scene['buildings']}", "use_field=building",
           "chip_size=64", "split_tile=64", "epochs=2", "base_width=4",
           f"poimaps:poi_maps={maps}", f"dataset:dataset={ds}", f"train:checkpoint={ck}")
    res = _json(r)["results"]
    assert res["train:checkpoint"] == str(ck) and res["dataset:dataset"] == str(ds)
    m = json.loads((ds / "manifest.json").read_text())
    # every polygon's mapped class is counted once, in exactly one subset
    truth = np.bincount(scene["classes"], minlength=4)
    subs = m["split"]["subsets"]
    for k, name in S.NAMES.items():
        assert sum(subs[s][name] for s in subs) == truth[k], name
    assert sum(subs[s]["buildings"] for s in subs) == len(scene["classes"])
    assert all(subs[s]["buildings"] > 0 for s in subs)
    per_building = _subsets_per_building(ds, m, scene["buildings"])
    assert max(len(s) for s in per_building) == 1  # no building labelled in two subsets
    assert sum(len(s) == 1 for s in per_building) >= 0.9 * len(per_building)
    assert m["sources"]["poi"]["resampled"] is False  # the POI maps were made on the imagery grid
    net, card = load_model(ck)
    assert [b["name"] for b in card["bands"]] == BANDS and net.in_channels == 6
    assert card["architecture"]["params"]["variant"] == "imagery_poi_multitask"
    assert card["training"]["epochs_run"] == 2 and set(card["metrics"]) == {"validation", "test"}


def test_qgis_process_steps_and_bad_input(qp, scene, tmp_path):
    maps, ds, ck = tmp_path / "maps.tif", tmp_path / "ds", tmp_path / "m.pt"
    _json(qp("--json", "run", "edifice:poiprobability", "--", f"INPUT={scene['pois']}", "CATEGORY_FIELD=shop",
             f"REFERENCE={scene['imagery']}", "MAX_DISTANCES=12,12,20", f"OUTPUT={maps}"))
    r = qp("run", "edifice:trainingdataset", "--", f"IMAGERY={scene['imagery']}", f"POI_RASTER={maps}",
           f"BUILDINGS={scene['buildings']}", "USE_FIELD=building", "CHIP_SIZE=64", "SPLIT_TILE=64",
           f"OUTPUT_FOLDER={ds}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "  train: " in r.stdout and "industrial" in r.stdout and f"MANIFEST:\t{ds / 'manifest.json'}" in r.stdout
    r = qp("run", "edifice:trainbuildinguse", "--", f"DATASET={ds}", "ENCODER=0", "BASE_WIDTH=4", "EPOCHS=1",
           "BATCH_SIZE=8", "DEVICE=auto", f"OUTPUT_CHECKPOINT={ck}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "epoch 1/1: train loss" in r.stdout and "Device used: cpu" in r.stdout
    assert "test per-class F1: background" in r.stdout
    # a checkpoint of another width for RESUME: clear error, no new file
    bad = tmp_path / "bad.pt"
    r = qp("run", "edifice:trainbuildinguse", "--", f"DATASET={ds}", "ENCODER=0", "BASE_WIDTH=8", "EPOCHS=1",
           f"RESUME={ck}", f"OUTPUT_CHECKPOINT={bad}")
    assert r.returncode != 0 and "RESUME: " in r.stdout + r.stderr
    assert not bad.exists()
