"""edifice map-city (core.acquire.map_city): the whole open-data chain on a synthetic town of known
use served by the Overpass stand-in and the tile server (real processes on 127.0.0.1)."""
from __future__ import annotations

import json

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio

from edifice.core.acquire.imagery_sources import ImagerySource
from edifice.core.acquire.map_city import MapCityRequest, map_city
from edifice.core.errors import InputError


def _request(town, out, **kw) -> MapCityRequest:
    return MapCityRequest(extent=town.extent, extent_crs=town.crs, output_dir=str(out),
                          imagery=ImagerySource("xyz", town.xyz_url, max_zoom=19), overpass_endpoint=town.overpass_url,
                          gsd_m=1.0, chip_size=64, split_tile_m=64, encoder="resnet18", base_width=4, epochs=2,
                          batch_size=8, device="cpu", cache_dir=str(out.parent / "cache"), **kw)


def test_map_city_runs_the_chain_and_evaluates_on_the_held_back_buildings(open_data_town, tmp_path):
    out = tmp_path / "city"
    res = map_city(_request(open_data_town, out))
    o = res["outputs"]
    with rasterio.open(o["imagery"]) as img, rasterio.open(o["use_class"]) as cls:
        assert img.crs.to_epsg() == 32636 and img.res == (1.0, 1.0)
        assert (cls.width, cls.height) == (img.width, img.height)
    # every OSM footprint, labelled or not, got a use
    n_osm = pyogrio.read_info(o["osm"], layer="buildings")["features"]
    meta, _, _, data = pyogrio.raw.read(o["buildings"], columns=["use_name", "building"], read_geometry=False)
    cols = dict(zip(meta["fields"], data))
    use_name, building = cols["use_name"], cols["building"]
    assert len(use_name) == n_osm == len(open_data_town.scene["classes"])
    assert np.sum(building == "yes") > 0 and set(use_name) <= {"residential", "commercial", "industrial", "unknown"}
    # evaluated on exactly the dataset's test split of labelled buildings
    test = res["dataset"]["test"]
    n_test = test["residential"] + test["commercial"] + test["industrial"]
    assert n_test > 0 and res["evaluation"]["matched"] == n_test
    report = json.loads(open(o["report_json"]).read())
    assert report["matched"] == n_test
    assert "test split" in open(o["report_html"], encoding="utf-8").read()
    assert res["training"]["epochs_run"] == 2


def test_map_city_refuses_a_folder_in_use(open_data_town, tmp_path):
    out = tmp_path / "city"
    out.mkdir()
    (out / "x").write_text("x")
    with pytest.raises(InputError, match="OUTPUT_FOLDER"):
        map_city(_request(open_data_town, out))
    assert open_data_town.overpass.requests() == [] and open_data_town.tiles.requests() == []


def test_cli_osm_download_and_map_city_refusing_a_missing_service(open_data_town, tmp_path, capsys):
    from edifice.core.cli import main

    x0, y0, x1, y1 = open_data_town.extent
    ext = f"{x0},{y0},{x1},{y1}"
    rc = main(["osm-download", str(tmp_path / "o.gpkg"), "--extent", ext, "--extent-crs", "EPSG:32636",
               "--endpoint", open_data_town.overpass_url, "--cache-dir", str(tmp_path / "cache"), "--roads"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["buildings"]["total"] == len(open_data_town.scene["classes"])
    assert {n for n, _ in pyogrio.list_layers(tmp_path / "o.gpkg")} == {"pois", "buildings", "roads"}
    rc = main(["map-city", str(tmp_path / "city"), "--extent", ext, "--extent-crs", "EPSG:32636",
               "--endpoint", open_data_town.overpass_url, "--gsd", "1"])
    assert rc == 2 and "--xyz/--wmts/--wms" in capsys.readouterr().err
    assert not (tmp_path / "city").exists()


def test_map_city_cancel_keeps_finished_steps_and_stops_before_the_next(open_data_town, tmp_path):
    from edifice.core.errors import Cancelled
    from edifice.core.progress import Progress

    class CancelAfterOsm(Progress):
        def __init__(self):
            self.steps = []

        def info(self, message):
            if message.startswith("map-city: "):
                self.steps.append(message.split()[1])

        def is_cancelled(self):
            return "poi_maps" in self.steps

    out = tmp_path / "city"
    progress = CancelAfterOsm()
    with pytest.raises(Cancelled):
        map_city(_request(open_data_town, out), progress)
    assert progress.steps == ["imagery", "osm", "poi_maps"]
    assert (out / "imagery.tif").exists() and (out / "osm.gpkg").exists()
    assert not (out / "poi_maps.tif").exists() and not (out / "dataset").exists()
