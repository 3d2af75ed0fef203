"""Real data: EUBUCCO official vs OSM type and height on the bundled GeoPackages."""
import importlib.util
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import shapely

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "eval_eubucco.py"


def _read_gpkg(path: Path, table: str):
    """Geometries and heights straight from the GeoPackage (SQLite + GPKG blobs), not via our readers."""
    con = sqlite3.connect(path)
    try:
        rows = con.execute(f'SELECT geom, height FROM "{table}"').fetchall()
    finally:
        con.close()
    geoms, heights = [], []
    for blob, h in rows:
        envelope = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}[(blob[3] >> 1) & 7]
        geoms.append(shapely.from_wkb(bytes(blob[8 + envelope:])))
        heights.append(np.nan if h is None else float(h))
    return np.array(geoms), np.array(heights)


def _independent_height_errors(min_overlap=0.5):
    """OSM - official height for official buildings whose largest-overlap OSM
    building covers at least ``min_overlap`` of them, both heights known."""
    rg, rh = _read_gpkg(ROOT / "samples" / "eubucco" / "buildings_gov.gpkg", "buildings_gov")
    pg, ph = _read_gpkg(ROOT / "samples" / "eubucco" / "buildings_osm.gpkg", "buildings_osm")
    ri, pj = shapely.STRtree(pg).query(rg, predicate="intersects")
    area = shapely.area(shapely.intersection(rg[ri], pg[pj]))
    best, best_area = np.full(len(rg), -1), np.zeros(len(rg))
    for i, j, a in zip(ri, pj, area):
        if a > best_area[i]:
            best[i], best_area[i] = j, a
    ok = (best >= 0) & (best_area >= min_overlap * shapely.area(rg))
    pred = np.where(ok, ph[np.maximum(best, 0)], np.nan)
    keep = np.isfinite(rh) & np.isfinite(pred)
    return pred[keep] - rh[keep]


def test_eubucco_benchmark_runs(tmp_path):
    spec = importlib.util.spec_from_file_location("eval_eubucco", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    use, height = mod.run(tmp_path)
    m = use["matching"]
    assert (m["reference_count"], m["prediction_count"]) == (2454, 3195)
    assert m["matched"] + m["unmatched_reference"] == 2454
    assert use["classes"] == ["residential", "commercial", "industrial", "other"]
    assert use["n"] + use["ignored"] == m["matched"]
    assert 0.9 < use["overall_accuracy"] <= 1.0 and 0.7 < use["kappa"] <= 1.0
    err = _independent_height_errors()
    assert height["n"] == len(err) > 100
    assert height["rmse"] == pytest.approx(float(np.sqrt(np.mean(err ** 2))), rel=1e-9)
    assert height["me"] == pytest.approx(float(err.mean()), rel=1e-9, abs=1e-12)
    assert height["mae"] == pytest.approx(float(np.abs(err).mean()), rel=1e-9)
    for name in ("eubucco_use.json", "eubucco_use.html", "eubucco_use.csv", "eubucco_height.html"):
        assert (tmp_path / name).stat().st_size > 500
