"""edifice.core.acquire.imagery against a real tile server on 127.0.0.1 (tests/servers/tile_server.py)
that cuts tiles from the Kampala 7.5 cm drone mosaic: XYZ, TMS, WMTS and WMS, faults, nodata,
resume after a cancel, keys never leaked, and the mosaic checked pixel by pixel against the source."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.warp import reproject

from edifice.core.acquire.http import HttpError
from edifice.core.acquire.imagery import download_imagery, utm_crs
from edifice.core.acquire.imagery_sources import ImagerySource, secrets_from_url
from edifice.core.acquire.tiles import choose_level, quadkey, web_mercator_set
from edifice.core.acquire.wmts import parse_capabilities
from edifice.core.errors import Cancelled, EdificeError, InputError
from edifice.core.progress import Progress

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "tests" / "servers" / "tile_server.py"
MOSAIC = ROOT.parent.parent / "shared" / "data" / "kampala" / "kampala_rgb_7p5cm_epsg3857.tif"
if not MOSAIC.exists():
    MOSAIC = Path("/work/shared/data/kampala/kampala_rgb_7p5cm_epsg3857.tif")
#: lon/lat extent over the covered top-right part of the mosaic and past its east edge (no data there)
KAMPALA = (32.5940, 0.3500, 32.5960, 0.3514)
KEY = "SEKRET-tile-key-8d1f"


class Recorder(Progress):
    """Keeps every message; cancels after ``cancel_after`` progress reports when set."""

    def __init__(self, cancel_after: int | None = None):
        self.messages: list[str] = []
        self.fractions: list[float] = []
        self.cancel_after = cancel_after

    def info(self, message):
        self.messages.append(message)

    def warning(self, message):
        self.messages.append("WARNING " + message)

    def set_fraction(self, fraction):
        self.fractions.append(fraction)

    def is_cancelled(self):
        return self.cancel_after is not None and len(self.fractions) >= self.cancel_after


def _start(tmp_path_factory, args):
    import importlib.util

    spec = importlib.util.spec_from_file_location("edifice_tests_standin_imagery", ROOT / "tests" / "servers" /
                                                  "standin.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.start_standin(SERVER, tmp_path_factory.mktemp("tiles"), ["--source", str(MOSAIC), *args])


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    srv = _start(tmp_path_factory, [])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def keyed_tiles(tmp_path_factory):
    srv = _start(tmp_path_factory, ["--key", KEY])
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _no_faults(request):
    for name in ("tiles", "keyed_tiles"):
        if name in request.fixturenames:
            request.getfixturevalue(name).set_faults([])


def xyz(tiles, **kw) -> ImagerySource:
    return ImagerySource("xyz", tiles.url + "/xyz/{z}/{x}/{y}.png", max_zoom=21, attribution="OAM test", **kw)


def read(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.profile, ds.tags(), ds.transform, ds.crs


def source_on_grid(path) -> np.ndarray:
    """The mosaic reprojected straight onto the grid of the raster ``path`` (average resampling)."""
    with rasterio.open(path) as out, rasterio.open(MOSAIC) as src:
        ref = np.zeros((3, out.height, out.width), np.uint8)
        reproject(rasterio.band(src, [1, 2, 3]), ref, dst_transform=out.transform, dst_crs=out.crs,
                  resampling=Resampling.average, src_nodata=0, dst_nodata=0)
    return ref


# -- tile math ------------------------------------------------------------------------------
def test_tile_math_web_mercator():
    tms = web_mercator_set(0, 21)
    z19 = tms.matrices[19]
    xmin, ymin, xmax, ymax = z19.tile_bounds(309606, 261632)
    assert xmin == pytest.approx(3627854.2364710, abs=1e-3) and ymax == pytest.approx(39135.7584820, abs=1e-3)
    assert z19.tile_range((xmin + 1, ymin + 1, xmax - 1, ymax - 1)) == (309606, 261632, 309607, 261633)
    assert tms.matrices[2].tile_range((-1e9, -1e9, 1e9, 1e9)) == (0, 0, 4, 4)  # clipped to the matrix
    assert quadkey(3, 5, 3) == "213"  # Bing Maps documentation's example
    # 0.5 m at the equator: zoom 18 is 0.597 m, so zoom 19 (0.299 m); at 60 N zoom 18 is 0.299 m
    assert choose_level(tms, 0.5, 32.6, 0.35)[:1] == (19,)
    assert choose_level(tms, 0.5, 25.0, 60.0)[0] == 18
    index, size, coarse = choose_level(web_mercator_set(0, 17), 0.5, 32.6, 0.35)
    assert (index, coarse) == (17, True) and size == pytest.approx(1.194, abs=1e-3)
    assert utm_crs(32.6, 0.35) == "EPSG:32636" and utm_crs(-70.6, -33.4) == "EPSG:32719"


def test_wmts_capabilities_give_the_web_mercator_pyramid(tiles):
    import requests

    xml = requests.get(tiles.url + "/wmts?SERVICE=WMTS&REQUEST=GetCapabilities", timeout=30).content
    layer = parse_capabilities(xml, "kampala")
    ref = web_mercator_set(0, 21)
    assert layer.tms.crs == "EPSG:3857" and layer.kvp_url.startswith(tiles.url)
    assert [m.identifier for m in layer.tms.matrices] == [m.identifier for m in ref.matrices]
    for got, want in zip(layer.tms.matrices, ref.matrices):
        assert got.resolution == pytest.approx(want.resolution, rel=1e-9)
        assert got.top_left == pytest.approx(want.top_left) and got.matrix_width == want.matrix_width
    with pytest.raises(InputError, match="'nope' is not a layer.*kampala"):
        parse_capabilities(xml, "nope")


# -- the mosaic -----------------------------------------------------------------------------
def test_xyz_mosaic_matches_the_source_pixel_by_pixel(tiles, tmp_path):
    out = tmp_path / "kampala.tif"
    summary = download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", out, gsd_m=0.5, cache=None)
    data, profile, tags, transform, crs = read(out)
    assert crs.to_epsg() == 32636 and transform.a == 0.5 and -transform.e == 0.5
    assert profile["nodata"] == 0 and profile["compress"] == "zstd" and profile["count"] == 3
    assert profile["tiled"] and summary["level"] == "19"
    assert tags["EDIFICE_ATTRIBUTION"] == "OAM test" and tags["EDIFICE_SOURCE_URL"].endswith("/xyz/{z}/{x}/{y}.png")
    ref = source_on_grid(out)
    got_valid, ref_valid = data[0] > 0, ref[0] > 0
    assert 0.5 < got_valid.mean() < 0.95            # the extent runs past the mosaic's east edge
    assert (got_valid & ref_valid).sum() / (got_valid | ref_valid).sum() > 0.98
    both = got_valid & ref_valid
    err = np.abs(data.astype(int) - ref.astype(int))[:, both].mean()
    shifted = both[1:] & both[:-1]
    err_shift = np.abs(data[:, 1:].astype(int) - ref[:, :-1].astype(int))[:, shifted].mean()
    assert err < 3.0 and err_shift > 3 * err       # one pixel of misregistration would show


def test_tms_wmts_and_wms_give_the_same_imagery_as_xyz(tiles, tmp_path):
    base = tmp_path / "xyz.tif"
    download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", base, cache=None)
    want = read(base)[0]
    tms = ImagerySource("xyz", tiles.url + "/tms/{z}/{x}/{-y}.png", max_zoom=21)
    wmts = ImagerySource("wmts", tiles.url + "/wmts?SERVICE=WMTS&REQUEST=GetCapabilities", layer="kampala")
    for name, src in (("tms", tms), ("wmts", wmts)):
        summary = download_imagery(src, KAMPALA, "EPSG:4326", tmp_path / f"{name}.tif", cache=None)
        assert summary["level"] == "19"
        np.testing.assert_array_equal(read(tmp_path / f"{name}.tif")[0], want)
    ref = source_on_grid(base)
    for version, wms_crs in (("1.3.0", "EPSG:3857"), ("1.1.1", "EPSG:4326"), ("1.3.0", "EPSG:4326"),
                             ("1.3.0", "EPSG:32636")):
        src = ImagerySource("wms", tiles.url + "/wms", layer="kampala", crs=wms_crs, version=version)
        out = tmp_path / f"wms_{version}_{wms_crs[5:]}.tif"
        download_imagery(src, KAMPALA, "EPSG:4326", out, cache=None)
        got = read(out)[0]
        both = (got[0] > 0) & (ref[0] > 0)
        assert both.sum() > 0.95 * (ref[0] > 0).sum(), (version, wms_crs)
        assert np.abs(got.astype(int) - ref.astype(int))[:, both].mean() < 3.0, (version, wms_crs)


def _rgba_with_holes(seed: int = 0) -> np.ndarray:
    """(4, 600, 700) uint8 RGBA: smooth colours plus noise, transparent where the colour is black
    (a rectangle and scattered pixels, as the tile server makes them), opaque elsewhere."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:600, 0:700]
    rgb = np.stack([(xx * 0.3 + yy * 0.1) % 256, (yy * 0.4) % 256, (xx * 0.2 + 90) % 256])
    rgb = rgb + rng.integers(0, 30, (3, 600, 700))
    rgba = np.concatenate([np.clip(rgb, 1, 255), np.full((1, 600, 700), 255)]).astype(np.uint8)
    holes = np.zeros((600, 700), bool)
    holes[200:260, 300:420] = True
    holes |= rng.random((600, 700)) < 0.002
    rgba[:, holes] = 0
    return rgba


def _warp_grids(dst_pixel_m: float = 0.3):
    """Transforms of the (600, 700) Web Mercator source of :func:`_rgba_with_holes` (0.2986 m
    pixels, as zoom 19 near the equator) and of a (500, 600) UTM 36N output inside it."""
    from affine import Affine
    from pyproj import Transformer

    src_t = Affine(0.2986, 0, 3628000.0, 0, -0.2986, 39500.0)
    x, y = Transformer.from_crs(3857, 32636, always_xy=True).transform(*(src_t @ (350, 300)))  # src centre
    return src_t, Affine(dst_pixel_m, 0, x - 90.0, 0, -dst_pixel_m, y + 75.0)


def _warps(src: np.ndarray):
    """``src`` warped from Web Mercator to UTM 36N (bilinear) by GDAL's alpha kernel and by
    edifice's GDAL path, as (3, 500, 600) RGB with 0 as nodata each, and whether edifice premultiplied."""
    from edifice.core.acquire.imagery import _premultiply_binary_alpha, _rgb_where_valid

    src_t, dst_t = _warp_grids()
    warp = dict(src_transform=src_t, src_crs="EPSG:3857", dst_crs="EPSG:32636", dst_transform=dst_t,
                resampling=Resampling.bilinear)
    ref = np.zeros((4, 500, 600), np.uint8)
    reproject(src, ref, src_alpha=4, dst_alpha=4, **warp)
    ours, mine = np.zeros((4, 500, 600), np.uint8), src.copy()
    premultiplied = _premultiply_binary_alpha(mine)
    if premultiplied:
        reproject(mine, ours, **warp)
    else:
        reproject(mine, ours, src_alpha=4, dst_alpha=4, **warp)
    return _rgb_where_valid(ref, premultiplied=False), _rgb_where_valid(ours, premultiplied), premultiplied


def test_bilinear_warp_of_premultiplied_colours_matches_gdals_alpha_warp():
    ref, got, premultiplied = _warps(_rgba_with_holes())
    got_valid, ref_valid = got[0] > 0, ref[0] > 0
    assert premultiplied and 0.9 < ref_valid.mean() < 0.99    # the holes are in the block
    assert (got_valid != ref_valid).mean() < 0.001            # differs only on the edges of holes
    both = got_valid & ref_valid
    assert np.abs(got.astype(int) - ref.astype(int))[:, both].max() <= 2


def test_partial_alpha_is_warped_by_gdals_alpha_kernel():
    src = _rgba_with_holes()
    src[3, 500:520] = 128
    ref, got, premultiplied = _warps(src)
    assert not premultiplied
    np.testing.assert_array_equal(got, ref)


def test_premultiplied_colours_come_back_unchanged_on_the_same_grid():
    from affine import Affine
    from edifice.core.acquire.imagery import _premultiply_binary_alpha, _rgb_where_valid

    src = _rgba_with_holes(1)
    t = Affine(0.3, 0, 1000.0, 0, -0.3, 2000.0)
    out, mine = np.zeros((4, 600, 700), np.uint8), src.copy()
    assert _premultiply_binary_alpha(mine)
    reproject(mine, out, src_transform=t, dst_transform=t, src_crs="EPSG:32636", dst_crs="EPSG:32636",
              resampling=Resampling.bilinear)
    got = _rgb_where_valid(out, premultiplied=True)
    opaque = src[3] == 255
    np.testing.assert_array_equal(got[:, opaque], src[:3, opaque])
    assert not got[:, ~opaque].any()


needs_numba = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba is not installed")


def _compiled_warp(src: np.ndarray, dst_pixel_m: float = 0.3):
    """``src`` warped as :func:`_warps` does, by the compiled kernel; None where it does not apply."""
    from edifice.core.acquire import _warp_compiled as wc

    src_t, dst_t = _warp_grids(dst_pixel_m)
    rows, cols, sx, sy = wc.source_pixel_grid(dst_t, "EPSG:32636", src_t, "EPSG:3857", (500, 600))
    if not wc.four_sample_bilinear_applies(sx, sy, rows, cols):
        return None
    return wc.warp_binary_alpha(src, rows, cols, sx, sy, (500, 600))


@needs_numba
def test_compiled_warp_matches_gdals_warps():
    """Within 1 DN of GDAL's alpha warp (both weight colours by alpha exactly; only the last
    rounding differs) and within the documented 2 DN of the warp of premultiplied colours it
    replaces (that one rounds twice); valid masks differ only on the edges of holes."""
    src = _rgba_with_holes()
    gdal_alpha, gdal_premultiplied, _ = _warps(src)
    got = _compiled_warp(src)
    for ref, max_dn in ((gdal_alpha, 1), (gdal_premultiplied, 2)):
        got_valid, ref_valid = got[0] > 0, ref[0] > 0
        assert (got_valid != ref_valid).mean() < 0.001
        both = got_valid & ref_valid
        assert np.abs(got.astype(int) - ref.astype(int))[:, both].max() <= max_dn
    opaque_everywhere = np.full_like(src, 200)  # no holes: every pixel valid, colour kept
    assert (_compiled_warp(opaque_everywhere) == 200).all()


def _kampala_rgba(row_off: int, col_off: int) -> np.ndarray:
    """(4, 600, 700) RGBA of real Kampala drone pixels: transparent where the mosaic has no
    imagery (black), as the tile server serves it."""
    from rasterio.windows import Window

    with rasterio.open(MOSAIC) as ds:
        rgb = ds.read(window=Window(col_off, row_off, 700, 600))
    alpha = np.where(rgb.any(axis=0), 255, 0).astype(np.uint8)
    return np.concatenate([rgb, alpha[None]])


def _four_sample_reference(src: np.ndarray, rows, cols, sx, sy, shape) -> np.ndarray:
    """GDAL's four-sample bilinear formula, in NumPy, at the positions the coarse grid gives
    (interpolated along the grid's rows, then along its columns), colours weighted by binary
    alpha where a neighbour is transparent or outside: what the compiled kernel must compute."""
    h, w = shape
    r, c = np.arange(h, dtype=float), np.arange(w, dtype=float)
    i = np.clip(np.searchsorted(rows, r, side="right") - 1, 0, max(len(rows) - 2, 0))
    t = ((r - rows[i]) / (rows[i + 1] - rows[i]))[:, None]
    row_x, row_y = sx[i] + t * (sx[i + 1] - sx[i]), sy[i] + t * (sy[i + 1] - sy[i])
    k = np.clip(np.searchsorted(cols, c, side="right") - 1, 0, len(cols) - 2)
    span = cols[k + 1] - cols[k]
    x = row_x[:, k] + (c - cols[k]) * ((row_x[:, k + 1] - row_x[:, k]) / span) - 0.5
    y = row_y[:, k] + (c - cols[k]) * ((row_y[:, k + 1] - row_y[:, k]) / span) - 0.5
    ix, iy = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - ix, y - iy
    height, width = src.shape[1:]
    weight_sum, colour_sums = np.zeros(shape), np.zeros((3, *shape))
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        yy, xx = iy + dy, ix + dx
        inside = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
        value = src[:, np.clip(yy, 0, height - 1), np.clip(xx, 0, width - 1)].astype(float)
        valid = inside & (value[3] == 255)
        weight = np.where(valid, (fy if dy else 1.0 - fy) * (fx if dx else 1.0 - fx), 0.0)
        weight_sum += weight
        colour_sums += weight * value[:3]
    all_four = np.isclose(weight_sum, 1.0, rtol=0, atol=1e-12) & _all_neighbours_opaque(src, ix, iy)
    colour = np.where(all_four, colour_sums, colour_sums / np.where(weight_sum > 0, weight_sum, 1.0))
    out = np.clip(np.floor(colour + 0.5), 1, 255).astype(np.uint8)
    out[:, weight_sum * 255.0 + 0.5 < 128.0] = 0
    return out


def _all_neighbours_opaque(src: np.ndarray, ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    height, width = src.shape[1:]
    inside = (ix >= 0) & (ix + 1 < width) & (iy >= 0) & (iy + 1 < height)
    a = src[3, np.clip(iy, 0, height - 2)[..., None, None] + np.array([0, 1])[:, None],
            np.clip(ix, 0, width - 2)[..., None, None] + np.array([0, 1])[None, :]]
    return inside & (a == 255).all(axis=(-1, -2))


@needs_numba
@pytest.mark.parametrize("window", [(1400, 6800), (0, 7700)])  # the mosaic's edge; scattered black pixels
def test_compiled_warp_is_the_four_sample_formula_at_every_pixel_of_real_imagery(window):
    """The compiled kernel (weights computed once per pixel for its three bands) gives, at every
    output pixel, the value of GDAL's formula computed independently in NumPy: not one DN apart."""
    from edifice.core.acquire import _warp_compiled as wc

    src = _kampala_rgba(*window)
    src_t, dst_t = _warp_grids()
    rows, cols, sx, sy = wc.source_pixel_grid(dst_t, "EPSG:32636", src_t, "EPSG:3857", (500, 600))
    got = wc.warp_binary_alpha(src, rows, cols, sx, sy, (500, 600), separable=False)
    want = _four_sample_reference(src, rows, cols, sx, sy, (500, 600))
    assert 0.0 < (want[0] == 0).mean() < 0.5 and len(np.unique(want[0])) > 100  # holes, and real detail
    np.testing.assert_array_equal(got, want)


@needs_numba
@pytest.mark.parametrize("window, pixel_m", [((1400, 6800), 0.3), ((0, 7700), 0.3), ((1400, 6800), 0.1)])
def test_two_pass_warp_is_within_1_dn_of_the_one_pass_warp_on_real_imagery(window, pixel_m):
    """The separable (two-pass) kernel reads source rows resampled along x for an earlier output
    row, at most 1e-3 source pixel off: 0.26 DN at most on a 255 DN step, so within 1 DN of the
    one-pass kernel, with the same valid mask; also where it upsamples (0.1 m from 0.3 m tiles:
    a source row serves three output rows)."""
    from edifice.core.acquire import _warp_compiled as wc

    src = _kampala_rgba(*window)
    src_t, dst_t = _warp_grids(pixel_m)
    rows, cols, sx, sy = wc.source_pixel_grid(dst_t, "EPSG:32636", src_t, "EPSG:3857", (500, 600))
    assert wc.separable_applies(rows, sx, sy)  # UTM 36N and Web Mercator near Kampala
    one = wc.warp_binary_alpha(src, rows, cols, sx, sy, (500, 600), separable=False)
    two = wc.warp_binary_alpha(src, rows, cols, sx, sy, (500, 600), separable=True)
    assert 0.3 < (one[0] > 0).mean() and len(np.unique(one[0])) > 100  # real imagery in the block
    np.testing.assert_array_equal(two[0] > 0, one[0] > 0)
    assert np.abs(two.astype(int) - one.astype(int)).max() <= 1


def test_two_pass_warp_is_refused_where_x_drifts_down_the_rows():
    from affine import Affine
    from edifice.core.acquire._warp_grid import separable_applies, source_pixel_grid

    src_t, dst_t = _warp_grids()
    rows, _, sx, sy = source_pixel_grid(dst_t, "EPSG:32636", src_t, "EPSG:3857", (500, 600))
    assert separable_applies(rows, sx, sy)
    rotated = dst_t @ Affine.rotation(0.5)  # half a degree: x drifts 0.009 pixel per row
    rows, _, sx, sy = source_pixel_grid(rotated, "EPSG:32636", src_t, "EPSG:3857", (500, 600))
    assert not separable_applies(rows, sx, sy)
    far_east = Affine(0.3, 0, 800000.0, 0, -0.3, 5000000.0)  # UTM 36N at 45 N, 300 km from its meridian
    rows, _, sx, sy = source_pixel_grid(far_east, "EPSG:32636", src_t, "EPSG:3857", (500, 600))
    assert not separable_applies(rows, sx, sy)  # grid convergence ~2.5 degrees


@needs_numba
def test_compiled_warp_leaves_wider_kernels_and_partial_alpha_to_gdal():
    from edifice.core.acquire import _warp_compiled as wc
    from edifice.core.acquire.imagery import _binary_alpha

    assert _compiled_warp(_rgba_with_holes(), dst_pixel_m=0.3) is not None   # 1.005 source pixels per pixel
    assert _compiled_warp(_rgba_with_holes(), dst_pixel_m=0.33) is None      # 1.1: GDAL widens its kernel
    src_t, dst_t = _warp_grids()
    assert wc.grid_error(dst_t, "EPSG:32636", src_t, "EPSG:3857", (500, 600)) < 1e-4  # pixels
    alpha = _rgba_with_holes()[3]
    assert _binary_alpha(alpha)
    alpha[5, 5] = 128
    assert not _binary_alpha(alpha)


@needs_numba
def test_compiled_and_gdal_warps_give_the_same_download_within_2_dn(tiles, tmp_path, monkeypatch):
    import edifice.core.acquire.imagery as imagery

    download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", tmp_path / "compiled.tif", cache=None)
    monkeypatch.setattr(imagery, "COMPILED_WARP", False)
    download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", tmp_path / "gdal.tif", cache=None)
    got, ref = read(tmp_path / "compiled.tif")[0], read(tmp_path / "gdal.tif")[0]
    got_valid, ref_valid = got[0] > 0, ref[0] > 0
    assert 0.2 < ref_valid.mean() < 0.99 and (got_valid != ref_valid).mean() < 0.001
    both = got_valid & ref_valid
    assert np.abs(got.astype(int) - ref.astype(int))[:, both].max() <= 2  # as the warp of premultiplied colours


def test_without_numba_gdals_warp_is_used(tiles, tmp_path, monkeypatch):
    import edifice.core.acquire.imagery as imagery
    from edifice.core.acquire import _warp_compiled

    monkeypatch.setattr(_warp_compiled, "AVAILABLE", False)  # as when numba is not installed
    download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", tmp_path / "no_numba.tif", cache=None)
    monkeypatch.setattr(imagery, "COMPILED_WARP", False)
    download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", tmp_path / "gdal.tif", cache=None)
    assert read(tmp_path / "no_numba.tif")[0].tobytes() == read(tmp_path / "gdal.tif")[0].tobytes()


def test_blocks_mosaicked_in_parallel_give_the_same_bytes_as_one_at_a_time(tiles, tmp_path, monkeypatch):
    import edifice.core.acquire.imagery as imagery

    monkeypatch.setattr(imagery, "BLOCK_WORKERS", 1)
    download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", tmp_path / "serial.tif", cache=None, block_size=128)
    monkeypatch.setattr(imagery, "BLOCK_WORKERS", 4)
    download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", tmp_path / "parallel.tif", cache=None, block_size=128,
                     max_concurrency=8)
    assert (tmp_path / "serial.tif").read_bytes() == (tmp_path / "parallel.tif").read_bytes()


def test_tile_mosaic_copies_only_the_window_of_the_bounds_with_missing_tiles_as_nodata():
    from edifice.core.acquire.imagery import _tile_mosaic

    level = web_mercator_set(19, 19).matrices[0]
    rng = np.random.default_rng(3)
    tiles = {(c, r): rng.integers(1, 256, (4, 256, 256), dtype=np.uint8) for c in (10, 11, 12) for r in (20, 21, 22)}
    del tiles[(12, 22)]  # a tile without imagery
    whole = np.zeros((4, 768, 768), np.uint8)
    for (c, r), t in tiles.items():
        whole[:, (r - 20) * 256:(r - 19) * 256, (c - 10) * 256:(c - 9) * 256] = t
    x0, y1 = level.top_left[0] + 10 * 256 * level.resolution, level.top_left[1] - 20 * 256 * level.resolution
    res = level.resolution
    bounds = (x0 + 100.3 * res, y1 - 700.2 * res, x0 + 650.5 * res, y1 - 120.9 * res)  # pixels 100..651 x 120..701
    got, t = _tile_mosaic(level, tiles, bounds)
    np.testing.assert_array_equal(got, whole[:, 120:701, 100:651])
    assert t.a == res and t.e == -res and t.c == pytest.approx(x0 + 100 * res) and t.f == pytest.approx(y1 - 120 * res)
    beyond = (x0 - 50 * res, y1 - 900 * res, x0 + 300 * res, y1 + 40 * res)  # past the tiles: clipped to them
    got, t = _tile_mosaic(level, tiles, beyond)
    np.testing.assert_array_equal(got, whole[:, 0:768, 0:300])
    assert t.c == pytest.approx(x0) and t.f == pytest.approx(y1)


def test_output_compressed_in_threads_has_the_same_bytes(tiles, tmp_path, monkeypatch):
    import edifice.core.acquire.imagery as imagery

    monkeypatch.setattr(imagery, "COMPRESSION_THREADS", 1)
    download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", tmp_path / "one.tif", cache=None, block_size=256)
    monkeypatch.setattr(imagery, "COMPRESSION_THREADS", 2)
    download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", tmp_path / "two.tif", cache=None, block_size=256)
    assert (tmp_path / "one.tif").read_bytes() == (tmp_path / "two.tif").read_bytes()


def test_tiles_are_fetched_once_within_a_strip_and_blocks_go_strip_by_strip(tiles, tmp_path):
    from edifice.core.acquire.imagery import block_order
    from edifice.core.grid import Grid

    before = len(tiles.requests())
    # ~1000 m x 330 m: 14 x 6 tiles of zoom 19, 16 x 6 blocks of 128 pixels; row by row with only
    # about one block's tiles kept, every tile was fetched twice
    wide = (32.5920, 0.3495, 32.6010, 0.3525)
    summary = download_imagery(xyz(tiles), wide, "EPSG:4326", tmp_path / "o.tif", cache=None, block_size=128)
    paths = [r["path"] for r in tiles.requests()[before:] if "/xyz/" in r["path"]]
    assert summary["blocks"] == 96 and len(paths) == len(set(paths)) == summary["tiles_requested"] == 84
    grid = Grid.from_extent(0, 0, 9000, 4000, 1.0, "EPSG:32636")  # 9000 x 4000 pixels: strips of 4096
    order = [(int(b.window.col_off), int(b.window.row_off)) for b in block_order(grid, 2048)]
    assert order == [(0, 0), (2048, 0), (0, 2048), (2048, 2048), (4096, 0), (6144, 0), (4096, 2048), (6144, 2048),
                     (8192, 0), (8192, 2048)]


@pytest.mark.parametrize("carried_bytes", [None, 0], ids=["held", "no-room"])
def test_tiles_on_the_edge_between_two_strips_are_fetched_once_while_there_is_room(tiles, tmp_path, monkeypatch,
                                                                                   carried_bytes):
    """The tiles on the edge between two strips of blocks are held from one strip to the next and
    fetched once; without room to hold them (CARRIED_TILE_BYTES 0) that column of tiles, and
    nothing else, is fetched twice. The output's bytes are the same either way."""
    from pyproj import Transformer

    from edifice.core.acquire import imagery
    from edifice.core.acquire.imagery import STRIP_WIDTH

    if carried_bytes is not None:
        monkeypatch.setattr(imagery, "CARRIED_TILE_BYTES", carried_bytes)
    before = len(tiles.requests())
    # ~30 km x 15 km at 4.8 m (zoom 15, tiles of ~1.2 km): ~6200 x 3100 pixels, two strips of blocks
    # (4096 pixels and the rest), 25 x 13 tiles (nearly all without imagery: answered 404, not decoded)
    extent = (32.47, 0.29, 32.74, 0.42)
    summary = download_imagery(xyz(tiles), extent, "EPSG:4326", tmp_path / "o.tif", cache=None, gsd_m=4.8)
    paths = [r["path"] for r in tiles.requests()[before:] if "/xyz/" in r["path"]]
    assert len(paths) == summary["tiles_requested"] and summary["width"] > STRIP_WIDTH
    keys = [tuple(int(v) for v in p.removesuffix(".png").split("/")[-3:]) for p in paths]
    assert {z for z, _, _ in keys} == {15}
    distinct = set(keys)
    twice = {k for k in distinct if keys.count(k) > 1}
    # the strip edge (pixel column STRIP_WIDTH of the output) in tile columns of zoom 15
    with rasterio.open(tmp_path / "o.tif") as ds:
        x, y = ds.transform @ (STRIP_WIDTH, ds.height / 2)
        mx, _ = Transformer.from_crs(ds.crs, "EPSG:3857", always_xy=True).transform(x, y)
    edge_col = (mx + 20037508.342789244) / (2 * 20037508.342789244 / 2 ** 15)
    assert 0.1 < edge_col % 1 < 0.9  # the edge crosses one column of tiles (not on their border)
    rows = {r for _, _, r in distinct}
    if carried_bytes is None:
        assert not twice and len(keys) == len(distinct)
    else:
        assert twice == {(15, int(edge_col), r) for r in rows}  # that column, every row, nothing else
        assert all(keys.count(k) == 2 for k in twice)
        assert len(keys) == len(distinct) + len(rows)


def test_tiles_held_across_strips_give_the_same_bytes_and_are_all_released(tiles, tmp_path, monkeypatch):
    """Real imagery over three strips (blocks of 128 px, strips of 256 px, no tile kept beyond those
    that blocks hold): fewer requests than a run that holds nothing across strips, the same bytes,
    and no tile left held at the end."""
    from edifice.core.acquire import imagery, tile_fetch

    monkeypatch.setattr(imagery, "STRIP_WIDTH", 256)
    monkeypatch.setattr(imagery, "_tiles_to_keep", lambda plan, block_size: 0)
    fetchers = []
    real_close = tile_fetch.TileFetcher.close

    def close(self):
        fetchers.append(self)
        real_close(self)

    monkeypatch.setattr(tile_fetch.TileFetcher, "close", close)
    before = len(tiles.requests())
    held = download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", tmp_path / "held.tif", gsd_m=0.3, cache=None,
                            block_size=128)
    paths = [r["path"] for r in tiles.requests()[before:] if "/xyz/" in r["path"]]
    assert held["width"] > 2 * 256 and held["valid_fraction"] > 0.3 and len(paths) == held["tiles_requested"]
    assert all(count == 0 for count in fetchers[-1]._pins.values())
    monkeypatch.setattr(imagery, "CARRIED_TILE_BYTES", 0)
    again = download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", tmp_path / "again.tif", gsd_m=0.3, cache=None,
                             block_size=128)
    assert again["tiles_requested"] > held["tiles_requested"]
    assert (tmp_path / "held.tif").read_bytes() == (tmp_path / "again.tif").read_bytes()


def test_blocks_finished_out_of_order_are_written_in_order(tmp_path):
    from edifice.core.acquire.block_store import BlockStore
    from edifice.core.acquire.imagery import _OrderedWriter
    from edifice.core.grid import Grid

    grid = Grid.from_extent(0, 0, 30, 20, 1.0, "EPSG:32636")  # 30 x 20 pixels: blocks of 10 -> 3 x 2
    store = BlockStore(tmp_path / "out.tif", {"job": 1})
    written = []

    class Dst:
        def write(self, data, window):
            written.append((int(window.col_off), int(window.row_off), int(data[0, 0, 0])))

    blocks = list(grid.blocks(10))
    store.put(blocks[0].index, np.full((3, 10, 10), 1, np.uint8))  # finished before this run (a resume)
    writer = _OrderedWriter(Dst(), grid, store, 10)
    for b in reversed(blocks[1:]):
        store.put(b.index, np.full((3, 10, 10), b.index + 1, np.uint8))
        writer.finished(b.index)
        assert len(written) == (1 if b.index > 1 else len(blocks))  # block 0, then nothing until block 1
    assert written == [(int(b.window.col_off), int(b.window.row_off), b.index + 1) for b in blocks]
    assert writer.valid == 30 * 20


def test_blocks_handed_over_in_memory_are_written_as_stored(tmp_path, monkeypatch):
    """Blocks finished ahead of their turn are held in memory up to HELD_BLOCKS; the others are
    read back from the store; either way the same pixels, in order."""
    import edifice.core.acquire.imagery as imagery
    from edifice.core.acquire.block_store import BlockStore
    from edifice.core.grid import Grid

    monkeypatch.setattr(imagery, "HELD_BLOCKS", 2)
    grid = Grid.from_extent(0, 0, 40, 10, 1.0, "EPSG:32636")  # blocks of 10 -> 4 in a row
    store = BlockStore(tmp_path / "out.tif", {"job": 2})
    written, reads = [], []

    class Dst:
        def write(self, data, window):
            written.append((int(window.col_off), int(data[0, 0, 0])))

    real_get = store.get
    monkeypatch.setattr(store, "get", lambda index, shape: reads.append(index) or real_get(index, shape))
    writer = imagery._OrderedWriter(Dst(), grid, store, 10)
    blocks = list(grid.blocks(10))
    for b in reversed(blocks):  # 3, 2, 1 wait for block 0; only two of them are held
        data = np.full((3, 10, 10), b.index + 1, np.uint8)
        store.put(b.index, data)
        writer.finished(b.index, data)
    assert written == [(10 * b.index, b.index + 1) for b in blocks]
    assert reads == [1]  # blocks 3 and 2 were held, block 1 came from the store, block 0 was at hand


def test_background_writer_writes_in_order_and_raises_its_errors(tmp_path):
    """The writer thread writes every block handed over, in block order, by the end of the
    ``with``; an error of a write is raised in the thread that hands blocks over; an error in
    that thread stops the writer (nothing more is written) and is the error raised."""
    import threading

    import edifice.core.acquire.imagery as imagery
    from edifice.core.acquire.block_store import BlockStore
    from edifice.core.grid import Grid

    grid = Grid.from_extent(0, 0, 40, 10, 1.0, "EPSG:32636")  # blocks of 10 -> 4 in a row
    blocks = list(grid.blocks(10))

    class Dst:
        def __init__(self, fail_at=None):
            self.written, self.threads, self.fail_at = [], set(), fail_at

        def write(self, data, window):
            self.threads.add(threading.current_thread().name)
            if int(window.col_off) == self.fail_at:
                raise OSError("disk gone")
            self.written.append((int(window.col_off), int(data[0, 0, 0])))

    def hand_over(dst, job, order):
        store = BlockStore(tmp_path / f"out{job}.tif", {"job": job})
        with imagery._BackgroundWriter(imagery._OrderedWriter(dst, grid, store, 10)) as background:
            for i in order:
                data = np.full((3, 10, 10), i + 1, np.uint8)
                store.put(blocks[i].index, data)
                background.finished(blocks[i].index, data)

    dst = Dst()
    hand_over(dst, 1, [3, 1, 2, 0])
    assert dst.written == [(10 * i, i + 1) for i in range(4)]
    assert dst.threads == {"edifice-imagery-writer"}

    failing = Dst(fail_at=0)
    with pytest.raises(OSError, match="disk gone"):
        hand_over(failing, 2, [0, 1, 2, 3])
    assert failing.written == []

    class Cancelled(Exception):
        pass

    store = BlockStore(tmp_path / "out3.tif", {"job": 3})
    store.put(blocks[0].index, np.full((3, 10, 10), 1, np.uint8))  # done before this run: a normal end writes it
    stopped = Dst()
    with pytest.raises(Cancelled):
        with imagery._BackgroundWriter(imagery._OrderedWriter(stopped, grid, store, 10)):
            raise Cancelled()
    assert stopped.written == []


def _kampala_tile(tiles) -> bytes:
    """The PNG of a real zoom-19 tile of the Kampala mosaic, as the tile server sends it."""
    import requests

    from edifice.core.acquire.tiles import WEB_MERCATOR_HALF

    x, y = Transformer.from_crs(4326, 3857, always_xy=True).transform(32.5950, 0.3507)
    span = 2 * WEB_MERCATOR_HALF / 2 ** 19
    col, row = int((x + WEB_MERCATOR_HALF) // span), int((WEB_MERCATOR_HALF - y) // span)
    r = requests.get(f"{tiles.url}/xyz/19/{col}/{row}.png", timeout=10)
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
    return r.content


def test_tiles_decode_to_the_pixels_that_pillow_decodes(tiles):
    """GDAL (its PNG or JPEG driver named by the signature, or probing for other formats) gives the
    pixels of an independent decoder (Pillow) for a real Kampala tile as PNG, JPEG and paletted GIF."""
    import io

    PIL = pytest.importorskip("PIL.Image")
    from edifice.core.acquire.tile_fetch import _driver_of, decode_image

    png = _kampala_tile(tiles)
    rgba = np.asarray(PIL.open(io.BytesIO(png)).convert("RGBA"))
    assert _driver_of(png) == "PNG" and (rgba[..., 3] == 255).mean() > 0.5
    np.testing.assert_array_equal(decode_image(png, (256, 256), "t"), np.moveaxis(rgba, -1, 0))
    buf = io.BytesIO()
    PIL.fromarray(rgba[..., :3]).save(buf, "JPEG", quality=90, subsampling=0)  # 4:4:4: no chroma upsampling
    jpeg = buf.getvalue()
    got, want = decode_image(jpeg, (256, 256), "t"), np.asarray(PIL.open(io.BytesIO(jpeg)).convert("RGBA"))
    assert _driver_of(jpeg) == "JPEG" and (got[3] == 255).all()
    assert np.abs(got.astype(int) - np.moveaxis(want, -1, 0)).max() <= 1  # two libjpeg builds: IDCT rounding at most
    buf = io.BytesIO()
    PIL.fromarray(rgba[..., :3]).convert("P", palette=PIL.Palette.ADAPTIVE).save(buf, "GIF")
    gif = buf.getvalue()
    assert _driver_of(gif) is None
    np.testing.assert_array_equal(decode_image(gif, (256, 256), "t"),
                                  np.moveaxis(np.asarray(PIL.open(io.BytesIO(gif)).convert("RGBA")), -1, 0))
    with pytest.raises(EdificeError, match="not a readable image"):
        decode_image(png[:8] + b"garbage" * 10, (256, 256), "t")


def test_proj_work_stays_in_the_submitting_thread(tiles, tmp_path, monkeypatch):
    """Block workers (new threads each download) never make or use a pyproj transformer: pyproj
    makes its transformer again in each new thread (PROJ database look-ups); the coarse grid of
    source coordinates is computed ahead, in the thread that submits the blocks."""
    import threading

    from edifice.core.acquire import _warp_grid, imagery, tiles as tiles_mod

    threads = set()
    real = tiles_mod.transformer

    def recording(*args):
        threads.add(threading.current_thread().name)
        return real(*args)

    for module in (tiles_mod, _warp_grid, imagery):
        monkeypatch.setattr(module, "transformer", recording)
    summary = download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", tmp_path / "a.tif", gsd_m=0.3, cache=None)
    assert summary["blocks"] > 1 and summary["valid_fraction"] > 0.3
    assert threads == {threading.current_thread().name}


def test_output_on_the_tile_grid_is_the_tiles_cut_not_resampled(tiles, tmp_path):
    from edifice.core.acquire.tile_fetch import decode_image
    from edifice.core.acquire.tiles import WEB_MERCATOR_HALF
    import requests

    res = 2 * WEB_MERCATOR_HALF / (256 * 2 ** 19)
    out = tmp_path / "wm.tif"
    summary = download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", out, gsd_m=res, crs="EPSG:3857", cache=None)
    data, _, tags, transform, crs = read(out)
    assert crs.to_epsg() == 3857 and summary["level"] == "19" and transform.a == pytest.approx(res)
    col, row = (transform.c + WEB_MERCATOR_HALF) / res, (WEB_MERCATOR_HALF - transform.f) / res
    assert col == pytest.approx(round(col), abs=1e-6) and row == pytest.approx(round(row), abs=1e-6)
    col, row = round(col), round(row)
    checked = 0
    for tr in range(row // 256, (row + data.shape[1]) // 256):
        for tc in range(col // 256, (col + data.shape[2]) // 256):
            r = requests.get(f"{tiles.url}/xyz/19/{tc}/{tr}.png", timeout=10)
            if r.status_code != 200:
                continue
            tile = decode_image(r.content, (256, 256), "test")
            r0, c0 = tr * 256 - row, tc * 256 - col                # the tile in the output's pixels
            win = (slice(max(r0, 0), r0 + 256), slice(max(c0, 0), c0 + 256))
            part = tile[:, max(-r0, 0):, max(-c0, 0):][:, :data[0][win].shape[0], :data[0][win].shape[1]]
            opaque = part[3] == 255
            want = np.maximum(part[:3], 1) * opaque
            np.testing.assert_array_equal(data[(slice(None), *win)], want)
            checked += int(opaque.sum())
    assert checked > 100_000


def test_gsd_finer_than_the_deepest_zoom_warns_with_the_zoom_used(tiles, tmp_path):
    rec = Recorder()
    source = ImagerySource("xyz", tiles.url + "/xyz/{z}/{x}/{y}.png", max_zoom=18)
    summary = download_imagery(source, KAMPALA, "EPSG:4326", tmp_path / "o.tif", gsd_m=0.25, cache=None, progress=rec)
    warnings = [m for m in rec.messages if m.startswith("WARNING")]
    assert summary["level"] == "18" and len(warnings) == 1
    assert "finer than the service's deepest level" in warnings[0] and "level 18" in warnings[0]
    assert summary["valid_fraction"] > 0.5


def test_extent_without_imagery_is_all_nodata_with_a_warning(tiles, tmp_path):
    rec = Recorder()
    summary = download_imagery(xyz(tiles), (32.600, 0.340, 32.602, 0.342), "EPSG:4326", tmp_path / "none.tif",
                               cache=None, progress=rec)
    data = read(tmp_path / "none.tif")[0]
    assert not data.any() and summary["valid_fraction"] == 0
    assert summary["tiles_missing"] == summary["tiles_requested"] > 0
    assert any("no imagery over the extent" in m for m in rec.messages if m.startswith("WARNING"))


# -- faults ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", [
    {"kind": "status", "status": 429, "retry_after": 1, "times": 2},
    {"kind": "status", "status": 504, "retry_after": 1, "times": 1},
    {"kind": "drop", "times": 2},
    {"kind": "truncate", "times": 1},
], ids=["429", "504", "drop", "truncate"])
def test_transient_faults_are_retried_and_change_nothing(tiles, tmp_path, fault):
    clean = tmp_path / "clean.tif"
    download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", clean, cache=None)
    tiles.set_faults([{**fault, "match": r"/xyz/19/309613/261632\.png"}])
    before = len(tiles.requests())
    download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", tmp_path / "faulty.tif", cache=None)
    served = tiles.requests()[before:]
    hits = [r for r in served if r["path"] == "/xyz/19/309613/261632.png"]
    assert len(hits) == fault["times"] + 1 and all(r["fault"] for r in hits[:-1])
    np.testing.assert_array_equal(read(tmp_path / "faulty.tif")[0], read(clean)[0])


def test_wrong_content_type_is_a_clear_error_and_nothing_is_written(tiles, tmp_path):
    tiles.set_faults([{"kind": "content_type", "value": "text/html", "match": "/xyz/19/309613/261632", "times": 1}])
    out = tmp_path / "o.tif"
    with pytest.raises(HttpError, match=r"answered 'text/html', expected image/"):
        download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", out, cache=None)
    assert not out.exists()
    download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", out, cache=None)  # the fault is spent: now it works
    assert read(out)[0].any()


def test_empty_answer_is_a_tile_without_imagery(tiles, tmp_path):
    clean = download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", tmp_path / "clean.tif", cache=None)
    tiles.set_faults([{"kind": "empty", "match": r"/xyz/19/309613/261632\.png", "times": 1}])
    holed = download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", tmp_path / "holed.tif", cache=None)
    assert holed["tiles_missing"] == clean["tiles_missing"] + 1
    assert holed["valid_fraction"] < clean["valid_fraction"] - 0.05


def test_service_errors_are_clear(tiles, tmp_path):
    out = tmp_path / "o.tif"
    odd = ImagerySource("xyz", tiles.url + "/odd/{z}/{x}/{y}.png", max_zoom=21)
    with pytest.raises(EdificeError, match=r"image of 200 x 200 pixels; 256 x 256 were asked for"):
        download_imagery(odd, KAMPALA, "EPSG:4326", out, cache=None)
    wms = ImagerySource("wms", tiles.url + "/wms", layer="no_such_layer")
    with pytest.raises(HttpError, match=r"answered 'application/vnd.ogc.se_xml'"):
        download_imagery(wms, KAMPALA, "EPSG:4326", out, cache=None)
    tiles.set_faults([{"kind": "status", "status": 500, "retry_after": 0, "times": 99}])
    with pytest.raises(HttpError, match=r"no valid answer .* after \d+ attempts \(last: HTTP 500\)"):
        download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", out, cache=None)
    assert not out.exists()


def test_bad_inputs_are_refused_with_the_parameter_named(tiles, tmp_path):
    out = tmp_path / "o.tif"
    cases = [(ImagerySource("tiles", tiles.url), "SOURCE_TYPE"),
             (ImagerySource("xyz", "ftp://x/{z}/{x}/{y}"), "URL"),
             (ImagerySource("xyz", tiles.url + "/xyz/{z}/{x}.png"), "URL"),
             (ImagerySource("xyz", tiles.url + "/xyz/{z}/{x}/{y}.png?k={key}"), "URL"),
             (ImagerySource("wms", tiles.url + "/wms"), "LAYER")]
    for source, name in cases:
        with pytest.raises(InputError) as info:
            download_imagery(source, KAMPALA, "EPSG:4326", out, cache=None)
        assert info.value.name == name
    with pytest.raises(InputError, match="EXTENT"):
        download_imagery(xyz(tiles), (1, 1, 0, 2), "EPSG:4326", out, cache=None)
    with pytest.raises(InputError, match="GSD"):
        download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", out, gsd_m=0, cache=None)


# -- resume, cache, keys --------------------------------------------------------------------
def test_cancel_then_resume_skips_finished_blocks_and_gives_the_same_bytes(tiles, tmp_path):
    whole = tmp_path / "whole.tif"
    download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", whole, cache=None, block_size=128)
    out = tmp_path / "resumed.tif"
    with pytest.raises(Cancelled):
        download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", out, cache=None, block_size=128,
                         progress=Recorder(cancel_after=3))
    parts = tmp_path / ".resumed.tif.parts"
    kept = len(list(parts.glob("b*.bin")))  # the 3 reported, and any block that was being finished
    assert not out.exists() and 3 <= kept < 12
    rec = Recorder()
    summary = download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", out, cache=None, block_size=128, progress=rec)
    assert summary["blocks_resumed"] == kept and any(f"Resuming: {kept} of 12 blocks" in m for m in rec.messages)
    assert out.read_bytes() == whole.read_bytes() and not parts.exists()


def test_cache_serves_a_rerun_without_requests(tiles, tmp_path):
    cache = tmp_path / "cache"
    first = download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", tmp_path / "a.tif", cache=cache)
    before = len(tiles.requests())
    download_imagery(xyz(tiles), KAMPALA, "EPSG:4326", tmp_path / "b.tif", cache=cache)
    asked_again = tiles.requests()[before:]
    assert first["tiles_requested"] > first["tiles_missing"] > 0
    assert len(asked_again) == first["tiles_missing"]  # only the tiles without imagery (404, not cached)
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()


def _all_bytes(folder: Path) -> bytes:
    blobs = []
    for p in sorted(folder.rglob("*")):
        blobs.append(str(p).encode())
        if p.is_file():
            blobs.append(p.read_bytes())
    return b"\n".join(blobs)


def test_keys_never_reach_messages_outputs_or_the_cache(keyed_tiles, tmp_path):
    rec = Recorder(cancel_after=None)
    cache = tmp_path / "cache"
    src = ImagerySource("xyz", keyed_tiles.url + "/xyz/{z}/{x}/{y}.png?key={key}", max_zoom=21, secrets={"key": KEY})
    keyed_tiles.set_faults([{"kind": "status", "status": 429, "retry_after": 0, "times": 1}])
    summary = download_imagery(src, KAMPALA, "EPSG:4326", tmp_path / "out" / "k.tif", cache=cache, progress=rec)
    assert summary["valid_fraction"] > 0.5                       # the key was sent: the server accepted it
    assert any("retrying" in m for m in rec.messages)            # a retry message that shows the URL
    # the key written literally in the URL is moved out of it too
    literal = ImagerySource("wmts", keyed_tiles.url + f"/wmts?SERVICE=WMTS&REQUEST=GetCapabilities&key={KEY}",
                            layer="kampala")
    download_imagery(literal, KAMPALA, "EPSG:4326", tmp_path / "out" / "l.tif", cache=cache, progress=rec)
    with pytest.raises(Cancelled):  # a cancelled run keeps its finished blocks and their manifest
        download_imagery(literal, KAMPALA, "EPSG:4326", tmp_path / "out" / "c.tif", cache=cache, block_size=128,
                         progress=Recorder(cancel_after=2))
    assert (tmp_path / "out" / ".c.tif.parts" / "manifest.json").exists()
    wrong = ImagerySource("xyz", src.url, max_zoom=21, secrets={"key": KEY[::-1]})
    with pytest.raises(HttpError) as info:
        download_imagery(wrong, KAMPALA, "EPSG:4326", tmp_path / "out" / "w.tif", cache=cache, progress=rec)
    assert "HTTP 403" in str(info.value) and KEY[::-1] not in str(info.value)
    assert KEY not in "\n".join(rec.messages) + str(summary)
    assert KEY.encode() not in _all_bytes(tmp_path)              # outputs, metadata, cache names and contents
    assert secrets_from_url("https://a/b?apikey=XYZ&x=1") == ("https://a/b?apikey={apikey}&x=1", {"apikey": "XYZ"})


# -- the CLI: kill and resume, keys from env/file -------------------------------------------
def _cli(args, env=None, **kw):
    import os
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "edifice.core.cli", "imagery-download", *map(str, args)],
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def test_cli_killed_mid_download_resumes_to_the_same_bytes(tiles, tmp_path):
    import json
    import signal
    import time

    args = ["--extent", ",".join(map(str, KAMPALA)), "--xyz", tiles.url + "/xyz/{z}/{x}/{y}.png", "--max-zoom", 21,
            "--no-cache", "--block-size", 128, "--max-concurrency", 2]
    whole = tmp_path / "whole.tif"
    done = _cli([whole, *args])
    assert done.wait(120) == 0, done.stderr.read()
    tiles.set_faults([{"kind": "delay", "seconds": 0.3, "match": "/xyz/", "times": 10_000}])
    out = tmp_path / "killed.tif"
    parts = tmp_path / ".killed.tif.parts"
    proc = _cli([out, *args])
    deadline = time.monotonic() + 120
    while len(list(parts.glob("b*.bin"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    finished = len(list(parts.glob("b*.bin")))
    assert proc.returncode == -signal.SIGKILL and 2 <= finished < 12 and not out.exists()
    tiles.set_faults([])
    again = _cli([out, *args])
    assert again.wait(120) == 0, again.stderr.read()
    summary = json.loads(again.stdout.read())
    assert summary["blocks_resumed"] == finished
    assert out.read_bytes() == whole.read_bytes() and not parts.exists()


def test_cli_key_from_env_or_file_is_never_shown(keyed_tiles, tmp_path):
    url = keyed_tiles.url + "/xyz/{z}/{x}/{y}.png?key={key}"
    common = ["--extent", ",".join(map(str, KAMPALA)), "--xyz", url, "--max-zoom", 21, "--cache-dir", tmp_path / "c"]
    runs = {}
    runs["env"] = _cli([tmp_path / "env.tif", *common, "--key-env", "MY_TILE_KEY"], env={"MY_TILE_KEY": KEY})
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY + "\n")
    runs["file"] = _cli([tmp_path / "file.tif", *common, "--key-file", key_file])
    runs["wrong"] = _cli([tmp_path / "wrong.tif", *common], env={"EDIFICE_IMAGERY_KEY": "not-" + KEY[::-1]})
    runs["none"] = _cli([tmp_path / "none.tif", *common], env={"EDIFICE_IMAGERY_KEY": ""})
    texts = {}
    for name, proc in runs.items():
        rc = proc.wait(120)
        texts[name] = (rc, proc.stdout.read() + proc.stderr.read())
    assert texts["env"][0] == 0 and texts["file"][0] == 0, texts
    assert texts["wrong"][0] == 2 and "HTTP 403" in texts["wrong"][1] and KEY[::-1] not in texts["wrong"][1]
    assert texts["none"][0] == 2 and "--key-env" in texts["none"][1]
    key_file.unlink()
    assert KEY not in "".join(t for _, t in texts.values())
    assert KEY.encode() not in _all_bytes(tmp_path)
