"""STAC source of edifice:sentinelcomposites against a static STAC API + COG server on 127.0.0.1
(tests/servers/stac_standin.py, a real process): pystac-client searches it and GDAL reads the COGs over
HTTP with range requests. Scenes: synthetic Sentinel-2 scenes with clouds, shadows, a partial footprint,
a newer processing baseline, a too-cloudy scene and one of another year; Sentinel-1 RTC scenes made from
the THU sample (dB -> linear); the THU SRTM crop as a DEM tile. Expected composites are computed here
directly with numpy on the same pixels (all scenes are on grids aligned with the output grid)."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from edifice.core.acquire.composites import DEM, S1, S2, DownloadOptions, composite_grid, make_composites
from edifice.core.acquire.stac import SCL_CLEAR, StacSource
from edifice.core.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
THU = ROOT / "samples" / "thu"
STAND_IN = ROOT / "tests" / "servers" / "stac_standin.py"
EXTENT, PADDING = (116.315, 39.995, 116.325, 40.005), 0.004
SCENE_AREA = (116.31, 39.99, 116.33, 40.01)
# id, date, eo:cloud_cover, processing baseline, west half only, value shift (DN)
S2_SCENES = [("s2_a", "2020-03-02", 5.0, "02.14", False, 0), ("s2_b", "2020-06-10", 10.0, "02.14", False, 300),
             ("s2_c", "2020-08-19", 15.0, "04.00", False, 1000 + 150),
             ("s2_d", "2020-09-23", 2.0, "04.00", True, 1000 - 80),
             ("s2_cloudy", "2020-07-01", 60.0, "02.14", False, 20000),
             ("s2_2019", "2019-05-05", 1.0, "02.14", False, 20000)]
S1_SCENES = [("s1_a", "2020-02-01", "IW", -1.0), ("s1_b", "2020-05-01", "IW", 0.0), ("s1_c", "2020-10-01", "IW", 2.0),
             ("s1_ew", "2020-04-01", "EW", 30.0)]


def _write(path: Path, data: np.ndarray, transform, nodata=None, block=128):
    prof = {"driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1, "dtype": data.dtype.name,
            "crs": "EPSG:4326", "transform": transform, "nodata": nodata, "tiled": True, "blockxsize": block,
            "blockysize": block, "compress": "deflate"}
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data, 1)


def _item(iid, collection, date, bbox, assets: dict, **props):
    x0, y0, x1, y1 = bbox
    return {"type": "Feature", "stac_version": "1.0.0", "id": iid, "collection": collection, "bbox": list(bbox),
            "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
            "properties": {"datetime": f"{date}T03:00:00Z", **props}, "links": [],
            "assets": {k: {"href": "{base}/files/" + v, "type": "image/tiff; application=geotiff"}
                       for k, v in assets.items()}}


def _s2_scenes(files: Path, rng) -> tuple[list[dict], dict]:
    """Synthetic S-2 scenes on a 10 m grid aligned with the composite grid (SCL on 20 m), and their arrays."""
    g = composite_grid(SCENE_AREA, S2, 0.0)
    h, w = g.height - g.height % 2, g.width - g.width % 2
    t = g.transform
    base = rng.integers(200, 4000, size=(4, h, w)).astype(np.int32)
    items, arrays = [], {}
    for sid, date, cc, baseline, half, shift in S2_SCENES:
        scl = rng.choice([4, 5, 6, 7, 11], size=(h // 2, w // 2)).astype(np.uint8)
        yy, xx = np.mgrid[0:h // 2, 0:w // 2]
        cy, cx = rng.integers(10, h // 2 - 10, size=2)
        scl[(yy - cy) ** 2 + (xx - cx) ** 2 < 15 ** 2] = 9                   # a cloud
        scl[(yy - cy - 18) ** 2 + (xx - cx - 5) ** 2 < 8 ** 2] = 3           # its shadow
        scl[rng.random(scl.shape) < 0.02] = 10                               # cirrus specks
        bands = (base + shift + rng.integers(-50, 50, size=base.shape)).astype(np.uint16)
        bands[:, rng.random((h, w)) < 0.01] = 0                              # no-data pixels
        ww = w // 2 if half else w
        names = {}
        for name, arr in zip(("B04", "B03", "B02", "B08"), bands):
            names[name] = f"{sid}_{name}.tif"
            _write(files / names[name], np.ascontiguousarray(arr[:, :ww]), t, nodata=0)
        names["SCL"] = f"{sid}_SCL.tif"
        _write(files / names["SCL"], np.ascontiguousarray(scl[:, :ww // 2]), t * Affine.scale(2), nodata=0)
        bbox = (t.c, t.f + t.e * h, t.c + t.a * ww, t.f)
        items.append(_item(sid, "sentinel-2-l2a", date, bbox, names, **{"eo:cloud_cover": cc,
                                                                        "s2:processing_baseline": baseline}))
        arrays[sid] = (bands[:, :, :ww], scl[:, :ww // 2], t, baseline)
    return items, arrays


def _s1_scenes(files: Path) -> tuple[list[dict], dict]:
    with rasterio.open(THU / "thu_s1_2020.tif") as ds:
        db, t, b = ds.read(), ds.transform, ds.bounds
    items, arrays = [], {}
    for sid, date, mode, shift in S1_SCENES:
        lin = (10.0 ** ((db + shift) / 10.0)).astype(np.float32)
        names = {}
        for k, pol in enumerate(("vv", "vh")):
            names[pol] = f"{sid}_{pol}.tif"
            _write(files / names[pol], lin[k], t, nodata=-9999.0)
        items.append(_item(sid, "sentinel-1-rtc", date, (b.left, b.bottom, b.right, b.top), names,
                           **{"sar:instrument_mode": mode, "sar:polarizations": ["VV", "VH"]}))
        arrays[sid] = (lin, t, mode)
    return items, arrays


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    root = tmp_path_factory.mktemp("stac")
    files = root / "files"
    files.mkdir()
    rng = np.random.default_rng(7)
    s2_items, s2 = _s2_scenes(files, rng)
    s1_items, s1 = _s1_scenes(files)
    shutil.copy(THU / "thu_srtm.tif", files / "dem_tile.tif")
    with rasterio.open(THU / "thu_srtm.tif") as ds:
        b = ds.bounds
    dem = [_item("cop_dem_tile", "cop-dem-glo-30", "2021-04-22", (b.left, b.bottom, b.right, b.top),
                 {"data": "dem_tile.tif"})]
    (root / "items.json").write_text(json.dumps(s2_items + s1_items + dem))
    return {"root": root, "s2": s2, "s1": s1}


@pytest.fixture
def stac(standin, catalog):
    def start(*extra):
        server = standin(STAND_IN, "--catalog", catalog["root"], *extra)
        return server
    return start


def _source(server, **kw):
    return StacSource(2020, "planetary-computer", url=server.url + "/",
                      token_url=server.url + "/api/sas/v1/token/{collection}", **kw)


def _run(server, tmp_path, products, **kw):
    outs = {k: str(tmp_path / f"{k}.tif") for k in products}
    return make_composites(_source(server), EXTENT, outs, padding=PADDING,
                           options=DownloadOptions(workers=2, **kw))


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read().astype(np.float64), ds.descriptions, ds.transform


def expected_s2(arrays, grid) -> np.ndarray:
    """Direct numpy: each kept scene's pixels at the output pixels, SCL-masked, offset removed, median."""
    stack = []
    for sid, date, cc, baseline, half, shift in S2_SCENES:
        if cc >= 20 or not date.startswith("2020"):
            continue
        bands, scl, t, bl = arrays[sid]
        dr = int(round((grid.transform.f - t.f) / t.e))
        dc = int(round((grid.transform.c - t.c) / t.a))
        rows, cols = np.arange(grid.height) + dr, np.arange(grid.width) + dc
        inside = (cols < bands.shape[2])[None, :] & np.ones((grid.height, 1), bool)
        cc_ = np.minimum(cols, bands.shape[2] - 1)
        v = bands[:, rows[:, None], cc_[None, :]].astype(np.float64)
        m = np.isin(scl[rows[:, None] // 2, np.minimum(cc_ // 2, scl.shape[1] - 1)[None, :]], SCL_CLEAR)
        off = 1000.0 if float(bl) >= 4 else 0.0
        ok = inside & m & (v > 0)
        stack.append(np.where(ok, v - off, np.nan).astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)                 # all-NaN pixels
        return np.nanmedian(np.stack(stack), axis=0)


def test_s2_median_and_cloud_mask_match_numpy(stac, catalog, tmp_path):
    server = stac("--sas")
    out = _run(server, tmp_path, ["S2"])
    data, desc, transform = _read(out["S2"]["path"])
    grid = composite_grid(EXTENT, S2, PADDING)
    assert desc == S2.bands and transform.almost_equals(grid.transform, precision=1e-12)
    want = expected_s2(catalog["s2"], grid)
    np.testing.assert_array_equal(data, want)
    assert np.isnan(want).sum() < want.size * 0.01                     # masks leave most pixels valid
    # the cloudy scene and the 2019 scene (+20000 DN) were never searched in or read
    assert np.nanmax(data) < 10000
    served = server.requests()
    assert not any("s2_cloudy" in r["path"] or "s2_2019" in r["path"] for r in served)
    assert any(r["path"].startswith("/api/sas/v1/token/sentinel-2-l2a") for r in served)
    assert all(r["query"].get("sig") for r in served if r["path"].startswith("/files/"))


def test_s1_rtc_to_db_median_and_dem(stac, catalog, tmp_path):
    server = stac("--sas")
    out = _run(server, tmp_path, ["S1", "DEM"])
    s1, desc, t1 = _read(out["S1"]["path"])
    assert desc == S1.bands
    grid = composite_grid(EXTENT, S1, PADDING)
    stack = []
    for sid, date, mode, shift in S1_SCENES:
        lin, t, m = catalog["s1"][sid]
        if m != "IW":
            continue
        dr, dc = int(round((grid.transform.f - t.f) / t.e)), int(round((grid.transform.c - t.c) / t.a))
        v = lin[:, dr:dr + grid.height, dc:dc + grid.width].astype(np.float64)
        stack.append((10 * np.log10(v)).astype(np.float32))
    np.testing.assert_allclose(s1, np.median(np.stack(stack), axis=0), rtol=0, atol=1e-5)
    with rasterio.open(THU / "thu_s1_2020.tif") as ds:                 # the middle scene is the sample itself
        dr, dc = ds.index(grid.transform.c + grid.res[0] / 2, grid.transform.f - grid.res[1] / 2)
        np.testing.assert_allclose(s1, ds.read()[:, dr:dr + grid.height, dc:dc + grid.width], atol=1e-4)
    dem, desc, _ = _read(out["DEM"]["path"])
    dgrid = composite_grid(EXTENT, DEM, PADDING)
    with rasterio.open(THU / "thu_srtm.tif") as ds:
        dr, dc = ds.index(dgrid.transform.c + dgrid.res[0] / 2, dgrid.transform.f - dgrid.res[1] / 2)
        np.testing.assert_array_equal(dem[0], ds.read(1)[dr:dr + dgrid.height, dc:dc + dgrid.width])


def test_only_the_needed_windows_are_read(stac, catalog, tmp_path):
    server = stac()
    make_composites(_source(server), (116.32, 40.0, 116.321, 40.001), {"S1": str(tmp_path / "s1.tif")},
                    padding=0.0005, options=DownloadOptions(workers=1))
    size = (catalog["root"] / "files" / "s1_b_vv.tif").stat().st_size
    got = 0
    for r in server.requests():
        if r["path"] == "/files/s1_b_vv.tif" and r["method"] == "GET":
            rng = r["headers"].get("range")
            assert rng, "a whole-file GET"
            a, b = rng[6:].split("-")
            got += min(int(b), size - 1) - int(a) + 1
    assert 0 < got < size / 2


def test_unsigned_reads_are_refused_by_a_signing_catalogue(stac, tmp_path):
    server = stac("--sas")
    src = StacSource(2020, "planetary-computer", url=server.url + "/")    # another API: no token endpoint
    with pytest.raises(Exception) as exc:
        make_composites(src, EXTENT, {"DEM": str(tmp_path / "dem.tif")}, padding=PADDING)
    assert "could not be read" in str(exc.value) and not (tmp_path / "dem.tif").exists()


def test_catalogue_without_a_product_says_what_to_use(tmp_path):
    src = StacSource(2020, "earth-search", url="http://127.0.0.1:9/")
    with pytest.raises(InputError) as exc:
        make_composites(src, EXTENT, {"S1": str(tmp_path / "s1.tif")}, padding=PADDING)
    assert exc.value.name == "SOURCE" and "sentinel-1-rtc" in str(exc.value) and "Earth Engine" in str(exc.value)
    assert list(tmp_path.iterdir()) == []                    # refused before any chunk folder is made


def test_no_item_over_the_extent_is_named(stac, tmp_path):
    server = stac()
    with pytest.raises(InputError) as exc:
        make_composites(_source(server), (10.0, 50.0, 10.01, 50.01), {"S2": str(tmp_path / "s2.tif")}, padding=0.0)
    assert exc.value.name == "EXTENT" and "sentinel-2-l2a" in str(exc.value)


def test_cli_stac_source(stac, tmp_path, capsys):
    from edifice.core.cli import main

    server = stac("--sas")
    rc = main(["sentinel-composites", str(tmp_path), "--extent", ",".join(map(str, EXTENT)), "--year", "2020",
               "--padding", str(PADDING), "--source", "stac", "--catalogue", "planetary-computer",
               "--stac-url", server.url + "/", "--token-url", server.url + "/api/sas/v1/token/{collection}",
               "--products", "DEM"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["source"] == "stac" and Path(out["DEM"]["path"]) == tmp_path / "dem.tif"
    rc = main(["sentinel-composites", str(tmp_path / "es"), "--extent", ",".join(map(str, EXTENT)), "--year", "2020",
               "--source", "stac", "--catalogue", "earth-search", "--stac-url", server.url + "/", "--products", "S1"])
    assert rc == 2 and "sentinel-1-rtc" in capsys.readouterr().err


@pytest.mark.parametrize("n", [0, 1, 2, 5, 20])
def test_sorted_nanmedian_equals_numpy(n):
    from edifice.core.acquire.stac import nanmedian_last_axis

    rng = np.random.default_rng(n)
    a = rng.integers(0, 5000, size=(40, 30, n)).astype(np.float32) + rng.random((40, 30, n), np.float32)
    a[rng.random(a.shape) < 0.4] = np.nan
    a[0, :, :] = np.nan                                                # pixels with no valid scene
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.nanmedian(a, axis=-1) if n else np.full((40, 30), np.nan, np.float32)
    got = nanmedian_last_axis(a.copy())
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n_scenes,side", [(1, 300), (20, 1024), (20, 2048), (20, 10000), (80, 10000),
                                           (150, 10000)])
def test_chunks_bound_the_buffers_and_tile_the_grid(n_scenes, side):
    """Two (rows, cols, scenes) float32 buffers stay within BUFFER_BYTES, and within a tenth of the whole
    stack unless that is below one 512 x 512 chunk; the chunks cover the grid once."""
    from rasterio.crs import CRS

    from edifice.core.acquire import stac
    from edifice.core.grid import Grid

    src = StacSource(2020, "planetary-computer", url="http://127.0.0.1:9/")
    grid = Grid(Affine(S2.pixel_deg, 0, 116.0, 0, -S2.pixel_deg, 40.0), side, side, CRS.from_epsg(4326).to_wkt())
    src._scenes["S2"] = [None] * n_scenes
    rows, cols = src.chunk_shape(S2, grid)
    buffers = 2 * rows * cols * n_scenes * 4
    assert (rows == stac.CHUNK_ROWS or rows == cols) and (cols % 256 == 0 or cols == grid.width)
    assert buffers <= stac.BUFFER_BYTES
    stack = n_scenes * len(S2.bands) * side * side * 4
    assert buffers <= stack / 10 or rows * cols <= stac.CHUNK_ROWS ** 2
    covered = np.zeros((side, side), np.int8)
    for b in grid.blocks(rows, block_cols=cols):
        w = b.window
        covered[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width] += 1
    assert (covered == 1).all()


def test_aligned_scenes_are_read_directly_as_the_warper_would(tmp_path):
    """A scene on the output's grid or on a grid twice as coarse (SCL) is read by window and index, with the
    same pixels GDAL's nearest-neighbour warp gives; a grid whose pixel edges cross the output's pixel
    centres is warped."""
    from rasterio.crs import CRS
    from rasterio.vrt import WarpedVRT

    from edifice.core.acquire.stac import _nearest_index, _read_on
    from edifice.core.grid import Grid

    px = S2.pixel_deg
    rng = np.random.default_rng(3)
    data = rng.integers(1, 4000, size=(60, 50)).astype(np.uint16)
    data[5, 5] = 0                                                   # nodata
    coarse = Affine(2 * px, 0, 116.0, 0, -2 * px, 40.0)
    _write(tmp_path / "coarse.tif", data, coarse, nodata=0)
    wkt = CRS.from_epsg(4326).to_wkt()
    target = Grid(Affine(px, 0, 116.0 - 7 * px, 0, -px, 40.0 - 3 * px), 130, 90, wkt)  # reaches past the scene
    with rasterio.open(tmp_path / "coarse.tif") as src:
        assert _nearest_index(src, target) is not None
        got = _read_on(src, target)
        with WarpedVRT(src, crs=wkt, transform=target.transform, width=130, height=90, src_nodata=0,
                       nodata=0) as vrt:
            want = vrt.read(1, masked=True).astype(np.float64).filled(np.nan)
        np.testing.assert_array_equal(got, want)
        assert np.isnan(got).any() and np.isfinite(got).any()
        half = Grid(Affine(px, 0, 116.0 - px / 2, 0, -px, 40.0), 20, 20, wkt)  # centres at 0, 1, 2... coarse px
        assert _nearest_index(src, half) is None                    # centres on the scene's pixel edges


def test_cancel_between_scene_reads_leaves_nothing_half_written(stac, tmp_path):
    from edifice.core.errors import Cancelled
    from edifice.core.progress import RecordingProgress

    class CancelAfterReads(RecordingProgress):
        """Cancelled from the 8th cancel check on (inside the first chunk's scene reads)."""
        checks = 0

        def is_cancelled(self):
            self.checks += 1
            return self.checks >= 8

    server = stac()
    progress = CancelAfterReads()
    src = StacSource(2020, "planetary-computer", url=server.url + "/", progress=progress)
    with pytest.raises(Cancelled):
        make_composites(src, EXTENT, {"S2": str(tmp_path / "S2.tif")}, padding=PADDING,
                        options=DownloadOptions(workers=2), progress=progress)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not (tmp_path / "S2.tif").exists()
    assert not [p for p in files if "partial" in p.name or p.suffix in (".tif", ".npy")]
