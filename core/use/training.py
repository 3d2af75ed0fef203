"""``edifice:trainbuildinguse``: train the multi-task U-Net on a training-dataset
folder (seed 000 §2.8, §3.1).

Adam (lr 1e-3) with cosine annealing over all iterations, batch size 16,
Dice losses of Eq. 5-7 (``core.use.losses``), synchronised augmentation
(``core.use.augment``), early stopping on the validation loss, the best model kept
as an Edifice checkpoint (``models.checkpoint``) whose card holds bands with
scaling, gsd, window, classes with colours, the training summary and per-class
one-vs-rest metrics (``core.evaluation.metrics``) on the validation and test subsets.

Next to the checkpoint, ``<output>.resume.pt`` holds the state of the last
epoch (weights, optimiser, scheduler, counters; weights-only loadable) so that
``resume_from`` continues a run exactly. Runs are seeded: the same data, seed
and device give the same weights.

Under ``torchrun`` (``WORLD_SIZE`` > 1, see ``core.distributed``) every process
trains a DistributedDataParallel replica on ``cuda:LOCAL_RANK`` or the CPU with
its shard of the training chips (DistributedSampler): the effective batch size
is ``batch_size`` x world size. Validation is sharded and its sums reduced, so
every rank takes the same early-stopping decisions; only rank 0 writes files and
reports progress.
"""
from __future__ import annotations

import math
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ...models.checkpoint import CheckpointError, load_checkpoint, load_state_strict, save_checkpoint
from ...models.resnet import adapt_torchvision_state
from ...models.unet import ARCHITECTURE, USE_CLASSES, VARIANTS, UNetResNet, build_from_card, poi_band_count
from .. import distributed
from .augment import augment_batch
from ..errors import InputError
from ..devices import resolve_device  # noqa: F401  (re-exported for callers)
from .losses import IGNORE, building_use_loss, predict_labels
from ..evaluation.metrics import confusion_matrix, overall_accuracy, per_class_metrics
from ..progress import Progress, ensure
from ..raster_io import atomic_output
from .training_dataset import load_manifest

STATE_FORMAT = "edifice-training-state"
LABEL_NAMES = ("background",) + USE_CLASSES
#: Keep chips in memory when the subset's float32 arrays stay under this many bytes.
CACHE_LIMIT_BYTES = 2 * 1024 ** 3
#: The seed's mapping window (seed 000 §2.3.4: 1024 px windows, 128 px margin, centre 768 px kept).
SEED_WINDOW = 1024
#: Models at this pixel size (m) or finer are mapped with :data:`SEED_WINDOW` by default.
SEED_WINDOW_MAX_GSD_M = 0.75


def default_map_window(chip_size: int, gsd_m: float) -> tuple[int, str]:
    """(window in px, reason) recorded in the model card as the default mapping window.

    The U-Net is fully convolutional, so the mapping window need not be the training chip:
    sub-metre models (the seed's 0.5 m) map with the seed's 1024 px windows (more context, fewer
    seams) whatever chip size they were trained on; coarser ones with their chip size."""
    if gsd_m <= SEED_WINDOW_MAX_GSD_M and chip_size < SEED_WINDOW:
        return SEED_WINDOW, (f"the seed's {SEED_WINDOW} px window for {gsd_m:.3g} m imagery (trained on "
                             f"{chip_size} px chips; the network is fully convolutional)")
    return int(chip_size), f"the training chip size ({chip_size} px)"


# ---------------------------------------------------------------- device
# ---------------------------------------------------------------- data
class ChipSet(torch.utils.data.Dataset):
    """The chips of one subset of a dataset folder, as normalised float32 inputs
    (bands chosen for the variant) and int64 masks A and B."""

    def __init__(self, root: str | Path, manifest: dict, subset: str, band_index: Sequence[int],
                 cache: bool | None = None):
        self.root = Path(root)
        self.chips = [c for c in manifest["chips"] if c["subset"] == subset]
        bands = manifest["bands"]
        self.band_index = list(band_index)
        self.offset = np.array([bands[i]["offset"] for i in self.band_index], np.float32)[:, None, None]
        self.scale = np.array([bands[i]["scale"] for i in self.band_index], np.float32)[:, None, None]
        self.n_img = sum(1 for b in bands if b.get("source") != "poi")
        s = manifest["chip_size"]
        size = len(self.chips) * s * s * (len(self.band_index) * 4 + 16)
        self._cache = [None] * len(self.chips) if (cache if cache is not None else size < CACHE_LIMIT_BYTES) else None

    def __len__(self) -> int:
        return len(self.chips)

    def _load(self, i: int):
        try:
            return self._read_chip(i)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise InputError("DATASET", f"chip '{self.chips[i]['file']}' is missing, truncated or damaged "
                                        f"({type(exc).__name__}).",
                             "write the dataset again with the training-dataset tool.") from exc

    def _read_chip(self, i: int):
        with np.load(self.root / self.chips[i]["file"]) as z:
            parts = [z["image"].astype(np.float32)]
            if "poi" in z.files:
                parts.append(z["poi"].astype(np.float32))
            x = np.concatenate(parts)[self.band_index]
            x = (x - self.offset) * self.scale
            return (torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(z["footprint"].astype(np.int64)),
                    torch.from_numpy(z["use"].astype(np.int64)))

    def __getitem__(self, i: int):
        if self._cache is None:
            return self._load(i)
        if self._cache[i] is None:
            self._cache[i] = self._load(i)
        return self._cache[i]


def select_bands(manifest: dict, variant: str) -> list[int]:
    """Indices into the manifest's bands that the variant uses: imagery bands, then
    the three POI bands for the POI variants; :class:`InputError` when missing."""
    if variant not in VARIANTS:
        raise InputError("VARIANT", f"unknown variant '{variant}'.", f"use one of {', '.join(VARIANTS)}.")
    img = [i for i, b in enumerate(manifest["bands"]) if b.get("source") != "poi"]
    poi = [i for i, b in enumerate(manifest["bands"]) if b.get("source") == "poi"]
    need = poi_band_count(variant)
    if need and len(poi) != need:
        raise InputError("VARIANT", f"variant '{variant}' needs {need} POI bands (P_R, P_C, P_I) but the dataset "
                         f"has {len(poi)} ({len(img) + len(poi)} bands in all).",
                         "build the dataset with POI points or a POI raster, or train 'imagery_single'.")
    return img + (poi if need else [])


# ---------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device: torch.device, lambda_footprint: float = 1.0,
             lambda_use: float = 1.0, amp: bool = False, ctx: distributed.DistContext | None = None) -> dict:
    """Loss and pixel-level metrics on a loader: per-class one-vs-rest accuracy,
    precision, recall, F1 (background, residential, commercial, industrial; pixels of
    unknown use ignored), overall accuracy, mean F1 over R/C/I, footprint IoU.
    With a distributed ``ctx`` the loader holds this rank's shard and the sums are
    reduced over all ranks."""
    model.eval()
    cm = np.zeros((4, 4), np.int64)
    inter = union = 0
    losses, weights = 0.0, 0
    for x, a, b in loader:
        x, a, b = x.to(device), a.to(device), b.to(device)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            out = model(x)
        loss, _ = building_use_loss(out, a, b, lambda_footprint, lambda_use)
        losses += float(loss) * len(x)
        weights += len(x)
        lab = predict_labels(out)
        cm += confusion_matrix(b.cpu().numpy(), lab.cpu().numpy(), 4, ignore=IGNORE)
        pred_b = ((torch.sigmoid(out["footprint"][:, 0].float()) > 0.5) if "footprint" in out else lab > 0)
        ok = a != IGNORE
        inter += int(((pred_b & (a == 1)) & ok).sum())
        union += int(((pred_b | (a == 1)) & ok).sum())
    if ctx is not None and ctx.enabled:
        tot = ctx.sum_all([losses, weights, inter, union] + cm.ravel().tolist())
        losses, weights, inter, union = tot[0], int(tot[1]), int(tot[2]), int(tot[3])
        cm = np.rint(tot[4:]).astype(np.int64).reshape(4, 4)
    per = per_class_metrics(cm, LABEL_NAMES)
    return {"loss": losses / max(weights, 1), "overall_accuracy": overall_accuracy(cm),
            "mean_f1_use": float(np.mean([per[c]["f1"] for c in USE_CLASSES])),
            "footprint_iou": inter / union if union else 0.0, "per_class": per,
            "confusion_matrix": cm.tolist(), "chips": weights}


# ---------------------------------------------------------------- training
#: Training batches over which BatchNorm statistics are re-estimated after each epoch.
PRECISE_BN_BATCHES = 50


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, loader, device: torch.device,
                          max_batches: int = PRECISE_BN_BATCHES, amp: bool = False) -> int:
    """Re-estimate every BatchNorm's running mean and variance as the plain average over up to
    ``max_batches`` training batches (train mode, no augmentation, no gradient); returns the
    batches used. With few optimiser steps per epoch (small datasets) the running averages
    (momentum 0.1) still mix in the statistics of earlier weights, so validation and the saved
    model normalise features with stale statistics and the validation loss jumps from epoch to
    epoch ("precise BN")."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = model.training
    model.train()
    used = 0
    try:
        for x, _, _ in loader:
            if used >= max_batches:
                break
            with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
                model(x.to(device))
            used += 1
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.train(was_training)
    return used


def _state_path(output_path: str | Path) -> Path:
    p = Path(output_path)
    return p.with_name(p.name + ".resume.pt")


def _check_lambdas(lambda_footprint: float, lambda_use: float, variant: str) -> None:
    """λ_B and λ_U of Eq. 7: finite, not negative, and not both (or the only one used) zero."""
    for name, v in (("LAMBDA_FOOTPRINT", lambda_footprint), ("LAMBDA_USE", lambda_use)):
        if not math.isfinite(v) or v < 0:
            raise InputError(name, f"{v:g} is not a loss weight.", "give a number >= 0 (default 1).")
    multitask = bool(VARIANTS[variant][1])
    if lambda_use == 0 and (lambda_footprint == 0 or not multitask):
        raise InputError("LAMBDA_USE", "the loss would be zero (" + ("both weights are 0" if multitask else
                         f"variant '{variant}' has no footprint head, so only the use loss counts") + ").",
                         "give LAMBDA_USE > 0" + (" or LAMBDA_FOOTPRINT > 0." if multitask else "."))


def auto_lambda_use(manifest: dict, variant: str, lambda_use: float | None, progress: Progress) -> float:
    """λ_U as given, or (None) 0 for a footprint-only dataset trained with a footprint head, else 1."""
    if lambda_use is not None:
        return float(lambda_use)
    footprint_only = manifest.get("sources", {}).get("use_field") is None
    if footprint_only and VARIANTS[variant][1]:
        progress.info("Footprint-only dataset: LAMBDA_USE = 0 (the use head has no labels to learn from).")
        return 0.0
    return 1.0


def _save_state(state: dict, path: Path) -> None:
    """Write the resume state atomically: a temporary sibling moved into place,
    so an interrupted write never leaves a truncated ``.resume.pt``."""
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def _load_pretrained(model: UNetResNet, path: str) -> None:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError("PRETRAINED_ENCODER", f"'{path}' could not be loaded as a weights-only state dict ({exc}).",
                         "give a torchvision ResNet .pth file.") from exc
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    try:
        enc = adapt_torchvision_state(sd, model.in_channels)
        model.encoder.load_state_dict(enc, strict=True)
    except (ValueError, RuntimeError) as exc:
        raise InputError("PRETRAINED_ENCODER", f"'{path}' does not fit encoder {model.encoder.name} with "
                         f"base width {model.encoder.base_width} ({str(exc)[:200]}).",
                         "give the torchvision weights of the same ResNet depth (base width 64).") from exc


def train_building_use(dataset_dir: str, output_path: str, variant: str = "imagery_poi_multitask",
                       encoder: str = "resnet34", base_width: int = 64, epochs: int = 50,
                       max_iterations: int | None = None, batch_size: int = 16, learning_rate: float = 1e-3,
                       weight_decay: float = 1e-4, lambda_footprint: float = 1.0, lambda_use: float | None = None,
                       patience: int = 10, device: str = "auto", amp: bool = True, seed: int = 0,
                       augment: bool = True, num_workers: int = 0, resume_from: str | None = None,
                       pretrained_encoder: str | None = None,
                       epoch_callback: Callable[[dict], None] | None = None,
                       progress: Progress | None = None) -> dict:
    """Train a building-use model on ``dataset_dir`` and write the best checkpoint
    (lowest validation loss) to ``output_path``. Returns a summary dict
    (device, epochs run, best epoch, history, metrics).

    ``variant``: ``imagery_poi_multitask`` (default), ``imagery_poi_single`` or
    ``imagery_single``. ``max_iterations`` caps the run (the seed trains 3700).
    ``device``: auto | cpu | cuda | cuda:N; mixed precision (float16) is used on
    CUDA when ``amp``. ``resume_from``: a ``.resume.pt`` state (continues the run)
    or an Edifice checkpoint of the same architecture (weights only, fine-tuning).
    ``pretrained_encoder``: a torchvision ResNet ``.pth`` (conv1 widened to the
    band count). ``lambda_use`` None: 0 for a footprint-only dataset with a footprint head (the use
    head has nothing to learn; its loss would only add noise), else 1. ``epoch_callback(record)`` gets one dict per epoch (epoch,
    train_loss, val_loss, lr, seconds, improved) — e.g. for a live loss chart.

    Under torchrun (``WORLD_SIZE`` > 1) this runs data-parallel on every rank
    (see the module doc); ranks other than 0 report nothing and write nothing.
    """
    args = dict(locals())
    ctx = distributed.from_env(device)
    try:
        result = _train(ctx=ctx, **args)
        ctx.close(wait_for_all=True)
        return result
    finally:
        ctx.close()


@dataclass
class _Run:
    """What one training run holds: its data, network, optimiser and settings."""
    ctx: distributed.DistContext
    progress: Progress
    manifest: dict
    sets: dict
    params: dict
    config: dict
    model: UNetResNet
    net: torch.nn.Module  # the model, or its DistributedDataParallel wrapper (same parameters)
    dev: torch.device
    use_amp: bool
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    sampler: torch.utils.data.distributed.DistributedSampler | None
    epochs: int
    total_steps: int
    window: int
    window_reason: str

    def loader(self, subset: str, shuffle: bool, epoch: int = 0):
        """A DataLoader of ``subset``: this rank's shard under torchrun (evaluation shards unpadded,
        ``evaluate`` reduces the sums), seeded by the run's seed and the epoch."""
        c = self.config
        if self.ctx.enabled and subset == "train":
            self.sampler.set_epoch(epoch)
            return torch.utils.data.DataLoader(self.sets[subset], batch_size=c["batch_size"], sampler=self.sampler,
                                               num_workers=c["num_workers"], drop_last=False)
        data = self.sets[subset]
        if self.ctx.enabled:
            data = torch.utils.data.Subset(data, range(self.ctx.rank, len(data), self.ctx.world_size))
        g = torch.Generator().manual_seed(c["seed"] * 100003 + epoch)
        return torch.utils.data.DataLoader(data, batch_size=c["batch_size"], shuffle=shuffle, generator=g,
                                           num_workers=c["num_workers"], drop_last=False)

    def evaluate(self, subset: str) -> dict:
        c = self.config
        return evaluate(self.model, self.loader(subset, False), self.dev, c["lambda_footprint"], c["lambda_use"],
                        self.use_amp, self.ctx)

    def card(self, metrics: dict, summary: dict) -> dict:
        """The checkpoint's model card: architecture, bands with scaling, window, classes, outputs, training."""
        m, head = self.manifest, VARIANTS[self.config["variant"]][1]
        bands = [{k: m["bands"][i][k] for k in ("name", "scale", "offset")}
                 for i in select_bands(m, self.config["variant"])]
        outputs = {"use": "3 logits per pixel; sigmoid = membership probability of residential, commercial, "
                          "industrial",
                   **({"footprint": "1 logit per pixel; sigmoid > 0.5 = building"} if head else {}),
                   "label": "0 background, 1 residential, 2 commercial, 3 industrial: argmax of use where "
                            + ("footprint > 0.5" if head else "max use probability > 0.5")}
        return {"task": "building_use", "architecture": {"name": ARCHITECTURE, "params": self.params},
                "bands": bands, "gsd_m": m["gsd_m"], "window": self.window, "window_reason": self.window_reason,
                "training_chip_size": m["chip_size"], "classes": m["classes"], "outputs": outputs,
                "training": summary, "metrics": metrics}


@dataclass
class _Counters:
    """Where a run stands: optimiser steps, best validation loss and epoch, epochs without improvement."""
    start_epoch: int = 0
    best_loss: float = math.inf
    best_epoch: int = -1
    bad: int = 0
    history: list = field(default_factory=list)
    best_state: dict | None = None
    step: int = 0


def _train(dataset_dir, output_path, variant, encoder, base_width, epochs, max_iterations, batch_size,
           learning_rate, weight_decay, lambda_footprint, lambda_use, patience, device, amp, seed, augment,
           num_workers, resume_from, pretrained_encoder, epoch_callback, progress, ctx) -> dict:
    progress = ensure(progress) if ctx.is_main else ensure(None)
    run = _prepare_run(dataset_dir, variant, encoder, base_width, epochs, max_iterations, batch_size,
                       learning_rate, weight_decay, lambda_footprint, lambda_use, patience, device, amp, seed,
                       augment, num_workers, pretrained_encoder, progress, ctx)
    n = _Counters()
    if resume_from:
        n = _Counters(*_resume(resume_from, run.model, run.opt, run.sched, run.scaler, run.params, progress,
                               ctx.world_size))
    if ctx.enabled:  # wrapped after a resume has loaded the weights, as DDP broadcasts rank 0's at creation
        run.net = torch.nn.parallel.DistributedDataParallel(
            run.model, device_ids=[run.dev] if run.dev.type == "cuda" else None)
    t_start = time.monotonic()
    stopped_early = False
    for epoch in range(n.start_epoch, run.epochs):
        if n.step >= run.total_steps:
            break
        t0 = time.monotonic()
        train_loss = _train_epoch(run, n, epoch)
        rec = _close_epoch(run, n, epoch, train_loss, time.monotonic() - t0, output_path)
        if epoch_callback is not None and ctx.is_main:
            epoch_callback(dict(rec))
        if n.bad >= patience:
            stopped_early = True
            progress.info(f"Early stopping: no validation improvement for {patience} epochs.")
            break
    return _finish_run(run, n, dataset_dir, output_path, stopped_early, time.monotonic() - t_start)


def _prepare_run(dataset_dir, variant, encoder, base_width, epochs, max_iterations, batch_size, learning_rate,
                 weight_decay, lambda_footprint, lambda_use, patience, device, amp, seed, augment, num_workers,
                 pretrained_encoder, progress, ctx) -> _Run:
    """Check the settings, load the dataset and build the network, optimiser and schedule (seeded)."""
    manifest = load_manifest(dataset_dir)
    band_index = select_bands(manifest, variant)
    if batch_size < 1 or epochs < 1:
        raise InputError("EPOCHS" if epochs < 1 else "BATCH_SIZE", "must be at least 1.")
    lambda_use = auto_lambda_use(manifest, variant, lambda_use, progress)
    _check_lambdas(lambda_footprint, lambda_use, variant)
    dev = ctx.device if ctx.enabled else resolve_device(device)
    use_amp = bool(amp and dev.type == "cuda")
    progress.info(f"Training on {dev}" + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "")
                  + (", mixed precision" if use_amp else "") + (ctx.describe(batch_size) if ctx.enabled else "")
                  + ".")
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    sets = _chip_sets(dataset_dir, manifest, band_index)
    params = {"encoder": encoder, "in_channels": len(band_index), "variant": variant, "num_classes": 3,
              "base_width": base_width}
    model = _build_model(params, pretrained_encoder).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    sampler = None
    if ctx.enabled:  # each rank trains on its shard: same number of steps on every rank
        sampler = torch.utils.data.distributed.DistributedSampler(
            sets["train"], num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed, drop_last=False)
    epochs, total_steps = _schedule_length(len(sampler) if sampler else len(sets["train"]), batch_size, epochs,
                                           max_iterations)
    config = {"variant": variant, "encoder": encoder, "base_width": base_width, "epochs": epochs,
              "max_iterations": max_iterations, "batch_size": batch_size, "learning_rate": learning_rate,
              "weight_decay": weight_decay, "lambda_footprint": lambda_footprint, "lambda_use": lambda_use,
              "patience": patience, "seed": seed, "augment": augment, "amp": use_amp}
    window, window_reason = default_map_window(int(manifest["chip_size"]), float(manifest["gsd_m"]))
    progress.info(f"Default mapping window in the model card: {window} px, {window_reason}.")
    return _Run(ctx=ctx, progress=progress, manifest=manifest, sets=sets, params=params,
                config={**config, "num_workers": num_workers}, model=model, net=model, dev=dev, use_amp=use_amp,
                opt=opt, sched=torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps),
                scaler=torch.amp.GradScaler("cuda", enabled=use_amp), sampler=sampler, epochs=epochs,
                total_steps=total_steps, window=window, window_reason=window_reason)


def _chip_sets(dataset_dir, manifest: dict, band_index: Sequence[int]) -> dict:
    """The train, val and test chips; train and val must not be empty."""
    sets = {s: ChipSet(dataset_dir, manifest, s, band_index) for s in ("train", "val", "test")}
    for s in ("train", "val"):
        if len(sets[s]) == 0:
            raise InputError("DATASET", f"the dataset has no {s} chip.", "recreate it with more buildings.")
    return sets


def _build_model(params: dict, pretrained_encoder: str | None) -> UNetResNet:
    try:
        model = UNetResNet(**params)
    except ValueError as exc:
        raise InputError("ENCODER", str(exc)) from exc
    if pretrained_encoder:
        _load_pretrained(model, pretrained_encoder)
    return model


def _schedule_length(train_chips: int, batch_size: int, epochs: int, max_iterations: int | None) -> tuple[int, int]:
    """(epochs, optimiser steps) of the cosine schedule: ``max_iterations`` caps both."""
    steps_per_epoch = math.ceil(train_chips / batch_size)
    if not max_iterations:
        return epochs, max(1, epochs * steps_per_epoch)
    epochs = min(epochs, math.ceil(max_iterations / steps_per_epoch))
    return epochs, max(1, min(max_iterations, epochs * steps_per_epoch))


def _train_epoch(run: _Run, n: _Counters, epoch: int) -> float:
    """One pass over this rank's training chips (augmented, seeded per epoch and rank), then precise
    BatchNorm statistics; returns the mean training loss over all ranks. Stops at the schedule's end."""
    ctx, c = run.ctx, run.config
    run.net.train()
    gen = torch.Generator().manual_seed(c["seed"] * 7919 + epoch + 104729 * ctx.rank)
    if ctx.enabled and epoch == n.start_epoch:
        run.sampler.set_epoch(epoch)
        ctx.debug["first_epoch_chips"] = list(iter(run.sampler))
    tot, count = 0.0, 0
    for x, a, b in run.loader("train", True, epoch):
        run.progress.check_cancelled()
        if c["augment"]:
            x, a, b = augment_batch(x, a, b, gen)
        tot += _train_step(run, x, a, b) * len(x)
        count += len(x)
        n.step += 1
        run.progress.set_fraction(min(n.step / run.total_steps, 1.0) * 0.95)
        if n.step >= run.total_steps:
            break
    recalibrate_batchnorm(run.model, run.loader("train", False, epoch), run.dev, amp=run.use_amp)
    if ctx.enabled:
        tot, count = ctx.sum_all([tot, count])
        ctx.average_buffers(run.model)
    return tot / max(count, 1)


def _train_step(run: _Run, x, a, b) -> float:
    """One optimiser step on a batch; returns its loss."""
    x, a, b = x.to(run.dev, non_blocking=True), a.to(run.dev), b.to(run.dev)
    run.opt.zero_grad(set_to_none=True)
    with torch.autocast(run.dev.type, enabled=run.use_amp):
        out = run.net(x)
    loss, _ = building_use_loss(out, a, b, run.config["lambda_footprint"], run.config["lambda_use"])
    run.scaler.scale(loss).backward()
    run.scaler.step(run.opt)
    run.scaler.update()
    run.sched.step()
    return float(loss.detach())


def _close_epoch(run: _Run, n: _Counters, epoch: int, train_loss: float, seconds: float, output_path) -> dict:
    """Validate, keep (and write) the best weights, log the epoch and save the resume state; returns
    the epoch's record."""
    val = run.evaluate("val")
    improved = val["loss"] < n.best_loss - 1e-6
    if improved:
        n.best_loss, n.best_epoch, n.bad = val["loss"], epoch, 0
        n.best_state = {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}
        if run.ctx.is_main:
            save_checkpoint(output_path, n.best_state, run.card({"validation": _brief(val)},
                                                                {"status": "in progress", "best_epoch": epoch}))
    else:
        n.bad += 1
    rec = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val["loss"],
           "val_mean_f1_use": val["mean_f1_use"], "lr": run.opt.param_groups[0]["lr"], "seconds": seconds,
           "improved": improved}
    n.history.append(rec)
    run.progress.info(f"epoch {rec['epoch']}/{run.epochs}: train loss {rec['train_loss']:.4f}, val loss "
                      f"{rec['val_loss']:.4f}, val mean F1 {rec['val_mean_f1_use']:.3f}, lr {rec['lr']:.2e}"
                      + (" (best)" if improved else ""))
    if run.ctx.is_main:
        _save_state(_resume_state(run, n, epoch), _state_path(output_path))
    return rec


def _resume_state(run: _Run, n: _Counters, epoch: int) -> dict:
    """The ``.resume.pt`` content after ``epoch``: weights, optimiser, scheduler, scaler and counters."""
    config = {k: v for k, v in run.config.items() if k != "num_workers"}
    return {"format": STATE_FORMAT, "params": run.params, "config": config, "epoch": epoch + 1,
            "step": n.step, "best_loss": n.best_loss, "best_epoch": n.best_epoch, "bad_epochs": n.bad,
            "history": n.history, "model": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
            "best_model": n.best_state, "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
            "scaler": run.scaler.state_dict(), **({"world_size": run.ctx.world_size} if run.ctx.enabled else {})}


def _finish_run(run: _Run, n: _Counters, dataset_dir, output_path, stopped_early: bool, seconds: float) -> dict:
    """Reload the best weights, measure them on the validation and test chips and write the final checkpoint."""
    ctx = run.ctx
    if n.best_state is None:
        raise InputError("EPOCHS", "no epoch was run (the resumed run had already finished).",
                         "raise the number of epochs to continue training.")
    if ctx.enabled:
        ctx.write_debug(final_state=distributed.state_hash(run.model.state_dict()),
                        best_state=distributed.state_hash(n.best_state), history=n.history)
    run.model.load_state_dict(n.best_state)
    metrics = {"validation": _brief(run.evaluate("val"))}
    if len(run.sets["test"]):
        metrics["test"] = _brief(run.evaluate("test"))
    config = {k: v for k, v in run.config.items() if k != "num_workers"}
    batch_size = config["batch_size"]
    summary = {"status": "finished", "dataset": str(dataset_dir), "chips": {s: len(v) for s, v in run.sets.items()},
               "device": str(run.dev), "world_size": ctx.world_size, "effective_batch_size": batch_size * ctx.world_size,
               "epochs_run": len(n.history), "iterations": n.step, "best_epoch": n.best_epoch + 1,
               "best_val_loss": n.best_loss, "stopped_early": stopped_early, "config": config,
               "loss": "lambda_B * Dice(footprint) + lambda_U * mean Dice(R, C, I) (seed Eq. 5-7)",
               "optimizer": "Adam + cosine annealing", "seconds": seconds, "history": n.history,
               "split": {s: run.manifest["split"]["subsets"][s]["buildings"] for s in ("train", "val", "test")}}
    if ctx.is_main:
        save_checkpoint(output_path, n.best_state, run.card(metrics, summary))
    run.progress.set_fraction(1.0)
    for sub, m in metrics.items():
        run.progress.info(f"{sub}: " + ", ".join(f"{c} F1 {m['per_class'][c]['f1']:.3f}" for c in USE_CLASSES)
                          + f", footprint IoU {m['footprint_iou']:.3f}")
    return {"output": str(output_path), "device": str(run.dev), "epochs_run": len(n.history),
            "best_epoch": n.best_epoch + 1, "best_val_loss": n.best_loss, "stopped_early": stopped_early,
            "history": n.history, "metrics": metrics, "resume_state": str(_state_path(output_path))}


def _brief(m: dict) -> dict:
    return {k: v for k, v in m.items() if k != "chips"}


def _resume(path, model, opt, sched, scaler, params, progress, world_size=1):
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError("RESUME_FROM", f"'{path}' could not be loaded ({type(exc).__name__}: {exc}).",
                         "give a .resume.pt file or an Edifice checkpoint.") from exc
    if isinstance(raw, dict) and raw.get("format") == STATE_FORMAT:
        if raw["params"] != params:
            raise InputError("RESUME_FROM", f"'{path}' was trained with {raw['params']}, not {params}.",
                             "resume with the same variant, encoder and dataset bands.")
        if raw.get("world_size", 1) != world_size:
            raise InputError("RESUME_FROM", f"'{path}' was trained by {raw.get('world_size', 1)} process(es), "
                             f"this run has {world_size}; the schedule depends on it.",
                             f"resume with {raw.get('world_size', 1)} process(es) (torchrun --nproc_per_node).")
        model.load_state_dict(raw["model"])
        opt.load_state_dict(raw["optimizer"])
        sched.load_state_dict(raw["scheduler"])
        scaler.load_state_dict(raw["scaler"])
        progress.info(f"Resuming after epoch {raw['epoch']} (best epoch {raw['best_epoch'] + 1}).")
        return (raw["epoch"], raw["best_loss"], raw["best_epoch"], raw["bad_epochs"], list(raw["history"]),
                raw["best_model"], raw["step"])
    try:
        state, card = load_checkpoint(path)
        other = build_from_card(card)
        if card["architecture"]["params"].get("in_channels") != params["in_channels"]:
            raise CheckpointError(f"the checkpoint takes {len(card['bands'])} bands, the dataset gives "
                                  f"{params['in_channels']} for this variant")
        load_state_strict(model, state)
    except CheckpointError as exc:
        raise InputError("RESUME_FROM", f"'{path}' does not fit this training run: {exc}.",
                         "give a checkpoint of the same variant, encoder and band count.") from exc
    del other
    progress.info(f"Starting from the weights of {path}.")
    return 0, math.inf, -1, 0, [], None, 0


__all__ = ["train_building_use", "resolve_device", "evaluate", "select_bands", "ChipSet", "LABEL_NAMES"]
