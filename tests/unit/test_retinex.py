import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import CRS
from scipy.ndimage import gaussian_filter

from edifice.core.errors import InputError
from edifice.core.grid import Grid
from edifice.core.raster_io import atomic_raster
from edifice.core.use.retinex import RetinexSettings, _Scale, _illumination, retinex

UTM = CRS.from_epsg(32636).to_wkt()


def _write(path, arr, nodata=None):
    g = Grid(Affine(0.5, 0, 450000, 0, -0.5, 40000), arr.shape[2], arr.shape[1], UTM)
    with atomic_raster(path, g, arr.shape[0], arr.dtype, nodata=nodata) as dst:
        dst.write(arr)
    return path


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.nodata, ds.dtypes[0]


@pytest.mark.parametrize("mode", ["luminance", "bands"])
def test_blockwise_equals_whole_image_on_real_imagery(tmp_path, kampala_rgb, mode):
    s = RetinexSettings(mode=mode)
    retinex(str(kampala_rgb), str(tmp_path / "whole.tif"), s, block_size=4096)
    retinex(str(kampala_rgb), str(tmp_path / "blocks.tif"), s, block_size=200)
    a, nd, dt = _read(tmp_path / "whole.tif")
    b, _, _ = _read(tmp_path / "blocks.tif")
    assert dt == "uint8" and nd == 0
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_removes_a_smooth_illumination_gradient(tmp_path):
    """Known truth: image = reflectance (checkerboard 0.4 / 0.8) x illumination
    (ramp 0.25 -> 1 across the raster). After Retinex, the same reflectance is
    about equally bright on both sides; before, it is 4x darker on the left."""
    h, w = 256, 512
    yy, xx = np.mgrid[0:h, 0:w]
    refl = np.where(((yy // 16) + (xx // 16)) % 2 == 0, 0.4, 0.8)
    illum = 0.25 + 0.75 * xx / (w - 1)
    img = np.clip(np.rint(refl * illum * 250), 1, 255).astype(np.uint8)[None]
    src = _write(tmp_path / "ramp.tif", img)
    retinex(str(src), str(tmp_path / "out.tif"), RetinexSettings(sigmas=[30.0]), block_size=128)
    out, _, _ = _read(tmp_path / "out.tif")
    bright = refl == 0.8
    left, right = (xx < 100) & bright, (xx > w - 100) & bright
    ratio_in = img[0][left].mean() / img[0][right].mean()
    ratio_out = out[0][left].mean() / out[0][right].mean()
    assert ratio_in < 0.45
    assert 0.85 < ratio_out < 1.15
    # reflectance contrast survives: bright squares stay brighter than dark ones
    assert out[0][bright].mean() > out[0][~bright].mean() + 40


def test_small_scale_illumination_is_the_exact_normalised_gaussian():
    rng = np.random.default_rng(0)
    v = rng.uniform(1, 200, (120, 90)).astype(np.float32)
    m = rng.uniform(size=v.shape) > 0.2
    sc = _Scale(10.0, 1.0)  # factor 1: computed at full resolution
    got = _illumination(v, m, 0, 0, (0, 120), (0, 90), v.shape, sc)
    num = gaussian_filter(np.where(m, v, 0).astype(np.float64), 10.0, mode="constant", truncate=4.0)
    den = gaussian_filter(m.astype(np.float64), 10.0, mode="constant", truncate=4.0)
    np.testing.assert_allclose(got, num / den, rtol=1e-4)


def test_large_scale_blur_is_close_to_the_exact_gaussian():
    rng = np.random.default_rng(1)
    v = gaussian_filter(rng.uniform(1, 200, (600, 600)), 5).astype(np.float32)
    m = np.ones(v.shape, bool)
    sc = _Scale(80.0, 1.0)  # computed on 10 x 10 px cells
    got = _illumination(v, m, 0, 0, (0, 600), (0, 600), v.shape, sc)
    exact = (gaussian_filter(v.astype(np.float64), 80.0, mode="constant", truncate=4.0)
             / gaussian_filter(np.ones_like(v, np.float64), 80.0, mode="constant", truncate=4.0))
    assert np.abs(got - exact).max() / exact.mean() < 0.01


def test_nodata_neither_feeds_nor_receives(tmp_path):
    rng = np.random.default_rng(2)
    img = rng.integers(1, 255, (3, 200, 300)).astype(np.uint8)
    img[:, 50:120, 80:200] = 0  # nodata hole
    a = _write(tmp_path / "a.tif", img, nodata=0)
    retinex(str(a), str(tmp_path / "oa.tif"), RetinexSettings(sigmas=[20.0, 60.0]), block_size=64)
    out, nd, _ = _read(tmp_path / "oa.tif")
    assert (out[:, 50:120, 80:200] == nd).all()
    assert (out[:, img[0] != 0] != nd).all()
    # an extra hole changes nothing beyond the kernels' reach
    img_c = img.copy()
    img_c[:, 60:70, 100:110] = 0
    c = _write(tmp_path / "c.tif", img_c, nodata=0)
    retinex(str(c), str(tmp_path / "oc.tif"), RetinexSettings(sigmas=[20.0, 60.0]), block_size=64)
    out_c, _, _ = _read(tmp_path / "oc.tif")
    far = np.ones(img[0].shape, bool)
    far[:130, :230] = False  # far from the extra hole: unaffected beyond the kernels' reach
    assert np.abs(out.astype(int) - out_c.astype(int))[:, far].max() <= 1


@pytest.mark.parametrize("mode", ["luminance", "bands"])
def test_values_under_nodata_do_not_influence_the_output(tmp_path, mode):
    """The same valid pixels with extreme values under the nodata mask (the nodata
    value itself: 0, -1e30, +3e38, NaN) give identical valid output pixels."""
    rng = np.random.default_rng(2)
    img = rng.uniform(1, 255, (3, 200, 300)).astype(np.float32)
    hole = np.zeros(img.shape[1:], bool)
    hole[50:120, 80:200] = True
    hole[150:, 250:] = True  # touches two edges and several blocks
    outs = []
    for nd in (0.0, -1e30, 3e38, float("nan")):
        x = img.copy()
        x[:, hole] = nd
        src = _write(tmp_path / f"in{len(outs)}.tif", x, nodata=nd)
        s = retinex(str(src), str(tmp_path / f"o{len(outs)}.tif"), RetinexSettings(sigmas=[20.0, 60.0], mode=mode),
                    block_size=64)
        assert s["valid_pixels"] == (~hole).sum()
        o, o_nd, _ = _read(tmp_path / f"o{len(outs)}.tif")
        assert np.all(np.isfinite(o[:, ~hole]))
        assert np.isnan(o_nd) if np.isnan(nd) else o_nd == np.float32(nd)
        outs.append(o[:, ~hole])
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


@pytest.mark.parametrize("dtype,out_type,top", [("uint16", None, 65535), ("float32", None, 1.0),
                                                  ("uint16", "uint8", 255)])
def test_dtypes(tmp_path, dtype, out_type, top):
    rng = np.random.default_rng(3)
    img = (rng.uniform(0.05, 1, (2, 150, 170)) * (4000 if dtype == "uint16" else 1)).astype(dtype)
    src = _write(tmp_path / "in.tif", img)
    s = retinex(str(src), str(tmp_path / "o.tif"), RetinexSettings(sigmas=[15.0]), output_dtype=out_type)
    out, _, dt = _read(tmp_path / "o.tif")
    assert dt == (out_type or dtype) and out.shape == img.shape
    assert float(out.max()) <= top and float(out.max()) > 0.9 * top
    assert s["valid_pixels"] == 150 * 170


def test_all_nodata_is_refused_and_writes_nothing(tmp_path):
    src = _write(tmp_path / "zero.tif", np.zeros((3, 50, 50), np.uint8), nodata=0)
    with pytest.raises(InputError, match="no valid pixel"):
        retinex(str(src), str(tmp_path / "o.tif"))
    assert not (tmp_path / "o.tif").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zero.tif"]


def test_bad_settings():
    with pytest.raises(InputError, match="SIGMAS"):
        RetinexSettings(sigmas=[15, -2]).scales()
    with pytest.raises(InputError, match="MODE"):
        RetinexSettings(mode="hsv").scales()


def test_float_with_negative_values_is_fully_valid(tmp_path):
    """float32 normal(0, 1) noise: every pixel is valid (before the fix 78 % became nodata)."""
    rng = np.random.default_rng(4)
    img = rng.normal(0, 1, (3, 180, 220)).astype(np.float32)
    for mode in ("luminance", "bands"):
        src = _write(tmp_path / "n.tif", img)
        s = retinex(str(src), str(tmp_path / f"o_{mode}.tif"), RetinexSettings(mode=mode), block_size=64)
        out, nd, dt = _read(tmp_path / f"o_{mode}.tif")
        assert dt == "float32" and np.isnan(nd)
        assert np.isfinite(out).all() and s["valid_pixels"] == 180 * 220
        assert out.min() >= 0 and out.max() <= 1 and out.std() > 0.05


@pytest.mark.parametrize("mode", ["luminance", "bands"])
def test_negative_rasters_are_shifted_by_their_minimum(tmp_path, mode):
    """A raster whose minimum m < 0 is corrected as the raster minus m: so the result
    does not change when a constant keeps the minimum negative (x - 5), and equals the
    result of x - m (minimum 0, no shift). Rasters with minimum >= 0 are not shifted
    (the ratio model I = R * L then holds as is)."""
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, (3, 150, 170)).astype(np.float32)
    x[:, :20, :20] = np.nan  # a nodata corner does not enter the minimum
    m = np.nanmin(x)
    s = RetinexSettings(sigmas=[10.0, 40.0], mode=mode)

    def run(arr, name):
        src = _write(tmp_path / f"{name}.tif", arr.astype(np.float32))
        summary = retinex(str(src), str(tmp_path / f"o{name}.tif"), s, block_size=64)
        return _read(tmp_path / f"o{name}.tif")[0], summary

    base, sb = run(x, "x")
    moved, sm = run(x - np.float32(5), "x5")
    zero, sz = run(x - m, "xm")
    valid = np.isfinite(x[0])
    assert np.isnan(base[:, ~valid]).all() and np.isfinite(base[:, valid]).all()
    # float32 rounding of x - 5 and x - m moves values by ~1e-7 of 5: far below 1e-3 of the [0, 1] output
    np.testing.assert_allclose(moved[:, valid], base[:, valid], atol=1e-3)
    np.testing.assert_allclose(zero[:, valid], base[:, valid], atol=1e-3)
    assert sb["stretch_low"] == pytest.approx(sm["stretch_low"], abs=1e-3)
    assert sb["stretch_high"] == pytest.approx(sz["stretch_high"], abs=1e-3)


def test_signed_integers_with_negative_values(tmp_path):
    """int16 with negative values is corrected as the raster minus its minimum."""
    rng = np.random.default_rng(6)
    img = rng.integers(-3000, 3000, (1, 120, 130)).astype(np.int16)
    m = int(img.min())
    for name, arr in (("raw", img), ("shifted", (img.astype(np.int32) - m).astype(np.int16))):
        src = _write(tmp_path / f"{name}.tif", arr, nodata=-32768)
        s = retinex(str(src), str(tmp_path / f"o_{name}.tif"), RetinexSettings(sigmas=[15.0, 60.0]), block_size=64)
        assert s["valid_pixels"] == 120 * 130
    out, nd, dt = _read(tmp_path / "o_raw.tif")
    ref, _, _ = _read(tmp_path / "o_shifted.tif")
    assert dt == "int16" and nd == -32768 and (out != nd).all()
    assert out.min() >= 0 and out.max() > 30000
    # the large scale (60 px, on cells) subtracts the shift from float64 sums: rounding may move 1 level
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
