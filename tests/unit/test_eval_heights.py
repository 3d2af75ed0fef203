"""Height metrics against numpy / scipy / scikit-learn, rasters and per-building."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import shapely
from affine import Affine
from scipy.stats import gaussian_kde
from sklearn import metrics as skm

from edifice.core.evaluation import regression as H
from edifice.core.errors import InputError



_spec = importlib.util.spec_from_file_location("_eval_files", Path(__file__).with_name("_eval_files.py"))
_files = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_files)
write_polys, write_raster = _files.write_polys, _files.write_raster


def _pairs(n=300, seed=2):
    rng = np.random.default_rng(seed)
    r = rng.gamma(3, 4, n)
    return r, r + rng.normal(0.5, 2.0, n)


def test_metrics_against_references():
    r, p = _pairs()
    m = H.regression_metrics(r, p, weighting="shafts_figures")
    d = p - r
    assert m["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(r, p)))
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(r, p))
    assert m["me"] == pytest.approx(d.mean())
    assert m["nmad"] == pytest.approx(1.4826 * np.median(np.abs(d - np.median(d))))
    assert m["cc"] == pytest.approx(np.corrcoef(r, p)[0, 1])
    assert m["r2"] == pytest.approx(skm.r2_score(r, p))
    dens = gaussian_kde(np.vstack([r, p]))(np.vstack([r, p]))
    w = (dens - dens.min()) / (dens.max() - dens.min())
    assert H.kde_weights(r, p) == pytest.approx(w)
    assert m["wrmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(r, p, sample_weight=w)))
    assert m["wr2"] == pytest.approx(skm.r2_score(r, p, sample_weight=w))


def test_paper_weighted_metrics_by_hand():
    """Issue 16 item 3: Table 2 of the paper, computed by hand: weights = frequency of the reference
    value (1-D Gaussian KDE, Scott's bandwidth h = std * n^(-1/5)), min-max scaled; wRMSE normalised
    by N; wR² with the plain sample mean."""
    r = np.array([3.0, 3.0, 3.0, 6.0, 6.0, 9.0, 30.0])
    p = np.array([4.0, 2.0, 3.0, 8.0, 5.0, 9.0, 20.0])
    n = len(r)
    h = r.std(ddof=1) * n ** (-1 / 5)
    dens = np.array([np.exp(-0.5 * ((x - r) / h) ** 2).sum() / (n * h * np.sqrt(2 * np.pi)) for x in r])
    w = (dens - dens.min()) / (dens.max() - dens.min())
    d = p - r
    m = H.regression_metrics(r, p)
    assert m["weighting"] == "paper"
    assert H.reference_frequency_weights(r) == pytest.approx(w)
    assert m["wrmse"] == pytest.approx(np.sqrt((w * d ** 2).sum() / n))
    assert m["wr2"] == pytest.approx(1 - (w * d ** 2).sum() / (w * (r - r.mean()) ** 2).sum())
    # the rare 30 m building's 10 m error has weight 0 in the paper's wRMSE, not in RMSE
    assert w[-1] == 0 and m["wrmse"] < m["rmse"]
    with pytest.raises(InputError, match="WEIGHTING"):
        H.regression_metrics(r, p, weighting="pairs")


def test_kde_approximation_for_many_pairs():
    r, p = _pairs(3000, seed=4)
    exact = H.kde_weights(r, p)
    approx = H.kde_weights(r, p, exact_limit=1000)
    assert np.corrcoef(exact, approx)[0, 1] > 0.97


def test_height_bins_by_hand():
    r = np.array([1.0, 2.0, 4.0, 7.0, 35.0, 40.0])
    p = np.array([2.0, 2.0, 3.0, 7.0, 30.0, 41.0])
    bins = H.height_bin_bias(r, p)
    assert len(bins) == 11 and bins[0]["lower"] == 0 and bins[-1]["upper"] is None
    assert bins[0]["n"] == 2 and bins[0]["me"] == pytest.approx(0.5) and bins[0]["rmse"] == pytest.approx(np.sqrt(0.5))
    assert bins[1]["n"] == 1 and bins[1]["me"] == pytest.approx(-1.0)
    assert bins[2]["n"] == 1 and bins[2]["me"] == 0.0
    assert bins[3]["n"] == 0 and bins[3]["me"] is None
    assert bins[-1]["n"] == 2 and bins[-1]["me"] == pytest.approx(-2.0)


def test_degenerate_inputs_are_defined():
    m = H.regression_metrics([5, 5, 5], [5, 5, 5])
    assert m["cc"] is None and m["r2"] == 1.0 and m["wrmse"] == 0.0
    with pytest.raises(InputError, match="empty intersection"):
        H.regression_metrics([np.nan], [1.0])


def test_rasters_and_buildings(tmp_path):
    t = Affine(1, 0, 0, 0, -1, 4)
    ref = np.array([[3, 3, 9, 9], [3, 3, 9, 9], [0, 0, 20, 20], [0, 0, 20, -1]], dtype=np.float32)
    pred = ref + np.float32(1.0)
    pred[0, 0] = np.nan
    rp = write_raster(tmp_path / "r.tif", ref, t, nodata=-1)
    pp = write_raster(tmp_path / "p.tif", pred, t, nodata=None)
    res = H.evaluate_height_rasters(pp, rp, min_reference=0.5)
    assert res["n"] == 10 and res["me"] == pytest.approx(1.0) and res["rmse"] == pytest.approx(1.0)
    # zonal mean per building: two reference polygons with heights 3 and 20
    b = write_polys(tmp_path / "b.gpkg", [shapely.box(0, 2, 2, 4), shapely.box(2, 0, 4, 2),
                                          shapely.box(50, 50, 51, 51)], {"h": [3.0, 20.0, 5.0]})
    res = H.evaluate_building_heights(b, "h", prediction_raster=pp)
    assert res["matched"] == 2 and res["unmatched_reference"] == 1
    assert res["me"] == pytest.approx((1.0 + (21 * 3 + 0) / 4 - 20) / 2)  # pred[3, 3] = -1 + 1 = 0
    # predicted polygons with a height attribute, matched by overlap
    q = write_polys(tmp_path / "q.gpkg", [shapely.box(0.1, 2, 2, 4)], {"height": [6.0]})
    res = H.evaluate_building_heights(b, "h", prediction_path=q, prediction_height_field="height")
    assert (res["matched"], res["unmatched_reference"], res["me"]) == (1, 2, 3.0)
