"""File-to-file entry points of the SHAFTS-style height/footprint tools that need more than one
core step (used by the Processing algorithms and the CLI, so both do the same thing)."""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..progress import Progress, ensure


def train_shafts_from_rasters(s1_path, s2_path, dem_path, footprint_reference, height_reference,
                              resolution_m: int, out_checkpoint, *, padding: float = 0.03,
                              val_fraction: float = 0.2, apply_filter: bool = True, task: str = "multi",
                              weighting: str = "uncertainty", epochs: int = 155, batch_size: int | None = None,
                              lr: float = 0.01, augment: bool = True, device: str = "auto", seed: int = 0,
                              init_checkpoint=None, threads: int | None = None,
                              progress: Progress | None = None) -> dict:
    """Cut training patches from Sentinel-1/2 + DEM at the reference grid cells
    (:func:`~edifice.core.height.shafts_training.extract_training_samples`), split them at random (``seed``)
    into training and validation (``val_fraction``), train (:func:`~edifice.core.height.shafts_training.train_shafts`)
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
                       init_checkpoint=init_checkpoint, progress=progress.span(0.1, 1.0),
                       **({} if threads is None else {"threads": threads}))
    out.update(samples_train=len(train), samples_val=len(val), checkpoint=str(out_checkpoint))
    return out


def height_footprint_from_composites(source, extent, checkpoint, out_dir, composite_paths: dict[str, str], *,
                                     resolution_m: int = 100, options=None, device: str = "auto",
                                     h_min: float = 2.0, progress: Progress | None = None) -> dict:
    """Extent + year -> composites -> height and footprint -> CCAP urban mask (the CLI's
    ``sentinel-height-footprint``; the graphical model ``sentinel_height_footprint`` chains the same tools).

    ``source``: a composite source for the year (``core.acquire.composites.open_source``); ``extent``:
    (xmin, ymin, xmax, ymax) in degrees; ``composite_paths``: {"S1", "S2", "DEM"} -> GeoTIFF paths;
    writes height.tif, footprint.tif and ccap_mask.tif into ``out_dir``."""
    from pathlib import Path

    from ..acquire.composites import make_composites
    from .ccap import ccap_files
    from .shafts_inference import predict_height_footprint_shafts
    progress = ensure(progress)
    comps = make_composites(source, extent, composite_paths, resolution_m=resolution_m, options=options,
                            progress=progress.span(0.0, 0.6))
    out = Path(out_dir)
    padding = comps["padding_deg"]    # the composites cover the extent plus this, snapped outwards
    pred = predict_height_footprint_shafts(
        composite_paths["S1"], composite_paths["S2"], composite_paths["DEM"], tuple(extent), checkpoint,
        int(resolution_m), str(out / "height.tif"), str(out / "footprint.tif"), padding=padding, device=device,
        progress=progress.span(0.6, 0.95))
    mask = ccap_files([(pred["height"], pred["footprint"])], str(out / "ccap_mask.tif"), h_min=h_min,
                      progress=progress.span(0.95, 1.0))
    return {"composites": comps, "height": pred["height"], "footprint": pred["footprint"],
            "device": pred["device"], "valid_pixels": pred["valid_pixels"], "ccap": mask}
