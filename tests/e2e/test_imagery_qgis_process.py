"""edifice:imagerydownload through qgis_process.bin against the tile stand-in (WMTS)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import rasterio

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "tests" / "servers" / "tile_server.py"
MOSAIC = "/work/shared/data/kampala/kampala_rgb_7p5cm_epsg3857.tif"


def test_wmts_download_through_qgis_process(qp, qp_env, standin, tmp_path):
    qp_env["EDIFICE_CACHE_DIR"] = str(tmp_path / "cache")  # this module's environment only
    tiles = standin(SERVER, "--source", MOSAIC)
    out = tmp_path / "wmts.tif"
    r = qp("--json", "run", "edifice:imagerydownload", "--", "SOURCE_TYPE=1",
           f"URL={tiles.url}/wmts?SERVICE=WMTS&REQUEST=GetCapabilities", "LAYER_NAME=kampala",
           "EXTENT=32.5940,32.5960,0.3500,0.3514 [EPSG:4326]", "GSD=0.5", f"OUTPUT={out}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["results"]["OUTPUT"] == str(out)
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 32636 and ds.count == 3 and ds.nodata == 0
        assert ds.tags()["EDIFICE_SOURCE_TYPE"] == "wmts" and "OpenAerialMap" in ds.tags()["EDIFICE_ATTRIBUTION"]
        assert 0.5 < (ds.read(1) > 0).mean() < 0.95
    assert any(req["query"].get("REQUEST") == "GetTile" for req in tiles.requests())
    bad = qp("run", "edifice:imagerydownload", "--", "SOURCE_TYPE=1",
             f"URL={tiles.url}/wmts?SERVICE=WMTS&REQUEST=GetCapabilities", "LAYER_NAME=nope",
             "EXTENT=32.5940,32.5960,0.3500,0.3514 [EPSG:4326]", f"OUTPUT={tmp_path / 'bad.tif'}")
    assert bad.returncode != 0 and "'nope' is not a layer" in bad.stdout + bad.stderr
    assert not (tmp_path / "bad.tif").exists()
