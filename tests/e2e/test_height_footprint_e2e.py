"""Height/footprint + CCAP end to end through /usr/bin/qgis_process.bin and the example graphical model
examples/height_footprint_ccap.model3, on the bundled THU sample (real Sentinel-1 and SRTM crops,
synthetic Sentinel-2) with a random-weights checkpoint (not trained: values are not real heights)."""
from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _extent_text(ext):
    return f"{ext[0]},{ext[2]},{ext[1]},{ext[3]} [EPSG:4326]"


def _json(r):
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(r.stdout[r.stdout.index("{"):])


def _check_prediction_and_mask(height, footprint, mask, threshold, extent, h_min=2.0):
    rdeg = 0.0009
    nx = math.ceil(round(round(extent[2] - extent[0], 6) / rdeg, 6))
    ny = math.ceil(round(round(extent[3] - extent[1], 6) / rdeg, 6))
    with rasterio.open(height) as dh, rasterio.open(footprint) as df, rasterio.open(mask) as dm:
        for ds in (dh, df, dm):
            assert (ds.width, ds.height) == (nx, ny)
            assert ds.transform.almost_equals(rasterio.Affine(rdeg, 0, extent[0], 0, -rdeg, extent[3]))
        assert dh.dtypes[0] == df.dtypes[0] == "float32" and dh.nodata == df.nodata == -9999
        h, f, m = dh.read(1), df.read(1), dm.read(1)
    valid = h != -9999
    assert valid.all()                      # the sample has no NaN inside this extent
    assert (f >= 0).all() and (f <= 1).all() and (h >= 0).all()
    expect = (f >= threshold) & (h >= h_min)
    assert (m[valid] == expect[valid].astype(np.uint8)).all()
    assert 0 < expect.sum() < expect.size


def test_heightfootprint_then_ccap_via_qgis_process(qp, thu_dir, thu_checkpoint, thu_extent, tmp_path):
    extent, pad = thu_extent
    h, f, m = tmp_path / "h.tif", tmp_path / "f.tif", tmp_path / "m.tif"
    res = _json(qp("--json", "run", "edifice:heightfootprint", "--", f"SENTINEL1={thu_dir / 'thu_s1_2020.tif'}",
                   f"SENTINEL2={thu_dir / 'thu_s2_synthetic.tif'}", f"DEM={thu_dir / 'thu_srtm.tif'}",
                   f"CHECKPOINT={thu_checkpoint}", "RESOLUTION=100", f"EXTENT={_extent_text(extent)}",
                   f"PADDING={pad}", "MODE=0", "DEVICE=cpu", "BATCH_SIZE=100",
                   f"OUTPUT_HEIGHT={h}", f"OUTPUT_FOOTPRINT={f}"))
    assert res["results"]["DEVICE_USED"] == "cpu" and res["results"]["VALID_PIXELS"] == 34 * 34
    assert any("device cpu" in line for line in res["log"]["info"])
    c = _json(qp("--json", "run", "edifice:ccap", "--", f"HEIGHTS={h}", f"FOOTPRINTS={f}", "H_MIN=2",
                 "CRITERION=0", "FUSION_RATIO=0.5", f"OUTPUT_MASK={m}", f"OUTPUT_HEIGHT={tmp_path / 'uh.tif'}",
                 f"OUTPUT_FOOTPRINT={tmp_path / 'uf.tif'}"))
    t = c["results"]["THRESHOLD"]
    assert c["results"]["THRESHOLDS"] == f"{t:.3f}"
    assert any(f"threshold {t:.3f}" in line for line in c["log"]["info"])
    _check_prediction_and_mask(h, f, m, t, extent)


def test_heightfootprint_wrong_resolution_checkpoint_fails_cleanly(qp, thu_dir, thu_checkpoint, thu_extent,
                                                                   tmp_path):
    extent, pad = thu_extent
    r = qp("run", "edifice:heightfootprint", "--", f"SENTINEL1={thu_dir / 'thu_s1_2020.tif'}",
           f"SENTINEL2={thu_dir / 'thu_s2_synthetic.tif'}", f"DEM={thu_dir / 'thu_srtm.tif'}",
           f"CHECKPOINT={thu_checkpoint}", "RESOLUTION=250", f"EXTENT={_extent_text(extent)}", f"PADDING={pad}",
           f"OUTPUT_HEIGHT={tmp_path / 'h.tif'}", f"OUTPUT_FOOTPRINT={tmp_path / 'f.tif'}")
    assert r.returncode != 0
    assert "CHECKPOINT: is a 100 m model but 250 m was requested" in r.stdout + r.stderr
    assert list(tmp_path.iterdir()) == []


def test_pth_tar_checkpoint_resolution_in_metres_and_one_clip(qp, thu_dir, thu_checkpoint, tmp_path):
    """qgis_process takes SHAFTS's checkpoint.pth.tar name, RESOLUTION=100 (metres) and MAX_TILE_DEG=0; an
    old option index (RESOLUTION=0) is refused with a message saying what to give."""
    tar = tmp_path / "ck" / "checkpoint.pth.tar"
    tar.parent.mkdir()
    shutil.copy(thu_checkpoint, tar)
    out = tmp_path / "out"
    args = ["run", "edifice:heightfootprint", "--", f"SENTINEL1={thu_dir / 'thu_s1_2020.tif'}",
            f"SENTINEL2={thu_dir / 'thu_s2_synthetic.tif'}", f"DEM={thu_dir / 'thu_srtm.tif'}", f"CHECKPOINT={tar}",
            f"EXTENT={_extent_text((116.31, 39.99, 116.32, 40.0))}", "PADDING=0.005", "DEVICE=cpu",
            f"OUTPUT_HEIGHT={out / 'h.tif'}", f"OUTPUT_FOOTPRINT={out / 'f.tif'}"]
    res = _json(qp("--json", *args, "RESOLUTION=100", "MAX_TILE_DEG=0"))
    assert res["results"]["VALID_PIXELS"] == 144
    with rasterio.open(out / "h.tif") as ds:
        assert (ds.width, ds.height) == (12, 12)
    for name in ("h.tif", "f.tif", "h.qml", "f.qml"):  # the rasters and their style sidecars
        (out / name).unlink()
    r = qp(*args, "RESOLUTION=0")
    assert r.returncode != 0 and "RESOLUTION: 0 is not a resolution in metres" in r.stdout + r.stderr
    assert list(out.iterdir()) == []


def test_graphical_model_height_footprint_ccap(qp, thu_dir, thu_checkpoint, thu_extent, tmp_path):
    extent, pad = thu_extent
    model = tmp_path / "hf.model3"
    shutil.copy(ROOT / "examples" / "height_footprint_ccap.model3", model)
    out = {k: tmp_path / f"{k}.tif" for k in ("h", "f", "m", "uh", "uf")}
    r = qp("run", str(model), "--", f"s1={thu_dir / 'thu_s1_2020.tif'}", f"s2={thu_dir / 'thu_s2_synthetic.tif'}",
           f"dem={thu_dir / 'thu_srtm.tif'}", f"checkpoint={thu_checkpoint}", f"extent={_extent_text(extent)}",
           f"padding={pad}", f"heightfootprint:height={out['h']}", f"heightfootprint:footprint={out['f']}",
           f"ccap:mask={out['m']}", f"ccap:urban_height={out['uh']}", f"ccap:urban_footprint={out['uf']}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    found = re.findall(r"CCAP footprint threshold ([0-9.]+)", r.stdout + r.stderr)
    assert len(found) == 1
    _check_prediction_and_mask(out["h"], out["f"], out["m"], float(found[0]), extent)
    with rasterio.open(out["m"]) as dm, rasterio.open(out["uh"]) as du:
        m, uh = dm.read(1), du.read(1)
    assert (uh[m == 0] == -9999).all() and (uh[m == 1] != -9999).any()


_STORE_AUTH = """
import os, sys
from qgis.core import QgsApplication, QgsAuthMethodConfig
QgsApplication.setPrefixPath('/usr', True)
app = QgsApplication([], False); app.initQgis()
manager = QgsApplication.authManager()
master = open(os.environ['QGIS_AUTH_PASSWORD_FILE']).read().strip()
assert manager.masterPasswordIsSet() or manager.setMasterPassword(master, True)
config = QgsAuthMethodConfig(); config.setName('ee'); config.setMethod('Basic')
config.setConfig('username', 'service-account'); config.setConfig('password', open(sys.argv[1]).read())
assert manager.storeAuthenticationConfig(config)
print(config.id()); sys.stdout.flush(); os._exit(0)
"""


def test_graphical_model_sentinel_composites_to_ccap(qp_env, ee_standin, thu_checkpoint, thu_extent, tmp_path):
    """Extent + year -> composites from the Earth Engine stand-in (key from the authentication database of
    qgis_process's profile) -> height/footprint -> CCAP, through examples/sentinel_height_footprint.model3."""
    import subprocess
    import sys

    extent, _ = thu_extent
    ee = ee_standin()
    auth_dir = tmp_path / "auth"
    auth_dir.mkdir()
    (tmp_path / "master").write_text("edifice-e2e-master")
    env = dict(qp_env, QGIS_AUTH_DB_DIR_PATH=str(auth_dir), QGIS_AUTH_PASSWORD_FILE=str(tmp_path / "master"))
    stored = subprocess.run([sys.executable, "-c", _STORE_AUTH, str(ee.key_path)], env=env, capture_output=True,
                            text=True, timeout=120)
    cfg = stored.stdout.strip().splitlines()[-1]
    model = tmp_path / "shf.model3"
    shutil.copy(ROOT / "examples" / "sentinel_height_footprint.model3", model)
    out = {k: tmp_path / f"{k}.tif" for k in ("s1", "s2", "dem", "h", "f", "m")}
    r = subprocess.run(["/usr/bin/qgis_process.bin", "run", str(model), "--", f"extent={_extent_text(extent)}",
                        "year=2020", f"auth={cfg}", f"service_url={ee.url}", f"checkpoint={thu_checkpoint}",
                        f"composites:s1={out['s1']}", f"composites:s2={out['s2']}", f"composites:dem={out['dem']}",
                        f"heightfootprint:height={out['h']}", f"heightfootprint:footprint={out['f']}",
                        f"ccap:mask={out['m']}"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with rasterio.open(out["s1"]) as s1, rasterio.open(out["dem"]) as dem:
        assert s1.descriptions == ("VV_p50", "VH_p50") and dem.descriptions == ("elevation",)
        assert s1.bounds.left <= extent[0] - 0.03 and s1.bounds.top >= extent[3] + 0.03
    found = re.findall(r"CCAP footprint threshold ([0-9.]+)", r.stdout + r.stderr)
    assert len(found) == 1
    _check_prediction_and_mask(out["h"], out["f"], out["m"], float(found[0]), extent)
    tokens = {q["headers"]["authorization"][7:] for q in ee.server.requests() if "authorization" in q["headers"]}
    assert tokens
    for secret in (*tokens, ee.key_info["private_key_id"], ee.key_info["private_key"].splitlines()[1]):
        assert secret not in r.stdout + r.stderr


def test_graphical_model_stac_composites_to_ccap(qp_env, thu_stac, thu_checkpoint, thu_extent, tmp_path):
    """Extent + year -> composites from the STAC stand-in (Planetary Computer layout, SAS-signed asset
    reads) -> height/footprint -> CCAP, through examples/sentinel_height_footprint.model3 with source=1.
    The catalogue's scenes are the THU samples shifted so that each median is the sample itself
    (tests/servers/stac_thu_catalog.py)."""
    import subprocess

    stac_catalog = _load_module(ROOT / "tests" / "servers" / "stac_thu_catalog.py")
    extent, _ = thu_extent
    model = tmp_path / "shf.model3"
    shutil.copy(ROOT / "examples" / "sentinel_height_footprint.model3", model)
    out = {k: tmp_path / f"{k}.tif" for k in ("s1", "s2", "dem", "h", "f", "m")}
    r = subprocess.run(["/usr/bin/qgis_process.bin", "run", str(model), "--", f"extent={_extent_text(extent)}",
                        "year=2020", "source=1", "catalogue=1", f"service_url={thu_stac.url}/",
                        f"token_url={thu_stac.url}/api/sas/v1/token/{{collection}}", f"checkpoint={thu_checkpoint}",
                        f"composites:s1={out['s1']}", f"composites:s2={out['s2']}", f"composites:dem={out['dem']}",
                        f"heightfootprint:height={out['h']}", f"heightfootprint:footprint={out['f']}",
                        f"ccap:mask={out['m']}"], env=qp_env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for key, sample, bands in (("s1", "thu_s1_2020.tif", ("VV_p50", "VH_p50")),
                               ("s2", "thu_s2_synthetic.tif", ("B4_p50", "B3_p50", "B2_p50", "B8_p50"))):
        with rasterio.open(out[key]) as ds:
            assert ds.descriptions == bands
            assert ds.bounds.left <= extent[0] - 0.03 and ds.bounds.top >= extent[3] + 0.03
            got, t = ds.read().astype(np.float64), ds.transform
        area = (t.c + t.a / 2, t.f + t.e * (got.shape[1] - 0.5), t.c + t.a * (got.shape[2] - 0.5), t.f + t.e / 2)
        want, _ = stac_catalog.wrapped(ROOT / "samples" / "thu" / sample, area)
        if key == "s1":
            np.testing.assert_allclose(got, want, atol=1e-4)
        else:   # the sample where all three scenes are clear; under one scene's cloud, the mean of the other two
            diff = got - want
            under_cloud = (diff == np.mean([stac_catalog.S2_SHIFTS[0], stac_catalog.S2_SHIFTS[2]])).all(axis=0)
            assert ((diff == 0).all(axis=0) | under_cloud).all()
            assert 0 < under_cloud.sum() < 0.1 * under_cloud.size
    with rasterio.open(out["dem"]) as dem:
        assert dem.descriptions == ("elevation",)
    found = re.findall(r"CCAP footprint threshold ([0-9.]+)", r.stdout + r.stderr)
    assert len(found) == 1
    _check_prediction_and_mask(out["h"], out["f"], out["m"], float(found[0]), extent)
    files = [q for q in thu_stac.requests() if q["path"].startswith("/files/")]
    assert files and all(q["query"].get("sig") for q in files)                # every read was signed
    assert "stand-in-sas-signature" not in r.stdout + r.stderr                 # and the token never logged


def _load_module(path: Path):
    import importlib.util
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
