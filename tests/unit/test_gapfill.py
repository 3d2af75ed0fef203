"""Cloud gap filling by kriging (core/gapfill): equivalence with PyKrige, variogram fits,
block-wise behaviour, gap definitions and bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import CRS
from scipy import ndimage

from edifice.core.errors import Cancelled, InputError
from edifice.core.gapfill import GapSpec, KrigingSettings, cloud_gap_fill, parse_ranges, sidecar_path
from edifice.core.gapfill.kriging import pixel_xy, tie_break_xy
from edifice.core.gapfill.variogram import VariogramAccumulator, fit_variogram, model_values
from edifice.core.grid import Grid
from edifice.core.progress import Progress, RecordingProgress
from edifice.core.raster_io import atomic_raster

UTM = CRS.from_epsg(32636).to_wkt()
TRANSFORM = Affine(10, 0, 450000, 0, -10, 40000)


def _write(path, arr, nodata=None, transform=TRANSFORM):
    arr = arr if arr.ndim == 3 else arr[None]
    g = Grid(transform, arr.shape[2], arr.shape[1], UTM)
    with atomic_raster(path, g, arr.shape[0], arr.dtype, nodata=nodata) as dst:
        dst.write(arr)
    return str(path)


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.nodata


def _smooth_field(shape, sigma, seed, scale=50.0, offset=100.0):
    """A smooth random field (Gaussian-filtered white noise) plus a little white noise."""
    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
    return offset + scale * f / f.std() + rng.normal(0, 0.5, shape)


def _blobs(shape, centres_radii):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    m = np.zeros(shape, bool)
    for (r, c, rad) in centres_radii:
        m |= (yy - r) ** 2 + (xx - c) ** 2 <= rad ** 2
    return m


def _files(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir())


# -- equivalence with PyKrige ------------------------------------------------------------------
@pytest.mark.parametrize("model", ["spherical", "exponential", "gaussian"])
def test_predictions_and_variances_equal_pykrige(tmp_path, model):
    """Same fitted variogram passed to PyKrige's OrdinaryKriging (n_closest_points=32, loop
    backend) on the same known pixels: predictions and variances agree to 1e-6 relative."""
    from pykrige.ok import OrdinaryKriging

    shape = (44, 48)
    img = _smooth_field(shape, 3, seed=1)
    gap = _blobs(shape, [(12, 14, 5), (30, 33, 6), (35, 8, 3)])
    assert 200 <= gap.sum() <= 400
    src = _write(tmp_path / "img.tif", img.astype(np.float64))
    mask = _write(tmp_path / "mask.tif", gap.astype(np.uint8))
    out, var = tmp_path / "out.tif", tmp_path / "var.tif"
    s = KrigingSettings(model=model, search_radius=200, max_lag=20)
    cloud_gap_fill(src, str(out), GapSpec(mask_path=mask), s, variance_path=str(var), block_size=16)
    v = json.loads(sidecar_path(str(out)).read_text())["bands"][0]["variogram"]
    assert v["model"] == model and v["sill"] > 0

    kr, kc = np.nonzero(~gap)
    gr, gc = np.nonzero(gap)
    kxy, txy = tie_break_xy(kr, kc, shape[1]), pixel_xy(gr, gc)
    ok = OrdinaryKriging(kxy[:, 0], kxy[:, 1], img[kr, kc], variogram_model=model,
                         variogram_parameters={"psill": v["psill"], "range": v["range_px"], "nugget": v["nugget"]})
    z, ss = ok.execute("points", txy[:, 0], txy[:, 1], n_closest_points=32, backend="loop")
    filled, _ = _read(out)
    variance, _ = _read(var)
    np.testing.assert_allclose(filled[0][gr, gc], z, rtol=1e-6)
    np.testing.assert_allclose(variance[0][gr, gc], ss, rtol=1e-6)  # float32 raster: ~6e-8 rounding
    assert (filled[0][~gap] == img[~gap]).all()


def test_tie_break_offsets_are_tiny_deterministic_and_distinct():
    r, c = np.mgrid[0:50, 0:60]
    a = tie_break_xy(r.ravel(), c.ravel(), 60)
    b = tie_break_xy(r.ravel(), c.ravel(), 60)
    exact = pixel_xy(r.ravel(), c.ravel())
    assert (a == b).all()
    d = np.abs(a - exact)
    assert d.max() < 1e-7 and (d > 0).mean() > 0.99
    # two pixels equidistant from a centre are no longer equidistant
    centre = np.array([30.5, 25.5])
    dist = np.hypot(*(a - centre).T)
    assert np.unique(dist).size == dist.size


def test_padded_system_equals_the_smaller_system():
    """A target with 5 known points inside the radius (n = 32 asked) gets exactly the kriging of those 5."""
    from edifice.core.gapfill.kriging import krige
    from edifice.core.gapfill.variogram import Variogram

    rng = np.random.default_rng(2)
    near = rng.uniform(-3, 3, (5, 2)) + 50
    far = rng.uniform(0, 100, (300, 2))
    far = far[np.hypot(*(far - 50).T) > 8]
    xy = np.vstack([near, far])
    z = rng.normal(size=(1, len(xy)))
    v = [Variogram("spherical", 0.2, 1.5, 6.0)]
    target = np.array([[50.0, 50.0]])
    padded = krige(xy, z, target, v, n=32, radius=5.0)
    small = krige(near, z[:, :5], target, v, n=5, radius=1e9)
    np.testing.assert_allclose(padded[0], small[0], rtol=1e-12)
    np.testing.assert_allclose(padded[1], small[1], rtol=1e-12)


@pytest.mark.parametrize("model", ["spherical", "exponential", "gaussian"])
def test_compiled_kernel_equals_the_numpy_solver(model):
    """The numba kernel (Cholesky of the covariance form, m <= n neighbours) and the stacked numpy
    solve of PyKrige's semivariance form (padded to n) give the same predictions and variances,
    with full and with partial neighbourhoods (radius 4 px), for three bands at once."""
    pytest.importorskip("numba")
    from edifice.core.gapfill.kriging import krige
    from edifice.core.gapfill.variogram import Variogram

    shape = (40, 40)
    img = np.stack([_smooth_field(shape, s, seed=s) for s in (1, 2, 4)])
    gap = _blobs(shape, [(10, 12, 5), (28, 26, 7)])
    kr, kc = np.nonzero(~gap)
    gr, gc = np.nonzero(gap)
    kxy, txy = tie_break_xy(kr, kc, shape[1]), pixel_xy(gr, gc)
    vg = [Variogram(model, 0.5, 50.0 * (b + 1), 6.0 + 4 * b) for b in range(3)]
    for radius in (1e9, 4.0):
        fast = krige(kxy, img[:, kr, kc], txy, vg, 32, radius, engine="compiled")
        ref = krige(kxy, img[:, kr, kc], txy, vg, 32, radius, engine="numpy")
        assert np.isnan(fast[0]).sum() == np.isnan(ref[0]).sum() == (0 if radius > 100 else np.isnan(ref[0]).sum())
        np.testing.assert_allclose(fast[0], ref[0], rtol=1e-10)
        np.testing.assert_allclose(fast[1], ref[1], rtol=1e-9)
        np.testing.assert_array_equal(fast[2], ref[2])
    assert np.isnan(ref[0]).any() and np.isfinite(ref[0]).any()  # radius 4: some targets have no neighbour
    with pytest.raises(ValueError, match="engine"):
        krige(kxy, img[:, kr, kc], txy, vg, 32, 4.0, engine="fortran")


def test_compiled_kernel_falls_back_to_lu_where_cholesky_fails():
    """The kernel's semivariance-form LU (used when the covariance matrix is not numerically
    positive definite) gives the covariance-form weights; an indefinite covariance form is detected."""
    pytest.importorskip("numba")
    from edifice.core.gapfill import _compiled

    rng = np.random.default_rng(3)
    m = 12
    pts = rng.uniform(0, 10, (m + 1, 2))
    dist = np.zeros((m, m + 1))
    for i in range(m):
        dist[i, m] = np.hypot(*(pts[i] - pts[m]))
        for j in range(i + 1, m):
            dist[i, j] = np.hypot(*(pts[i] - pts[j]))
    args = (dist, m, 0, 0.3, 2.0, 8.0)  # spherical, nugget 0.3, psill 2, range 8
    out = []
    for form in (_compiled._weights_covariance_form, _compiled._weights_semivariance_form):
        a, x, g0 = np.empty((m + 1, m + 1)), np.empty((2, m + 1)), np.empty(m)
        mu = form(*args, a, x, g0)
        out.append((x[0, :m].copy(), mu))
    np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-10, atol=1e-12)
    assert out[0][1] == pytest.approx(out[1][1], rel=1e-10)
    assert out[0][0].sum() == pytest.approx(1.0)
    # a negative nugget makes C = sill - gamma indefinite (C_ij > C_ii for close points): the
    # Cholesky fails, is reported, and the kernel's result is the semivariance-form solution
    a, x, g0 = np.empty((m + 1, m + 1)), np.empty((2, m + 1)), np.empty(m)
    assert np.isnan(_compiled._weights_covariance_form(dist, m, 0, -1.0, 2.0, 8.0, a, x, g0))
    from edifice.core.gapfill.kriging import krige
    from edifice.core.gapfill.variogram import Variogram

    z = rng.normal(size=(1, m))
    bad = [Variogram("spherical", -1.0, 1.0, 8.0)]
    fast = krige(pts[:m], z, pts[m:], bad, m, 1e9, engine="compiled")
    ref = krige(pts[:m], z, pts[m:], bad, m, 1e9, engine="numpy")
    assert np.isfinite(fast[0]).all()
    np.testing.assert_allclose(fast[0], ref[0], rtol=1e-9)
    np.testing.assert_allclose(fast[1], ref[1], rtol=1e-9)


# -- variogram fits -----------------------------------------------------------------------------
def _grf(n, model, nugget, psill, range_, seed):
    """A Gaussian random field on an n x n grid with a known variogram (Cholesky of its covariance)."""
    yy, xx = np.mgrid[0:n, 0:n]
    p = np.column_stack([xx.ravel(), yy.ravel()]).astype(float)
    d = np.hypot(p[:, None, 0] - p[None, :, 0], p[:, None, 1] - p[None, :, 1])
    cov = nugget + psill - model_values(model, d, nugget, psill, range_)
    cov[np.diag_indices_from(cov)] = nugget + psill
    z = np.linalg.cholesky(cov) @ np.random.default_rng(seed).normal(size=p.shape[0])
    return z.reshape(n, n)


def test_variogram_fit_agrees_with_pykrige_on_the_same_pixels():
    """Both fit a spherical model to the same 48 x 48 pixels of one Gaussian random field
    (true nugget 0.1, sill 1.1, range 12 px). The estimators differ (PyKrige: 12 equal-width
    bins over all pair distances, soft-L1 loss; ours: pixel-pair lag classes up to 24 px,
    weights N/h^2), so they agree to the sampling noise, not to round-off: stated tolerance
    0.15 x sill for the two curves over lags 1..24 px, 35 % for the range."""
    from pykrige.ok import OrdinaryKriging

    n = 48
    z = _grf(n, "spherical", 0.1, 1.0, 12.0, seed=3)
    acc = VariogramAccumulator(24)
    acc.add(z, np.ones_like(z, bool))
    ours, _ = fit_variogram(acc.result(), "spherical")
    yy, xx = np.mgrid[0:n, 0:n]
    pk = OrdinaryKriging(xx.ravel() + 0.5, yy.ravel() + 0.5, z.ravel(), variogram_model="spherical", nlags=12)
    psill, rng_, nug = pk.variogram_model_parameters
    h = np.linspace(1, 24, 50)
    gap = np.abs(ours(h) - model_values("spherical", h, nug, psill, rng_))
    assert gap.max() <= 0.15 * (psill + nug)
    assert abs(ours.range_px - rng_) <= 0.35 * rng_


def test_white_noise_gives_a_flat_variogram_at_its_variance():
    """Known truth: iid N(0, 4) pixels have gamma(h) = 4 at every lag h >= 1."""
    z = np.random.default_rng(5).normal(0, 2, (200, 200))
    acc = VariogramAccumulator(30)
    acc.add(z, np.ones_like(z, bool))
    emp = acc.result()
    v, tried = fit_variogram(emp, "auto")
    assert set(tried) == {"spherical", "exponential", "gaussian"}
    assert np.abs(v(np.linspace(1, 30, 30)) / 4.0 - 1).max() < 0.05


def test_empirical_variogram_of_a_ramp_is_known():
    """z = 2 * col: pairs at (dr, dc) differ by 2 dc; E/S/SE/SW lags give known semivariances."""
    z = np.tile(2.0 * np.arange(40), (30, 1))
    acc = VariogramAccumulator(4, n_classes=4)
    acc.add(z, np.ones_like(z, bool))
    emp = acc.result()
    # lag class 1: vectors (0,1): 0.5*4=2, (1,0): 0, (1,1): 2, (1,-1): 2, pairs weighted by count
    n = np.array([30 * 39, 29 * 40, 29 * 39, 29 * 39])
    g = np.array([2.0, 0.0, 2.0, 2.0])
    assert emp.gamma[0] == pytest.approx((n * g).sum() / n.sum())


# -- the tool ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,nodata", [("uint8", 0), ("uint16", None), ("float32", -9999.0)])
def test_valid_pixels_are_unchanged_and_type_kept(tmp_path, dtype, nodata):
    shape = (70, 90)
    img = np.clip(_smooth_field(shape, 4, seed=2), 1, 250).astype(dtype)
    img = np.stack([img, (img * 0.5).astype(dtype)])
    if nodata is not None:
        img[:, :3, :] = nodata
    clouds = _blobs(shape, [(30, 40, 9), (55, 70, 6), (2, 20, 4)])  # the last one also over the nodata rows
    gap = clouds.copy()
    if nodata is not None:
        gap[:3, :] = False  # the image's nodata stays nodata under a cloud mask
    src = _write(tmp_path / "img.tif", img, nodata)
    mask = _write(tmp_path / "mask.tif", clouds.astype(np.uint8))
    out = tmp_path / "out.tif"
    s = cloud_gap_fill(src, str(out), GapSpec(mask_path=mask), KrigingSettings(max_lag=10), block_size=32)
    res, nd = _read(out)
    assert res.dtype == np.dtype(dtype) and nd == nodata
    assert np.array_equal(res[:, ~gap], img[:, ~gap])  # bit for bit, nodata rows included
    assert s["filled_per_band"] == [int(gap.sum())] * 2
    # kriged values stay within the range of the band (integer outputs never hit nodata)
    for b in range(2):
        vals = res[b][gap].astype(float)
        known = img[b][~gap & (img[b] != (nodata if nodata is not None else -1))].astype(float)
        assert known.min() - 1 <= vals.min() and vals.max() <= known.max() + 1
        if nodata is not None:
            assert (res[b][gap] != nodata).all()


def test_blockwise_equals_one_block(tmp_path):
    shape = (90, 110)
    img = _smooth_field(shape, 3, seed=4).astype(np.float32)
    gap = _blobs(shape, [(20, 20, 8), (60, 80, 12), (45, 50, 2)])
    src = _write(tmp_path / "img.tif", img)
    mask = _write(tmp_path / "mask.tif", gap.astype(np.uint8))
    s = KrigingSettings(search_radius=40, max_lag=15)
    cloud_gap_fill(src, str(tmp_path / "a.tif"), GapSpec(mask_path=mask), s, block_size=4096)
    cloud_gap_fill(src, str(tmp_path / "b.tif"), GapSpec(mask_path=mask), s, block_size=17)
    a, _ = _read(tmp_path / "a.tif")
    b, _ = _read(tmp_path / "b.tif")
    assert np.array_equal(a, b)


def test_kriging_beats_nearest_neighbour_on_a_field_with_the_fitted_structure(tmp_path):
    """On a Gaussian random field (known exponential variogram), kriging predictions of small gaps
    have a lower RMSE than copying the nearest known pixel (OK is the minimum-variance unbiased
    linear predictor; nearest-neighbour is one of the unbiased linear predictors)."""
    z = _grf(48, "exponential", 0.05, 1.0, 15.0, seed=7)
    gap = _blobs(z.shape, [(10, 10, 3), (30, 35, 4), (38, 12, 3), (15, 38, 3)])
    src = _write(tmp_path / "img.tif", z.astype(np.float64))
    mask = _write(tmp_path / "mask.tif", gap.astype(np.uint8))
    cloud_gap_fill(src, str(tmp_path / "o.tif"), GapSpec(mask_path=mask), KrigingSettings(max_lag=20))
    out, _ = _read(tmp_path / "o.tif")
    _, (ir, ic) = ndimage.distance_transform_edt(gap, return_indices=True)
    nn = z[ir, ic]
    rmse_k = np.sqrt(np.mean((out[0][gap] - z[gap]) ** 2))
    rmse_nn = np.sqrt(np.mean((nn[gap] - z[gap]) ** 2))
    assert rmse_k < rmse_nn


def test_nodata_as_gaps_ranges_and_dilation(tmp_path):
    shape = (40, 40)
    img = np.clip(_smooth_field(shape, 3, seed=8), 1, 200).astype(np.uint8)
    img[20, 20] = 0            # nodata pixel -> a gap with use_nodata
    img[5, 30] = 255           # a "bright cloud" pixel -> a gap with a range rule
    src = _write(tmp_path / "img.tif", img, nodata=0)
    s = cloud_gap_fill(src, str(tmp_path / "a.tif"), GapSpec(use_nodata=True, ranges=parse_ranges("1:250:255")),
                       KrigingSettings(max_lag=8))
    assert s["gap_pixels"] == 2
    a, _ = _read(tmp_path / "a.tif")
    assert a[0, 20, 20] != 0 and a[0, 5, 30] < 250
    s = cloud_gap_fill(src, str(tmp_path / "b.tif"), GapSpec(use_nodata=True, dilation=2), KrigingSettings(max_lag=8))
    assert s["gap_pixels"] == 13  # a disk of radius 2 px: 13 pixels
    # a range gap grown by 2 px next to the nodata pixel: the nodata pixel itself is not filled
    img[20, 22] = 255
    src = _write(tmp_path / "img2.tif", img, nodata=0)
    s = cloud_gap_fill(src, str(tmp_path / "c.tif"), GapSpec(ranges=parse_ranges("1:250:255"), dilation=2),
                       KrigingSettings(max_lag=8))
    c, _ = _read(tmp_path / "c.tif")
    assert s["gap_pixels"] == 13 + 13 - 1 and c[0, 20, 20] == 0  # two disks, less the nodata pixel


def test_parse_ranges_refuses_bad_text():
    assert parse_ranges("3:200:255, 1:0:5")[1].band == 1
    with pytest.raises(InputError, match="RANGES"):
        parse_ranges("3:200")


def test_beyond_range_left_as_nodata_counts_match_distances(tmp_path):
    shape = (80, 80)
    img = _smooth_field(shape, 1.5, seed=9).astype(np.float32)  # short range
    gap = _blobs(shape, [(40, 40, 25)])
    src = _write(tmp_path / "img.tif", img, nodata=-1.0)
    mask = _write(tmp_path / "mask.tif", gap.astype(np.uint8))
    log = RecordingProgress()
    s = cloud_gap_fill(src, str(tmp_path / "o.tif"), GapSpec(mask_path=mask),
                       KrigingSettings(max_lag=12, beyond_range="nodata"), progress=log)
    rng_px = json.loads(sidecar_path(str(tmp_path / "o.tif")).read_text())["bands"][0]["variogram"]["range_px"]
    dist = ndimage.distance_transform_edt(gap)  # distance (px) to the nearest cloud-free pixel centre
    expected = int((dist[gap] > rng_px).sum())
    assert 0 < expected < gap.sum()
    out, nd = _read(tmp_path / "o.tif")
    assert s["beyond_range_per_band"] == [expected]
    assert int((out[0] == nd).sum()) == expected
    assert any(f"{expected} gap pixel(s) are farther" in m and "left as nodata" in m for m in log.warnings)


def test_pixels_without_neighbour_in_radius_stay_nodata_with_a_warning(tmp_path):
    shape = (60, 60)
    img = _smooth_field(shape, 3, seed=10).astype(np.float32)
    gap = _blobs(shape, [(30, 30, 20)])
    src = _write(tmp_path / "img.tif", img)
    mask = _write(tmp_path / "mask.tif", gap.astype(np.uint8))
    log = RecordingProgress()
    s = cloud_gap_fill(src, str(tmp_path / "o.tif"), GapSpec(mask_path=mask),
                       KrigingSettings(search_radius=10, max_lag=8), progress=log)
    dist = ndimage.distance_transform_edt(gap)
    expected = int((dist[gap] > 10).sum())
    assert s["unfilled_no_neighbour"] == expected > 0
    out, nd = _read(tmp_path / "o.tif")
    assert np.isnan(nd) and int(np.isnan(out[0]).sum()) == expected
    assert any(str(expected) in w and "SEARCH_RADIUS" in w for w in log.warnings)


def test_outputs_sidecar_variance_and_report(tmp_path):
    shape = (50, 50)
    img = _smooth_field(shape, 3, seed=11).astype(np.float32)
    gap = _blobs(shape, [(25, 25, 6)])
    src = _write(tmp_path / "img.tif", img)
    mask = _write(tmp_path / "mask.tif", gap.astype(np.uint8))
    cloud_gap_fill(src, str(tmp_path / "o.tif"), GapSpec(mask_path=mask), KrigingSettings(max_lag=10),
                   variance_path=str(tmp_path / "v.tif"), report_path=str(tmp_path / "r.html"))
    side = json.loads((tmp_path / "o.variograms.json").read_text())
    v = side["bands"][0]["variogram"]
    assert {"model", "nugget", "sill", "range_px", "fit_rmse", "range_crs_units"} <= set(v)
    assert v["range_crs_units"] == pytest.approx(10 * v["range_px"])
    var, _ = _read(tmp_path / "v.tif")
    assert np.isnan(var[0][~gap]).all() and (var[0][gap] > 0).all()
    html = (tmp_path / "r.html").read_text()
    assert "<svg" in html and "polyline" in html and v["model"] in html
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


# -- bad input -----------------------------------------------------------------------------------
def _another_grid_case():
    img = _smooth_field((30, 30), 3, seed=12).astype(np.float32)
    return img, np.ones((30, 30), np.uint8), Affine(10, 0, 450005, 0, -10, 40000)


def _all_cloud_case():
    return _smooth_field((30, 30), 3, seed=13).astype(np.float32), np.ones((30, 30), np.uint8), TRANSFORM


def _constant_band_case():
    img = np.stack([_smooth_field((40, 40), 3, seed=15), np.full((40, 40), 7.0)]).astype(np.float32)
    return img, _blobs((40, 40), [(20, 20, 5)]).astype(np.uint8), TRANSFORM


@pytest.mark.parametrize("case,match", [
    (_another_grid_case, "MASK.*another grid.*gdalwarp"),
    (_all_cloud_case, "no cloud-free pixel"),
    (_constant_band_case, "band 2 has the same value.*degenerate"),
])
def test_bad_input_is_refused_and_nothing_written(tmp_path, case, match):
    img, mask_values, mask_transform = case()
    src = _write(tmp_path / "img.tif", img)
    mask = _write(tmp_path / "mask.tif", mask_values, transform=mask_transform)
    before = _files(tmp_path)
    with pytest.raises(InputError, match=match):
        cloud_gap_fill(src, str(tmp_path / "o.tif"), GapSpec(mask_path=mask), variance_path=str(tmp_path / "v.tif"),
                       report_path=str(tmp_path / "r.html"))
    assert _files(tmp_path) == before


def test_no_cloud_copies_the_input_without_fitting(tmp_path):
    img = np.clip(_smooth_field((300, 260), 3, seed=14), 1, 250).astype(np.uint8)
    src = _write(tmp_path / "img.tif", img, nodata=0)
    mask = _write(tmp_path / "mask.tif", np.zeros((300, 260), np.uint8))
    log = RecordingProgress()
    s = cloud_gap_fill(src, str(tmp_path / "o.tif"), GapSpec(mask_path=mask), progress=log, block_size=128)
    out, nd = _read(tmp_path / "o.tif")
    assert np.array_equal(out[0], img) and nd == 0
    assert s["gap_pixels"] == 0 and s["bands"] == []
    assert any("No gap pixel" in m for m in log.infos)


def test_no_gap_definition_and_bad_settings_are_refused(tmp_path):
    src = _write(tmp_path / "img.tif", _smooth_field((20, 20), 3, seed=16).astype(np.float32))
    with pytest.raises(InputError, match="no gap definition"):
        cloud_gap_fill(src, str(tmp_path / "o.tif"), GapSpec())
    with pytest.raises(InputError, match="MODEL"):
        cloud_gap_fill(src, str(tmp_path / "o.tif"), GapSpec(use_nodata=True), KrigingSettings(model="cubic"))
    with pytest.raises(InputError, match="RANGES"):
        cloud_gap_fill(src, str(tmp_path / "o.tif"), GapSpec(ranges=parse_ranges("4:0:1")))


def test_cancel_leaves_nothing(tmp_path):
    img = _smooth_field((64, 64), 3, seed=17).astype(np.float32)
    src = _write(tmp_path / "img.tif", img)
    mask = _write(tmp_path / "mask.tif", _blobs((64, 64), [(30, 30, 8)]).astype(np.uint8))
    before = _files(tmp_path)

    class CancelLate(Progress):
        calls = 0

        def is_cancelled(self):
            self.calls += 1
            return self.calls > 12  # past the scan and the variogram, inside the block loop

    with pytest.raises(Cancelled):
        cloud_gap_fill(src, str(tmp_path / "o.tif"), GapSpec(mask_path=mask), variance_path=str(tmp_path / "v.tif"),
                       report_path=str(tmp_path / "r.html"), block_size=16, progress=CancelLate())
    assert _files(tmp_path) == before


def test_gapfill_never_imports_qgis():
    import subprocess
    import sys

    code = ("import sys, edifice.core.gapfill, edifice.core.gapfill.report, edifice.core.cli.gapfill\n"
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('qgis', 'PyQt5', 'pykrige')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "[]"


def test_kriging_without_numba_falls_back_to_numpy():
    """With numba unimportable, the default engine is the numpy one (same values as the padded
    small-system check elsewhere), the compiled engine is refused with the fix, and loading the
    gapfill modules never imports numba (QGIS start-up stays fast)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import edifice.core.gapfill, edifice.core.cli.gapfill\n"
            "print('numba' in sys.modules)\n"
            "sys.modules['numba'] = None\n"
            "import numpy as np\n"
            "from edifice.core.gapfill.kriging import krige\n"
            "from edifice.core.gapfill.variogram import Variogram\n"
            "xy = np.array([[0., 0.], [1., 0.], [0., 1.], [1., 1.]]); z = np.array([[1., 2., 3., 4.]])\n"
            "p, v, _ = krige(xy, z, np.array([[0.5, 0.5]]), [Variogram('spherical', 0.1, 1.0, 5.0)], n=4)\n"
            "print(round(float(p[0, 0]), 12), bool(np.isfinite(v).all()))\n"
            "try:\n"
            "    krige(xy, z, np.array([[0.5, 0.5]]), [Variogram('spherical', 0.1, 1.0, 5.0)], engine='compiled')\n"
            "except RuntimeError as e:\n"
            "    print('refused', 'pip install numba' in str(e))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    # the centre of a square is equidistant from its corners: equal weights, mean 2.5
    assert out.stdout.split("\n")[:3] == ["False", "2.5 True", "refused True"]


def test_kriging_beats_nearest_neighbour_on_real_sentinel1(tmp_path):
    """Real THU Sentinel-1 VV/VH (dB, ~10 m): small cloud blobs (~30 m) over a 150 x 150 px crop. Backscatter is
    spatially correlated with speckle noise, so a weighted mean of 32 neighbours has a lower error than
    copying the nearest pixel (bench_gapfill measures RMSE ratios of 0.5-0.8 on these data; the test asserts
    only the order)."""
    from pathlib import Path

    from rasterio.windows import Window

    thu = Path(__file__).resolve().parents[2] / "samples" / "thu" / "thu_s1_2020.tif"
    with rasterio.open(thu) as ds:
        img = ds.read(window=Window(160, 160, 150, 150))
        profile = dict(ds.profile, width=150, height=150, transform=ds.window_transform(Window(160, 160, 150, 150)))
    assert np.isfinite(img).all()
    rng = np.random.default_rng(0)
    centres = [(int(r), int(c), 1.0) for r, c in rng.integers(3, 147, size=(600, 2))]
    gap = _blobs(img.shape[1:], centres)  # ~12 % of the crop in 5-px crosses (3 px, ~30 m across), some merged
    src, mask = tmp_path / "s1.tif", tmp_path / "m.tif"
    with rasterio.open(src, "w", **profile) as dst:
        dst.write(img)
    with rasterio.open(mask, "w", **dict(profile, count=1, dtype="uint8")) as dst:
        dst.write(gap.astype(np.uint8)[None])
    cloud_gap_fill(str(src), str(tmp_path / "o.tif"), GapSpec(mask_path=str(mask)), KrigingSettings(max_lag=20))
    out, _ = _read(tmp_path / "o.tif")
    _, (ir, ic) = ndimage.distance_transform_edt(gap, return_indices=True)
    rmse_k = np.sqrt(np.mean((out[:, gap] - img[:, gap]) ** 2))
    rmse_nn = np.sqrt(np.mean((img[:, ir, ic][:, gap] - img[:, gap]) ** 2))
    assert rmse_k < rmse_nn


def test_an_output_that_is_an_input_is_refused(tmp_path):
    img = _smooth_field((30, 30), 3, seed=18).astype(np.float32)
    src = _write(tmp_path / "img.tif", img)
    mask = _write(tmp_path / "mask.tif", _blobs((30, 30), [(15, 15, 3)]).astype(np.uint8))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(InputError, match="OUTPUT_VARIANCE.*also the input MASK"):
        cloud_gap_fill(src, str(tmp_path / "o.tif"), GapSpec(mask_path=mask), variance_path=mask)
    with pytest.raises(InputError, match="OUTPUT.*also the input INPUT"):
        cloud_gap_fill(src, src, GapSpec(mask_path=mask))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
