"""Building-use evaluation at three levels of comparison: table, building, pixel.

Every entry point scores one prediction at one or several levels of a
taxonomy (fine -> coarse -> R/C/I, see :mod:`edifice.core.taxonomy`) and
returns a JSON-able dict::

    {"kind": "classification", "comparison": "table"|"building"|"pixel",
     "taxonomy": name, "levels": [...], "by_level": {level: summary},
     "matching": {...},
     # the first level's summary is repeated at the top level:
     "classes", "confusion_matrix", "per_class", "overall_accuracy", "kappa",
     "averages", "confidence_intervals", "matched", "unmatched_reference",
     "unmatched_prediction", ...}

A level summary is :func:`edifice.core.evaluation.metrics.classification_summary` plus
``ignored`` (items whose label maps to ``none`` or is missing),
``unknown_reference`` / ``unknown_prediction`` ({label: count} of labels not
in the taxonomy) and ``missing_reference`` / ``missing_prediction``.
Confusion matrices have rows = reference, columns = prediction; for pixels
the unit is pixels, otherwise items (buildings, table rows).

Passing ``json_path``, ``html_path`` or ``csv_path`` writes the reports as well
(atomically; see :mod:`edifice.core.evaluation.reports`), so each entry point is one call.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
import rasterio
import rasterio.features
import shapely
from rasterio.windows import Window

from . import metrics
from ..errors import InputError
from .tables import as_str_labels, read_table, reproject_geoms
from ..grid import Grid
from ..progress import Progress
from ..raster_io import open_raster, read_masked, require_crs
from ..taxonomy import IGNORED, Taxonomy, resolve_taxonomy


# --------------------------------------------------------------------------
# scoring raw (reference label, prediction label) counts at several levels
# --------------------------------------------------------------------------

def score_raw_counts(ref_labels: Sequence[str], pred_labels: Sequence[str], counts: np.ndarray,
                     taxonomy: "Taxonomy | str | None" = None, levels: Sequence[str] | None = None,
                     prediction_taxonomy: "Taxonomy | str | None" = None, classes: Sequence[str] | None = None,
                     unknown: str = "other", n_boot: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> dict:
    """Score a raw contingency table at each requested taxonomy level.

    ``counts[i, j]`` is the number of items with reference label
    ``ref_labels[i]`` and predicted label ``pred_labels[j]`` (raw labels, before
    the taxonomy). ``taxonomy`` maps reference labels (and prediction labels
    unless ``prediction_taxonomy`` is given); None with ``classes`` None uses
    the distinct labels themselves (then a ``prediction_taxonomy`` maps the
    predictions to its coarsest level). ``levels`` default to all levels, fine
    to coarse (with a different prediction taxonomy: those both have); the
    first is repeated at the top of the result. A level the prediction
    taxonomy lacks is refused (InputError SCORE_LEVEL), never replaced.
    """
    counts = np.asarray(counts, dtype=np.int64)
    tax = resolve_taxonomy(taxonomy, list(ref_labels) + list(pred_labels), classes)
    ptax = resolve_taxonomy(prediction_taxonomy, (), None) if prediction_taxonomy not in (None, "") else tax
    flat_ref = taxonomy in (None, "")  # reference labels as they are: predictions go to ptax's coarsest level
    names = _score_levels(tax, ptax, levels, check_prediction=ptax is not tax and not flat_ref)
    ref_w = counts.sum(axis=1)
    pred_w = counts.sum(axis=0)
    by_level = {}
    for name in names:
        mr = tax.map(ref_labels, name, unknown, "REFERENCE labels", ref_w)
        mp = ptax.map(pred_labels, None if flat_ref and ptax is not tax else name, unknown, "PREDICTION labels", pred_w)
        cls = tax.classes(name, extra=mr.labels + mp.labels)
        cm = _level_confusion(counts, mr.labels, mp.labels, cls)
        _require_scored(cm, counts, name, mr, mp)
        summary = metrics.classification_summary(cm, cls, n_boot, confidence, seed)
        summary.update({"ignored": int(counts.sum() - cm.sum()), "warnings": _disjoint_warning(cm, cls, name),
                        "unknown_reference": mr.unknown, "unknown_prediction": mp.unknown,
                        "missing_reference": mr.missing, "missing_prediction": mp.missing})
        by_level[name] = summary
    out = {"kind": "classification", "taxonomy": tax.name, "levels": names, "by_level": by_level}
    out.update(by_level[names[0]])
    out["warnings"] = [w for lv in names for w in by_level[lv]["warnings"]]
    return out


def _score_levels(tax, ptax, levels: Sequence[str] | None, check_prediction: bool) -> list[str]:
    """The taxonomy levels to score (default: all, or with a different prediction taxonomy all both
    have); with ``check_prediction`` a level the prediction taxonomy lacks is refused."""
    if levels is None or len(levels) == 0:
        levels = list(tax.levels)
        if check_prediction:
            levels = [lv for lv in levels if lv in ptax.levels] or levels
    names = [tax.levels[tax.level_index(lv)] for lv in levels]
    missing = [n for n in names if n not in ptax.levels] if check_prediction else []
    if missing:
        shared = [lv for lv in tax.levels if lv in ptax.levels]
        fix = (f"score at a level both have ({', '.join(shared)})" if shared else
               f"give the prediction taxonomy a level named like one of the reference's "
               f"({', '.join(tax.levels)}) in its header")
        raise InputError("SCORE_LEVEL",
                         f"the prediction taxonomy '{ptax.name}' has no level "
                         f"{', '.join(repr(m) for m in missing)} (its levels: {', '.join(ptax.levels)}), "
                         "so predictions cannot be mapped to it.",
                         fix + ", or use the same taxonomy for both sides.")
    return names


def _level_confusion(counts: np.ndarray, ref_mapped: Sequence[str], pred_mapped: Sequence[str],
                     cls: Sequence[str]) -> np.ndarray:
    """The raw table folded onto one level's classes ``cls`` (rows reference, columns prediction);
    labels outside ``cls`` are left out."""
    index = {c: k for k, c in enumerate(cls)}
    ri = np.array([index.get(x, -1) for x in ref_mapped], dtype=np.int64)
    pj = np.array([index.get(x, -1) for x in pred_mapped], dtype=np.int64)
    cm = np.zeros((len(cls), len(cls)), dtype=np.int64)
    keep_r, keep_p = ri >= 0, pj >= 0
    np.add.at(cm, (ri[keep_r][:, None], pj[keep_p][None, :]), counts[np.ix_(keep_r, keep_p)])
    return cm


def _require_scored(cm: np.ndarray, counts: np.ndarray, level: str, mr, mp) -> None:
    """No metric for n = 0: refuse when every item was left out (empty, 'no use' or unknown labels)."""
    if cm.sum() > 0:
        return
    n = int(counts.sum())
    raise InputError("PREDICTION", f"nothing was scored at level '{level}': all {n} compared item(s) have an "
                     "empty, 'no use' or ignored label on one side (missing labels: reference "
                     f"{mr.missing}, prediction {mp.missing}), so no accuracy, kappa or F1 exists.",
                     "check the fields (PREDICTION_FIELD / REFERENCE_FIELD) hold use labels and that the taxonomy "
                     "maps them (UNKNOWN_LABELS 'map to other' keeps unknown ones).")


def _disjoint_warning(cm: np.ndarray, classes: Sequence[str], level: str) -> list[str]:
    """A warning when no class occurs on both sides: every item is then wrong by construction, which
    usually means the two sides name their classes differently (e.g. raster values vs names)."""
    ref = [c for c, k in zip(classes, cm.sum(axis=1)) if k]
    pred = [c for c, k in zip(classes, cm.sum(axis=0)) if k]
    if not ref or not pred or set(ref) & set(pred):
        return []
    return [f"[{level}] no class occurs in both the reference ({', '.join(ref[:8])}) and the prediction "
            f"({', '.join(pred[:8])}): every item is counted wrong, so accuracy and kappa are 0 by construction. "
            "If the labels are raster values, name them (CLASS_NAMES / --class-names for the prediction, "
            "REFERENCE_CLASS_NAMES / --reference-class-names for the reference), or map both sides with a "
            "taxonomy."]


def pair_counts(reference: Sequence[str], prediction: Sequence[str]) -> tuple[list[str], list[str], np.ndarray]:
    """Raw contingency table of paired labels: (ref labels, pred labels, counts)."""
    return contingency(Counter(zip(reference, prediction)))


def contingency(joint: Counter) -> tuple[list, list, np.ndarray]:
    """{(reference key, prediction key): count} as (sorted reference keys, sorted
    prediction keys, counts[reference, prediction])."""
    rl = sorted({r for r, _ in joint})
    pl = sorted({p for _, p in joint})
    ri = {x: i for i, x in enumerate(rl)}
    pi = {x: i for i, x in enumerate(pl)}
    counts = np.zeros((len(rl), len(pl)), dtype=np.int64)
    for (r, p), n in joint.items():
        counts[ri[r], pi[p]] += n
    return rl, pl, counts


def score_labels(reference: Sequence, prediction: Sequence, taxonomy=None, levels=None, **kw) -> dict:
    """Score paired raw labels (one pair per item) at taxonomy ``levels``;
    keywords as :func:`score_raw_counts`."""
    if len(reference) != len(prediction):
        raise InputError("LABELS", f"{len(reference)} reference but {len(prediction)} predicted labels.")
    rl, pl, counts = pair_counts(["" if x is None else str(x).strip() for x in reference],
                                 ["" if x is None else str(x).strip() for x in prediction])
    return score_raw_counts(rl, pl, counts, taxonomy, levels, **kw)


def _finish(result: dict, comparison: str, matching: dict, json_path=None, html_path=None,
            csv_path=None, title: str | None = None) -> dict:
    result["comparison"] = comparison
    result["matching"] = matching
    for key in ("matched", "unmatched_reference", "unmatched_prediction"):
        result[key] = matching.get(key, 0)
    if json_path or html_path or csv_path:
        from .reports import write_reports
        write_reports(result, json_path=json_path, html_path=html_path, csv_path=csv_path, title=title)
    return result


# --------------------------------------------------------------------------
# table level
# --------------------------------------------------------------------------

def join_on_ids(ref_ids: Sequence, ref_labels: Sequence, pred_ids: Sequence, pred_labels: Sequence,
                what: str = "ID_FIELD") -> tuple[list[str], list[str], dict]:
    """Pair labels by id (ids compared as text). Returns (reference labels,
    predicted labels, matching counts). Duplicate ids or no common id raise
    :class:`InputError`."""
    rid = as_str_labels(np.asarray(ref_ids, dtype=object))
    pid = as_str_labels(np.asarray(pred_ids, dtype=object))
    for side, ids in (("reference", rid), ("prediction", pid)):
        dup = [i for i, n in Counter(ids).items() if n > 1]
        if dup:
            raise InputError(what, f"the {side} has {len(dup)} repeated ids (e.g. {dup[:5]}).",
                             "give an id field whose values are unique.")
    pmap = dict(zip(pid, pred_labels))
    common = [i for i in rid if i in pmap]
    if not common:
        raise InputError(what, f"reference ({len(rid)} rows, e.g. {rid[:3]}) and prediction ({len(pid)} rows, "
                               f"e.g. {pid[:3]}) have no id in common.",
                         "choose the id fields that identify the same buildings in both tables.")
    rmap = dict(zip(rid, ref_labels))
    ref = [rmap[i] for i in common]
    pred = [pmap[i] for i in common]
    matching = {"matched": len(common), "unmatched_reference": len(rid) - len(common),
                "unmatched_prediction": len(pid) - len(common)}
    return ref, pred, matching


def evaluate_table(reference_path, reference_field: str, prediction_field: str, id_field: str | None = None,
                   prediction_path=None, prediction_id_field: str | None = None,
                   taxonomy=None, levels: Sequence[str] | None = None, prediction_taxonomy=None,
                   unknown: str = "other", n_boot: int = 1000, seed: int = 0, confidence: float = 0.95,
                   json_path=None, html_path=None, csv_path=None, title: str | None = None,
                   progress: Progress | None = None) -> dict:
    """Table level: score labels of a table (CSV or any vector layer's attributes).

    One table holding both ``reference_field`` and ``prediction_field``, or two
    tables joined on ``id_field`` (``prediction_id_field`` in the prediction
    table, default the same name). Unmatched ids on each side are counted.
    """
    progress = progress or Progress()
    if prediction_path in (None, ""):
        cols, _, _ = read_table(reference_path, [reference_field, prediction_field], what="REFERENCE")
        ref = as_str_labels(cols[reference_field])
        pred = as_str_labels(cols[prediction_field])
        matching = {"matched": len(ref), "unmatched_reference": 0, "unmatched_prediction": 0}
    else:
        if not id_field:
            raise InputError("ID_FIELD", "two tables need an id field to be joined.", "choose the id field.")
        rc, _, _ = read_table(reference_path, [id_field, reference_field], what="REFERENCE")
        pc, _, _ = read_table(prediction_path, [prediction_id_field or id_field, prediction_field],
                              what="PREDICTION")
        ref, pred, matching = join_on_ids(rc[id_field], as_str_labels(rc[reference_field]),
                                          pc[prediction_id_field or id_field],
                                          as_str_labels(pc[prediction_field]))
    progress.set_fraction(0.5)
    res = score_labels(ref, pred, taxonomy, levels, prediction_taxonomy=prediction_taxonomy, unknown=unknown,
                       n_boot=n_boot, seed=seed, confidence=confidence)
    progress.set_fraction(1.0)
    return _finish(res, "table", matching, json_path, html_path, csv_path, title)


# --------------------------------------------------------------------------
# building level
# --------------------------------------------------------------------------

def match_largest_overlap(reference: np.ndarray, prediction: np.ndarray, min_overlap: float = 0.1
                          ) -> tuple[np.ndarray, np.ndarray]:
    """For each reference polygon, the index of the predicted polygon that
    overlaps it most (-1 if none covers at least ``min_overlap`` of the
    reference polygon's area, a fraction in [0, 1]; 0 means any overlap of
    positive area). Both arrays must be in the same projected CRS.
    Returns (index per reference, overlap fraction per reference)."""
    reference = np.asarray(reference, dtype=object)
    prediction = np.asarray(prediction, dtype=object)
    best = np.full(len(reference), -1, dtype=np.int64)
    frac = np.zeros(len(reference), dtype=np.float64)
    if len(reference) == 0 or len(prediction) == 0:
        return best, frac
    tree = shapely.STRtree(prediction)
    ri, pj = tree.query(reference, predicate="intersects")
    if len(ri) == 0:
        return best, frac
    inter = shapely.area(shapely.intersection(reference[ri], prediction[pj]))
    area = shapely.area(reference[ri])
    f = np.divide(inter, area, out=np.zeros_like(inter), where=area > 0)
    ok = (inter > 0) & (f >= min_overlap)
    ri, pj, inter, f = ri[ok], pj[ok], inter[ok], f[ok]
    order = np.lexsort((-inter, ri))          # by reference, largest overlap first
    ri, pj, f = ri[order], pj[order], f[order]
    first = np.r_[True, ri[1:] != ri[:-1]] if len(ri) else np.zeros(0, bool)
    best[ri[first]] = pj[first]
    frac[ri[first]] = f[first]
    return best, frac


def evaluate_buildings(reference_path, reference_field: str, prediction_path=None,
                       prediction_field: str | None = None, taxonomy=None, levels: Sequence[str] | None = None,
                       prediction_taxonomy=None, unknown: str = "other", min_overlap: float = 0.1,
                       reference_layer=None, prediction_layer=None, n_boot: int = 1000, seed: int = 0,
                       confidence: float = 0.95, json_path=None, html_path=None, csv_path=None,
                       title: str | None = None, progress: Progress | None = None) -> dict:
    """Building level: predicted polygons (or a prediction attribute on the
    reference polygons, when ``prediction_path`` is None) against reference polygons.

    Each reference polygon is matched to the predicted polygon with the
    largest overlap (at least ``min_overlap`` of the reference area); the
    prediction layer is reprojected to the reference CRS when they differ.
    ``matching`` counts matched references, unmatched references (no
    prediction), unmatched predictions (matched to no reference) and
    predictions matched to several references.
    """
    progress = progress or Progress()
    if not prediction_field:
        raise InputError("PREDICTION_FIELD", "no field with the predicted use was given.", "choose a field.")
    if prediction_path in (None, ""):
        cols, _, _ = read_table(reference_path, [reference_field, prediction_field], reference_layer, "REFERENCE")
        ref = as_str_labels(cols[reference_field])
        pred = as_str_labels(cols[prediction_field])
        matching = {"matched": len(ref), "unmatched_reference": 0, "unmatched_prediction": 0,
                    "method": "attribute on the reference polygons"}
    else:
        rc, rg, rcrs = read_table(reference_path, [reference_field], reference_layer, "REFERENCE", geometry=True)
        pc, pg, pcrs = read_table(prediction_path, [prediction_field], prediction_layer, "PREDICTION",
                                  geometry=True)
        pg = reproject_geoms(pg, pcrs, rcrs, "PREDICTION")
        progress.set_fraction(0.2)
        progress.check_cancelled()
        best, frac = match_largest_overlap(rg, pg, min_overlap)
        progress.set_fraction(0.6)
        hit = best >= 0
        if not hit.any():
            raise InputError("PREDICTION", f"no predicted polygon overlaps a reference polygon by at least "
                                           f"{min_overlap:.0%} of its area ({len(rg)} reference, {len(pg)} "
                                           "predicted polygons).",
                             "check that both layers cover the same area (and their CRSs), or lower MIN_OVERLAP.")
        rlab = as_str_labels(rc[reference_field])
        plab = as_str_labels(pc[prediction_field])
        ref = [rlab[i] for i in np.flatnonzero(hit)]
        pred = [plab[j] for j in best[hit]]
        used = np.bincount(best[hit], minlength=len(pg))
        matching = {"matched": int(hit.sum()), "unmatched_reference": int((~hit).sum()),
                    "unmatched_prediction": int((used == 0).sum()),
                    "prediction_matched_several_times": int((used > 1).sum()),
                    "reference_count": len(rg), "prediction_count": len(pg),
                    "min_overlap": min_overlap, "mean_overlap": float(frac[hit].mean()),
                    "method": "largest overlap"}
    res = score_labels(ref, pred, taxonomy, levels, prediction_taxonomy=prediction_taxonomy, unknown=unknown,
                       n_boot=n_boot, seed=seed, confidence=confidence)
    progress.set_fraction(1.0)
    return _finish(res, "building", matching, json_path, html_path, csv_path, title)


# --------------------------------------------------------------------------
# pixel level
# --------------------------------------------------------------------------

def overlap_blocks(grid: Grid, window: Window, block_size: int):
    """Blocks of ``window`` (a window of ``grid``, e.g. the overlap from :func:`aligned_window`):
    yields (block number, number of blocks, block window in ``grid``'s pixels)."""
    sub = Grid(grid.window_transform(window), int(window.width), int(window.height), grid.crs)
    blocks = list(sub.blocks(block_size))
    for n, blk in enumerate(blocks):
        w = blk.window
        yield n, len(blocks), Window(w.col_off + window.col_off, w.row_off + window.row_off, w.width, w.height)


def aligned_window(ds, grid: Grid, what: str = "REFERENCE") -> tuple[Window, Window]:
    """Windows (in ``grid``, in ``ds``) of the overlap of an open raster with
    ``grid``, which must share its CRS, pixel size and pixel alignment."""
    if ds.crs is None or grid.crs is None:
        raise InputError(what, "a raster has no coordinate reference system.", "assign one (gdal_edit.py -a_srs).")
    if rasterio.crs.CRS.from_wkt(grid.crs) != ds.crs:
        raise InputError(what, f"CRS differs from the prediction's ({ds.crs.to_string()} vs "
                               f"{rasterio.crs.CRS.from_wkt(grid.crs).to_string()}).",
                         "warp it onto the prediction grid (Raster > Align Rasters, or gdalwarp -t_srs -tr -tap).")
    t, u = grid.transform, ds.transform
    if u.b or u.d or abs(abs(u.a) - abs(t.a)) > 1e-6 * abs(t.a) or abs(abs(u.e) - abs(t.e)) > 1e-6 * abs(t.e):
        raise InputError(what, f"pixel size {abs(u.a):g} x {abs(u.e):g} differs from the prediction's "
                               f"{abs(t.a):g} x {abs(t.e):g}.",
                         "resample it onto the prediction grid (Raster > Align Rasters, nearest neighbour).")
    dc = (u.c - t.c) / t.a
    dr = (u.f - t.f) / t.e
    if abs(dc - round(dc)) > 1e-3 or abs(dr - round(dr)) > 1e-3:
        raise InputError(what, "its pixels are not aligned with the prediction's (offset of "
                               f"{dc - round(dc):.3f}, {dr - round(dr):.3f} pixels).",
                         "align it onto the prediction grid (Raster > Align Rasters).")
    dc, dr = int(round(dc)), int(round(dr))
    c0, r0 = max(0, dc), max(0, dr)
    c1, r1 = min(grid.width, dc + ds.width), min(grid.height, dr + ds.height)
    if c1 <= c0 or r1 <= r0:
        raise InputError(what, "does not overlap the prediction raster.", "give rasters of the same area.")
    return Window(c0, r0, c1 - c0, r1 - r0), Window(c0 - dc, r0 - dr, c1 - c0, r1 - r0)


def _polygons_for_block(geoms, tree, values, transform, window: Window, grid: Grid) -> np.ndarray:
    """Rasterise the polygons touching a block: int32 (rows, cols), 0 outside."""
    wt = grid.window_transform(window)
    shape = (int(window.height), int(window.width))
    x0, y0 = wt.c, wt.f
    x1, y1 = wt.c + wt.a * shape[1], wt.f + wt.e * shape[0]
    idx = tree.query(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    if len(idx) == 0:
        return np.zeros(shape, dtype=np.int32)
    return rasterio.features.rasterize(zip(geoms[idx], values[idx]), out_shape=shape, transform=wt,
                                       fill=0, dtype="int32")


def _read_polygons(path, field, layer, grid: Grid, what: str):
    cols, geoms, crs = read_table(path, [field] if field else [], layer, what, geometry=True)
    geoms = reproject_geoms(geoms, crs, grid.crs, what)
    keep = ~shapely.is_empty(geoms) & ~shapely.is_missing(geoms)
    return cols, geoms, keep


def evaluate_class_raster(prediction_raster, reference_raster=None, reference_vector=None,
                          reference_field: str | None = None, class_names=None, reference_class_names=None,
                          building_mask=None, reference_layer=None, taxonomy=None,
                          levels: Sequence[str] | None = None, prediction_taxonomy=None, unknown: str = "other",
                          band: int = 1, block_size: int = 1024, n_boot: int = 1000, seed: int = 0,
                          confidence: float = 0.95, json_path=None, html_path=None, csv_path=None,
                          title: str | None = None, progress: Progress | None = None) -> dict:
    """Pixel level: a class raster against a reference raster or reference polygons.

    The prediction grid is the common grid. A reference raster must share its
    CRS, pixel size and alignment (only the overlap is scored); reference
    polygons (with their use in ``reference_field``) are reprojected to the
    prediction CRS and rasterised on its grid (pixel centres inside), so only
    pixels of reference buildings are scored. ``building_mask`` (a polygon
    layer) restricts scoring to pixels inside its polygons (building pixels).
    Nodata pixels of either raster are skipped.

    ``class_names`` / ``reference_class_names`` map raster values to labels
    (a list indexed by value, or a dict {value: label}); by default the value
    itself is the label. Labels then go through the taxonomy.
    """
    progress = progress or Progress()
    if (reference_raster in (None, "")) == (reference_vector in (None, "")):
        raise InputError("REFERENCE", "give either a reference raster or reference polygons (not both).")
    pds = open_raster(prediction_raster, "PREDICTION")
    ref = None
    try:
        require_crs(pds, "PREDICTION")
        grid = Grid.from_dataset(pds)
        if not 1 <= band <= pds.count:
            raise InputError("BAND", f"band {band} does not exist (the raster has {pds.count}).")
        if reference_raster not in (None, ""):
            ref = _RasterReference(reference_raster, reference_class_names, grid)
        else:
            ref = _PolygonReference(reference_vector, reference_field, reference_layer, grid)
        mask = _PolygonMask(building_mask, grid) if building_mask not in (None, "") else None
        joint = _joint_counts(pds, band, ref, mask, grid, block_size, progress.span(0.0, 0.9))
        pred_labels_of = _value_labels(class_names)
        rkeys, pkeys, counts = contingency(joint)
        rl, pl, counts = _merge_duplicate_labels([ref.label(a) for a in rkeys], [pred_labels_of(b) for b in pkeys],
                                                 counts)
        res = score_raw_counts(rl, pl, counts, taxonomy, levels, prediction_taxonomy, None, unknown,
                               n_boot, confidence, seed)
        matching = {"matched": int(counts.sum()), "unmatched_reference": 0, "unmatched_prediction": 0,
                    "unit": "pixels", "pixel_size": list(grid.res), "crs": pds.crs.to_string()}
        progress.set_fraction(1.0)
    finally:
        pds.close()
        if ref is not None:
            ref.close()
    return _finish(res, "pixel", matching, json_path, html_path, csv_path, title)


class _RasterReference:
    """A reference class raster on the prediction's CRS, pixel size and alignment (overlap only)."""

    def __init__(self, path, class_names, grid: Grid):
        self.ds = open_raster(path, "REFERENCE")
        try:
            self.window, rwin = aligned_window(self.ds, grid, "REFERENCE")
        except BaseException:
            self.ds.close()
            raise
        self.offset = (int(rwin.row_off - self.window.row_off), int(rwin.col_off - self.window.col_off))
        self.label = _value_labels(class_names)

    def block(self, gw: Window) -> tuple[np.ndarray, np.ndarray]:
        """(reference values, valid) on the prediction window ``gw``."""
        rw = Window(gw.col_off + self.offset[1], gw.row_off + self.offset[0], gw.width, gw.height)
        data, valid = read_masked(self.ds, rw, "REFERENCE", [1])
        return data[0], valid

    def close(self) -> None:
        self.ds.close()


class _PolygonReference:
    """Reference polygons with their use in ``field``, reprojected to the prediction CRS and rasterised
    per block on its grid (pixel centres inside); value k + 1 stands for the k-th distinct label."""

    def __init__(self, path, field: str | None, layer, grid: Grid):
        if not field:
            raise InputError("REFERENCE_FIELD", "no field with the reference use was given.", "choose a field.")
        cols, geoms, keep = _read_polygons(path, field, layer, grid, "REFERENCE")
        self.labels, inv = np.unique(np.array(as_str_labels(cols[field]), dtype=object), return_inverse=True)
        self.geoms, self.values = geoms[keep], (inv + 1).astype(np.int32)[keep]
        self.tree = shapely.STRtree(self.geoms)
        self.grid = grid
        self.window = grid.full_window()

    def label(self, v) -> str:
        return str(self.labels[int(v) - 1])

    def block(self, gw: Window) -> tuple[np.ndarray, np.ndarray]:
        rv = _polygons_for_block(self.geoms, self.tree, self.values, self.grid.transform, gw, self.grid)
        return rv, rv > 0

    def close(self) -> None:
        pass


class _PolygonMask:
    """Pixels (prediction grid) whose centres fall inside the polygons of a layer."""

    def __init__(self, path, grid: Grid):
        _, geoms, keep = _read_polygons(path, None, None, grid, "BUILDING_MASK")
        self.geoms = geoms[keep]
        self.tree = shapely.STRtree(self.geoms)
        self.values = np.ones(len(self.geoms), dtype=np.int32)
        self.grid = grid

    def block(self, gw: Window) -> np.ndarray:
        return _polygons_for_block(self.geoms, self.tree, self.values, self.grid.transform, gw, self.grid) > 0


def _joint_counts(pds, band: int, ref, mask: _PolygonMask | None, grid: Grid, block_size: int,
                  progress: Progress) -> Counter:
    """Pixel counts per (reference value, predicted value) over the pixels valid in both (and in the mask)."""
    joint: Counter = Counter()
    for n, n_blocks, gw in overlap_blocks(grid, ref.window, block_size):
        progress.check_cancelled()
        pdata, pvalid = read_masked(pds, gw, "PREDICTION", [band])
        rv, rvalid = ref.block(gw)
        valid = pvalid & rvalid
        if mask is not None:
            valid &= mask.block(gw)
        if valid.any():
            pairs = np.stack([rv[valid].astype(np.float64), pdata[0][valid].astype(np.float64)], axis=1)
            u, c = np.unique(pairs, axis=0, return_counts=True)
            for (a, b), k in zip(u.tolist(), c.tolist()):
                joint[(a, b)] += k
        progress.set_fraction((n + 1) / n_blocks)
    if not joint:
        raise InputError("REFERENCE", "no pixel has both a valid prediction and a reference (empty intersection).",
                         "check that the layers cover the same area and that nodata is set correctly.")
    return joint


def _value_labels(names):
    """Function raster value -> label from a list (index = value), a dict or None."""
    def label(v: float) -> str:
        key = int(v) if float(v).is_integer() else v
        if isinstance(names, dict):
            if key in names:
                return str(names[key])
            if str(key) in names:
                return str(names[str(key)])
        elif names is not None and isinstance(key, int) and 0 <= key < len(names):
            return str(names[key])
        return str(key)
    return label


def _merge_duplicate_labels(rl, pl, counts):
    """Sum rows/columns that carry the same label (several values -> one name)."""
    ru = list(dict.fromkeys(rl))
    pu = list(dict.fromkeys(pl))
    out = np.zeros((len(ru), len(pu)), dtype=np.int64)
    rix = np.array([ru.index(x) for x in rl])
    pix = np.array([pu.index(x) for x in pl])
    np.add.at(out, (rix[:, None], pix[None, :]), counts)
    return ru, pu, out


__all__ = ["score_raw_counts", "score_labels", "pair_counts", "join_on_ids", "evaluate_table",
           "match_largest_overlap", "evaluate_buildings", "aligned_window", "overlap_blocks", "evaluate_class_raster",
           "IGNORED"]
