"""Height (and other continuous) evaluation, SHAFTS-style.

Metrics of predicted vs reference values (metres for heights; differences are
prediction - reference):

* RMSE, MAE, ME (mean error = bias), NMAD = 1.4826 * median(|d - median(d)|),
  CC (Pearson correlation), R² (coefficient of determination of the prediction
  against the reference: 1 - SS_res / SS_tot);
* wRMSE and wR² as the paper defines them (Li et al. 2023, Table 2), by default
  (``weighting="paper"``): w_i is the frequency of the reference value y_i, a 1-D
  Gaussian KDE of the reference values (scipy.stats.gaussian_kde, Scott's
  bandwidth) evaluated at y_i and min-max scaled to [0, 1];
  wRMSE = sqrt(1/N Σ w_i Δy_i²) (normalised by N, not Σw) and
  wR² = 1 - Σ w_i Δy_i² / Σ w_i (y_i - μ_y)² with μ_y the plain sample mean.
  ``weighting="shafts_figures"`` reproduces the numbers of SHAFTS's figure code
  instead (``paper_plot.py`` of LllC-mmd/SHAFTS, commit 1849091, ``fig_4``): a 2-D
  KDE of the (reference, prediction) pairs, min-max scaled, passed as
  ``sample_weight`` to scikit-learn's ``mean_squared_error`` / ``r2_score``
  (normalised by Σw, weighted mean). The two disagree; the paper's table is the
  published definition and weights by how common a target value is, which is
  what a reader of a wRMSE expects, so it is the default; the min-max scaling
  (which the paper does not state) is taken from the code, so that both use
  weights in [0, 1];
* bias stratified by reference-height bins (edges 0, 3, 6, ..., 30 m and
  above by default).

Entry points: :func:`evaluate_height_rasters` (raster vs raster on a common
grid) and :func:`evaluate_building_heights` (per building: zonal mean of a
height raster under reference polygons, or matched predicted polygons with a
height attribute).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import rasterio.features
import shapely
from scipy import stats

from ..errors import InputError
from .tables import as_float, read_table, reproject_geoms
from .classification import aligned_window, match_largest_overlap, overlap_blocks
from ..grid import Grid
from ..progress import Progress
from ..raster_io import open_raster, read_masked, require_crs
from rasterio.windows import Window

#: Default height-bin edges in metres (3, 6, ..., 30 m; last bin open-ended).
HEIGHT_BINS = tuple(float(x) for x in range(0, 33, 3))
#: Above this many pairs the KDE is fitted on a seeded sample and interpolated from a grid.
KDE_EXACT_LIMIT = 20000


def kde_weights(reference: np.ndarray, prediction: np.ndarray, exact_limit: int = KDE_EXACT_LIMIT,
                seed: int = 0) -> np.ndarray:
    """Density weights of (reference, prediction) pairs in [0, 1].

    2-D Gaussian KDE over the pairs evaluated at each pair, min-max scaled.
    Up to ``exact_limit`` pairs this is exact; beyond, the KDE is fitted on a
    seeded sample of ``exact_limit`` pairs, evaluated on a 128 x 128 grid and
    interpolated bilinearly (approximation, for millions of pixels). All-equal
    densities (or singular data, e.g. a constant prediction) give weights of 1.
    """
    r = np.asarray(reference, dtype=np.float64)
    p = np.asarray(prediction, dtype=np.float64)
    n = len(r)
    if n < 3:
        return np.ones(n)
    xy = np.vstack([r, p])
    try:
        if n <= exact_limit:
            dens = stats.gaussian_kde(xy)(xy)
        else:
            rng = np.random.default_rng(seed)
            kde = stats.gaussian_kde(xy[:, rng.choice(n, exact_limit, replace=False)])
            gx = np.linspace(r.min(), r.max(), 128)
            gy = np.linspace(p.min(), p.max(), 128)
            gxx, gyy = np.meshgrid(gx, gy, indexing="ij")
            grid = kde(np.vstack([gxx.ravel(), gyy.ravel()])).reshape(128, 128)
            from scipy.interpolate import RegularGridInterpolator
            dens = RegularGridInterpolator((gx, gy), grid, bounds_error=False, fill_value=None)(xy.T)
    except (np.linalg.LinAlgError, ValueError):
        return np.ones(n)
    return _min_max(dens)


def _min_max(dens: np.ndarray) -> np.ndarray:
    """Densities scaled to [0, 1]; all equal (or not finite) -> weights of 1."""
    lo, hi = dens.min(), dens.max()
    if not np.isfinite(hi - lo) or hi - lo <= 0:
        return np.ones(len(dens))
    return (dens - lo) / (hi - lo)


#: ``weighting`` values of :func:`regression_metrics`.
WEIGHTINGS = ("paper", "shafts_figures")


def reference_frequency_weights(reference: np.ndarray, exact_limit: int = KDE_EXACT_LIMIT) -> np.ndarray:
    """Weights of the paper's Table 2: the frequency of each reference value, a 1-D Gaussian KDE
    (Scott's bandwidth) of the reference values evaluated at them, min-max scaled to [0, 1]. Beyond
    ``exact_limit`` values the KDE is evaluated on 512 points and interpolated linearly.
    A constant reference gives weights of 1."""
    r = np.asarray(reference, dtype=np.float64)
    n = len(r)
    if n < 3 or r.std() == 0:
        return np.ones(n)
    try:
        kde = stats.gaussian_kde(r)
        if n <= exact_limit:
            dens = kde(r)
        else:
            g = np.linspace(r.min(), r.max(), 512)
            dens = np.interp(r, g, kde(g))
    except (np.linalg.LinAlgError, ValueError):
        return np.ones(n)
    return _min_max(dens)


def paper_weighted_metrics(reference: np.ndarray, prediction: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """(wRMSE, wR²) of the paper's Table 2: sqrt(1/N Σ w Δy²) and 1 - Σ w Δy² / Σ w (y - μ_y)²
    (μ_y the unweighted mean; wR² is 1 for a perfect prediction of a constant reference)."""
    d = prediction - reference
    wrmse = float(np.sqrt(np.mean(w * d ** 2)))
    ss_tot = float((w * (reference - reference.mean()) ** 2).sum())
    ss_res = float((w * d ** 2).sum())
    if ss_tot == 0:
        return wrmse, 1.0 if ss_res == 0 else 0.0
    return wrmse, 1.0 - ss_res / ss_tot


def _r2(ref, pred, w=None) -> float:
    w = np.ones_like(ref) if w is None else w
    sw = w.sum()
    if sw <= 0:
        return 0.0
    mean = (w * ref).sum() / sw
    ss_tot = (w * (ref - mean) ** 2).sum()
    ss_res = (w * (pred - ref) ** 2).sum()
    if ss_tot == 0:
        return 1.0 if ss_res == 0 else 0.0
    return float(1.0 - ss_res / ss_tot)


def regression_metrics(reference: Sequence[float], prediction: Sequence[float],
                       bins: Sequence[float] | None = HEIGHT_BINS, weighted: bool = True,
                       kde_exact_limit: int = KDE_EXACT_LIMIT, seed: int = 0, weighting: str = "paper") -> dict:
    """All metrics for paired values (NaN pairs dropped); units those of the input.

    Returns ``{"n", "rmse", "wrmse", "mae", "me", "nmad", "cc", "r2", "wr2",
    "reference_mean", "prediction_mean", "bins": [{"lower", "upper", "n", "me",
    "mae", "rmse"}, ...]}``. Undefined values (CC with a constant input) are
    None, never NaN. ``weighted=False`` skips the KDE (wRMSE, wR² = None).
    ``weighting``: ``paper`` (Table 2, default) or ``shafts_figures`` (SHAFTS's figure
    code); see the module docstring. The result names it under ``weighting``.
    """
    if weighting not in WEIGHTINGS:
        raise InputError("WEIGHTING", f"'{weighting}' is not a weighting.", f"use one of {', '.join(WEIGHTINGS)}.")
    r = np.asarray(reference, dtype=np.float64).ravel()
    p = np.asarray(prediction, dtype=np.float64).ravel()
    if r.shape != p.shape:
        raise InputError("PREDICTION", f"{len(r)} reference values but {len(p)} predictions.")
    ok = np.isfinite(r) & np.isfinite(p)
    r, p = r[ok], p[ok]
    n = len(r)
    if n == 0:
        raise InputError("REFERENCE", "no pair of valid reference and predicted values (empty intersection).",
                         "check that the inputs overlap and that nodata is set correctly.")
    d = p - r
    out = {
        "kind": "regression", "n": int(n),
        "rmse": float(np.sqrt(np.mean(d ** 2))),
        "mae": float(np.mean(np.abs(d))),
        "me": float(np.mean(d)),
        "nmad": float(1.4826 * np.median(np.abs(d - np.median(d)))),
        "cc": None, "r2": _r2(r, p), "wrmse": None, "wr2": None,
        "reference_mean": float(r.mean()), "prediction_mean": float(p.mean()),
    }
    if n > 1 and r.std() > 0 and p.std() > 0:
        out["cc"] = float(np.corrcoef(r, p)[0, 1])
    if weighted and weighting == "paper":
        out["wrmse"], out["wr2"] = paper_weighted_metrics(r, p, reference_frequency_weights(r, kde_exact_limit))
        out["weighting"] = weighting
    elif weighted:
        w = kde_weights(r, p, kde_exact_limit, seed)
        if w.sum() > 0:
            out["wrmse"] = float(np.sqrt((w * d ** 2).sum() / w.sum()))
            out["wr2"] = _r2(r, p, w)
        out["weighting"] = weighting
    out["bins"] = height_bin_bias(r, p, bins) if bins else []
    return out


def height_bin_bias(reference: np.ndarray, prediction: np.ndarray,
                    edges: Sequence[float] = HEIGHT_BINS) -> list[dict]:
    """Bias (ME), MAE and RMSE of prediction - reference per reference bin
    [edges[i], edges[i+1]); the last bin is [edges[-1], inf). Values below
    edges[0] are left out. Empty bins have n = 0 and None metrics."""
    r = np.asarray(reference, dtype=np.float64)
    p = np.asarray(prediction, dtype=np.float64)
    e = list(edges) + [np.inf]
    rows = []
    for lo, hi in zip(e[:-1], e[1:]):
        sel = (r >= lo) & (r < hi)
        d = p[sel] - r[sel]
        k = int(sel.sum())
        rows.append({"lower": float(lo), "upper": None if np.isinf(hi) else float(hi), "n": k,
                     "me": float(d.mean()) if k else None, "mae": float(np.abs(d).mean()) if k else None,
                     "rmse": float(np.sqrt((d ** 2).mean())) if k else None})
    return rows


def _finish(res: dict, comparison: str, pairs, json_path, html_path, csv_path, title, matching=None):
    res["comparison"] = comparison
    if matching:
        res["matching"] = matching
        for key in ("matched", "unmatched_reference", "unmatched_prediction"):
            res[key] = matching.get(key, 0)
    # a thinned sample of pairs for the scatter plot of the HTML report
    r, p = pairs
    if len(r) > 5000:
        idx = np.random.default_rng(0).choice(len(r), 5000, replace=False)
        r, p = r[idx], p[idx]
    res["sample"] = {"reference": [round(float(x), 3) for x in r], "prediction": [round(float(x), 3) for x in p]}
    if json_path or html_path or csv_path:
        from .reports import write_reports
        write_reports(res, json_path=json_path, html_path=html_path, csv_path=csv_path, title=title)
    return res


def evaluate_height_rasters(prediction_raster, reference_raster, building_mask=None, band: int = 1,
                            reference_band: int = 1, bins: Sequence[float] | None = HEIGHT_BINS,
                            min_reference: float | None = None, block_size: int = 1024, seed: int = 0,
                            json_path=None, html_path=None, csv_path=None, title: str | None = None,
                            progress: Progress | None = None) -> dict:
    """Raster vs raster: predicted heights against reference heights (metres)
    on the prediction grid; the reference must share CRS, pixel size and
    alignment (only the overlap is scored). Nodata/NaN pixels of either are
    skipped; ``building_mask`` (polygons) keeps only pixels inside buildings;
    ``min_reference`` drops pixels whose reference is below it (e.g. 0 = ground)."""
    progress = progress or Progress()
    pds = open_raster(prediction_raster, "PREDICTION")
    rds = open_raster(reference_raster, "REFERENCE")
    try:
        require_crs(pds, "PREDICTION")
        grid = Grid.from_dataset(pds)
        out_win, rwin = aligned_window(rds, grid, "REFERENCE")
        dr, dc = int(rwin.row_off - out_win.row_off), int(rwin.col_off - out_win.col_off)
        mask_geoms = None
        if building_mask not in (None, ""):
            _, mg, crs = read_table(building_mask, [], None, "BUILDING_MASK", geometry=True)
            mask_geoms = reproject_geoms(mg, crs, grid.crs, "BUILDING_MASK")
        rs, ps = [], []
        for n, n_blocks, gw in overlap_blocks(grid, out_win, block_size):
            progress.check_cancelled()
            pv, pok = read_masked(pds, gw, "PREDICTION", [band])
            rv, rok = read_masked(rds, Window(gw.col_off + dc, gw.row_off + dr, gw.width, gw.height),
                                  "REFERENCE", [reference_band])
            ok = pok & rok
            if mask_geoms is not None:
                ok &= rasterio.features.geometry_mask(mask_geoms, ok.shape, grid.window_transform(gw),
                                                      invert=True)
            if min_reference is not None:
                ok &= rv[0] >= min_reference
            rs.append(rv[0][ok].astype(np.float64))
            ps.append(pv[0][ok].astype(np.float64))
            progress.set_fraction(0.8 * (n + 1) / n_blocks)
    finally:
        pds.close()
        rds.close()
    r, p = np.concatenate(rs), np.concatenate(ps)
    res = regression_metrics(r, p, bins, seed=seed)
    res["unit"] = "pixels"
    progress.set_fraction(1.0)
    return _finish(res, "pixel", (r, p), json_path, html_path, csv_path, title)


def zonal_mean(raster, geoms: np.ndarray, geoms_crs, band: int = 1, all_touched: bool = False,
               progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean of valid raster values under each polygon (pixel centres inside,
    or every touched pixel with ``all_touched``) and the pixel count. Polygons
    are reprojected to the raster CRS; where polygons overlap, a pixel counts
    for the one drawn last. Returns (means with NaN where no pixel, counts)."""
    progress = progress or Progress()
    ds = open_raster(raster, "PREDICTION")
    try:
        require_crs(ds, "PREDICTION")
        grid = Grid.from_dataset(ds)
        g = reproject_geoms(np.asarray(geoms, dtype=object), geoms_crs, grid.crs, "REFERENCE")
        ids = np.arange(1, len(g) + 1, dtype=np.int32)
        keep = ~shapely.is_empty(g) & ~shapely.is_missing(g)
        tree = shapely.STRtree(g[keep])
        gk, ik = g[keep], ids[keep]
        sums = np.zeros(len(g) + 1)
        cnts = np.zeros(len(g) + 1, dtype=np.int64)
        blocks = list(grid.blocks(1024))
        for n, blk in enumerate(blocks):
            progress.check_cancelled()
            wt = grid.window_transform(blk.window)
            h, w = int(blk.window.height), int(blk.window.width)
            box = shapely.box(wt.c, wt.f + wt.e * h, wt.c + wt.a * w, wt.f)
            idx = tree.query(box)
            if len(idx) == 0:
                continue
            lab = rasterio.features.rasterize(zip(gk[idx], ik[idx]), out_shape=(h, w), transform=wt, fill=0,
                                              all_touched=all_touched, dtype="int32")
            v, ok = read_masked(ds, blk.window, "PREDICTION", [band])
            ok &= lab > 0
            sums += np.bincount(lab[ok], weights=v[0][ok].astype(np.float64), minlength=len(g) + 1)
            cnts += np.bincount(lab[ok], minlength=len(g) + 1)
            progress.set_fraction((n + 1) / len(blocks))
    finally:
        ds.close()
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(cnts > 0, sums / np.maximum(cnts, 1), np.nan)
    return means[1:], cnts[1:]


def evaluate_building_heights(reference_path, reference_height_field: str, prediction_raster=None,
                              prediction_path=None, prediction_height_field: str | None = None,
                              min_overlap: float = 0.1, band: int = 1, all_touched: bool = False,
                              bins: Sequence[float] | None = HEIGHT_BINS, reference_layer=None,
                              prediction_layer=None, seed: int = 0, json_path=None, html_path=None,
                              csv_path=None, title: str | None = None, progress: Progress | None = None) -> dict:
    """Per building: reference polygons with a height attribute (metres)
    against either a height raster (zonal mean under each polygon) or
    predicted polygons with a height attribute (largest-overlap matching, the
    prediction reprojected to the reference CRS). Buildings without a valid
    reference or prediction are counted as unmatched."""
    progress = progress or Progress()
    if (prediction_raster in (None, "")) == (prediction_path in (None, "")):
        raise InputError("PREDICTION", "give either a height raster or predicted polygons (not both).")
    rc, rg, rcrs = read_table(reference_path, [reference_height_field], reference_layer, "REFERENCE",
                              geometry=True)
    ref = as_float(rc[reference_height_field], "REFERENCE", reference_height_field)
    if prediction_raster not in (None, ""):
        pred, counts = zonal_mean(prediction_raster, rg, rcrs, band, all_touched, progress.span(0, 0.8))
        matching = {"method": "zonal mean", "buildings_without_pixels": int((counts == 0).sum())}
        n_pred = None
    else:
        if not prediction_height_field:
            raise InputError("PREDICTION_FIELD", "no field with the predicted height was given.", "choose a field.")
        pc, pg, pcrs = read_table(prediction_path, [prediction_height_field], prediction_layer, "PREDICTION",
                                  geometry=True)
        pg = reproject_geoms(pg, pcrs, rcrs, "PREDICTION")
        best, _ = match_largest_overlap(rg, pg, min_overlap)
        pv = as_float(pc[prediction_height_field], "PREDICTION", prediction_height_field)
        pred = np.where(best >= 0, pv[np.maximum(best, 0)], np.nan)
        matching = {"method": "largest overlap", "min_overlap": min_overlap}
        n_pred = len(pg)
        used = np.bincount(best[best >= 0], minlength=len(pg))
    ok = np.isfinite(ref) & np.isfinite(pred)
    matching.update(matched=int(ok.sum()), unmatched_reference=int((~ok).sum()),
                    reference_without_height=int((~np.isfinite(ref)).sum()))
    matching["unmatched_prediction"] = 0 if n_pred is None else int((used == 0).sum())
    res = regression_metrics(ref[ok], pred[ok], bins, seed=seed)
    res["unit"] = "buildings"
    progress.set_fraction(1.0)
    return _finish(res, "building", (ref[ok], pred[ok]), json_path, html_path, csv_path, title, matching)
