"""Training SHAFTS-architecture height/footprint networks (SHAFTS paper, Sect. 2.3-2.4).

Samples: patches cut from Sentinel-1/2 + DEM exactly as at inference
(:func:`edifice.core.height.shafts_inference.gather_patches`, so training and prediction see the same
scaling) at the centres of reference grid cells (:mod:`edifice.core.height.reference_grids`).
Loss: adaptive Huber per task (Eq. 7; δ starts at the NMAD of the training targets, Eq. 8, and
becomes the 90th percentile of the absolute residuals of the last epoch, Eq. 9), combined with
uncertainty weighting (Eq. 5, log σ² trained) or fixed weights (footprint 100 : height 1).
Optimiser: Adam (multi-task) or SGD with momentum 0.9 (single-task), weight decay 1e-4, learning
rate 0.01 by default with cosine annealing and warm restarts (T0 = 5 epochs, doubling: 5, 10, 20,
40, 80 = 155 epochs). Augmentations (each p = 0.5): Gaussian noise on VV, VH, NIR; ISO-like noise,
Gaussian noise and colour jitter on R, G, B; then a random flip of the whole stack with the DEM.
The best epoch (mean validation R² over the tasks) is saved in the Edifice checkpoint format
with its metrics in the model card.

Samples are held in memory (uint8 Sentinel patches, float32 DEM patches).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..progress import Progress, ensure


@dataclass
class PatchSamples:
    """Training samples: ``x`` (N, 6, s, s) uint8 Sentinel patches (VV, VH, R, G, B, NIR; /255 gives
    the network input), ``dem`` (N, 1, s, s) float32 metres, ``footprint`` (N,) fraction and
    ``height`` (N,) metres (NaN where a task has no target)."""

    x: np.ndarray
    dem: np.ndarray
    footprint: np.ndarray
    height: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, idx) -> "PatchSamples":
        return PatchSamples(self.x[idx], self.dem[idx], self.footprint[idx], self.height[idx])


def extract_training_samples(s1_path, s2_path, dem_path, footprint_path, height_path, resolution_m: int,
                             padding: float = 0.03, apply_filter: bool = True,
                             progress: Progress | None = None) -> PatchSamples:
    """Patches at the centres of reference cells with a footprint and a height value.

    Reference rasters (from :func:`reference_grids_from_file`, any CRS) are read whole; cell centres are
    transformed to the Sentinel CRS (EPSG:4326); the inputs are clipped to the centres' bounding box
    plus ``padding`` degrees and preprocessed as at inference. ``apply_filter`` applies the paper's
    sample filters for the patch size of ``resolution_m``."""
    from pyproj import Transformer

    from ...models.shafts import PATCH_SIZE
    from ..grid import Grid
    from ..raster_io import open_raster, read_masked
    from .reference_grids import sample_filter
    from .shafts_inference import gather_patches, prepare_inputs
    progress = ensure(progress)
    s = PATCH_SIZE[int(resolution_m)]
    arrays, grid = [], None
    for path, name in ((footprint_path, "FOOTPRINT_REFERENCE"), (height_path, "HEIGHT_REFERENCE")):
        with open_raster(path, name) as ds:
            data, valid = read_masked(ds, None, name, [1])
            g = Grid.from_dataset(ds)
        if grid is not None and (g.shape != grid.shape or not g.transform.almost_equals(grid.transform)):
            raise InputError(name, "is not on the grid of the footprint reference.",
                             "make both with the same fishnet.")
        grid = g
        arrays.append(np.where(valid, data[0].astype(np.float64), np.nan))
    lam, hav = arrays
    keep = np.isfinite(lam) & np.isfinite(hav)
    if apply_filter:
        keep &= sample_filter(lam, hav, s)
    if not keep.any():
        raise InputError("HEIGHT_REFERENCE", "has no cell that passes the sample filters.",
                         "check the reference grids or turn the filters off.")
    xs, ys = grid.pixel_centres()
    xs, ys = xs[keep], ys[keep]
    with open_raster(s1_path, "S1") as ds:
        dst_crs = ds.crs
    if grid.crs is None:
        raise InputError("HEIGHT_REFERENCE", "has no CRS.", "assign the CRS of the building layer.")
    tr = Transformer.from_crs(grid.crs, dst_crs, always_xy=True)
    lon, lat = tr.transform(xs, ys)
    bounds = (lon.min() - padding, lat.min() - padding, lon.max() + padding, lat.max() + padding)
    prep, _ = prepare_inputs(s1_path, s2_path, dem_path, bounds, progress=progress.span(0, 0.8))
    x, d, valid = gather_patches(prep, lon, lat, s)
    ok = valid & np.isfinite(d).all(axis=(1, 2, 3))
    progress.set_fraction(1.0)
    progress.info(f"{int(ok.sum())} training samples of {keep.sum()} reference cells")
    return PatchSamples(x[ok], d[ok], lam[keep][ok].astype(np.float32), hav[keep][ok].astype(np.float32))


# ---------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------
def nmad(y) -> float:
    """Normalised median absolute deviation, 1.4826 · median(|y − median(y)|) (Eq. 8)."""
    y = np.asarray(y, dtype=np.float64)
    y = y[np.isfinite(y)]
    return float(1.4826 * np.median(np.abs(y - np.median(y)))) if y.size else 1.0


def adaptive_huber(pred, target, delta: float):
    """Mean Huber loss of Eq. 7: (r²)/(2δ) where |r| < δ, else |r| − δ/2."""
    import torch
    r = (pred - target).abs()
    return torch.where(r < delta, r * r / (2 * delta), r - delta / 2).mean()


def _uncertainty_module():
    import torch
    from torch import nn

    class UncertaintyWeighting(nn.Module):
        """Eq. 5 with s_i = log σ_i²: L = Σ ½ e^(−s_i) L_i + ½ s_i (i: footprint, height)."""

        def __init__(self):
            super().__init__()
            self.log_var = nn.Parameter(torch.zeros(2))

        def forward(self, loss_footprint, loss_height):
            s = self.log_var
            return (0.5 * torch.exp(-s[0]) * loss_footprint + 0.5 * s[0]
                    + 0.5 * torch.exp(-s[1]) * loss_height + 0.5 * s[1])

    return UncertaintyWeighting()


# ---------------------------------------------------------------------------
# augmentation
# ---------------------------------------------------------------------------
def augment_batch(x, dem, generator=None, p: float = 0.5):
    """Paper's augmentations on a batch (``x`` (B, 6, s, s) float in [0, 1], ``dem`` (B, 1, s, s)), each
    applied per sample with probability ``p``: Gaussian noise (σ² in [10, 50] on the 0-255 scale) on VV,
    VH, NIR; on R, G, B ISO-like sensor noise (a per-pixel luminance noise of intensity 0.1-0.5 and a
    per-pixel colour shift of 1-5 %), Gaussian noise and colour jitter (brightness, contrast,
    saturation x U(0.8, 1.2)); finally a horizontal or vertical flip of x and the DEM together. Targets
    are unchanged. These follow albumentations' defaults, which SHAFTS used, in spirit, not bit for bit."""
    import torch
    g = generator
    b = x.shape[0]

    def coin():
        return (torch.rand(b, generator=g) < p).to(x.device).view(b, 1, 1, 1)

    def gauss(shape):
        sigma = torch.sqrt(10 + 40 * torch.rand(b, generator=g)).to(x.device).view(b, 1, 1, 1) / 255
        return torch.randn(shape, generator=g).to(x.device) * sigma

    x = x.clone()
    idx = [0, 1, 5]
    x[:, idx] = torch.where(coin(), x[:, idx] + gauss(x[:, idx].shape), x[:, idx])
    rgb = x[:, 2:5]
    intensity = (0.1 + 0.4 * torch.rand(b, generator=g)).to(x.device).view(b, 1, 1, 1)
    lum = torch.randn((b, 1) + rgb.shape[2:], generator=g).to(x.device) * intensity * 0.1
    shift = torch.randn(rgb.shape, generator=g).to(x.device) * (0.01 + 0.04 * torch.rand(b, generator=g)
                                                                 ).to(x.device).view(b, 1, 1, 1)
    rgb = torch.where(coin(), rgb * (1 + lum) + shift, rgb)
    rgb = torch.where(coin(), rgb + gauss(rgb.shape), rgb)
    f = lambda: (0.8 + 0.4 * torch.rand(b, generator=g)).to(x.device).view(b, 1, 1, 1)  # noqa: E731
    jit = coin()
    bright = rgb * f()
    mean = bright.mean(dim=(1, 2, 3), keepdim=True)
    contr = (bright - mean) * f() + mean
    grey = contr.mean(dim=1, keepdim=True)
    sat = (contr - grey) * f() + grey
    rgb = torch.where(jit, sat, rgb)
    x[:, 2:5] = rgb
    x = x.clamp(0, 1)
    flip = coin()
    horiz = (torch.rand(b, generator=g) < 0.5).to(x.device).view(b, 1, 1, 1)
    xf = torch.where(horiz, x.flip(-1), x.flip(-2))
    df = torch.where(horiz, dem.flip(-1), dem.flip(-2))
    return torch.where(flip, xf, x), torch.where(flip, df, dem)


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------
def _r2_rmse(pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    ok = np.isfinite(y)
    pred, y = pred[ok], y[ok]
    if y.size == 0:
        return float("nan"), float("nan")
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    ss_res = float(np.sum((y - pred) ** 2))
    return (1 - ss_res / ss_tot if ss_tot > 0 else float("nan")), math.sqrt(ss_res / y.size)


def evaluate(model, samples: PatchSamples, device="cpu", batch_size: int = 256) -> dict:
    """{task: {"r2", "rmse"}} of ``model`` on ``samples`` (heights in metres, footprint as fraction)."""
    import torch
    model.eval()
    outs: dict[str, list] = {}
    with torch.no_grad():
        for i in range(0, len(samples), batch_size):
            x = torch.from_numpy(samples.x[i:i + batch_size]).to(device).float() / 255.0
            d = torch.from_numpy(samples.dem[i:i + batch_size]).to(device)
            for k, v in model(x, d).items():
                outs.setdefault(k, []).append(v.float().cpu().numpy())
    res = {}
    for k, v in outs.items():
        r2, rmse = _r2_rmse(np.concatenate(v).astype(np.float64), getattr(samples, k).astype(np.float64))
        res[k] = {"r2": r2, "rmse": rmse}
    return res


def initial_model(path, resolution_m: int, task: str):
    """The network of the checkpoint to fine-tune, checked to be a SHAFTS network of this resolution and
    task; :class:`InputError` naming INIT_CHECKPOINT otherwise."""
    from ...models.checkpoint import CheckpointError
    from ...models.shafts import load_shafts_checkpoint

    try:
        ck = load_shafts_checkpoint(path, resolution_m, None if task == "multi" else task)
    except CheckpointError as exc:
        raise InputError("INIT_CHECKPOINT", str(exc), f"give a SHAFTS or Edifice {resolution_m} m height/footprint "
                                                      "checkpoint, or none to train from scratch.") from exc
    if ck.task != task:
        raise InputError("INIT_CHECKPOINT", f"is a {ck.task}-task network, and this training is {task}-task.",
                         "choose a checkpoint of the same task, or change the task.")
    return ck.model


#: Intra-op threads of a training run on the CPU, whatever the machine, QGIS or OMP_NUM_THREADS say:
#: float sums are split by thread count, so a fixed count makes a seeded run reproducible.
DEFAULT_TRAIN_THREADS = 4
TASKS = ("multi", "height", "footprint")


@contextlib.contextmanager
def reproducible_torch(threads: int):
    """Within: ``threads`` intra-op threads and deterministic algorithms (restored after).

    What stays different: runs with another thread count, or on another device (GPU kernels,
    another CPU instruction set) round differently and drift apart over the epochs."""
    import torch
    if threads < 1:
        raise InputError("THREADS", f"must be at least 1, got {threads}.")
    prev_threads, prev_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det)


def train_shafts(train: PatchSamples, val: PatchSamples, resolution_m: int, out_path, *,
                 task: str = "multi", num_blocks: int = 1, weighting: str = "uncertainty",
                 epochs: int = 155, batch_size: int | None = None, lr: float = 0.01,
                 weight_decay: float = 1e-4, augment: bool = True, device: str = "auto", seed: int = 0,
                 init_checkpoint=None, threads: int = DEFAULT_TRAIN_THREADS,
                 progress: Progress | None = None) -> dict:
    """Train a SHAFTS network and save the best epoch (mean validation R²) to ``out_path`` in the Edifice
    checkpoint format. ``task`` "multi" | "height" | "footprint"; ``weighting`` "uncertainty" (Eq. 5) or
    "fixed" (footprint 100, height 1); ``batch_size`` defaults to 256 (multi) / 64 (single);
    ``init_checkpoint``: optional SHAFTS/Edifice checkpoint (or its loaded network) to fine-tune.
    ``threads``: intra-op threads (CPU), fixed so that the same seed gives the same weights from the CLI, QGIS or a notebook (see
    :func:`reproducible_torch`). Returns {"history": [per-epoch dicts], "best_epoch", "best_metrics",
    "device", "threads"}."""
    if task not in TASKS:
        raise InputError("TASK", f"'{task}' is not a task.", f"use one of {', '.join(TASKS)}.")
    with reproducible_torch(threads):
        out = _train_shafts(train, val, resolution_m, out_path, task, num_blocks, weighting, epochs, batch_size,
                            lr, weight_decay, augment, device, seed, init_checkpoint, threads, ensure(progress))
    return out


def _train_shafts(train, val, resolution_m, out_path, task, num_blocks, weighting, epochs, batch_size, lr,
                  weight_decay, augment, device, seed, init_checkpoint, threads, progress) -> dict:
    import torch

    from ...models.checkpoint import save_checkpoint
    from ...models.shafts import shafts_card
    from ..devices import resolve_device
    _check_training_request(weighting, train, val)
    dev = resolve_device(device)
    progress.info(f"training SHAFTS {resolution_m} m {task}-task on device {dev} (seed {seed}, "
                  f"{threads} intra-op thread(s), deterministic algorithms)")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = _starting_model(init_checkpoint, resolution_m, task, num_blocks).to(dev)
    tasks = ["footprint", "height"] if task == "multi" else [task]
    delta = {k: max(nmad(getattr(train, k)), 1e-6) for k in tasks}
    weigher = _uncertainty_module().to(dev) if (task == "multi" and weighting == "uncertainty") else None
    opt = _optimiser(list(model.parameters()) + (list(weigher.parameters()) if weigher is not None else []),
                     task, lr, weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=5, T_mult=2)
    bs = batch_size or (256 if task == "multi" else 64)
    history, best = [], (-math.inf, None, None, None)
    for epoch in range(epochs):
        losses, residuals = _train_epoch(model, weigher, opt, train, tasks, delta, bs, rng.permutation(len(train)),
                                         g if augment else None, dev, progress)
        sched.step()
        train_rmse = _update_deltas(delta, residuals)
        metrics = evaluate(model, val, dev)
        score = float(np.nanmean([metrics[k]["r2"] for k in tasks]))
        rec = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "train_rmse": train_rmse, "lr": opt.param_groups[0]["lr"], "delta": dict(delta), "val": metrics}
        if weigher is not None:
            rec["log_var"] = weigher.log_var.detach().cpu().tolist()
        history.append(rec)
        progress.info(f"epoch {epoch + 1}/{epochs}: loss {rec['train_loss']:.4f}, "
                      + ", ".join(f"{k} R² {metrics[k]['r2']:.3f} RMSE {metrics[k]['rmse']:.3f}" for k in tasks))
        if best[1] is None or (np.isfinite(score) and score > best[0]):
            best = (score, epoch + 1, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, metrics)
        progress.set_fraction((epoch + 1) / epochs)
    _, best_epoch, state, metrics = best
    card = shafts_card(resolution_m, task, model.num_blocks,
                       training={"samples_train": len(train), "samples_val": len(val), "epochs": epochs,
                                 "best_epoch": best_epoch, "weighting": weighting if task == "multi" else None,
                                 "optimizer": "Adam" if task == "multi" else "SGD", "lr0": lr,
                                 "scheduler": "CosineAnnealingWarmRestarts(T_0=5, T_mult=2)",
                                 "batch_size": bs, "augment": augment, "device": str(dev), "seed": seed,
                                 "threads": threads},
                       metrics={"val": metrics})
    save_checkpoint(out_path, state, card)
    return {"history": history, "best_epoch": best_epoch, "best_metrics": metrics, "device": str(dev),
            "threads": threads}


def _check_training_request(weighting: str, train: PatchSamples, val: PatchSamples) -> None:
    if weighting not in ("uncertainty", "fixed"):
        raise InputError("WEIGHTING", f"must be 'uncertainty' or 'fixed', got '{weighting}'.")
    if len(train) < 2 or len(val) < 1:
        raise InputError("TRAINING_DATA", f"has {len(train)} training and {len(val)} validation samples.",
                         "give at least 2 training and 1 validation sample.")


def _starting_model(init_checkpoint, resolution_m: int, task: str, num_blocks: int):
    """A given module, the network of a checkpoint (fine-tuning), or a new SHAFTS network."""
    import torch

    from ...models.shafts import build_shafts_model
    if init_checkpoint is None:
        return build_shafts_model(resolution_m, task, num_blocks)
    if isinstance(init_checkpoint, torch.nn.Module):
        return init_checkpoint
    return initial_model(init_checkpoint, resolution_m, task)


def _optimiser(params: list, task: str, lr: float, weight_decay: float):
    """SHAFTS's optimisers: Adam for the multi-task network, SGD with momentum 0.9 for single tasks."""
    import torch
    if task == "multi":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)


def _train_epoch(model, weigher, opt, train: PatchSamples, tasks: list[str], delta: dict, bs: int,
                 order: np.ndarray, augment_generator, dev, progress) -> tuple[list[float], dict]:
    """One pass over the training samples in ``order`` (batches of ``bs``; a last single sample is
    skipped, BatchNorm cannot train on it); returns the batch losses and absolute residuals per task."""
    import torch
    model.train()
    residuals = {k: [] for k in tasks}
    losses = []
    for i in range(0, len(order), bs):
        idx = np.sort(order[i:i + bs])
        if idx.size < 2:
            continue
        progress.check_cancelled()
        x = torch.from_numpy(train.x[idx]).to(dev).float() / 255.0
        d = torch.from_numpy(train.dem[idx]).to(dev)
        if augment_generator is not None:
            x, d = augment_batch(x, d, augment_generator)
        out = model(x, d)
        task_loss = {}
        for k in tasks:
            y = torch.from_numpy(getattr(train, k)[idx]).to(dev)
            ok = torch.isfinite(y)
            task_loss[k] = adaptive_huber(out[k][ok], y[ok], delta[k]) if ok.any() else out[k].sum() * 0
            residuals[k].append((out[k][ok] - y[ok]).detach().abs().cpu().numpy())
        loss = _combined_loss(task_loss, weigher)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses, residuals


def _combined_loss(task_loss: dict, weigher):
    """The single task's loss, the uncertainty-weighted sum, or 100 x footprint + height (fixed weights)."""
    if len(task_loss) == 1:
        return next(iter(task_loss.values()))
    if weigher is not None:
        return weigher(task_loss["footprint"], task_loss["height"])
    return 100.0 * task_loss["footprint"] + task_loss["height"]


def _update_deltas(delta: dict, residuals: dict) -> dict:
    """Eq. 9: each task's Huber δ becomes the q90 of the epoch's absolute residuals; returns the
    epoch's training RMSE per task."""
    train_rmse = {}
    for k, parts in residuals.items():
        r = np.concatenate(parts) if parts else np.array([])
        if r.size:
            delta[k] = max(float(np.quantile(r, 0.9)), 1e-6)
            train_rmse[k] = float(np.sqrt(np.mean(r.astype(np.float64) ** 2)))
    return train_rmse
