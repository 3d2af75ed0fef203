"""Independent expectations for the evaluation tests (qgis and e2e tiers).

Reads the bundled EUBUCCO GeoPackages with pyogrio, matches each official
(government) footprint to the OSM footprint that overlaps it most with plain
shapely (a Python loop, not edifice's STRtree code), maps types to R/C/I by
reading the shipped taxonomy CSV with the csv module, and scores with
scikit-learn. Nothing from ``edifice.core`` is used.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyogrio.raw
import shapely

ROOT = Path(__file__).resolve().parent.parent
EUBUCCO = ROOT / "samples" / "eubucco"
GOV, OSM = EUBUCCO / "buildings_gov.gpkg", EUBUCCO / "buildings_osm.gpkg"
RCI = ["residential", "commercial", "industrial", "other"]


def read_layer(path):
    """(geometries made valid, {field: array}, crs) of a vector file."""
    meta, _, wkb, data = pyogrio.raw.read(str(path))
    geoms = shapely.make_valid(shapely.from_wkb(wkb))
    return geoms, {str(f): np.asarray(d) for f, d in zip(meta["fields"], data)}, meta["crs"]


def write_layer(path, geoms, fields: dict, crs: str) -> None:
    """Write polygons with attributes (a GeoPackage) with pyogrio."""
    names = list(fields)
    pyogrio.raw.write(str(path), shapely.to_wkb(np.asarray(geoms, dtype=object)),
                      [np.asarray(fields[n]) for n in names], names, driver="GPKG", geometry_type="Polygon",
                      crs=crs, promote_to_multi=False)


def eubucco_type_to_rci() -> dict[str, str]:
    lines = [ln for ln in (ROOT / "core" / "taxonomies" / "buildings" / "eubucco_type.csv").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    rows = list(csv.reader(lines))
    assert rows[0] == ["type", "rci"]
    return {a.strip().lower(): b.strip() for a, b in rows[1:]}


def match_largest_overlap(ref_geoms, pred_geoms, min_overlap: float) -> np.ndarray:
    """Index of the predicted polygon overlapping each reference polygon most
    (at least ``min_overlap`` of the reference area), -1 if none."""
    tree = shapely.STRtree(pred_geoms)
    best = np.full(len(ref_geoms), -1)
    for i, g in enumerate(ref_geoms):
        area = g.area
        top, top_j = 0.0, -1
        for j in tree.query(g):
            a = g.intersection(pred_geoms[j]).area
            if a > top:
                top, top_j = a, j
        if top_j >= 0 and area > 0 and top / area >= min_overlap:
            best[i] = top_j
    return best


def eubucco_expected(min_overlap: float = 0.5) -> dict:
    """Official type (reference) vs OSM type (prediction) at R/C/I for matched
    buildings with a type on both sides, scored with scikit-learn; plus the
    matched heights (reference, prediction) of buildings with both heights."""
    from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, f1_score

    rg, rf, _ = read_layer(GOV)
    pg, pf, _ = read_layer(OSM)
    best = match_largest_overlap(rg, pg, min_overlap)
    hit = best >= 0
    rci = eubucco_type_to_rci()
    ref, pred = [], []
    for i in np.flatnonzero(hit):
        a, b = rf["type"][i], pf["type"][best[i]]
        if a and b:
            ref.append(rci[str(a).lower()])
            pred.append(rci[str(b).lower()])
    rh = rf["height"][hit].astype(float)
    ph = pf["height"][best[hit]].astype(float)
    ok = np.isfinite(rh) & np.isfinite(ph)
    return {
        "classes": RCI, "n": len(ref),
        "confusion_matrix": confusion_matrix(ref, pred, labels=RCI).tolist(),
        "f1": dict(zip(RCI, f1_score(ref, pred, labels=RCI, average=None, zero_division=0).tolist())),
        "overall_accuracy": accuracy_score(ref, pred), "kappa": cohen_kappa_score(ref, pred, labels=RCI),
        "matched": int(hit.sum()), "unmatched_reference": int((~hit).sum()),
        "unmatched_prediction": int(len(pg) - len(set(best[hit].tolist()))),
        "heights": (rh[ok], ph[ok]),
    }


def regression_expected(ref, pred) -> dict:
    d = np.asarray(pred, float) - np.asarray(ref, float)
    return {"n": len(d), "rmse": float(np.sqrt(np.mean(d ** 2))), "mae": float(np.mean(np.abs(d))),
            "me": float(np.mean(d)), "cc": float(np.corrcoef(ref, pred)[0, 1])}
