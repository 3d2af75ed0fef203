"""Known-ground-truth test of the building-use pipeline (dataset -> training -> held-out metrics).

Scene (tests/unit/_use_scene.py): 512 x 512 px at 1 m, 256 buildings on a 32-px lattice,
R:C:I = 0.45:0.30:0.25. Residential and commercial roofs are drawn from the same colour
distribution, so imagery alone cannot separate them; industrial roofs are larger, light and
striped (learnable from texture). 90 % of buildings carry one POI of their class at the centre;
with d_max = 12 m (R, C) / 20 m (I) the POI maps cover each building and not its neighbours
(centres are >= 24 m apart).

Thresholds, fixed from this reasoning before the first run:
* imagery + POI, multi-task: every class's pixel-level test F1 >= 0.6. A perfect model
  reaches ~0.9 for R and C (10 % of buildings lack a POI and must be guessed) and ~1 for I;
  0.6 leaves room for boundary errors of a short CPU run.
* imagery only cannot tell R from C: whatever it does, mean F1 over R and C stays near 0.5
  or below (all R/C roofs called R gives F1_R ~ 0.75, F1_C = 0). The POI model must beat it
  on mean(F1_R, F1_C) by >= 0.15 and on mean F1 over R, C, I.
"""
import importlib.util
import time
from pathlib import Path

import pytest
import torch

from edifice.core.use.training import train_building_use
from edifice.core.use.training_dataset import create_training_dataset

torch.set_num_threads(1)
_spec = importlib.util.spec_from_file_location("_use_scene", Path(__file__).with_name("_use_scene.py"))
S = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(S)


@pytest.mark.slow
def test_poi_multitask_learns_use_and_beats_imagery_only(tmp_path):
    t0 = time.monotonic()
    sc = S.make_scene(tmp_path, size=512, seed=0, polygons_crs=S.CRS_LL)
    ds = tmp_path / "ds"
    create_training_dataset(sc["imagery"], sc["buildings"], str(ds), "building", poi_points_path=sc["pois"],
                            poi_category_field="shop", poi_max_distances=(12, 12, 20), chip_size=64,
                            split_tile_m=64, seed=0)
    kw = dict(encoder="resnet18", base_width=8, epochs=60, batch_size=8, patience=100, device="cpu", seed=0)
    full = train_building_use(str(ds), str(tmp_path / "full.pt"), variant="imagery_poi_multitask", **kw)
    rgb = train_building_use(str(ds), str(tmp_path / "rgb.pt"), variant="imagery_single", **kw)
    f = {c: full["metrics"]["test"]["per_class"][c]["f1"] for c in ("residential", "commercial", "industrial")}
    g = {c: rgb["metrics"]["test"]["per_class"][c]["f1"] for c in ("residential", "commercial", "industrial")}
    print(f"\nimagery+POI multi-task test F1 {f}\nimagery-only test F1 {g}\n{time.monotonic() - t0:.1f} s")
    assert all(v >= 0.6 for v in f.values()), f
    rc_full = (f["residential"] + f["commercial"]) / 2
    rc_rgb = (g["residential"] + g["commercial"]) / 2
    assert rc_full >= rc_rgb + 0.15, (f, g)
    assert sum(f.values()) > sum(g.values()), (f, g)
