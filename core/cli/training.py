"""CLI commands of building-use training: ``edifice training-dataset`` and
``edifice train-building-use`` (same core functions as ``edifice:trainingdataset``
and ``edifice:trainbuildinguse``). Registered by :func:`add_commands`.

Several GPUs: ``torchrun --nproc_per_node=N -m edifice.core.cli train-building-use ...``
trains data-parallel (DistributedDataParallel; ``--batch-size`` is per process);
only rank 0 logs and prints the result."""
from __future__ import annotations

import argparse

from ..progress import TerminalProgress

VARIANTS = ("imagery_single", "imagery_poi_single", "imagery_poi_multitask", "imagery_multitask")


def _ratios(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers")


def _cmd_dataset(a) -> dict:
    from .options import point_columns
    from ..use.training_dataset import SUBSETS, create_training_dataset

    progress = TerminalProgress()
    m = create_training_dataset(
        a.imagery, a.buildings, a.output, a.use_field or None, use_preset=a.use_preset, mapping_file=a.mapping_file,
        buildings_layer=a.buildings_layer, poi_raster_path=a.poi_raster, poi_points_path=a.poi_points,
        poi_layer=a.poi_layer, poi_category_field=a.category_field, poi_preset=a.preset,
        poi_mapping_file=a.poi_mapping_file, poi_max_distances=a.max_distances, chip_size=a.chip_size,
        split_tile_m=a.split_tile or None, split_ratios=a.split_ratios, seed=a.seed,
        min_building_pixels=a.min_building_pixels, overwrite=a.overwrite, poi_columns=point_columns(a),
        background_ratio=a.background_ratio, chip_stride=a.chip_stride or None,
        progress=progress)
    subsets = m["split"]["subsets"]
    for s in SUBSETS:
        progress.info(f"{s}: " + ", ".join(f"{k} {subsets[s][k]}" for k in
                                           ("buildings", "residential", "commercial", "industrial", "unknown",
                                            "chips")))
    return {"output": a.output, "manifest": f"{a.output.rstrip('/')}/manifest.json",
            "bands": [b["name"] for b in m["bands"]], "chips": len(m["chips"]),
            "subsets": {s: {k: v for k, v in subsets[s].items() if k != "pixels"} for s in SUBSETS}}


def _cmd_train(a) -> dict | None:
    from ..distributed import is_main_process
    from ..use.training import train_building_use

    r = train_building_use(a.dataset, a.output, variant=a.variant, encoder=a.encoder, base_width=a.base_width,
                           epochs=a.epochs, max_iterations=a.max_iterations, batch_size=a.batch_size,
                           learning_rate=a.learning_rate, lambda_footprint=a.lambda_footprint,
                           lambda_use=a.lambda_use, patience=a.patience, device=a.device, amp=not a.no_amp,
                           seed=a.seed, augment=not a.no_augment, num_workers=a.num_workers,
                           resume_from=a.resume, pretrained_encoder=a.pretrained_encoder,
                           progress=TerminalProgress())
    if not is_main_process():
        return None
    f1 = {sub: {c: m["per_class"][c]["f1"] for c in ("residential", "commercial", "industrial")}
          | {"mean_f1_use": m["mean_f1_use"]} for sub, m in r["metrics"].items()}
    return {"output": r["output"], "device": r["device"], "epochs_run": r["epochs_run"],
            "best_epoch": r["best_epoch"], "best_val_loss": r["best_val_loss"], "f1": f1,
            "resume_state": r["resume_state"]}


def add_commands(subparsers) -> None:
    """Add ``training-dataset`` and ``train-building-use`` to the CLI's subparsers."""
    d = subparsers.add_parser("training-dataset", help="building-use training chips (imagery + POI maps + labels)")
    d.add_argument("imagery", help="imagery raster (e.g. RGB GeoTIFF)")
    d.add_argument("buildings", help="building polygons (GeoPackage, GeoJSON, Shapefile)")
    d.add_argument("output", help="dataset folder to create")
    d.add_argument("--buildings-layer", default=None)
    d.add_argument("--use-field", default="building", help="attribute holding the use; '' = footprint only")
    d.add_argument("--use-preset", default="osm_building", choices=["osm_building", "eubucco_type", "csv"])
    d.add_argument("--mapping-file", default=None, help="CSV value,class for --use-preset csv")
    g = d.add_mutually_exclusive_group()
    g.add_argument("--poi-raster", default=None, help="POI probability maps (3 bands R,C,I)")
    g.add_argument("--poi-points", default=None, help="POI points: maps computed on the imagery grid")
    d.add_argument("--poi-layer", default=None, help="layer of --poi-points (e.g. 'points' of an .osm.pbf)")
    from .options import add_point_column_arguments
    add_point_column_arguments(d, "poi-")
    d.add_argument("--category-field", default="other_tags", help="POI category field")
    d.add_argument("--preset", default="osm", choices=["osm", "gbt35648", "overture", "google_places", "csv"],
                   help="POI category preset")
    d.add_argument("--poi-mapping-file", default=None)
    d.add_argument("--max-distances", default=None, help="POI d_max in metres, R,C,I (500,500,1500)")
    d.add_argument("--chip-size", type=int, default=256, help="pixels")
    d.add_argument("--split-tile", type=float, default=0.0, help="split tile edge in metres (0 = 4 chips)")
    d.add_argument("--split-ratios", type=_ratios, default=[0.6, 0.2, 0.2],
                   help="train,val,test shares (6,2,2; test may be 0, e.g. 8,2,0 for small datasets)")
    d.add_argument("--chip-stride", type=int, default=0,
                   help="pixels between chip origins (0 = the chip size; e.g. half of it on small datasets)")
    d.add_argument("--background-ratio", type=float, default=0.5,
                   help="building-free chips added per chip with buildings (0.5; 0 = none)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--min-building-pixels", type=int, default=16)
    d.add_argument("--overwrite", action="store_true")
    d.set_defaults(func=_cmd_dataset)

    t = subparsers.add_parser("train-building-use", help="train the building-use U-Net on a dataset folder "
                                                         "(one device, or several under torchrun)")
    t.add_argument("dataset", help="folder made by training-dataset")
    t.add_argument("output", help="checkpoint to write (.pt)")
    t.add_argument("--variant", default="imagery_poi_multitask", choices=VARIANTS)
    t.add_argument("--encoder", default="resnet34", choices=["resnet18", "resnet34", "resnet50"])
    t.add_argument("--base-width", type=int, default=64, help="encoder base width (64 = standard ResNet)")
    t.add_argument("--epochs", type=int, default=50)
    t.add_argument("--max-iterations", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=16, help="per process under torchrun")
    t.add_argument("--learning-rate", type=float, default=1e-3)
    t.add_argument("--lambda-footprint", type=float, default=1.0,
                   help="weight λ_B of the footprint Dice loss (multi-task variants; seed Eq. 7)")
    t.add_argument("--lambda-use", type=float, default=None,
                   help="weight λ_U of the use Dice loss (seed Eq. 7); default: 0 for footprint-only data, else 1")
    t.add_argument("--patience", type=int, default=10, help="early-stopping patience (epochs)")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    t.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    t.add_argument("--no-augment", action="store_true")
    t.add_argument("--num-workers", type=int, default=0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--resume", default=None, help=".resume.pt state or checkpoint of the same architecture")
    t.add_argument("--pretrained-encoder", default=None, help="local torchvision ResNet .pth")
    t.set_defaults(func=_cmd_train)


__all__ = ["add_commands"]
