"""CCAP urban mask (SHAFTS ``utils/postprocessing.py``, paper appendix B; Cao et al. 2020).

For each footprint threshold d in ``linspace(0.01, 0.9, 891)`` the urban pixels are those with
footprint >= d and height >= h_min (metres); their 8-connected clusters give a criterion curve
(``Σ p_i ln p_i`` over cluster shares p_i, or the largest cluster's share), whose knee
(Kneedle, convex decreasing, online, S = 1) is the threshold. The knees follow **kneed <= 0.8.5
semantics**: :func:`find_knees` reimplements ``kneed.KneeLocator(...).all_knees`` as kneed 0.8.5
(the version SHAFTS's environment resolves to) computes it, without depending on kneed; a later
kneed release that changed its algorithm could pick other knees, and this module would not follow. Several predictions are fused by
averaging their masks. Connected components need the whole raster, so it is held in memory
(the outputs this is meant for are 100-1000 m grids).
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..grid import Grid
from ..progress import Progress, ensure
from ..outputs import refuse_input_as_output
from ..raster_io import (atomic_raster, open_raster, read_masked, require_band_count, require_memory,
                        require_real)
from ..styles import CCAP_CLASSES

#: memory CCAP holds per pixel of one height/footprint pair: two float64 arrays, the raw reads, masks
CCAP_BYTES_PER_PIXEL = 40

#: Candidate footprint thresholds, as SHAFTS.
THRESHOLDS = np.linspace(0.01, 0.9, 891)
CRITERIA = ("entropy", "largest_cluster")
_EIGHT = np.ones((3, 3), dtype=bool)


def cluster_criterion(urban: np.ndarray, criterion: str = "entropy") -> float:
    """Criterion of the 8-connected clusters of a boolean array: ``Σ p ln p`` ("entropy", no minus
    sign) or the largest cluster's share ("largest_cluster"); 0 when there is no urban pixel."""
    from scipy.ndimage import label
    labels, n = label(urban, structure=_EIGHT)
    if n == 0:
        return 0.0
    sizes = np.bincount(labels.ravel())[1:].astype(np.float64)
    p = sizes / sizes.sum()
    if criterion == "entropy":
        return float(np.sum(p * np.log(p)))
    if criterion == "largest_cluster":
        return float(p.max())
    raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")


def criterion_curve(height: np.ndarray, footprint: np.ndarray, h_min: float = 2.0,
                    criterion: str = "entropy", thresholds: np.ndarray = THRESHOLDS,
                    progress: Progress | None = None) -> np.ndarray:
    """Criterion per footprint threshold. NaN (nodata) counts as 0. ``height`` in metres,
    ``footprint`` as a fraction, same shape."""
    progress = ensure(progress)
    h = np.nan_to_num(np.asarray(height, dtype=np.float64), nan=0.0)
    f = np.nan_to_num(np.asarray(footprint, dtype=np.float64), nan=0.0)
    tall = h >= h_min
    out = np.empty(len(thresholds))
    for k, d in enumerate(thresholds):
        if k % 32 == 0:
            progress.check_cancelled()
            progress.set_fraction(k / len(thresholds))
        out[k] = cluster_criterion(tall & (f >= d), criterion)
    progress.set_fraction(1.0)
    return out


def _arg_rel_extrema(y: np.ndarray, comparator) -> np.ndarray:
    # scipy.signal.argrelextrema(y, comparator) with order 1, mode "clip": ends compare with themselves
    prev = np.concatenate([y[:1], y[:-1]])
    nxt = np.concatenate([y[1:], y[-1:]])
    return np.flatnonzero(comparator(y, prev) & comparator(y, nxt))


def find_knees(x: Sequence[float], y: Sequence[float], sensitivity: float = 1.0) -> list[float]:
    """All knees of a convex, decreasing curve by Kneedle (Satopää et al. 2011) as the ``kneed``
    package computes them with ``KneeLocator(x, y, S=sensitivity, curve="convex",
    direction="decreasing", online=True).all_knees``, in the order found; [] if none.
    kneed <= 0.8.5 semantics (checked against kneed 0.8.5); kneed itself is not imported."""
    from scipy.interpolate import interp1d
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size < 3 or np.ptp(x) == 0:
        return []
    ds_y = interp1d(x, y)(x)
    if np.ptp(ds_y) == 0 or not np.all(np.isfinite(ds_y)):
        return []
    xn = (x - x.min()) / (x.max() - x.min())
    yn = (ds_y - ds_y.min()) / (ds_y.max() - ds_y.min())
    yn = yn.max() - yn                       # convex decreasing -> knee shape
    diff = yn - xn
    maxima = _arg_rel_extrema(diff, np.greater_equal)
    minima = _arg_rel_extrema(diff, np.less_equal)
    if maxima.size == 0:
        return []
    tmx = diff[maxima] - sensitivity * np.abs(np.diff(xn).mean())
    knees: list[float] = []
    max_k = 0
    threshold, threshold_index = 0.0, int(maxima[0])
    is_max = np.zeros(diff.size, bool)
    is_max[maxima] = True
    is_min = np.zeros(diff.size, bool)
    is_min[minima] = True
    for i in range(int(maxima[0]), diff.size):
        if xn[i] == 1.0 or i + 1 >= diff.size:
            break
        if is_max[i]:
            threshold, threshold_index = tmx[max_k], i
            max_k += 1
        if is_min[i]:
            threshold = 0.0
        if diff[i + 1] < threshold:
            knee = float(x[threshold_index])
            if knee not in knees:
                knees.append(knee)
    return knees


def select_threshold(knees: Sequence[float], minimum: float = 0.05) -> float | None:
    """SHAFTS's choice among knees: round to 3 decimals, keep those >= ``minimum``, take the smallest."""
    kept = [round(k, 3) for k in knees if round(k, 3) >= minimum]
    return min(kept) if kept else None


def ccap_threshold(height: np.ndarray, footprint: np.ndarray, h_min: float = 2.0,
                   criterion: str = "entropy", progress: Progress | None = None) -> float:
    """Footprint threshold CCAP picks for one prediction (arrays, NaN = nodata); :class:`InputError`
    if the criterion curve has no knee >= 0.05."""
    if criterion not in CRITERIA:
        raise InputError("CRITERION", f"must be one of {', '.join(CRITERIA)}, got '{criterion}'.")
    curve = criterion_curve(height, footprint, h_min, criterion, THRESHOLDS, progress)
    t = select_threshold(find_knees(THRESHOLDS, curve))
    if t is None:
        raise InputError("FOOTPRINT", "the urban-cluster criterion has no knee at a footprint >= 0.05 "
                                      "(too few or too uniform built-up pixels).",
                         "use a larger area, lower the minimum height, or try the largest-cluster criterion.")
    return t


def urban_mask(height: np.ndarray, footprint: np.ndarray, threshold: float, h_min: float = 2.0) -> np.ndarray:
    """Boolean mask footprint >= threshold and height >= h_min (NaN counts as 0)."""
    h = np.nan_to_num(np.asarray(height, dtype=np.float64), nan=0.0)
    f = np.nan_to_num(np.asarray(footprint, dtype=np.float64), nan=0.0)
    return (f >= threshold) & (h >= h_min)


def fuse_masks(masks: Sequence[np.ndarray], ratio: float = 0.5) -> np.ndarray:
    """Urban where the mean of the boolean masks is >= ``ratio`` (SHAFTS: 0.5 for two models)."""
    return np.mean(np.stack([np.asarray(m, dtype=np.float64) for m in masks]), axis=0) >= ratio


def apply_mask(values: np.ndarray, mask: np.ndarray, nodata: float = np.nan) -> np.ndarray:
    """``values`` with ``nodata`` outside ``mask`` and where the value is exactly 0."""
    v = np.asarray(values, dtype=np.float64)
    return np.where(mask & (v != 0), v, nodata)


def ccap_arrays(pairs: Sequence[tuple[np.ndarray, np.ndarray]], h_min: float = 2.0,
                criterion: str = "entropy", ratio: float = 0.5,
                progress: Progress | None = None) -> tuple[np.ndarray, list[float]]:
    """Fused urban mask of one or more (height m, footprint fraction) predictions on one grid,
    and the threshold chosen for each."""
    progress = ensure(progress)
    if not pairs:
        raise InputError("INPUTS", "no height/footprint prediction was given.")
    thresholds, masks = [], []
    for k, (h, f) in enumerate(pairs):
        if np.shape(h) != np.shape(f):
            raise InputError("FOOTPRINT", f"has shape {np.shape(f)}, height has {np.shape(h)}.",
                             "give height and footprint rasters of the same prediction.")
        t = ccap_threshold(h, f, h_min, criterion, progress.span(k / len(pairs), (k + 1) / len(pairs)))
        thresholds.append(t)
        masks.append(urban_mask(h, f, t, h_min))
    return fuse_masks(masks, ratio), thresholds


def _read_all(path, name):
    """Band 1 of a single-band height or footprint raster as float64 with NaN for nodata, and its grid."""
    with open_raster(path, name) as ds:
        require_real(ds, name)
        require_band_count(ds, name, 1, "a height or footprint prediction")
        require_memory(name, ds.width * ds.height * CCAP_BYTES_PER_PIXEL, f"CCAP on {ds.width} x {ds.height} px",
                       "CCAP works on whole rasters: clip the predictions to the area of interest or use a "
                       "coarser resolution.")
        data, valid = read_masked(ds, None, name, [1])
        grid = Grid.from_dataset(ds)
    if not valid.any():
        raise InputError(name, f"'{path}' has no valid pixels (all nodata).",
                         "give a prediction that covers the area (check its nodata value).")
    return np.where(valid, data[0].astype(np.float64), np.nan), grid


def ccap_files(pairs: Sequence[tuple[str, str]], out_mask, masked_outputs: Sequence[tuple] | None = None,
               h_min: float = 2.0, criterion: str = "entropy", ratio: float = 0.5,
               nodata: float = -9999.0, progress: Progress | None = None) -> dict:
    """CCAP on GeoTIFFs: ``pairs`` of (height path, footprint path) predictions on one grid.

    Writes ``out_mask`` (uint8: 1 urban, 0 not, 255 where every input is nodata) and, for each
    pair, optional (height, footprint) outputs in ``masked_outputs`` (float32, ``nodata`` outside the
    mask or where the value is 0). All files are written atomically. Returns
    {"thresholds": [per pair], "urban_pixels": int, "mask": out_mask}.
    """
    refuse_input_as_output({"OUTPUT": out_mask, **{f"OUTPUT_{k + 1}": list(o) for k, o in
                                                  enumerate(masked_outputs or [])}},
                           {"HEIGHTS": [p[0] for p in pairs], "FOOTPRINTS": [p[1] for p in pairs]})
    progress = ensure(progress)
    arrays, grid0 = [], None
    for k, (hp, fp) in enumerate(pairs):
        h, gh = _read_all(hp, f"HEIGHT_{k + 1}")
        f, gf = _read_all(fp, f"FOOTPRINT_{k + 1}")
        for g, name in ((gh, f"HEIGHT_{k + 1}"), (gf, f"FOOTPRINT_{k + 1}")):
            grid0 = grid0 or g
            if g.shape != grid0.shape or not g.transform.almost_equals(grid0.transform) or g.crs != grid0.crs:
                raise InputError(name, "is not on the same grid as the first height raster.",
                                 "give predictions of one extent and resolution.")
        arrays.append((h, f))
    if masked_outputs is not None and len(masked_outputs) != len(pairs):
        raise InputError("OUTPUTS", f"{len(masked_outputs)} output pairs for {len(pairs)} predictions.")
    mask, thresholds = ccap_arrays(arrays, h_min, criterion, ratio, progress.span(0, 0.9))
    for t in thresholds:
        progress.info(f"CCAP footprint threshold {t:.3f} ({criterion}, height >= {h_min} m)")
    none_valid = np.all([np.isnan(h) & np.isnan(f) for h, f in arrays], axis=0)
    with contextlib.ExitStack() as stack:
        dst = stack.enter_context(atomic_raster(out_mask, grid0, 1, "uint8", nodata=255,
                                                descriptions=["CCAP urban mask (1 = urban)"],
                                                style="ccap_mask.qml", classes=CCAP_CLASSES))
        dst.write(np.where(none_valid, 255, mask.astype(np.uint8)).astype(np.uint8)[None])
        for (h, f), outs in zip(arrays, masked_outputs or []):
            for v, path, desc, qml in ((h, outs[0], "mean building height (m), urban only", "height_m.qml"),
                                       (f, outs[1], "building footprint fraction, urban only",
                                        "footprint_fraction.qml")):
                if path is None:
                    continue
                d = stack.enter_context(atomic_raster(path, grid0, 1, "float32", nodata=nodata,
                                                      descriptions=[desc], style=qml))
                m = apply_mask(np.nan_to_num(v, nan=0.0), mask, nodata)
                d.write(m.astype(np.float32)[None])
    progress.set_fraction(1.0)
    return {"thresholds": thresholds, "urban_pixels": int(mask.sum()), "mask": out_mask}
