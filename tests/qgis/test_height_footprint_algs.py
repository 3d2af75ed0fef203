"""Height/footprint tools in real QGIS through processing.run (pytest-qgis): edifice:heightfootprint,
edifice:ccap, edifice:referencegrids, edifice:trainheightfootprint, on the bundled THU sample (real
Sentinel-1 and SRTM crops, synthetic Sentinel-2) with a random-weights checkpoint (not trained: the tests
check grids, nodata, consistency and errors, not the values' realism)."""
import json
import math

import numpy as np
import pytest
import rasterio

pytestmark = pytest.mark.qgis


def _extent_text(ext):
    return f"{ext[0]},{ext[2]},{ext[1]},{ext[3]} [EPSG:4326]"


def _hf_params(thu_dir, ckpt, extent, padding, tmp_path, **kw):
    p = {"SENTINEL1": str(thu_dir / "thu_s1_2020.tif"), "SENTINEL2": str(thu_dir / "thu_s2_synthetic.tif"),
         "DEM": str(thu_dir / "thu_srtm.tif"), "CHECKPOINT": str(ckpt), "RESOLUTION": "100",
         "EXTENT": _extent_text(extent), "PADDING": padding, "MODE": 0, "DEVICE": "cpu", "BATCH_SIZE": 64,
         "OUTPUT_HEIGHT": str(tmp_path / "h.tif"), "OUTPUT_FOOTPRINT": str(tmp_path / "f.tif")}
    p.update(kw)
    return p


def test_provider_lists_height_footprint_algorithms(provider):
    ids = {a.id() for a in provider.algorithms()}
    assert {"edifice:heightfootprint", "edifice:ccap", "edifice:referencegrids",
            "edifice:trainheightfootprint"} <= ids


HOLE = (116.315, 40.000, 116.322, 40.006)              # NaN hole cut into the S-1 copy (degrees)


@pytest.fixture(scope="module")
def hf_run(provider, thu_dir, thu_checkpoint, thu_extent, tmp_path_factory):
    """One edifice:heightfootprint run on the THU sample whose S-1 has a NaN hole (shared by tests)."""
    import processing

    d = tmp_path_factory.mktemp("hf")
    extent, pad = thu_extent
    s1 = d / "s1_holes.tif"
    with rasterio.open(thu_dir / "thu_s1_2020.tif") as src:
        prof, data, t = src.profile, src.read(), src.transform
    cols, rows = np.arange(data.shape[2]), np.arange(data.shape[1])
    xc, yc = t.c + (cols + 0.5) * t.a, t.f + (rows + 0.5) * t.e
    hole = ((yc >= HOLE[1]) & (yc <= HOLE[3]))[:, None] & ((xc >= HOLE[0]) & (xc <= HOLE[2]))[None, :]
    data[:, hole] = np.nan
    with rasterio.open(s1, "w", **prof) as dst:
        dst.write(data)
    res = processing.run("edifice:heightfootprint", _hf_params(thu_dir, thu_checkpoint, extent, pad, d,
                                                               SENTINEL1=str(s1)))
    with rasterio.open(res["OUTPUT_HEIGHT"]) as dh, rasterio.open(res["OUTPUT_FOOTPRINT"]) as df:
        res["h"], res["f"] = dh.read(1), df.read(1)
    return res


def test_heightfootprint_grid_and_nodata(hf_run, thu_extent):
    """Output grid per shafts-compat step 7; nodata exactly where the S-1 centre pixel is NaN."""
    extent, _ = thu_extent
    assert hf_run["DEVICE_USED"] == "cpu"
    rdeg = 0.0009
    nx = math.ceil(round(round(extent[2] - extent[0], 6) / rdeg, 6))
    ny = math.ceil(round(round(extent[3] - extent[1], 6) / rdeg, 6))
    for key in ("OUTPUT_HEIGHT", "OUTPUT_FOOTPRINT"):
        with rasterio.open(hf_run[key]) as ds:
            assert (ds.width, ds.height) == (nx, ny) == (34, 34)
            assert ds.transform.almost_equals(rasterio.Affine(rdeg, 0, extent[0], 0, -rdeg, extent[3]))
            assert ds.dtypes[0] == "float32" and ds.nodata == -9999.0 and ds.crs.to_epsg() == 4326
    h, f = hf_run["h"], hf_run["f"]
    oc = extent[0] + rdeg * (np.arange(nx) + 0.5)
    orow = extent[3] - rdeg * (np.arange(ny) + 0.5)
    cx0, cy0, cx1, cy1 = HOLE
    margin = 2e-4                                          # > one S-1 pixel (9e-5°) of the clipped grid
    inside = ((orow > cy0 + margin) & (orow < cy1 - margin))[:, None] & ((oc > cx0 + margin) & (oc < cx1 - margin))
    outside = ~(((orow > cy0 - margin) & (orow < cy1 + margin))[:, None]
                & ((oc > cx0 - margin) & (oc < cx1 + margin)))
    assert inside.sum() >= 20
    assert (h[inside] == -9999).all() and (f[inside] == -9999).all()
    assert (h[outside] != -9999).all() and (f[outside] != -9999).all()
    valid = h != -9999
    assert (f[valid] >= 0).all() and (f[valid] <= 1).all() and (h[valid] >= 0).all()
    assert ((h[valid] == 0) | (h[valid] >= 2.0)).all()     # heights below h_min (2 m) are set to 0
    assert np.ptp(f[valid]) > 0.3                          # the rescaled random model has contrast


def test_ccap_mask_matches_reported_threshold(hf_run, tmp_path):
    """CCAP mask == (footprint >= reported threshold) & (height >= h_min) on non-nodata pixels."""
    import processing

    h, f = hf_run["h"], hf_run["f"]
    valid = h != -9999
    mask_p, mh, mf = tmp_path / "mask.tif", tmp_path / "mh.tif", tmp_path / "mf.tif"
    cres = processing.run("edifice:ccap", {"HEIGHTS": [hf_run["OUTPUT_HEIGHT"]],
                                           "FOOTPRINTS": [hf_run["OUTPUT_FOOTPRINT"]],
                                           "H_MIN": 2.0, "CRITERION": 0, "FUSION_RATIO": 0.5,
                                           "OUTPUT_MASK": str(mask_p), "OUTPUT_HEIGHT": str(mh),
                                           "OUTPUT_FOOTPRINT": str(mf)})
    t_ = cres["THRESHOLD"]
    assert 0.05 <= t_ <= 0.9 and cres["THRESHOLDS"] == f"{t_:.3f}"
    with rasterio.open(mask_p) as dm, rasterio.open(mh) as a, rasterio.open(mf) as b, \
            rasterio.open(hf_run["OUTPUT_HEIGHT"]) as src:
        m, uh, uf = dm.read(1), a.read(1), b.read(1)
        assert dm.transform == src.transform and dm.nodata == 255 and dm.dtypes[0] == "uint8"
    assert (m[~valid] == 255).all()
    expect = (f >= t_) & (h >= 2.0)
    assert (m[valid] == expect[valid].astype(np.uint8)).all()
    assert cres["URBAN_PIXELS"] == int(expect[valid].sum()) > 0
    assert 0 < (m == 1).sum() < valid.sum()                # the threshold separates something
    assert (uh[m != 1] == -9999).all() and np.allclose(uh[m == 1], h[m == 1])
    assert (uf[m != 1] == -9999).all() and np.allclose(uf[m == 1], f[m == 1])


def test_ccap_fuses_two_predictions(hf_run, tmp_path):
    """Two pairs: one threshold each, urban where both masks agree (ratio 1.0), masked _2 outputs."""
    import processing

    h, f = hf_run["h"], hf_run["f"]
    with rasterio.open(hf_run["OUTPUT_FOOTPRINT"]) as ds:
        prof = ds.profile
    f2 = np.where(f == -9999, f, np.clip(f * 0.8 + 0.05 * np.sin(np.arange(f.size).reshape(f.shape)), 0, 1))
    with rasterio.open(tmp_path / "f2.tif", "w", **prof) as dst:
        dst.write(f2.astype(np.float32)[None])
    out = processing.run("edifice:ccap", {
        "HEIGHTS": [hf_run["OUTPUT_HEIGHT"], hf_run["OUTPUT_HEIGHT"]],
        "FOOTPRINTS": [hf_run["OUTPUT_FOOTPRINT"], str(tmp_path / "f2.tif")], "H_MIN": 2.0, "FUSION_RATIO": 1.0,
        "OUTPUT_MASK": str(tmp_path / "m.tif"), "OUTPUT_HEIGHT": str(tmp_path / "uh.tif"),
        "OUTPUT_FOOTPRINT": str(tmp_path / "uf.tif")})
    t1, t2 = (float(v) for v in out["THRESHOLDS"].split(","))
    with rasterio.open(tmp_path / "m.tif") as ds:
        m = ds.read(1)
    valid = h != -9999
    both = ((f >= t1) & (h >= 2)) & ((f2 >= t2) & (h >= 2))
    assert (m[valid] == both[valid].astype(np.uint8)).all() and (m[~valid] == 255).all()
    assert (tmp_path / "uh_2.tif").exists() and (tmp_path / "uf_2.tif").exists()


def _warped(src_path, dst_path, crs):
    from rasterio.warp import Resampling, calculate_default_transform, reproject
    with rasterio.open(src_path) as src:
        t, w, h = calculate_default_transform(src.crs, crs, src.width, src.height, *src.bounds)
        prof = dict(src.profile, crs=crs, transform=t, width=w, height=h)
        with rasterio.open(dst_path, "w", **prof) as dst:
            for b in range(1, src.count + 1):
                reproject(rasterio.band(src, b), rasterio.band(dst, b), resampling=Resampling.nearest)


def _three_band_s2(src_path, dst_path):
    with rasterio.open(src_path) as src:
        prof, data = dict(src.profile, count=3), src.read([1, 2, 3])
    with rasterio.open(dst_path, "w", **prof) as dst:
        dst.write(data)


def _checkpoint_250(path):
    import torch

    from edifice.models.checkpoint import save_checkpoint
    from edifice.models.shafts import build_shafts_model, shafts_card
    torch.manual_seed(1)
    save_checkpoint(path, build_shafts_model(250).state_dict(), shafts_card(250, "multi", 1))


@pytest.mark.parametrize("case,match", [
    ("dem_other_crs", "DEM: is on EPSG:3857"),
    ("s2_three_bands", "SENTINEL2: .* has 3 band"),
    ("extent_not_covered", "SENTINEL1: .* covers"),
    ("checkpoint_250m", "CHECKPOINT: is a 250 m model but 100 m"),
    ("bad_device", "DEVICE"),
])
def test_heightfootprint_bad_input(provider, thu_dir, thu_checkpoint, thu_extent, tmp_path, case, match):
    import processing
    from qgis.core import QgsProcessingException

    extent, pad = thu_extent
    p = _hf_params(thu_dir, thu_checkpoint, extent, pad, tmp_path)
    if case == "dem_other_crs":
        _warped(thu_dir / "thu_srtm.tif", tmp_path / "dem3857.tif", "EPSG:3857")
        p["DEM"] = str(tmp_path / "dem3857.tif")
    elif case == "s2_three_bands":
        _three_band_s2(thu_dir / "thu_s2_synthetic.tif", tmp_path / "s2_3.tif")
        p["SENTINEL2"] = str(tmp_path / "s2_3.tif")
    elif case == "extent_not_covered":
        p["EXTENT"] = _extent_text((116.33, 40.01, 116.36, 40.04))
    elif case == "checkpoint_250m":
        _checkpoint_250(tmp_path / "c250.pth")
        p["CHECKPOINT"] = str(tmp_path / "c250.pth")
    elif case == "bad_device":
        p["DEVICE"] = "tpu:7"
    with pytest.raises(QgsProcessingException, match=match):
        processing.run("edifice:heightfootprint", p)
    assert not (tmp_path / "h.tif").exists() and not (tmp_path / "f.tif").exists()
    assert not list(tmp_path.glob(".*partial*"))


def test_ccap_bad_input(provider, thu_dir, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    s1 = str(thu_dir / "thu_s1_2020.tif")
    with pytest.raises(QgsProcessingException, match="FOOTPRINTS: 1 footprint raster"):
        processing.run("edifice:ccap", {"HEIGHTS": [s1, s1], "FOOTPRINTS": [s1],
                                        "OUTPUT_MASK": str(tmp_path / "m.tif")})
    with rasterio.open(s1) as src:  # one band of the S-1 grid: a single-band raster on another grid than SRTM's
        profile = dict(src.profile, count=1)
        with rasterio.open(tmp_path / "vv.tif", "w", **profile) as dst:
            dst.write(src.read(1), 1)
    with pytest.raises(QgsProcessingException, match="not on the same grid"):
        processing.run("edifice:ccap", {"HEIGHTS": [str(tmp_path / "vv.tif")],
                                        "FOOTPRINTS": [str(thu_dir / "thu_srtm.tif")],
                                        "OUTPUT_MASK": str(tmp_path / "m.tif")})
    with pytest.raises(QgsProcessingException, match="HEIGHT_1: .* has 2 band"):
        processing.run("edifice:ccap", {"HEIGHTS": [s1], "FOOTPRINTS": [str(thu_dir / "thu_srtm.tif")],
                                        "OUTPUT_MASK": str(tmp_path / "m.tif")})
    assert not (tmp_path / "m.tif").exists()


def test_heightfootprint_outputs_are_styled(provider, thu_dir, thu_checkpoint, thu_extent, tmp_path):
    import processing
    from qgis.core import QgsProject

    _, pad = thu_extent
    QgsProject.instance().removeAllMapLayers()
    processing.runAndLoadResults("edifice:heightfootprint", _hf_params(thu_dir, thu_checkpoint,
                                                                       (116.31, 39.99, 116.317, 39.997), pad, tmp_path))
    layers = {lyr.source(): lyr for lyr in QgsProject.instance().mapLayers().values()}
    try:
        for path, vmax in ((str(tmp_path / "h.tif"), 60.0), (str(tmp_path / "f.tif"), 1.0)):
            r = layers[path].renderer()
            assert r.type() == "singlebandpseudocolor"
            assert r.classificationMin() == 0 and r.classificationMax() == vmax
    finally:
        QgsProject.instance().removeAllMapLayers()


# ---- reference grids and training -------------------------------------------------------------------
def _write_buildings(path, geoms, heights, crs):
    import numpy as np
    import pyogrio
    import shapely
    pyogrio.raw.write(str(path), shapely.to_wkb(np.asarray(geoms, dtype=object)), [np.asarray(heights)],
                      ["height"], driver="GPKG", geometry_type="Polygon", crs=crs, layer="buildings")


def _thu_buildings(path, n=12):
    """n x n squares (50 x 50 m, one per 100 m cell) centred on the THU extent in UTM 50N, height 3+i+j m,
    and an 8 x 8 m, 30 m tall "sliver" one row below."""
    import shapely
    from pyproj import Transformer
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32650", always_xy=True).transform(116.32, 40.002)
    x0, y0 = math.floor(x / 100) * 100 - n * 50, math.floor(y / 100) * 100 + n * 50
    geoms, heights = [], []
    for i in range(n):
        for j in range(n):
            cx, cy = x0 + (j + 0.5) * 100, y0 - (i + 0.5) * 100
            geoms.append(shapely.box(cx - 25, cy - 25, cx + 25, cy + 25))
            heights.append(3.0 + i + j)
    cx, cy = x0 + 50, y0 - (n + 0.5) * 100
    geoms.append(shapely.box(cx - 4, cy - 4, cx + 4, cy + 4))
    heights.append(30.0)
    _write_buildings(path, geoms, heights, "EPSG:32650")
    return (x0, y0 - (n + 1) * 100, x0 + n * 100, y0)


def test_referencegrids_hand_checked(provider, tmp_path):
    import processing

    gpkg = tmp_path / "b.gpkg"
    xmin, ymin, xmax, ymax = _thu_buildings(gpkg, n=4)
    res = processing.run("edifice:referencegrids", {
        "INPUT": f"{gpkg}|layername=buildings", "HEIGHT_FIELD": "height", "RESOLUTION": "100",
        "EXTENT": f"{xmin},{xmax},{ymin},{ymax} [EPSG:32650]", "APPLY_FILTERS": True,
        "OUTPUT_FOOTPRINT": str(tmp_path / "lam.tif"), "OUTPUT_HEIGHT": str(tmp_path / "hav.tif")})
    with rasterio.open(tmp_path / "lam.tif") as a, rasterio.open(tmp_path / "hav.tif") as b:
        lam, hav = a.read(1), b.read(1)
        assert a.shape == (5, 4) and a.transform.a == 100 and a.crs.to_epsg() == 32650
    assert np.allclose(lam[:4], 0.25)                                   # 50 x 50 m in 100 x 100 m
    assert np.allclose(hav[:4], 3.0 + np.add.outer(np.arange(4), np.arange(4)))
    # last row: the 8 x 8 m, 30 m building has 1/20² < λp = 0.0064 < 4/20² and H > 20 m: a sliver -> nodata
    assert (lam[4] == -9999).all() and (hav[4] == -9999).all()
    assert res["SAMPLES"] == 16


def test_referencegrids_bad_field_and_geographic_crs(provider, tmp_path):
    import processing
    import shapely
    from qgis.core import QgsProcessingException

    gpkg = tmp_path / "b.gpkg"
    _thu_buildings(gpkg, n=2)
    with pytest.raises(QgsProcessingException, match="HEIGHT_FIELD: field 'hoehe'"):
        processing.run("edifice:referencegrids", {"INPUT": f"{gpkg}|layername=buildings", "HEIGHT_FIELD": "hoehe",
                                                  "OUTPUT_FOOTPRINT": str(tmp_path / "l.tif"),
                                                  "OUTPUT_HEIGHT": str(tmp_path / "h.tif")})
    g4326 = tmp_path / "g.gpkg"
    _write_buildings(g4326, [shapely.box(116.3, 40.0, 116.301, 40.001)], [10.0], "EPSG:4326")
    with pytest.raises(QgsProcessingException, match="projected CRS"):
        processing.run("edifice:referencegrids", {"INPUT": f"{g4326}|layername=buildings", "HEIGHT_FIELD": "height",
                                                  "OUTPUT_FOOTPRINT": str(tmp_path / "l.tif"),
                                                  "OUTPUT_HEIGHT": str(tmp_path / "h.tif")})
    assert not (tmp_path / "l.tif").exists() and not (tmp_path / "h.tif").exists()


@pytest.fixture(scope="module")
def thu_reference(provider, tmp_path_factory):
    import processing
    d = tmp_path_factory.mktemp("ref")
    xmin, ymin, xmax, ymax = _thu_buildings(d / "b.gpkg", n=8)
    processing.run("edifice:referencegrids", {
        "INPUT": f"{d / 'b.gpkg'}|layername=buildings", "HEIGHT_FIELD": "height", "RESOLUTION": 100,
        "EXTENT": f"{xmin},{xmax},{ymin},{ymax} [EPSG:32650]",
        "OUTPUT_FOOTPRINT": str(d / "lam.tif"), "OUTPUT_HEIGHT": str(d / "hav.tif")})
    return d / "lam.tif", d / "hav.tif"


def _train_params(thu_dir, ref, out, **kw):
    p = {"SENTINEL1": str(thu_dir / "thu_s1_2020.tif"), "SENTINEL2": str(thu_dir / "thu_s2_synthetic.tif"),
         "DEM": str(thu_dir / "thu_srtm.tif"), "REFERENCE_FOOTPRINT": str(ref[0]), "REFERENCE_HEIGHT": str(ref[1]),
         "RESOLUTION": "100", "PADDING": 0.005, "WEIGHTING": 1, "EPOCHS": 2, "BATCH_SIZE": 16, "DEVICE": "cpu",
         "SEED": 3, "OUTPUT": str(out)}
    p.update(kw)
    return p


def test_train_writes_a_checkpoint_the_predictor_loads(provider, thu_dir, thu_reference, tmp_path):
    import processing

    from edifice.models.shafts import load_shafts_checkpoint

    out = tmp_path / "trained.pth"
    res = processing.run("edifice:trainheightfootprint", _train_params(thu_dir, thu_reference, out))
    assert res["OUTPUT"] == str(out) and res["BEST_EPOCH"] in (1, 2) and res["DEVICE_USED"] == "cpu"
    ck = load_shafts_checkpoint(out)
    tr = ck.card["training"]
    assert ck.source == "edifice" and ck.resolution_m == 100 and ck.task == "multi"
    assert tr["samples_train"] + tr["samples_val"] == 64 and tr["weighting"] == "fixed" and tr["seed"] == 3
    assert set(ck.card["metrics"]["val"]) == {"height", "footprint"}
    metrics = json.loads(res["METRICS"], parse_constant=lambda c: pytest.fail(f"METRICS holds {c}"))
    assert set(metrics) == {"height", "footprint"}                        # strict JSON (NaN -> null)


def test_train_cancel_writes_nothing(provider, thu_dir, thu_reference, tmp_path):
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    class CancelInTraining(QgsProcessingFeedback):
        def pushInfo(self, info):  # noqa: N802 - cancel once the samples are cut
            if "training and" in info:
                self.cancel()
            super().pushInfo(info)

    out = tmp_path / "cancelled.pth"
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.run("edifice:trainheightfootprint", _train_params(thu_dir, thu_reference, out),
                       feedback=CancelInTraining())
    assert list(tmp_path.iterdir()) == []


def test_train_bad_reference(provider, thu_dir, thu_reference, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="REFERENCE_HEIGHT: is not on the grid"):
        processing.run("edifice:trainheightfootprint", _train_params(
            thu_dir, (thu_reference[0], thu_dir / "thu_srtm.tif"), tmp_path / "x.pth"))
    assert not (tmp_path / "x.pth").exists()


def test_heightfootprint_default_extent_and_cancel(provider, thu_dir, thu_checkpoint, tmp_path):
    """No EXTENT: the S-1 extent shrunk by PADDING anchors the grid. Cancel: no output file."""
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    p = _hf_params(thu_dir, thu_checkpoint, (0, 0, 1, 1), 0.015, tmp_path)
    del p["EXTENT"]
    res = processing.run("edifice:heightfootprint", p)
    with rasterio.open(thu_dir / "thu_s1_2020.tif") as s1, rasterio.open(res["OUTPUT_HEIGHT"]) as out:
        b = s1.bounds
        assert out.transform.c == pytest.approx(b.left + 0.015) and out.transform.f == pytest.approx(b.top - 0.015)
        assert out.width == math.ceil(round(round(b.right - b.left - 0.03, 6) / 0.0009, 6))

    class CancelAtModel(QgsProcessingFeedback):
        def pushInfo(self, info):  # noqa: N802 - cancel when the model starts
            if "on device" in info:
                self.cancel()
            super().pushInfo(info)

    d = tmp_path / "cancel"
    d.mkdir()
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.run("edifice:heightfootprint", dict(p, OUTPUT_HEIGHT=str(d / "h.tif"),
                                                       OUTPUT_FOOTPRINT=str(d / "f.tif")), feedback=CancelAtModel())
    assert list(d.iterdir()) == []


SMALL = (116.31, 39.99, 116.32, 40.0)                  # 12 x 12 output pixels inside the THU sample


def test_checkpoint_pth_tar_accepted_and_runs(provider, thu_dir, thu_checkpoint, thu_extent, tmp_path):
    """SHAFTS publishes checkpoint.pth.tar names: the file parameters (and the example model's input) take
    them, and the run works; RESOLUTION is given in metres; MAX_TILE_DEG 0 is one clip."""
    import shutil

    import processing
    from qgis.core import QgsApplication

    reg = QgsApplication.processingRegistry()
    tar = tmp_path / "checkpoint.pth.tar"
    shutil.copy(thu_checkpoint, tar)
    for alg_id, name in (("edifice:heightfootprint", "CHECKPOINT"), ("edifice:trainheightfootprint", "INIT_CHECKPOINT")):
        param = reg.algorithmById(alg_id).parameterDefinition(name)
        assert param.extension() == "" and "*.pth.tar" in param.fileFilter()
        assert param.checkValueIsAcceptable(str(tar)) and param.checkValueIsAcceptable(str(thu_checkpoint))
    res = processing.run("edifice:heightfootprint", _hf_params(thu_dir, tar, SMALL, 0.005, tmp_path,
                                                               RESOLUTION="100", MAX_TILE_DEG=0))
    assert res["VALID_PIXELS"] == 144
    with rasterio.open(res["OUTPUT_HEIGHT"]) as ds:
        assert (ds.width, ds.height) == (12, 12) and ds.transform.a == pytest.approx(0.0009)


def test_resolution_is_given_in_metres(provider, thu_dir, thu_checkpoint, tmp_path):
    import processing
    from qgis.core import QgsApplication, QgsProcessingException

    for alg_id in ("edifice:heightfootprint", "edifice:trainheightfootprint", "edifice:referencegrids"):
        param = QgsApplication.processingRegistry().algorithmById(alg_id).parameterDefinition("RESOLUTION")
        assert param.usesStaticStrings() and param.options() == ["100", "250", "500", "1000"]
        assert param.defaultValue() == "100"
    # 250 reaches the core as 250 m (the 100 m checkpoint then refuses it by name)
    with pytest.raises(QgsProcessingException, match="CHECKPOINT: is a 100 m model but 250 m was requested"):
        processing.run("edifice:heightfootprint", _hf_params(thu_dir, thu_checkpoint, SMALL, 0.005, tmp_path,
                                                             RESOLUTION="250"))
    with pytest.raises(QgsProcessingException, match="CHECKPOINT: is a 100 m model but 1000 m was requested"):
        processing.run("edifice:heightfootprint", _hf_params(thu_dir, thu_checkpoint, SMALL, 0.005, tmp_path,
                                                             RESOLUTION=1000))          # a number works too
    with pytest.raises(QgsProcessingException, match="RESOLUTION: 0 is not a resolution in metres"):
        processing.run("edifice:heightfootprint", _hf_params(thu_dir, thu_checkpoint, SMALL, 0.005, tmp_path,
                                                             RESOLUTION=0))             # an old option index
    assert not (tmp_path / "h.tif").exists()


def test_single_task_checkpoint_without_target_names_target(provider, thu_dir, tmp_path):
    import processing
    import torch
    from qgis.core import QgsProcessingException

    from edifice.models.shafts import build_shafts_model

    ckpt = tmp_path / "check_pt_senet_100m_STL.pth"
    torch.save({"epoch": 1, "state_dict": build_shafts_model(100, "height").state_dict()}, ckpt)
    with pytest.raises(QgsProcessingException, match="TARGET: is not set.* Fix: set TARGET"):
        processing.run("edifice:heightfootprint", _hf_params(thu_dir, ckpt, SMALL, 0.005, tmp_path))
    assert not (tmp_path / "h.tif").exists()


def test_train_same_weights_from_qgis_and_cli_and_single_task(provider, thu_dir, thu_reference, tmp_path):
    """Issue 16 item 4: with the same seed and thread count, processing.run and the CLI (another
    process, another ambient thread setting) write identical weights; TASK trains one task only."""
    import os
    import subprocess
    import sys

    import processing
    import torch

    from edifice.models.checkpoint import load_checkpoint
    from edifice.models.shafts import load_shafts_checkpoint

    q = tmp_path / "qgis.pth"
    processing.run("edifice:trainheightfootprint", _train_params(thu_dir, thu_reference, q, EPOCHS=1, THREADS=2))
    c = tmp_path / "cli.pth"
    cmd = [sys.executable, "-m", "edifice.core.cli", "train-height-footprint", str(thu_dir / "thu_s1_2020.tif"),
           str(thu_dir / "thu_s2_synthetic.tif"), str(thu_dir / "thu_srtm.tif"), str(thu_reference[0]),
           str(thu_reference[1]), str(c), "--padding", "0.005", "--weighting", "fixed", "--epochs", "1",
           "--batch-size", "16", "--device", "cpu", "--seed", "3", "--threads", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    sq, sc = load_checkpoint(str(q))[0], load_checkpoint(str(c))[0]
    assert all(torch.equal(sq[k], sc[k]) for k in sq)
    h = tmp_path / "height.pth"
    processing.run("edifice:trainheightfootprint", _train_params(thu_dir, thu_reference, h, EPOCHS=1, TASK=1))
    ck = load_shafts_checkpoint(h)
    assert ck.task == "height" and set(ck.card["metrics"]["val"]) == {"height"}
