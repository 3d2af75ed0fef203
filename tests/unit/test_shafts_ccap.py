"""CCAP urban mask: clusters, Kneedle knees (hand-checked), thresholds, fusion, files."""

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from edifice.core.height.ccap import (THRESHOLDS, apply_mask, ccap_arrays, ccap_files, ccap_threshold, cluster_criterion,
                               criterion_curve, find_knees, fuse_masks, select_threshold, urban_mask)
from edifice.core.errors import InputError


def test_cluster_criterion_hand_checked():
    a = np.zeros((5, 5), bool)
    a[0, 0] = a[1, 1] = True          # diagonal: one 8-connected cluster of 2
    a[4, 4] = True                    # singleton
    a[3, 0] = a[4, 0] = True          # vertical pair
    p = np.array([2, 1, 2]) / 5
    assert cluster_criterion(a) == pytest.approx(float(np.sum(p * np.log(p))))
    assert cluster_criterion(a, "largest_cluster") == pytest.approx(0.4)
    assert cluster_criterion(np.zeros((3, 3), bool)) == 0.0
    assert cluster_criterion(np.ones((3, 3), bool)) == 0.0


def test_knee_single_hand_checked():
    # normalised x .2 steps; difference curve [0, .4667, .4889, .3444, .1778, 0]; max at 2,
    # Tmx = .4889 - .2; diff[4] < Tmx -> knee x[2]
    assert find_knees([0, 1, 2, 3, 4, 5], [10, 4, 2, 1.5, 1.2, 1]) == [2.0]


def test_knee_online_finds_two_hand_checked():
    # difference curve [0,.5,.4,.3,.2,.3,.2,.1,0]; maxima 1 and 5 (Tmx .375, .175), minimum 4 resets:
    # knees x[1] and x[5]; offline Kneedle would stop at the first.
    x = 0.01 + 0.02 * np.arange(9)
    knees = find_knees(x, [8, 3, 2.8, 2.6, 2.4, 0.6, 0.4, 0.2, 0])
    assert knees == pytest.approx([0.03, 0.11])
    assert select_threshold(knees) == pytest.approx(0.11)        # 0.03 < 0.05 is dropped
    assert select_threshold([0.0704999, 0.2]) == 0.07
    assert select_threshold([0.01]) is None
    assert find_knees([0, 1, 2], [1, 1, 1]) == []


def _bridge_chain(bridges):
    """One row: block pixels (footprint 1) joined by bridge pixels with the given footprints."""
    f = np.ones(2 * len(bridges) + 1)
    f[1::2] = bridges
    return f[None, :]


def _analytic_entropy(bridges, d):
    # clusters are the runs of blocks joined by bridges >= d; each run of r blocks has r + (r-1) pixels
    runs, r = [], 1
    for b in bridges:
        if b >= d:
            r += 1
        else:
            runs.append(r)
            r = 1
    runs.append(r)
    sizes = np.array([2 * k - 1 for k in runs], float)
    p = sizes / sizes.sum()
    return float(np.sum(p * np.log(p)))


def test_criterion_curve_matches_analytic_chain_and_threshold():
    rng = np.random.default_rng(0)
    bridges = np.sort(rng.uniform(0.0, 0.5, 40)) ** 0.5          # more breaks at low footprints
    f = _bridge_chain(bridges)
    h = np.full_like(f, 10.0)
    h = np.vstack([h, np.zeros_like(h), np.full_like(h, 1.0)])    # a row below h_min never counts
    f = np.vstack([f, np.zeros_like(f), np.ones_like(f)])
    curve = criterion_curve(h, f, h_min=2.0)
    expected = np.array([_analytic_entropy(bridges, d) for d in THRESHOLDS])
    np.testing.assert_allclose(curve, expected, atol=1e-12)
    t = ccap_threshold(h, f, h_min=2.0)
    assert t == select_threshold(find_knees(THRESHOLDS, expected))
    assert 0.05 <= t <= 0.9 and round(t, 3) == t


def test_masks_fusion_and_apply():
    h = np.array([[10, 10, 1], [10, np.nan, 10]])
    f = np.array([[0.3, 0.1, 0.5], [0.0, 0.5, 0.2]])
    m = urban_mask(h, f, 0.2, h_min=2.0)
    np.testing.assert_array_equal(m, [[True, False, False], [False, False, True]])
    m2 = np.array([[True, True, False], [False, False, False]])
    np.testing.assert_array_equal(fuse_masks([m, m2], 0.5), [[True, True, False], [False, False, True]])
    np.testing.assert_array_equal(fuse_masks([m, m2], 1.0), [[True, False, False], [False, False, False]])
    v = apply_mask(np.array([[5.0, 0.0, 3.0], [1.0, 2.0, 0.0]]), np.array([[True, True, False], [True, False, True]]), -1)
    np.testing.assert_array_equal(v, [[5, -1, -1], [1, -1, -1]])


def _city(seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:60, 0:60]
    r = np.hypot(yy - 30, xx - 30)
    f = np.clip(0.5 * np.exp(-r / 12) + rng.normal(0, 0.04, r.shape), 0, 1)
    h = np.clip(25 * np.exp(-r / 15) + rng.normal(0, 1, r.shape), 0, None)
    return h, f


def test_ccap_files_roundtrip(tmp_path):
    paths = []
    tr = Affine(0.0009, 0, 116.0, 0, -0.0009, 40.0)
    for k in range(2):
        h, f = _city(k)
        if k == 0:
            h[0, :5] = np.nan
            f[0, :5] = np.nan
        pair = []
        for name, a in (("h", h), ("f", f)):
            p = tmp_path / f"{name}{k}.tif"
            with rasterio.open(p, "w", driver="GTiff", width=60, height=60, count=1, dtype="float32",
                               crs=CRS.from_epsg(4326), transform=tr, nodata=-9999) as d:
                d.write(np.nan_to_num(a, nan=-9999).astype(np.float32)[None])
            pair.append(str(p))
        paths.append(tuple(pair))
    outs = [(tmp_path / "hm0.tif", tmp_path / "fm0.tif"), (None, tmp_path / "fm1.tif")]
    res = ccap_files(paths, tmp_path / "mask.tif", outs, h_min=2.0)
    arrays = [_city(0), _city(1)]
    arrays[0][0][0, :5] = np.nan
    arrays[0][1][0, :5] = np.nan
    arrays = [(h.astype(np.float32).astype(float), f.astype(np.float32).astype(float)) for h, f in arrays]
    mask, thr = ccap_arrays(arrays)
    assert res["thresholds"] == thr and res["urban_pixels"] == int(mask.sum()) > 0
    with rasterio.open(tmp_path / "mask.tif") as d:
        mk = d.read(1)
        assert d.nodata == 255 and d.transform == tr
    assert set(np.unique(mk)) <= {0, 1, 255}
    np.testing.assert_array_equal(mk[1:] == 1, mask[1:])
    with rasterio.open(tmp_path / "fm0.tif") as d:
        fm = d.read(1)
    assert np.all((fm == -9999) | mask) and np.all(fm[~mask] == -9999)
    assert not (tmp_path / "hm1.tif").exists()
    # other grid -> clear error, nothing written
    bad = tmp_path / "bad.tif"
    with rasterio.open(bad, "w", driver="GTiff", width=30, height=60, count=1, dtype="float32",
                       crs=CRS.from_epsg(4326), transform=tr) as d:
        d.write(np.zeros((1, 60, 30), np.float32))
    with pytest.raises(InputError, match="same grid"):
        ccap_files([(paths[0][0], str(bad))], tmp_path / "m2.tif")
    assert not (tmp_path / "m2.tif").exists()


def test_no_knee_is_a_clear_error():
    with pytest.raises(InputError, match="no knee"):
        ccap_threshold(np.zeros((5, 5)), np.zeros((5, 5)))


def test_find_knees_matches_kneed_085_when_installed():
    """kneed <= 0.8.5 semantics: same knees as kneed 0.8.5 on random convex decreasing curves (skipped
    without kneed 0.8.5, which requirements.lock installs for the tests; Edifice does not import it)."""
    kneed = pytest.importorskip("kneed")
    if kneed.__version__ != "0.8.5":
        pytest.skip(f"kneed {kneed.__version__} installed, the comparison is with 0.8.5")
    from edifice.core.height.ccap import THRESHOLDS, find_knees
    rng = np.random.default_rng(0)
    x = THRESHOLDS
    for t in range(60):
        y = np.exp(-rng.uniform(2, 40) * x) * rng.uniform(0.5, 3) + rng.normal(0, (0, 1e-3, 1e-2)[t % 3], x.size)
        expected = sorted(kneed.KneeLocator(x, y, S=1.0, curve="convex", direction="decreasing",
                                            online=True).all_knees)
        assert sorted(find_knees(x, y)) == pytest.approx(expected)
