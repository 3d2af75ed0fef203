"""edifice:buildingsamples core: rooftop / 60.96 m buffer chips, street-view images, POIs, manifest."""
from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
from pyproj import Transformer

from edifice.core.buildingsense.samples import PoiSource, SampleSettings, building_samples, load_manifest, poi_category
from edifice.core.errors import Cancelled, InputError
from edifice.core.progress import Progress

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("_bsense_scene", Path(__file__).with_name("_bsense_scene.py"))
_scene_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_scene_mod)
UTM, X0, Y0, PX = _scene_mod.UTM, _scene_mod.X0, _scene_mod.Y0, _scene_mod.PX  # raster: 800 x 800 px


pattern = _scene_mod.pattern


def write_raster(path: Path, dtype="uint8"):
    return _scene_mod.write_pattern_raster(path, 800, dtype)


# id, polygon (UTM), height, year
def buildings_utm():
    tri = shapely.Polygon([(X0 + 100, Y0 - 300), (X0 + 120, Y0 - 300), (X0 + 100, Y0 - 280)])
    return [("t-1", tri, 12.5, 1931),
            ("sq/2", shapely.box(X0 + 200, Y0 - 210, X0 + 210, Y0 - 200), 30.0, None),
            ("off", shapely.box(X0 + 900, Y0 - 100, X0 + 910, Y0 - 90), None, 2001)]


def write_buildings(path: Path, crs=UTM):
    tr = Transformer.from_crs(UTM, crs, always_xy=True)
    rows = buildings_utm()
    geoms = [shapely.transform(g, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1]))) for _, g, *_ in rows]
    pyogrio.raw.write(str(path), shapely.to_wkb(geoms),
                      [np.array([r[0] for r in rows], object), np.array([r[2] if r[2] else np.nan for r in rows]),
                       np.array([r[3] for r in rows], object)],
                      ["bid", "height", "year"], driver="GPKG", geometry_type="Polygon", crs=crs)
    return str(path)


def write_pois(path: Path):
    pts = [(X0 + 105, Y0 - 295, "Cafe Inside", '"amenity"=>"cafe","cuisine"=>"coffee_shop","wheelchair"=>"yes"'),
           (X0 + 205, Y0 - 195, "Shop Near", '"shop"=>"bakery"'),      # 5 m north of sq/2
           (X0 + 205, Y0 - 150, "Far Away", '"office"=>"company"'),    # 50 m away: not listed
           (X0 + 203, Y0 - 203, None, None)]                            # no name, no category: dropped
    pyogrio.raw.write(str(path), shapely.to_wkb(shapely.points([(x, y) for x, y, *_ in pts])),
                      [np.array([p[2] for p in pts], object), np.array([p[3] for p in pts], object)],
                      ["name", "other_tags"], driver="GPKG", geometry_type="Point", crs=UTM)
    return str(path)


def _scene(tmp_path, n):
    return _scene_mod.make_scene(tmp_path / "scene", n)


def read_png(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as ds:
            return ds.read()


def test_samples_chips_pois_street_view(tmp_path):
    img = write_raster(tmp_path / "img.tif")
    b = write_buildings(tmp_path / "b.gpkg")
    sv = tmp_path / "sv"
    (sv / "off").mkdir(parents=True)
    (sv / "t-1.jpg").write_bytes(b"jpeg-1")
    (sv / "off" / "a.png").write_bytes(b"png-a")
    out = tmp_path / "samples"
    res = building_samples(b, str(out), id_field="bid", imagery=img, street_view_folder=str(sv),
                           pois=PoiSource(write_pois(tmp_path / "p.gpkg")), attribute_fields=["height", "year"],
                           settings=SampleSettings(chip_max_px=512))
    assert res["samples"] == 3 and res["rooftop"] == 2 and res["buffer"] == 2 and res["street_view"] == 2
    folder, doc = load_manifest(str(out))
    by_id = {s["id"]: s for s in doc["samples"]}
    tri = by_id["t-1"]
    assert tri["folder"] == "t-1" and by_id["sq/2"]["folder"] == "sq_2"
    # rooftop of the triangle: a 40 x 40 px crop, the raster's own values inside, zero in the other half
    roof = read_png(folder / tri["images"]["rooftop"])
    assert roof.shape == (3, 40, 40)
    r0, c0 = int((Y0 - (Y0 - 280)) / PX), int(100 / PX)
    rows, cols = np.mgrid[r0:r0 + 40, c0:c0 + 40]
    expected = pattern(rows, cols)
    r, c = np.mgrid[0:40, 0:40]  # the hypotenuse runs from the top-left to the bottom-right corner
    inside, outside = c <= r - 1, c >= r + 2  # pixels wholly inside / wholly outside (not touched)
    assert (roof[:, inside] == expected[:, inside]).all()
    assert (roof[:, outside] == 0).all()
    # buffer zone: footprint bbox + 2 x 60.96 m, the corners (beyond 60.96 m) masked, the centre kept
    buf = read_png(folder / by_id["sq/2"]["images"]["buffer"])
    side = int(np.ceil((10 + 2 * 60.96) / PX))
    assert abs(buf.shape[1] - side) <= 1 and abs(buf.shape[2] - side) <= 1
    assert (buf[:, :3, :3] == 0).all() and (buf[:, side // 2, side // 2] > 0).all()
    # the building off the raster has no chips but its street-view images and attributes
    off = by_id["off"]
    assert off["images"]["rooftop"] is None and off["images"]["street_view"] == ["off/street_view_1.png"]
    assert (folder / "off" / "street_view_1.png").read_bytes() == b"png-a"
    assert (folder / tri["images"]["street_view"][0]).read_bytes() == b"jpeg-1"
    assert tri["attributes"] == {"height": "12.5", "year": "1931"} and off["attributes"] == {"year": "2001"}
    # POIs: inside the triangle, 5 m from the square; 50 m away and unnamed untagged ones not listed
    assert tri["pois"]["within"] == [{"name": "Cafe Inside", "category": "amenity=cafe; cuisine=coffee_shop",
                                      "distance_m": 0.0}]
    assert by_id["sq/2"]["pois"] == {"within": [], "near": [{"name": "Shop Near", "category": "shop=bakery",
                                                             "distance_m": 5.0}]}
    lon, lat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform(X0 + 205, Y0 - 205)
    assert by_id["sq/2"]["lon"] == pytest.approx(lon, abs=1e-6) and by_id["sq/2"]["lat"] == pytest.approx(lat, abs=1e-6)
    assert by_id["sq/2"]["area_m2"] == pytest.approx(100.0)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_geographic_buildings_buffer_in_metres_and_16bit(tmp_path):
    img = write_raster(tmp_path / "img16.tif", dtype="uint16")
    b = write_buildings(tmp_path / "b.gpkg", crs="EPSG:4326")
    out = tmp_path / "s"
    building_samples(b, str(out), imagery=img, settings=SampleSettings(image_format="jpeg", chip_max_px=64))
    folder, doc = load_manifest(str(out))
    s2 = doc["samples"][1]
    assert s2["id"] == "2" and s2["images"]["buffer"].endswith(".jpg")
    buf = read_png(folder / s2["images"]["buffer"])
    assert max(buf.shape[1:]) == 64  # decimated to chip_max_px
    assert s2["area_m2"] == pytest.approx(100.0, rel=2e-3)  # 10 x 10 m measured in a local metric CRS
    assert buf.dtype == np.uint8 and buf.max() > 200  # 16-bit input stretched to 8 bits


def test_cancel_and_refusals_leave_nothing(tmp_path):
    img = write_raster(tmp_path / "img.tif")
    b = write_buildings(tmp_path / "b.gpkg")

    class Stop(Progress):
        def is_cancelled(self):
            return True

    with pytest.raises(Cancelled):
        building_samples(b, str(tmp_path / "s"), imagery=img, progress=Stop())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.gpkg", "img.tif"]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("mine")
    with pytest.raises(InputError, match="OUTPUT_FOLDER"):
        building_samples(b, str(tmp_path / "busy"))
    with pytest.raises(InputError, match="IMAGE_FORMAT"):
        building_samples(b, str(tmp_path / "s"), settings=SampleSettings(image_format="gif"))
    with pytest.raises(InputError, match="ID_FIELD"):
        building_samples(b, str(tmp_path / "s"), id_field="height")  # empty for one building
    with pytest.raises(InputError, match="STREET_VIEW_FOLDER"):
        building_samples(b, str(tmp_path / "s"), street_view_folder=str(tmp_path / "none"))
    # a second run replaces an earlier samples folder
    building_samples(b, str(tmp_path / "s"))
    building_samples(b, str(tmp_path / "s"), attribute_fields=["year"])
    assert load_manifest(str(tmp_path / "s"))[1]["samples"][0]["attributes"] == {"year": "1931"}


def test_poi_category_text():
    assert poi_category('"shop"=>"bakery","opening_hours"=>"Mo-Fr"') == "shop=bakery"
    assert poi_category("restaurant") == "restaurant" and poi_category(None) == ""


def test_kampala_real_imagery(tmp_path):
    """Real OSM footprints (EPSG:4326) over the real Kampala drone mosaic (EPSG:32636, 15 % covered)."""
    out = tmp_path / "k"
    res = building_samples(str(ROOT / "samples/kampala/buildings_osm.geojson"), str(out),
                           imagery=str(ROOT / "samples/kampala/kampala_rgb_50cm.tif"))
    assert res["samples"] == 206 and 0 < res["rooftop"] <= 206 and res["buffer"] >= res["rooftop"]
    folder, doc = load_manifest(str(out))
    tr = Transformer.from_crs("EPSG:4326", "EPSG:32636", always_xy=True)
    for s in doc["samples"]:
        if s["images"]["rooftop"]:
            chip = read_png(folder / s["images"]["rooftop"])
            g = shapely.transform(shapely.from_wkt(s["geometry"]),
                                  lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
            xmin, ymin, xmax, ymax = g.bounds
            assert abs(chip.shape[2] - (xmax - xmin) / 0.5) <= 2 and abs(chip.shape[1] - (ymax - ymin) / 0.5) <= 2
            assert chip.any()
    assert json.loads((out / "manifest.json").read_text())["buffer_m"] == 60.96


def test_street_view_api_fetch_cache_and_key(tmp_path, standin):
    """Images fetched from a street-view API (stand-in process) at the sampling points' location, heading
    and pitch; a 429 is retried; a rerun downloads nothing (cache); the key is in no file or message."""
    from edifice.core.buildingsense.streetview import street_view_points
    from edifice.core.buildingsense.streetview_fetch import StreetViewApi

    key = "AIza-test-0d9c8b7a6f5e4d3c"
    server = standin(ROOT / "tests" / "servers" / "streetview_standin.py", "--key", key)
    server.set_faults([{"match": "streetview", "kind": "status", "status": 429, "retry_after": 0, "times": 1}])
    sc = _scene(tmp_path, 4)
    for f in Path(sc["street_view"]).glob("*.png"):
        if f.name != "b000.png":
            f.unlink()  # b000 keeps its own image; b001..b003 are fetched
    pts = tmp_path / "pts.gpkg"
    street_view_points(sc["buildings"], sc["roads"], str(pts), id_field="bid", height_field="height")
    api = StreetViewApi(server.url + "/streetview?size={size}&location={lat},{lon}&heading={heading}"
                        "&pitch={pitch}&fov={fov}", key=key, size="32x16", cache_dir=str(tmp_path / "cache"))
    log = []

    class P(Progress):
        def info(self, m):
            log.append(m)

        def warning(self, m):
            log.append(m)

    for run in (1, 2):
        out = tmp_path / f"s{run}"
        building_samples(sc["buildings"], str(out), id_field="bid", street_view_folder=sc["street_view"],
                         street_view_points=str(pts), street_view_api=api, progress=P())
        folder, doc = load_manifest(str(out))
        by_id = {s["id"]: s for s in doc["samples"]}
        assert by_id["b000"]["images"]["street_view"] == ["b000/street_view_1.png"]
        for bid in ("b001", "b002", "b003"):
            assert by_id[bid]["images"]["street_view"] == [f"{bid}/street_view_1.png"]
            assert read_png(folder / by_id[bid]["images"]["street_view"][0]).shape == (1, 16, 32)
    got = [r for r in server.requests() if r["path"] == "/streetview"]
    assert len(got) == 4 and got[0]["fault"] == "status"  # 3 images + one 429 retried; run 2 from the cache
    for r in got[1:]:
        bid = next(b for b, s in by_id.items() if s["street_view_point"] and
                   r["query"]["location"] == f"{s['street_view_point']['lat']},{s['street_view_point']['lon']}")
        p = by_id[bid]["street_view_point"]
        assert float(r["query"]["heading"]) == p["heading"] and float(r["query"]["pitch"]) == p["pitch"]
        assert r["query"]["fov"] == "90" and r["query"]["key"] == key
    assert not any(key in m for m in log)
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert key.encode() not in f.read_bytes(), f
    with pytest.raises(InputError, match="STREET_VIEW_POINTS"):
        building_samples(sc["buildings"], str(tmp_path / "x"), street_view_api=api)


def test_png_chips_decode_exactly():
    """The stdlib PNG writer of the chips ("Up" filter, zlib) decodes (GDAL) to the same pixels."""
    from rasterio.io import MemoryFile

    from edifice.core.buildingsense.chips import encode

    rng = np.random.default_rng(1)
    for shape in [(3, 37, 53), (1, 20, 31), (3, 1, 5), (1, 1, 1)]:
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with MemoryFile(encode(img)) as mem, mem.open() as ds:
                assert ds.driver == "PNG" and (ds.read() == img).all(), shape
