"""SHAFTS-compatible inference against a straightforward per-pixel reference."""
import math

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS

from edifice.core.errors import InputError, Cancelled
from edifice.core.progress import Progress
from edifice.core.height.shafts_inference import (gdal_clip_grid, predict_height_footprint_shafts,
                                           resolve_device, shafts_output_grid)
from edifice.models.shafts import build_shafts_model

torch.set_num_threads(1)
WGS84 = CRS.from_epsg(4326)
S1_RES = 8.9831528e-5
DEM_RES = 2.7777778e-4
EXTENT = (116.32, 39.98, 116.3255, 39.9842)
PAD = 0.004


def _write(path, data, x0, y0, res, nodata=None, crs=WGS84):
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, crs=crs, transform=Affine(res, 0, x0, 0, -res, y0), nodata=nodata) as d:
        d.write(data)
    return str(path)


def _model(seed=0, res=100, task="multi"):
    torch.manual_seed(seed)
    m = build_shafts_model(res, task, 2 if res == 100 else 1)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, v in m.state_dict().items():
            if k.endswith("running_var"):
                v.copy_(0.5 + torch.rand(v.shape, generator=g))
            elif k.endswith("running_mean"):
                v.copy_(torch.rand(v.shape, generator=g) * 0.2)
        if task == "multi":
            m.fc_out_height.bias.fill_(8.0)
            m.fc_out_height.weight.mul_(20.0)
            m.fc_out_footprint.weight.mul_(5.0)
    return m.eval()


@pytest.fixture
def scene(tmp_path):
    rng = np.random.default_rng(42)
    x0, y0 = 116.31, 39.995
    w, h = int(0.03 / S1_RES), int(0.025 / S1_RES)
    s1 = rng.uniform(-25, 2, size=(2, h, w)).astype(np.float32)      # dB; some > 0 dB saturate to 1
    s2 = rng.gamma(2.0, 600.0, size=(4, h, w)).astype(np.float32)
    # the output pixel (row 2, col 3): its centre falls in a NaN hole inside a constant block
    cx, cy = EXTENT[0] + 0.0009 * 3.5, EXTENT[3] - 0.0009 * 2.5
    ci, cj = int((cx - x0) / S1_RES), int((y0 - cy) / S1_RES)
    s1[:, cj - 6:cj + 7, ci - 6:ci + 7] = -12.0
    s1[0, cj - 1:cj + 2, ci - 1:ci + 2] = np.nan
    s2[:, cj - 6:cj + 7, ci - 6:ci + 7] = 900.0
    s2[2, cj - 1:cj + 2, ci - 1:ci + 2] = np.nan
    # S-2 on a slightly different grid; DEM at 30 m with a nodata pixel under the last output column
    s2_x0, s2_y0, s2_res = x0 + 3e-5, y0 - 2e-5, 8.98e-5
    dw, dh = int(0.03 / DEM_RES), int(0.025 / DEM_RES)
    dem = (50 + rng.normal(0, 5, size=(dh, dw))).astype(np.float32)
    dx = EXTENT[0] + 0.0009 * 6.5 + 0.002
    di, dj = int((dx - x0) / DEM_RES), int((y0 - (EXTENT[3] - 0.0009 * 0.5)) / DEM_RES)
    dem[dj, di] = -32768
    return {
        "s1": _write(tmp_path / "s1.tif", s1, x0, y0, S1_RES),
        "s2": _write(tmp_path / "s2.tif", s2, s2_x0, s2_y0, s2_res),
        "dem": _write(tmp_path / "dem.tif", dem, x0, y0, DEM_RES, nodata=-32768),
        "tmp": tmp_path,
    }


# ---------------- independent per-pixel reference ----------------
def _ref_clip(path, bounds, band):
    with rasterio.open(path) as ds:
        arr = ds.read(band).astype(np.float64)
        nd = ds.nodata
        t = ds.transform
    if nd is not None:
        arr[arr == nd] = np.nan
    xmin, ymin, xmax, ymax = bounds
    nx = int((xmax - xmin) / t.a + 0.5)
    ny = int((ymax - ymin) / -t.e + 0.5)
    dx, dy = (xmax - xmin) / nx, (ymax - ymin) / ny
    out = np.empty((ny, nx))
    for r in range(ny):
        for c in range(nx):
            x, y = xmin + (c + 0.5) * dx, ymax - (r + 0.5) * dy
            sc, sr = math.floor((x - t.c) / t.a), math.floor((t.f - y) / -t.e)
            out[r, c] = arr[sr, sc]
    return out, (xmin, dx, ymax, dy)


def _ref_fill(a):
    a = a.copy()
    nan = np.argwhere(np.isnan(a))
    good = np.argwhere(~np.isnan(a))
    src = a.copy()
    for r, c in nan:
        d2 = (good[:, 0] - r) ** 2 + (good[:, 1] - c) ** 2
        k = good[np.argmin(d2)]
        a[r, c] = src[k[0], k[1]]
    return a


def _reference(scene, model, extent, res_deg, h_lim=(2.0, 1000.0), f_lim=(0.0, 1.0), padding=PAD):
    xmin, ymin, xmax, ymax = extent
    b = (xmin - padding, ymin - padding, xmax + padding, ymax + padding)
    chans, grids, raw = [], [], []
    for key, band in (("s1", 1), ("s1", 2), ("s2", 1), ("s2", 2), ("s2", 3), ("s2", 4)):
        a, g = _ref_clip(scene[key], b, band)
        raw.append(a)
        f = _ref_fill(a.astype(np.float32).astype(np.float64)).astype(np.float32)
        if key == "s1":
            v = np.minimum(np.float32(10.0) ** (f / np.float32(10.0)), np.float32(1.0))
        else:
            lo = f.min()
            v = np.clip((f - lo) / (np.quantile(f, 0.98) - np.quantile(f, 0.02)), 0, 1)
        q = np.zeros(v.shape, np.uint8)
        for r in range(v.shape[0]):
            for c in range(v.shape[1]):
                q[r, c] = int(np.float32(v[r, c]) * np.float32(255))
        chans.append(q)
        grids.append(g)
    dem, gd = _ref_clip(scene["dem"], b, 1)
    s = model.patch_size
    nx = math.ceil(round(round(xmax - xmin, 6) / res_deg, 6))
    ny = math.ceil(round(round(ymax - ymin, 6) / res_deg, 6))
    H = np.full((ny, nx), np.nan)
    Fp = np.full((ny, nx), np.nan)
    for r in range(ny):
        for c in range(nx):
            x, y = xmin + res_deg * (c + 0.5), ymax - res_deg * (r + 0.5)
            x_in = np.zeros((1, 6, s, s), np.float32)
            centre_ok = True
            for k in range(6):
                gx0, gdx, gy0, gdy = grids[k]
                i, j = math.floor((x - gx0) / gdx), math.floor((gy0 - y) / gdy)
                if np.isnan(raw[k][j, i]):
                    centre_ok = False
                x_in[0, k] = chans[k][j - (s // 2 - 1): j + s // 2 + 1, i - (s // 2 - 1): i + s // 2 + 1] / np.float32(255)
            gx0, gdx, gy0, gdy = gd
            i, j = math.floor((x - gx0) / gdx), math.floor((gy0 - y) / gdy)
            d = dem[j - (s // 2 - 1): j + s // 2 + 1, i - (s // 2 - 1): i + s // 2 + 1].astype(np.float32)
            if not centre_ok or np.isnan(d).any():
                continue
            with torch.no_grad():
                out = model(torch.from_numpy(x_in), torch.from_numpy(d[None, None].copy()))
            h, f = float(out["height"][0]), float(out["footprint"][0])
            h = 0.0 if h < h_lim[0] else min(h, h_lim[1])
            f = 0.0 if f < f_lim[0] else min(f, f_lim[1])
            H[r, c], Fp[r, c] = h, f
    return H, Fp


def _read(path):
    with rasterio.open(path) as ds:
        a = ds.read(1).astype(np.float64)
        nd = ds.nodata
        assert ds.dtypes[0] == "float32" and nd is not None
        a[a == nd] = np.nan
        return a, ds.transform


class _Rec(Progress):
    def __init__(self, cancel_after=None):
        self.infos, self.warnings, self.fracs = [], [], []
        self.cancel_after = cancel_after
        self.calls = 0

    def info(self, m):
        self.infos.append(m)

    def warning(self, m):
        self.warnings.append(m)

    def set_fraction(self, f):
        self.fracs.append(f)

    def is_cancelled(self):
        self.calls += 1
        return self.cancel_after is not None and self.calls > self.cancel_after


def test_matches_per_pixel_reference(scene):
    model = _model(1)
    rec = _Rec()
    out = predict_height_footprint_shafts(scene["s1"], scene["s2"], scene["dem"], EXTENT, model, 100,
                                          scene["tmp"] / "h.tif", scene["tmp"] / "f.tif", padding=PAD,
                                          batch_size=4, chunk_rows=2, device="cpu", progress=rec)
    H, Fp = _reference(scene, model, EXTENT, 0.0009)
    h, th = _read(out["height"])
    f, _ = _read(out["footprint"])
    assert h.shape == (5, 7)
    assert th == Affine(0.0009, 0, EXTENT[0], 0, -0.0009, EXTENT[3])
    np.testing.assert_array_equal(np.isnan(h), np.isnan(H))
    assert np.isnan(h[2, 3])                        # centre on a NaN hole in S-1/S-2
    assert np.isnan(h[0, 6])                        # DEM nodata inside the patch
    assert np.isfinite(h).sum() >= 25 and np.nanstd(H) > 0.1
    np.testing.assert_allclose(h, H, atol=1e-3, equal_nan=True)
    np.testing.assert_allclose(f, Fp, atol=1e-5, equal_nan=True)
    assert any("cpu" in m for m in rec.infos) and rec.fracs[-1] == pytest.approx(1.0)


def test_clip_grid_matches_gdal_warp(scene):
    gdal = pytest.importorskip("osgeo.gdal")
    xmin, ymin, xmax, ymax = EXTENT
    b = (xmin - PAD, ymin - PAD, xmax + PAD, ymax + PAD)
    for key in ("s1", "s2", "dem"):
        ds = gdal.Warp(str(scene["tmp"] / f"clip_{key}.tif"), scene[key], outputBounds=list(b), resampleAlg="near")
        gt, w, h = ds.GetGeoTransform(), ds.RasterXSize, ds.RasterYSize
        warped = ds.GetRasterBand(1).ReadAsArray()
        ds = None
        with rasterio.open(scene[key]) as src:
            g = gdal_clip_grid(src.transform, b)
        assert (g.width, g.height) == (w, h)
        np.testing.assert_allclose([g.transform.c, g.transform.a, g.transform.f, g.transform.e],
                                   [gt[0], gt[1], gt[3], gt[5]], rtol=1e-12, atol=1e-12)
        from edifice.core.height.shafts_inference import clip_nearest
        with rasterio.open(scene[key]) as src:
            ours, _ = clip_nearest(src, b, (1,), key)
        nd = -32768 if key == "dem" else None
        exp = warped.astype(np.float64)
        if nd is not None:
            exp[exp == nd] = np.nan
        np.testing.assert_array_equal(ours[0], exp)


def test_output_grid_formula():
    g = shafts_output_grid((116.0, 39.0, 116.02, 39.02), 100)
    assert (g.width, g.height) == (23, 23)                 # 0.02 / 0.0009 = 22.2 -> 23
    assert g.transform == Affine(0.0009, 0, 116.0, 0, -0.0009, 39.02)
    g = shafts_output_grid((0.0, 0.0, 0.018, 0.009), 100)  # exact multiple: no extra pixel
    assert (g.width, g.height) == (20, 10)
    g = shafts_output_grid((10.0, 50.0, 10.1, 50.05), 1000)
    assert (g.width, g.height) == (12, 6) and g.res == (0.009, 0.009)
    with pytest.raises(InputError):
        shafts_output_grid((0, 0, 1, 1), 300)


def test_postprocessing_thresholds(scene):
    model = _model(1)
    lim = (15.0, 20.0)
    out = predict_height_footprint_shafts(scene["s1"], scene["s2"], scene["dem"], EXTENT, model, 100,
                                          scene["tmp"] / "h.tif", scene["tmp"] / "f.tif", padding=PAD,
                                          h_min=lim[0], h_max=lim[1], f_min=0.3, f_max=0.6, device="cpu")
    h, _ = _read(out["height"])
    f, _ = _read(out["footprint"])
    v = h[np.isfinite(h)]
    assert np.all((v == 0) | ((v >= 15) & (v <= 20)))
    v = f[np.isfinite(f)]
    assert np.all((v == 0) | ((v >= 0.3) & (v <= 0.6)))


def test_errors(scene, tmp_path):
    model = _model(2)
    args = (scene["s1"], scene["s2"], scene["dem"])
    outs = (tmp_path / "h.tif", tmp_path / "f.tif")
    with pytest.raises(InputError, match="250 m was requested"):
        predict_height_footprint_shafts(*args, EXTENT, model, 250, *outs, padding=PAD, device="cpu")
    with pytest.raises(InputError, match="S1.*not the extent"):
        predict_height_footprint_shafts(*args, EXTENT, model, 100, *outs, padding=0.02, device="cpu")
    small_dem = _write(tmp_path / "small_dem.tif", np.zeros((20, 20), np.float32), 116.318, 39.986, DEM_RES)
    with pytest.raises(InputError, match="DEM.*not the extent"):
        predict_height_footprint_shafts(*args[:2], small_dem, EXTENT, model, 100, *outs, padding=PAD,
                                        device="cpu")
    with pytest.raises(InputError, match="PADDING"):
        predict_height_footprint_shafts(*args, EXTENT, model, 100, *outs, padding=0.001, device="cpu")
    with pytest.raises(InputError, match="cuda:7|no CUDA"):
        resolve_device("cuda:7")
    with pytest.raises(InputError):
        resolve_device("tpu")
    one = _write(tmp_path / "one.tif", np.zeros((1, 300, 300), np.float32), 116.31, 39.995, S1_RES)
    with pytest.raises(InputError, match="S1.*band"):
        predict_height_footprint_shafts(one, scene["s2"], scene["dem"], EXTENT, model, 100, *outs,
                                        padding=PAD, device="cpu")
    utm = _write(tmp_path / "utm.tif", np.zeros((1, 50, 50), np.float32), 400000, 4400000, 30.0,
                 crs=CRS.from_epsg(32650))
    with pytest.raises(InputError, match="DEM.*EPSG:32650"):
        predict_height_footprint_shafts(*args[:2], utm, EXTENT, model, 100, *outs, padding=PAD, device="cpu")
    assert not list(tmp_path.glob("*.tif.*")) and not (tmp_path / "h.tif").exists()


def test_linear_s1_warns_and_cancel_leaves_nothing(scene, tmp_path):
    with rasterio.open(scene["s1"]) as ds:
        lin = (10 ** (np.nan_to_num(ds.read(), nan=-12.0) / 10)).astype(np.float32)
    s1lin = _write(tmp_path / "s1lin.tif", lin, 116.31, 39.995, S1_RES)
    rec = _Rec()
    predict_height_footprint_shafts(s1lin, scene["s2"], scene["dem"], EXTENT, _model(3), 100,
                                    tmp_path / "h.tif", tmp_path / "f.tif", padding=PAD, device="cpu",
                                    progress=rec)
    assert any("dB" in w for w in rec.warnings)
    rec = _Rec(cancel_after=4)
    with pytest.raises(Cancelled):
        predict_height_footprint_shafts(scene["s1"], scene["s2"], scene["dem"], EXTENT, _model(3), 100,
                                        tmp_path / "h2.tif", tmp_path / "f2.tif", padding=PAD, device="cpu",
                                        chunk_rows=1, progress=rec)
    assert not (tmp_path / "h2.tif").exists() and not list(tmp_path.glob(".*partial*"))


def test_single_task_model_writes_one_output(scene, tmp_path):
    m = _model(4, task="height")
    with torch.no_grad():
        m.fc_out.bias.fill_(5.0)
    out = predict_height_footprint_shafts(scene["s1"], scene["s2"], scene["dem"], EXTENT, m, 100,
                                          tmp_path / "h.tif", None, padding=PAD, device="cpu", batch_size=1,
                                          h_min=0.0, h_max=4.0)
    h, _ = _read(out["height"])
    assert out["footprint"] is None and not (tmp_path / "f.tif").exists()
    v = h[np.isfinite(h)]
    assert v.size > 20 and np.all((v == 0) | (v <= 4.0))


def test_large_extents_are_tiled_like_separate_shafts_runs(scene):
    """With tiles of 3 x 3 output pixels, each tile must equal a SHAFTS run on that tile's extent."""
    model = _model(1)
    res = 0.0009
    out = predict_height_footprint_shafts(scene["s1"], scene["s2"], scene["dem"], EXTENT, model, 100,
                                          scene["tmp"] / "th.tif", scene["tmp"] / "tf.tif", padding=PAD,
                                          batch_size=4, device="cpu", max_tile_deg=3 * res)
    assert out["tiles"] == 6  # 5 x 7 output pixels in 3 x 3 tiles
    h, _ = _read(out["height"])
    whole = predict_height_footprint_shafts(scene["s1"], scene["s2"], scene["dem"], EXTENT, model, 100,
                                            scene["tmp"] / "wh.tif", scene["tmp"] / "wf.tif", padding=PAD,
                                            batch_size=4, device="cpu", max_tile_deg=None)
    assert whole["tiles"] == 1
    hw, _ = _read(whole["height"])
    assert np.array_equal(np.isnan(h), np.isnan(hw))
    xmin, ymin, xmax, ymax = EXTENT
    for r0 in (0, 3):
        for c0 in (0, 3, 6):
            ext = (xmin + c0 * res, max(ymax - (r0 + 3) * res, ymin), min(xmin + (c0 + 3) * res, xmax), ymax - r0 * res)
            one = predict_height_footprint_shafts(scene["s1"], scene["s2"], scene["dem"], ext, model, 100,
                                                  scene["tmp"] / "oh.tif", scene["tmp"] / "of.tif", padding=PAD,
                                                  batch_size=4, device="cpu", max_tile_deg=None)
            t, _ = _read(one["height"])
            np.testing.assert_allclose(h[r0:r0 + t.shape[0], c0:c0 + t.shape[1]], t, atol=1e-5, equal_nan=True)


# ---------------- clip memory layout, tiling switch, bad input ----------------
def test_clip_nearest_is_float32_band_by_band_with_a_joint_mask(scene):
    from edifice.core.height.shafts_inference import clip_nearest
    b = (EXTENT[0] - PAD, EXTENT[1] - PAD, EXTENT[2] + PAD, EXTENT[3] + PAD)
    with rasterio.open(scene["s2"]) as src:
        four, _ = clip_nearest(src, b, (1, 2, 3, 4), "S2")
        third, _ = clip_nearest(src, b, (3,), "S2")
        first, _ = clip_nearest(src, b, (1,), "S2")
    assert four.dtype == np.float32 and third.dtype == np.float32
    hole = np.isnan(third[0])                    # the scene's S-2 hole is in band 3 only
    assert hole.any() and not np.isnan(first[0]).any()
    for k in range(4):                           # a pixel without data in any band is NaN in all
        np.testing.assert_array_equal(np.isnan(four[k]), hole)
    np.testing.assert_array_equal(four[0][~hole], first[0][~hole])


def _spy_prepare(monkeypatch):
    import edifice.core.height.shafts_inference as si
    calls = []
    real = si.prepare_inputs

    def spy(s1, s2, dem, bounds, *a, **kw):
        calls.append(bounds)
        return real(s1, s2, dem, bounds, *a, **kw)
    monkeypatch.setattr(si, "prepare_inputs", spy)
    return calls


def test_max_tile_deg_zero_is_one_clip_identical_to_shafts(scene, monkeypatch):
    model = _model(1)
    calls = _spy_prepare(monkeypatch)
    out = predict_height_footprint_shafts(scene["s1"], scene["s2"], scene["dem"], EXTENT, model, 100,
                                          scene["tmp"] / "h0.tif", scene["tmp"] / "f0.tif", padding=PAD,
                                          batch_size=4, device="cpu", max_tile_deg=0)
    assert out["tiles"] == 1 and len(calls) == 1
    np.testing.assert_allclose(calls[0], (EXTENT[0] - PAD, EXTENT[1] - PAD, EXTENT[2] + PAD, EXTENT[3] + PAD))
    H, Fp = _reference(scene, model, EXTENT, 0.0009)          # SHAFTS over the whole extent
    h, _ = _read(out["height"])
    np.testing.assert_allclose(h, H, atol=1e-3, equal_nan=True)
    calls.clear()                                             # a positive value does tile
    tiled = predict_height_footprint_shafts(scene["s1"], scene["s2"], scene["dem"], EXTENT, model, 100,
                                            scene["tmp"] / "h1.tif", scene["tmp"] / "f1.tif", padding=PAD,
                                            batch_size=4, device="cpu", max_tile_deg=3 * 0.0009)
    assert tiled["tiles"] == 6 and len(calls) == 6
    with pytest.raises(InputError, match="MAX_TILE_DEG"):
        predict_height_footprint_shafts(scene["s1"], scene["s2"], scene["dem"], EXTENT, model, 100,
                                        scene["tmp"] / "h2.tif", scene["tmp"] / "f2.tif", padding=PAD,
                                        device="cpu", max_tile_deg=-1)


def test_max_tile_deg_zero_on_an_extent_above_half_a_degree(tmp_path, monkeypatch):
    """0.6° extent (coarse synthetic inputs, model run skipped): the default 0.5 tiles it, 0 makes one clip."""
    import edifice.core.height.shafts_inference as si
    monkeypatch.setattr(si, "_predict_window", lambda model, dev, grid, window, prep, bs, outputs, progress: {
        k: np.full((int(window.height), int(window.width)), np.nan) for k in outputs})
    rng = np.random.default_rng(0)
    x0, y0, px = 10.0, 50.8, 0.002                            # 0.8° x 0.8° at 0.002° (400 x 400 px)
    s1 = _write(tmp_path / "s1.tif", rng.uniform(-20, 0, (2, 400, 400)).astype(np.float32), x0, y0, px)
    s2 = _write(tmp_path / "s2.tif", rng.uniform(0, 3000, (4, 400, 400)).astype(np.float32), x0, y0, px)
    dem = _write(tmp_path / "dem.tif", rng.uniform(0, 50, (400, 400)).astype(np.float32), x0, y0, px)
    extent = (10.1, 50.1, 10.7, 50.7)
    calls = _spy_prepare(monkeypatch)
    kw = dict(padding=0.05, device="cpu", batch_size=4096)
    out = predict_height_footprint_shafts(s1, s2, dem, extent, _model(0), 100, tmp_path / "h.tif",
                                          tmp_path / "f.tif", **kw)
    assert out["tiles"] == 4 and len(calls) == 4              # default 0.5°: 556 x 556 px tiles
    calls.clear()
    out = predict_height_footprint_shafts(s1, s2, dem, extent, _model(0), 100, tmp_path / "h.tif",
                                          tmp_path / "f.tif", max_tile_deg=0, **kw)
    assert out["tiles"] == 1 and len(calls) == 1
    np.testing.assert_allclose(calls[0], (10.05, 50.05, 10.75, 50.75))


def test_sentinel_grids_differ_is_noted_and_accepted(scene, tmp_path):
    with rasterio.open(scene["s1"]) as s1, rasterio.open(scene["s2"]) as s2:
        data = s2.read(window=rasterio.windows.Window(0, 0, s1.width, s1.height))
        t1 = s1.transform
    same = _write(tmp_path / "s2_on_s1_grid.tif", data, t1.c, t1.f, t1.a)
    model = _model(1)
    rec = _Rec()
    out = predict_height_footprint_shafts(scene["s1"], scene["s2"], scene["dem"], EXTENT, model, 100,
                                          tmp_path / "h.tif", tmp_path / "f.tif", padding=PAD, device="cpu",
                                          progress=rec)
    assert out["valid_pixels"] > 0
    noted = [w for w in rec.warnings if "different grids" in w]
    assert len(noted) == 1 and "S1 pixel 8.98315e-05" in noted[0] and "S2 pixel 8.98e-05" in noted[0]
    rec = _Rec()
    predict_height_footprint_shafts(scene["s1"], same, scene["dem"], EXTENT, model, 100, tmp_path / "h2.tif",
                                    tmp_path / "f2.tif", padding=PAD, device="cpu", progress=rec)
    assert not [w for w in rec.warnings if "different grids" in w]


@pytest.mark.parametrize("key", ["s1", "s2"])
def test_all_nan_clip_is_a_clear_error(scene, tmp_path, key):
    from edifice.core.height.shafts_inference import fill_nan_nearest
    with pytest.raises(InputError, match="^S2: has no valid pixel"):
        fill_nan_nearest(np.full((4, 4), np.nan, np.float32), "S2")
    with rasterio.open(scene[key]) as ds:
        data, t = ds.read(), ds.transform
    data[:] = -9999.0                                         # every pixel is nodata
    empty = _write(tmp_path / f"{key}_empty.tif", data, t.c, t.f, t.a, nodata=-9999.0)
    paths = {"s1": scene["s1"], "s2": scene["s2"], key: empty}
    with pytest.raises(InputError, match=f"^{key.upper()}: has no valid pixel inside the extent plus padding"):
        predict_height_footprint_shafts(paths["s1"], paths["s2"], scene["dem"], EXTENT, _model(1), 100,
                                        tmp_path / "h.tif", tmp_path / "f.tif", padding=PAD, device="cpu")
    assert not (tmp_path / "h.tif").exists() and not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize("res", [100, 250])
def test_single_task_checkpoint_without_target_names_target(scene, tmp_path, res):
    path = tmp_path / "single.pth"
    torch.save({"epoch": 1, "state_dict": build_shafts_model(res, "height").state_dict(),
                "best_pred": np.float64(0.5)}, path)
    with pytest.raises(InputError, match=r"^TARGET: is not set, but .*single-task.* Fix: set TARGET"):
        predict_height_footprint_shafts(scene["s1"], scene["s2"], scene["dem"], EXTENT, str(path), res,
                                        tmp_path / "h.tif", tmp_path / "f.tif", padding=PAD, device="cpu")


def test_cli_max_tile_deg_and_target(scene, tmp_path, capsys):
    import json as _json
    from edifice.core.cli import main
    path = tmp_path / "single.pth"
    torch.save({"state_dict": build_shafts_model(100, "height").state_dict()}, path)
    args = ["height-footprint", scene["s1"], scene["s2"], scene["dem"], str(path), str(tmp_path / "h.tif"),
            str(tmp_path / "f.tif"), "--extent", ",".join(map(str, EXTENT)), "--padding", str(PAD), "--device", "cpu"]
    capsys.readouterr()
    assert main(args) == 2 and "--target: is not set" in capsys.readouterr().err
    assert main(args + ["--max-tile-deg", "-1", "--target", "height"]) == 2
    assert "--max-tile-deg: must be >= 0" in capsys.readouterr().err
    assert main(args + ["--max-tile-deg", "0", "--target", "height"]) == 0
    out = capsys.readouterr().out
    assert _json.loads(out.strip().splitlines()[-1])["tiles"] == 1
    assert (tmp_path / "h.tif").exists() and not (tmp_path / "f.tif").exists()


# ---------------- the fast path (folded BatchNorm, channels-last, strided patches) ----------------
@pytest.mark.parametrize("res,task", [(100, "multi"), (250, "height"), (1000, "footprint")])
def test_fused_inference_copy_matches_the_plain_network(res, task):
    from edifice.models.shafts import fuse_for_inference
    model = _model(3, res, task)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse_for_inference(model)
    s = model.patch_size
    g = torch.Generator().manual_seed(0)
    x, d = torch.rand(5, 6, s, s, generator=g), 50 + 5 * torch.randn(5, 1, s, s, generator=g)
    with torch.no_grad():
        want = model(x, d)
        got = fused.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last), d)
    assert set(got) == set(want)
    for k in want:
        scale = float(want[k].abs().max()) + 1e-6
        np.testing.assert_allclose(got[k].numpy(), want[k].numpy(), rtol=0, atol=1e-5 * scale)
    # the caller's network is untouched (still has its BatchNorm layers and weights)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(model.features.bn1, torch.nn.BatchNorm2d) and not model.training
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fused.modules())


def test_strided_patch_gather_equals_plain_slices(scene):
    from edifice.core.height.shafts_inference import gather_patches, prepare_inputs
    b = (EXTENT[0] - PAD, EXTENT[1] - PAD, EXTENT[2] + PAD, EXTENT[3] + PAD)
    prep, _ = prepare_inputs(scene["s1"], scene["s2"], scene["dem"], b)
    rng = np.random.default_rng(1)
    xs, ys = rng.uniform(EXTENT[0], EXTENT[2], 40), rng.uniform(EXTENT[1], EXTENT[3], 40)
    x, d, valid = gather_patches(prep, xs, ys, 20)
    assert x.dtype == np.uint8 and x.shape == (40, 6, 20, 20) and x.flags.c_contiguous
    for n in range(40):
        for chans, g, first in ((prep.s1, prep.grid_s1, 0), (prep.s2, prep.grid_s2, 2)):
            i = math.floor((xs[n] - g.transform.c) / g.transform.a)
            j = math.floor((ys[n] - g.transform.f) / g.transform.e)
            np.testing.assert_array_equal(x[n, first:first + len(chans)], chans[:, j - 9:j + 11, i - 9:i + 11])
        gd = prep.grid_dem.transform
        i, j = math.floor((xs[n] - gd.c) / gd.a), math.floor((ys[n] - gd.f) / gd.e)
        np.testing.assert_array_equal(d[n, 0], prep.dem[j - 9:j + 11, i - 9:i + 11])


def test_thu_sample_matches_the_plain_batched_network(tmp_path):
    """The real THU sample (S-1, SRTM; synthetic S-2): the tool's output equals the plain float32 network
    (BatchNorm unfolded, NCHW, batches of 64 as before) within the documented tolerance: 1e-5 of each
    output's range (float32 rounding of the folded weights), and the same nodata."""
    from pathlib import Path
    from edifice.core.height.shafts_inference import gather_patches, prepare_inputs
    thu = Path(__file__).resolve().parents[2] / "samples" / "thu"
    s1, s2, dem = (str(thu / n) for n in ("thu_s1_2020.tif", "thu_s2_synthetic.tif", "thu_srtm.tif"))
    extent, pad = (116.315, 39.997, 116.326, 40.008), 0.005
    model = _model(2)
    out = predict_height_footprint_shafts(s1, s2, dem, extent, model, 100, tmp_path / "h.tif", tmp_path / "f.tif",
                                          padding=pad, device="cpu")
    prep, crs = prepare_inputs(s1, s2, dem, (extent[0] - pad, extent[1] - pad, extent[2] + pad, extent[3] + pad))
    xs, ys = shafts_output_grid(extent, 100, crs).pixel_centres()
    x, d, valid = gather_patches(prep, xs.ravel(), ys.ravel(), 20)
    with torch.no_grad():
        ys_ = [model(torch.from_numpy(x[b:b + 64]).float() / 255.0, torch.from_numpy(d[b:b + 64]))
               for b in range(0, len(x), 64)]
    ok = valid & np.isfinite(d).all(axis=(1, 2, 3))
    for k, lo, hi in (("height", 2.0, 1000.0), ("footprint", 0.0, 1.0)):
        want = torch.cat([y[k] for y in ys_]).numpy().astype(np.float64)
        want = np.where(want > hi, hi, np.where(want < lo, 0.0, want))
        want = np.where(ok, want, np.nan).reshape(xs.shape)
        got, _ = _read(out[k])
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        assert np.nanstd(want) > 0.01                     # a non-trivial map
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.nanmax(np.abs(want)), equal_nan=True)


def test_bf16_precision_is_within_its_documented_tolerance_and_checked(scene):
    """bf16 (opt-in): outputs within 2^-5 of the largest fp32 output (bfloat16 keeps 8 significant bits, so
    that is four of its rounding steps at the largest value; the outputs themselves come out in bfloat16),
    same nodata; an unknown precision is refused."""
    model = _model(1)
    kw = dict(padding=PAD, device="cpu")
    out32 = predict_height_footprint_shafts(scene["s1"], scene["s2"], scene["dem"], EXTENT, model, 100,
                                            scene["tmp"] / "h32.tif", scene["tmp"] / "f32.tif", **kw)
    out16 = predict_height_footprint_shafts(scene["s1"], scene["s2"], scene["dem"], EXTENT, model, 100,
                                            scene["tmp"] / "h16.tif", scene["tmp"] / "f16.tif", precision="bf16", **kw)
    for k in ("height", "footprint"):
        a, _ = _read(out32[k])
        b, _ = _read(out16[k])
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        assert np.nanmax(a) - np.nanmin(a) > 0
        np.testing.assert_allclose(b, a, rtol=0, atol=np.nanmax(np.abs(a)) / 32, equal_nan=True)
    with pytest.raises(InputError, match="PRECISION"):
        predict_height_footprint_shafts(scene["s1"], scene["s2"], scene["dem"], EXTENT, model, 100,
                                        scene["tmp"] / "h.tif", scene["tmp"] / "f.tif", precision="fp8", **kw)


def test_batch_parallel_cpu_workers_give_the_single_thread_outputs(scene, monkeypatch):
    """With 2 torch threads the batches run on 2 worker threads (one intra-op thread each, batches split
    evenly): outputs equal the 1-thread run within float32 rounding (1e-5 of the output range), the same
    nodata, every batch went through a worker, and the caller's thread setting is back afterwards."""
    import threading
    from edifice.core.height import shafts_inference as si
    model = _model(1)
    kw = dict(padding=PAD, device="cpu", batch_size=4)
    one = predict_height_footprint_shafts(scene["s1"], scene["s2"], scene["dem"], EXTENT, model, 100,
                                          scene["tmp"] / "h1.tif", scene["tmp"] / "f1.tif", **kw)
    threads, run_batch = set(), si._run_batch

    def spy(*a):
        threads.add((threading.current_thread().name, torch.get_num_threads()))
        return run_batch(*a)
    monkeypatch.setattr(si, "_run_batch", spy)
    torch.set_num_threads(2)
    try:
        two = predict_height_footprint_shafts(scene["s1"], scene["s2"], scene["dem"], EXTENT, model, 100,
                                              scene["tmp"] / "h2.tif", scene["tmp"] / "f2.tif", **kw)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert threads and all(name.startswith("edifice-batch") and n == 1 for name, n in threads)
    for k in ("height", "footprint"):
        a, _ = _read(one[k])
        b, _ = _read(two[k])
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        assert np.isfinite(a).sum() >= 25
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * np.nanmax(np.abs(a)), equal_nan=True)


def test_take_equals_the_fancy_index_gather():
    """_take (the clip's row/column pick) gives a[np.ix_(rows, cols)] whether the runs are consecutive
    (slices), repeat or skip a pixel (gather), on either axis."""
    from edifice.core.height.shafts_inference import _take
    a = np.arange(300, dtype=np.float32).reshape(15, 20)
    runs = (np.arange(2, 9), np.array([1, 1, 2, 4, 5]), np.array([7, 3]), np.arange(0, 20))
    for rows in runs[:3]:
        for cols in runs[:2] + runs[3:]:
            assert np.array_equal(_take(a, rows, cols), a[np.ix_(rows, cols)])


def test_inference_model_keeps_freed_memory_for_reuse(monkeypatch):
    """The network is prepared with freed memory kept in the process (core/host_tuning.keep_freed_memory,
    as the mapping engine does), on the CPU and in either precision; the network it returns is unchanged."""
    from edifice.core import host_tuning
    from edifice.core.height.shafts_inference import inference_model
    calls = []
    monkeypatch.setattr(host_tuning, "keep_freed_memory", lambda: calls.append(1) or True)
    for precision in ("fp32", "bf16"):
        fast = inference_model(_model(), torch.device("cpu"), precision=precision)
        assert fast.patch_size == 20
    assert len(calls) == 2
