"""File-to-file entry points of the SHAFTS-style height/footprint tools that need more than one
core step (used by the Processing algorithms and the CLI, so both do the same thing)."""
from __future__ import annotations

import numpy as np

from .errors import InputError
from .progress import Progress, ensure


def train_shafts_from_rasters(s1_path, s2_path, dem_path, footprint_reference, height_reference,
                              resolution_m: int, out_checkpoint, *, padding: float = 0.03,
                              val_fraction: float = 0.2, apply_filter: bool = True, task: str = "multi",
                              weighting: str = "uncertainty", epochs: int = 155, batch_size: int | None = None,
                              lr: float = 0.01, augment: bool = True, device: str = "auto", seed: int = 0,
                              init_checkpoint=None, progress: Progress | None = None) -> dict:
    """Cut training patches from Sentinel-1/2 + DEM at the reference grid cells
    (:func:`~edifice.core.shafts_training.extract_training_samples`), split them at random (``seed``)
    into training and validation (``val_fraction``), train (:func:`~edifice.core.shafts_training.train_shafts`)
    and save the best epoch to ``out_checkpoint`` (Edifice format; written only when training ends).
    Returns train_shafts's summary plus the sample counts."""
    from .shafts_training import extract_training_samples, initial_model, train_shafts
    progress = ensure(progress)
    if init_checkpoint is not None:  # checked before the patches are cut
        init_checkpoint = initial_model(init_checkpoint, int(resolution_m), task)
    if not 0.0 < val_fraction < 1.0:
        raise InputError("VALIDATION_FRACTION", f"must be between 0 and 1, got {val_fraction}.")
    if epochs < 1:
        raise InputError("EPOCHS", f"must be at least 1, got {epochs}.")
    samples = extract_training_samples(s1_path, s2_path, dem_path, footprint_reference, height_reference,
                                       int(resolution_m), padding=padding, apply_filter=apply_filter,
                                       progress=progress.span(0.0, 0.1))
    n = len(samples)
    n_val = max(1, int(round(n * val_fraction)))
    if n - n_val < 2:
        raise InputError("REFERENCE_HEIGHT", f"gives only {n} usable sample(s); at least 3 are needed "
                                             "(2 for training, 1 for validation).",
                         "use a larger area or more reference buildings.")
    order = np.random.default_rng(seed).permutation(n)
    val, train = samples.subset(np.sort(order[:n_val])), samples.subset(np.sort(order[n_val:]))
    progress.info(f"{len(train)} training and {len(val)} validation samples")
    out = train_shafts(train, val, int(resolution_m), out_checkpoint, task=task, weighting=weighting,
                       epochs=epochs, batch_size=batch_size, lr=lr, augment=augment, device=device, seed=seed,
                       init_checkpoint=init_checkpoint, progress=progress.span(0.1, 1.0))
    out.update(samples_train=len(train), samples_val=len(val), checkpoint=str(out_checkpoint))
    return out
