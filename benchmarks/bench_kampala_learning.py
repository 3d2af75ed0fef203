"""Learning footprints from real imagery (issue 16 item 10): train on the west of the Kampala scene,
map the east, score against the OSM footprints there.

Data: ``../shared/data/kampala`` (or ``--data``): the 50 cm RGB (EPSG:32636, nodata 0; two covered
patches, a dense south-west one and a north-east one) and 206 OSM footprints. The scene is cut at
``--split-col`` (a column of the 50 cm grid, through the north-east patch): training sees the
imagery west of it (east set to nodata), mapping runs on the imagery east of it (west set to nodata).
``--gsd 0.25`` uses the 7.5 cm mosaic averaged to 25 cm instead (same cut, in metres).

Scores on the east (valid imagery only): pixel IoU of the footprint mask, and building-level
precision / recall / F1 where a reference building and a predicted connected component (8-neighbour)
match one to one when their IoU >= 0.5 (greedy, best IoU first).

Configurations, each trained with the same budget (``--epochs``, ``--encoder``, ``--base-width``):

* ``before``: the first wave's defaults: building chips only, λ_U = 1 on footprint-only data, a
  6:2:2 split, mapped with windows of the chip size (256 px, 32 px margin);
* ``after``: this issue's defaults: background chips (0.5 per building chip), λ_U automatic (0),
  mapped with the seed's 1024 px windows;
* ``small``: ``after`` with the options this issue adds for small datasets: 128 px chips every
  64 px (half-overlapping) and an 8:2:0 split (no test subset: the east is the test).

Figures are printed as measured and as ratios after / before (same run, same machine).
Run: ``nice -n 10 python benchmarks/bench_kampala_learning.py [--epochs 40] [--threads 2]``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA_CANDIDATES = (ROOT.parent / "shared" / "data" / "kampala", Path("/work/shared/data/kampala"))
UTM = "EPSG:32636"

CONFIGS = {
    "before": {"background_ratio": 0.0, "lambda_use": 1.0, "split_ratios": (6, 2, 2), "window": 256, "overlap": 32,
               "chip_size": 256, "chip_stride": None},
    "after": {"background_ratio": 0.5, "lambda_use": None, "split_ratios": (6, 2, 2), "window": None,
              "overlap": None, "chip_size": 256, "chip_stride": None},
    "small": {"background_ratio": 0.5, "lambda_use": None, "split_ratios": (8, 2, 0), "window": None,
              "overlap": None, "chip_size": 128, "chip_stride": 64},
}


# ---------------------------------------------------------------- data
def _data_dir(arg: str | None) -> Path:
    for d in ([Path(arg)] if arg else list(DATA_CANDIDATES)):
        if (d / "kampala_rgb_50cm.tif").is_file():
            return d
    raise SystemExit("Kampala data not found: give --data (a folder with kampala_rgb_50cm.tif).")


def _imagery(data: Path, gsd: float, work: Path) -> Path:
    """The RGB at ``gsd`` metres in EPSG:32636 (the 50 cm file, or the 7.5 cm mosaic averaged)."""
    if abs(gsd - 0.5) < 1e-9:
        return data / "kampala_rgb_50cm.tif"
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import calculate_default_transform

    out = work / f"kampala_rgb_{int(gsd * 100)}cm.tif"
    with rasterio.open(data / "kampala_rgb_7p5cm_epsg3857.tif") as src:
        t, w, h = calculate_default_transform(src.crs, UTM, src.width, src.height, *src.bounds, resolution=gsd)
        with WarpedVRT(src, crs=UTM, transform=t, width=w, height=h, resampling=Resampling.average,
                       src_nodata=0, nodata=0) as vrt:
            prof = dict(driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs=UTM, transform=t,
                        nodata=0, tiled=True, compress="deflate")
            with rasterio.open(out, "w", **prof) as dst:
                dst.write(vrt.read())
    return out


def _buildings(data: Path):
    import pyogrio.raw
    import shapely
    from pyproj import Transformer

    _, _, wkb, _ = pyogrio.raw.read(str(data / "buildings_osm.geojson"))
    tr = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    return shapely.transform(shapely.from_wkb(wkb), lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def prepare(data: Path, gsd: float, split_x: float, work: Path) -> dict:
    """West and east imagery (the other side set to nodata), the footprints (GeoPackage, UTM) and
    the east reference: building id per pixel and the valid-pixel mask."""
    import pyogrio.raw
    import rasterio
    import shapely
    from rasterio import features

    img = _imagery(data, gsd, work)
    geoms = _buildings(data)
    bpath = work / "buildings_utm.gpkg"
    pyogrio.raw.write(str(bpath), shapely.to_wkb(geoms), [np.arange(len(geoms))], ["id"], driver="GPKG",
                      geometry_type="Polygon", crs=UTM)
    with rasterio.open(img) as src:
        prof, a, t = src.profile, src.read(), src.transform
    col = int(round((split_x - t.c) / t.a))
    out = {}
    for side, keep in (("west", slice(0, col)), ("east", slice(col, None))):
        b = np.zeros_like(a)
        b[:, :, keep] = a[:, :, keep]
        out[side] = work / f"{side}.tif"
        with rasterio.open(out[side], "w", **dict(prof, nodata=0)) as dst:
            dst.write(b)
    valid = (a != 0).any(axis=0)
    valid[:, :col] = False
    ids = features.rasterize([(g, i + 1) for i, g in enumerate(geoms)], out_shape=valid.shape, transform=t,
                             dtype="int32")
    return {"west": out["west"], "east": out["east"], "buildings": bpath, "valid": valid, "ref_ids": ids,
            "transform": t, "n_west": int(np.unique(ids[:, :col][(a[:, :, :col] != 0).any(0)]).size - 1)}


# ---------------------------------------------------------------- scores
def pixel_iou(pred: np.ndarray, ref: np.ndarray, valid: np.ndarray) -> float:
    p, r = pred & valid, ref & valid
    union = (p | r).sum()
    return float((p & r).sum() / union) if union else float("nan")


def building_f1(pred: np.ndarray, ref_ids: np.ndarray, valid: np.ndarray, min_iou: float = 0.5) -> dict:
    """One-to-one matches of reference buildings (ids > 0 with half their pixels or more on valid
    imagery) and predicted 8-connected components, by IoU >= ``min_iou`` (greedy, best first)."""
    from scipy import ndimage

    comp, n_pred = ndimage.label(pred & valid, structure=np.ones((3, 3)))
    ids = np.unique(ref_ids[ref_ids > 0])
    keep = [i for i in ids if valid[ref_ids == i].mean() >= 0.5]
    ref = np.where(np.isin(ref_ids, keep) & valid, ref_ids, 0)
    area_r = {i: int((ref == i).sum()) for i in keep}
    area_p = np.bincount(comp.ravel(), minlength=n_pred + 1)
    both = (ref > 0) & (comp > 0)
    pairs, inter = np.unique(np.stack([ref[both], comp[both]]), axis=1, return_counts=True)
    cand = sorted(((k / (area_r[r] + area_p[p] - k), r, p) for (r, p), k in zip(pairs.T, inter)), reverse=True)
    used_r, used_p, tp = set(), set(), 0
    for iou, r, p in cand:
        if iou < min_iou:
            break
        if r not in used_r and p not in used_p:
            used_r.add(r)
            used_p.add(p)
            tp += 1
    prec = tp / n_pred if n_pred else 0.0
    rec = tp / len(keep) if keep else 0.0
    f1 = 2 * tp / (n_pred + len(keep)) if (n_pred + len(keep)) else 0.0
    return {"tp": tp, "reference": len(keep), "predicted": int(n_pred), "precision": prec, "recall": rec, "f1": f1}


# ---------------------------------------------------------------- runs
def _log():
    """A progress object that prints the training log (epoch lines) to stderr."""
    import sys

    from edifice.core.progress import Progress

    class Log(Progress):
        def info(self, message):
            print("   ", message, file=sys.stderr, flush=True)

    return Log()


def run(name: str, cfg: dict, prep: dict, work: Path, a) -> dict:
    import rasterio
    import torch

    from edifice.core.use.building_use_map import map_building_use
    from edifice.core.use.training import train_building_use
    from edifice.core.use.training_dataset import create_training_dataset

    torch.set_num_threads(a.threads)
    ds = work / f"ds_{name}"
    t0 = time.monotonic()
    m = create_training_dataset(str(prep["west"]), str(prep["buildings"]), str(ds), None,
                                chip_size=cfg["chip_size"], chip_stride=cfg["chip_stride"],
                                split_tile_m=a.split_tile, split_ratios=cfg["split_ratios"],
                                background_ratio=cfg["background_ratio"], seed=a.seed)
    ck = work / f"{name}.pt"
    summary = train_building_use(str(ds), str(ck), variant="imagery_multitask", encoder=a.encoder,
                                 base_width=a.base_width, epochs=a.epochs, batch_size=a.batch_size,
                                 learning_rate=a.lr, lambda_use=cfg["lambda_use"], patience=a.patience,
                                 device="cpu", seed=a.seed, progress=_log())
    t_train = time.monotonic() - t0
    fm = work / f"{name}_footprint.tif"
    map_building_use(str(prep["east"]), str(ck), footprint_mask=str(fm), device="cpu", window=cfg["window"],
                     overlap=cfg["overlap"], resume=False)
    with rasterio.open(fm) as src:
        pred = src.read(1) == 1
    ref = prep["ref_ids"] > 0
    sub = m["split"]["subsets"]
    return {"config": name, "train_chips": sub["train"]["chips"], "background_chips": sum(
        sub[s].get("background_chips", 0) for s in sub), "train_buildings": sub["train"]["buildings"],
            "epochs_run": summary["epochs_run"], "best_epoch": summary["best_epoch"],
            "val_loss_history": [round(h["val_loss"], 4) for h in summary["history"]],
            "train_seconds": round(t_train, 1), "pixel_iou": pixel_iou(pred, ref, prep["valid"]),
            **{f"building_{k}": v for k, v in building_f1(pred, prep["ref_ids"], prep["valid"]).items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="folder of the Kampala data (default ../shared/data/kampala)")
    p.add_argument("--gsd", type=float, default=0.5, help="0.5 (the 50 cm file) or e.g. 0.25 (from 7.5 cm)")
    p.add_argument("--split-col", type=int, default=1150, help="column of the 50 cm grid where the east begins")
    p.add_argument("--configs", default="before,after,small")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--base-width", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--split-tile", type=float, default=64.0, help="metres")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=None, help="keep the intermediate files here")
    a = p.parse_args(argv)
    import rasterio
    data = _data_dir(a.data)
    with rasterio.open(data / "kampala_rgb_50cm.tif") as src:
        split_x = src.transform.c + a.split_col * src.transform.a
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        prep = prepare(data, a.gsd, split_x, work)
        print(f"Kampala at {a.gsd:g} m, cut at x = {split_x:.1f} (EPSG:32636): {prep['n_west']} buildings on the "
              f"west imagery; east: {int(prep['valid'].sum())} valid pixels")
        results = []
        for name in a.configs.split(","):
            r = run(name, CONFIGS[name], prep, work, a)
            results.append(r)
            print(json.dumps(r))
    print(f"\n{'config':8} {'train s':>8} {'chips':>6} {'bg':>4} {'epochs':>6} {'pixel IoU':>9} {'bldg P':>7} "
          f"{'bldg R':>7} {'bldg F1':>7}")
    for r in results:
        print(f"{r['config']:8} {r['train_seconds']:8.0f} {r['train_chips']:6d} {r['background_chips']:4d} "
              f"{r['epochs_run']:6d} {r['pixel_iou']:9.3f} {r['building_precision']:7.3f} {r['building_recall']:7.3f} "
              f"{r['building_f1']:7.3f}")
    b = results[0]
    for f in results[1:]:
        ratio = (lambda k: f"{f[k] / b[k]:.2f}" if b[k] else f"n/a ({b['config']} = 0)")
        print(f"ratios {f['config']}/{b['config']}: pixel IoU {ratio('pixel_iou')}, building F1 "
              f"{ratio('building_f1')}, training time {ratio('train_seconds')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
