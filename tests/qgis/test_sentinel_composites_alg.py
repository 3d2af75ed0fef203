"""edifice:sentinelcomposites in real QGIS through processing.run, against the Earth Engine stand-in
(tests/servers/ee_standin.py, a real process): the service-account key comes from QGIS's authentication
database and never reaches the log or the error messages."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

pytestmark = pytest.mark.qgis

THU_S1 = Path(__file__).resolve().parents[2] / "samples" / "thu" / "thu_s1_2020.tif"
EXTENT = (116.315, 39.995, 116.325, 40.005)


def _params(ee, cfg, tmp_path, **kw):
    p = {"EXTENT": f"{EXTENT[0]},{EXTENT[2]},{EXTENT[1]},{EXTENT[3]} [EPSG:4326]", "YEAR": 2020,
         "RESOLUTION": "100", "SOURCE": 0, "PROJECT": "", "AUTH": cfg, "SERVICE_URL": ee.url, "PADDING": 0.004,
         "WORKERS": 2, "MAX_REQUEST_MB": 1, "OUTPUT_S1": str(tmp_path / "s1.tif"),
         "OUTPUT_S2": str(tmp_path / "s2.tif"), "OUTPUT_DEM": str(tmp_path / "dem.tif")}
    p.update(kw)
    return p


def test_composites_from_the_auth_database(provider, basic_authcfg, recording_feedback, ee_standin, tmp_path):
    import processing

    ee = ee_standin()
    cfg = basic_authcfg(ee.key_path.read_text(), "service-account")
    feedback = recording_feedback()
    res = processing.run("edifice:sentinelcomposites", _params(ee, cfg, tmp_path), feedback=feedback)
    with rasterio.open(res["OUTPUT_S1"]) as s1, rasterio.open(res["OUTPUT_S2"]) as s2, \
            rasterio.open(res["OUTPUT_DEM"]) as dem:
        assert s1.descriptions == ("VV_p50", "VH_p50") and s1.crs.to_epsg() == 4326
        assert s2.descriptions == ("B4_p50", "B3_p50", "B2_p50", "B8_p50")
        assert dem.descriptions == ("elevation",) and dem.dtypes[0] == "int16"
        b = s1.bounds
        assert b.left <= EXTENT[0] - 0.004 and b.top >= EXTENT[3] + 0.004
        vv = s1.read(1)
    with rasterio.open(THU_S1) as src:          # the stand-in copies these pixels
        r, c = src.index(b.left + s1.res[0] / 2, b.top - s1.res[1] / 2)
        np.testing.assert_array_equal(vv[:5, :5], src.read(1)[r:r + 5, c:c + 5])
    tokens = {r["headers"]["authorization"][7:] for r in ee.server.requests() if "authorization" in r["headers"]}
    log = "\n".join(feedback.lines)
    assert "chunk(s)" in log
    for secret in (*tokens, ee.key_info["private_key_id"], ee.key_info["private_key"].splitlines()[1]):
        assert secret not in log


def test_unregistered_project_is_a_clear_error_without_secrets(provider, basic_authcfg, ee_standin, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    ee = ee_standin("--echo-credentials")
    cfg = basic_authcfg(ee.key_path.read_text(), "service-account")
    with pytest.raises(QgsProcessingException) as exc:
        processing.run("edifice:sentinelcomposites", _params(ee, cfg, tmp_path, PROJECT="not-on-ee"))
    msg = str(exc.value)
    assert "PROJECT" in msg and "not registered for Earth Engine" in msg
    tokens = {r["headers"]["authorization"][7:] for r in ee.server.requests() if "authorization" in r["headers"]}
    assert tokens and not any(t in msg for t in tokens)
    assert not list(tmp_path.glob("*.tif"))


def test_stac_source_needs_no_credentials(provider, standin, tmp_path):
    """SOURCE stac against a static STAC API on 127.0.0.1 holding one DEM tile (the THU SRTM crop)."""
    import json
    import shutil

    import processing

    cat = tmp_path / "cat"
    (cat / "files").mkdir(parents=True)
    shutil.copy(THU_S1.parent / "thu_srtm.tif", cat / "files" / "dem.tif")
    with rasterio.open(THU_S1.parent / "thu_srtm.tif") as ds:
        b = ds.bounds
        bbox = [b.left, b.bottom, b.right, b.top]
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "dem", "collection": "cop-dem-glo-30", "bbox": bbox,
            "geometry": {"type": "Polygon", "coordinates": [[[bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]],
                                                             [bbox[0], bbox[3]], [bbox[0], bbox[1]]]]},
            "properties": {"datetime": "2021-04-22T00:00:00Z"}, "links": [],
            "assets": {"data": {"href": "{base}/files/dem.tif", "type": "image/tiff"}}}
    (cat / "items.json").write_text(json.dumps([item]))
    server = standin(Path(__file__).resolve().parents[1] / "servers" / "stac_standin.py", "--catalog", cat)
    res = processing.run("edifice:sentinelcomposites", {
        "EXTENT": f"{EXTENT[0]},{EXTENT[2]},{EXTENT[1]},{EXTENT[3]} [EPSG:4326]", "YEAR": 2020, "RESOLUTION": "100",
        "SOURCE": 1, "CATALOGUE": 0, "SERVICE_URL": server.url + "/", "PADDING": 0.004,
        "OUTPUT_S1": None, "OUTPUT_S2": None, "OUTPUT_DEM": str(tmp_path / "dem.tif")})
    assert res["OUTPUT_DEM"] == str(tmp_path / "dem.tif") and not res.get("OUTPUT_S1")
    with rasterio.open(res["OUTPUT_DEM"]) as dem, rasterio.open(THU_S1.parent / "thu_srtm.tif") as src:
        assert dem.descriptions == ("elevation",)
        r, c = src.index(dem.bounds.left + dem.res[0] / 2, dem.bounds.top - dem.res[1] / 2)
        np.testing.assert_array_equal(dem.read(1), src.read(1)[r:r + dem.height, c:c + dem.width])
    assert any(q["headers"].get("range") for q in server.requests() if q["path"] == "/files/dem.tif")
