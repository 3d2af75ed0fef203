"""edifice:imagerydownload in real QGIS (processing.run) against the tile stand-in: a URL, a QGIS
web layer's data source (XYZ, WMS), and a key from QGIS's authentication database that never
reaches the log, the output or the project file."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import rasterio

pytestmark = pytest.mark.qgis

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "tests" / "servers" / "tile_server.py"
MOSAIC = "/work/shared/data/kampala/kampala_rgb_7p5cm_epsg3857.tif"
EXTENT = "32.5940,32.5960,0.3500,0.3514 [EPSG:4326]"
KEY = "SEKRET-qgis-key-51c0"


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("EDIFICE_CACHE_DIR", str(tmp_path / "cache"))


def _run(params, feedback=None):
    import processing

    return processing.run("edifice:imagerydownload", params, feedback=feedback)


def test_xyz_url_and_the_same_service_as_a_qgis_layer(provider, standin, tmp_path):
    from qgis.core import QgsRasterLayer

    tiles = standin(SERVER, "--source", MOSAIC)
    template = tiles.url + "/xyz/{z}/{x}/{y}.png"
    out = tmp_path / "url.tif"
    res = _run({"SOURCE_TYPE": 0, "URL": template, "EXTENT": EXTENT, "GSD": 0.5, "MAX_ZOOM": 21,
                "ATTRIBUTION": "OAM", "OUTPUT": str(out)})
    assert res["OUTPUT"] == str(out)
    with rasterio.open(out) as ds:
        a = ds.read()
        assert ds.crs.to_epsg() == 32636 and ds.res == (0.5, 0.5) and ds.nodata == 0
        assert ds.tags()["EDIFICE_ATTRIBUTION"] == "OAM"
    assert 0.5 < (a[0] > 0).mean() < 0.95
    layer = QgsRasterLayer(f"type=xyz&url={quote(template, safe='')}&zmax=21&zmin=0", "kampala xyz", "wms")
    out2 = tmp_path / "layer.tif"
    _run({"SOURCE_TYPE": 3, "SOURCE_LAYER": layer, "EXTENT": EXTENT, "GSD": 0.5, "OUTPUT": str(out2)})
    with rasterio.open(out2) as ds:
        np.testing.assert_array_equal(ds.read(), a)
    wms = QgsRasterLayer(f"contextualWMSLegend=0&crs=EPSG:3857&dpiMode=7&featureCount=10&format=image/png"
                         f"&layers=kampala&styles=&url={tiles.url}/wms", "kampala wms", "wms")
    out3 = tmp_path / "wms.tif"
    _run({"SOURCE_TYPE": 3, "SOURCE_LAYER": wms, "EXTENT": EXTENT, "GSD": 0.5, "OUTPUT": str(out3)})
    with rasterio.open(out3) as ds:
        b = ds.read()
    both = (a[0] > 0) & (b[0] > 0)
    assert both.sum() > 0.95 * (a[0] > 0).sum() and np.abs(a.astype(int) - b.astype(int))[:, both].mean() < 6


def test_key_from_authcfg_never_reaches_log_output_or_project(provider, standin, tmp_path, recording_feedback):
    from qgis.core import (QgsApplication, QgsAuthMethodConfig, QgsProcessingException, QgsProject,
                           QgsRasterLayer)

    tiles = standin(SERVER, "--source", MOSAIC, "--key", KEY)
    manager = QgsApplication.authManager()
    if not manager.masterPasswordIsSet():
        assert manager.setMasterPassword("edifice-test-master", True)
    config = QgsAuthMethodConfig()
    config.setName("tile key")
    config.setMethod("Basic")
    config.setConfig("username", "me")
    config.setConfig("password", KEY)
    assert manager.storeAuthenticationConfig(config)
    tiles.set_faults([{"kind": "status", "status": 429, "retry_after": 0, "times": 1}])  # a retry message
    fb = recording_feedback()
    out = tmp_path / "keyed.tif"
    _run({"SOURCE_TYPE": 0, "URL": tiles.url + "/xyz/{z}/{x}/{y}.png", "KEY_PARAM": "key",
          "AUTHCFG": config.id(), "EXTENT": EXTENT, "MAX_ZOOM": 21, "OUTPUT": str(out)}, fb)
    with rasterio.open(out) as ds:
        assert ds.read(1).any()                                  # the key was sent and accepted
    assert any("retrying" in line for line in fb.lines)
    project = QgsProject()
    project.addMapLayer(QgsRasterLayer(str(out), "keyed"))
    assert project.write(str(tmp_path / "p.qgs"))
    fb2 = recording_feedback()
    with pytest.raises(QgsProcessingException, match="AUTHCFG"):   # {key} in the URL and no configuration
        _run({"SOURCE_TYPE": 0, "URL": tiles.url + "/xyz/{z}/{x}/{y}.png?key={key}", "EXTENT": EXTENT,
              "OUTPUT": str(tmp_path / "none.tif")}, fb2)
    text = "\n".join(fb.lines + fb2.lines)
    assert KEY not in text
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert KEY.encode() not in p.read_bytes(), p


def test_qgis_wmts_and_xyz_source_strings_are_read(provider):
    from edifice.processing_algs.imagery_download_alg import source_from_qgis_uri

    wmts = source_from_qgis_uri("contextualWMSLegend=0&crs=EPSG:3857&dpiMode=7&featureCount=10&format=image/jpeg"
                                "&layers=ortho&styles=default&tileMatrixSet=GoogleMapsCompatible"
                                "&url=https://s.example/wmts/1.0.0/WMTSCapabilities.xml&authcfg=abc1234")
    assert wmts == {"kind": "wmts", "url": "https://s.example/wmts/1.0.0/WMTSCapabilities.xml?SERVICE=WMTS&"
                    "REQUEST=GetCapabilities", "layer": "ortho", "style": "default",
                    "tile_matrix_set": "GoogleMapsCompatible", "image_format": "image/jpeg", "authcfg": "abc1234"}
    xyz = source_from_qgis_uri("type=xyz&url=https://t.example/%7Bz%7D/%7Bx%7D/%7B-y%7D.png%3Fk%3D1&zmax=17&zmin=2")
    assert xyz == {"kind": "xyz", "url": "https://t.example/{z}/{x}/{-y}.png?k=1", "min_zoom": 2, "max_zoom": 17,
                   "authcfg": ""}
