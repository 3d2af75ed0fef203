"""Training-dataset creation: masks, reprojection/repair, split without leakage, errors, atomicity."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import shapely
from affine import Affine
from pyproj import Transformer

from edifice.core.errors import InputError
from edifice.core.use.labels import IGNORE, load_building_mapping
from edifice.core.use.training_dataset import create_training_dataset, load_manifest, spatial_split

_spec = importlib.util.spec_from_file_location("_use_scene", Path(__file__).with_name("_use_scene.py"))
S = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(S)

TO_LL = Transformer.from_crs(S.CRS_UTM, S.CRS_LL, always_xy=True)


def _px_box(c0, r0, c1, r1):
    """Polygon (EPSG:4326) of the pixel rectangle cols c0..c1, rows r0..r1 (edges) of the 1 m scene."""
    g = shapely.box(S.X0 + c0, S.Y0 - r1, S.X0 + c1, S.Y0 - r0)
    return shapely.transform(g, lambda xy: np.column_stack(TO_LL.transform(xy[:, 0], xy[:, 1])))


def _small_scene(tmp_path, extra=()):
    img = np.full((3, 64, 64), 100, np.uint8)
    S.write_raster(tmp_path / "img.tif", img, Affine(1, 0, S.X0, 0, -1, S.Y0))
    bowtie = shapely.Polygon([(0, 0), (6, 6), (6, 0), (0, 6), (0, 0)])
    bowtie = shapely.affinity.translate(bowtie, S.X0 + 50, S.Y0 - 60)
    bowtie = shapely.transform(bowtie, lambda xy: np.column_stack(TO_LL.transform(xy[:, 0], xy[:, 1])))
    rows = [
        (_px_box(2, 2, 10, 10), "house"),          # A residential, tile (0,0)
        (_px_box(14, 14, 20, 20), "yes"),          # B unknown use, tile (0,0)
        (_px_box(40, 4, 50, 12), "retail"),        # C commercial, tile (0,1)
        (_px_box(4, 40, 14, 50), "warehouse"),     # D industrial, tile (1,0)
        (_px_box(40, 40, 48, 48), "apartments"),   # E residential, tile (1,1)
        (_px_box(29, 20, 39, 26), "office"),       # F commercial straddling tiles (0,0)/(0,1)
        (bowtie, "house"),                         # G invalid -> repaired, tile (1,1)
        *extra,
    ]
    S.write_polygons(tmp_path / "b.gpkg", [g for g, _ in rows], {"building": [v for _, v in rows]}, S.CRS_LL)
    return str(tmp_path / "img.tif"), str(tmp_path / "b.gpkg")


def _chip(ds, manifest, r, c):
    for ch in manifest["chips"]:
        if ch["row"] <= r < ch["row"] + ch["height"] and ch["col"] <= c < ch["col"] + ch["width"]:
            z = np.load(Path(ds) / ch["file"])
            return ch, {k: z[k] for k in z.files}
    return None, None


def test_known_masks_reprojection_repair_and_straddling(tmp_path):
    img, b = _small_scene(tmp_path)
    out = tmp_path / "ds"
    m = create_training_dataset(img, b, str(out), "building", chip_size=32, split_tile_m=32, seed=3,
                                min_building_pixels=1)
    assert m == load_manifest(str(out))
    assert m["buildings"]["repaired"] == 1 and m["buildings"]["kept"] == 7
    assert m["buildings"]["residential"] == 3 and m["buildings"]["unknown"] == 1
    assert m["chip_size"] == 32 and m["split"]["tile_size_px"] == 32 and m["gsd_m"] == pytest.approx(1.0)
    assert [bd["name"] for bd in m["bands"]] == ["red", "green", "blue"]  # no POI bands
    ch, a = _chip(out, m, 5, 5)
    assert a["image"].shape == (3, 32, 32) and "poi" not in a
    assert a["footprint"][5, 5] == 1 and a["use"][5, 5] == 1          # A residential
    assert a["footprint"][2, 2] == 1 and a["footprint"][1, 1] == 0     # centre rule on the edges
    assert a["footprint"][10, 10] == 0 and a["use"][9, 9] == 1
    assert a["footprint"][16, 16] == 1 and a["use"][16, 16] == IGNORE  # B unknown use
    assert a["use"][0, 0] == 0
    _, d = _chip(out, m, 45, 8)
    assert d["use"][45 - 32, 8] == 3                                    # D industrial
    # F straddles tiles (0,0) and (0,1) and belongs to (0,1) (centroid at col 34)
    sub = {tuple(c["tile"]): c["subset"] for c in m["chips"]}
    left_f = a["footprint"][22, 30]
    assert sub[(0, 0)] != sub[(0, 1)]  # with seed 3
    assert left_f == IGNORE and a["use"][22, 30] == IGNORE
    _, right = _chip(out, m, 22, 33)
    assert right["footprint"][22, 1] == 1 and right["use"][22, 1] == 2
    # subsets: every subset present, chips under their subset folder, counts add up
    assert {c["subset"] for c in m["chips"]} == {"train", "val", "test"}
    assert all(c["file"].startswith(c["subset"] + "/") for c in m["chips"])
    assert sum(s["buildings"] for s in m["split"]["subsets"].values()) == 7


def test_split_is_spatial_deterministic_and_balanced():
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 10, size=(500, 2))
    a = spatial_split(tiles, seed=1)
    assert a == spatial_split(tiles, seed=1)
    assert a != spatial_split(tiles, seed=2)
    sub = np.array([a[tuple(t)] for t in tiles])
    frac = np.bincount(sub, minlength=3) / len(sub)
    assert np.allclose(frac, [0.6, 0.2, 0.2], atol=0.05)
    with pytest.raises(InputError, match="too few"):
        spatial_split(np.array([[0, 0], [0, 0], [1, 1], [1, 1], [1, 1]]))


def test_synthetic_scene_pois_from_points_no_leakage(tmp_path):
    sc = S.make_scene(tmp_path, size=256, polygons_crs=S.CRS_LL)
    out = tmp_path / "ds"
    m = create_training_dataset(sc["imagery"], sc["buildings"], str(out), "building", poi_points_path=sc["pois"],
                                poi_category_field="shop", poi_max_distances=(12, 12, 20), chip_size=64,
                                split_tile_m=64)
    assert [b["name"] for b in m["bands"]][3:] == ["p_residential", "p_commercial", "p_industrial"]
    assert (out / "poi_probability.tif").is_file() and m["sources"]["poi"]["poi_counts"]["industrial"] > 0
    z = np.load(out / m["chips"][0]["file"])
    assert z["poi"].shape == (3, 64, 64) and z["poi"].dtype == np.float32
    assert 0 <= z["poi"].min() and z["poi"].max() <= 1 and z["poi"].max() > 0.5
    # labelled pixels of one building never appear in two subsets: rebuild per-subset label mosaics
    mosaic = {s: np.zeros((256, 256), bool) for s in ("train", "val", "test")}
    for ch in m["chips"]:
        f = np.load(out / ch["file"])["footprint"][:ch["height"], :ch["width"]]
        mosaic[ch["subset"]][ch["row"]:ch["row"] + ch["height"], ch["col"]:ch["col"] + ch["width"]] |= f == 1
    from scipy import ndimage
    union = mosaic["train"] | mosaic["val"] | mosaic["test"]
    lab, n = ndimage.label(union)
    for k in range(1, n + 1):
        where = lab == k
        assert sum(bool((mosaic[s] & where).any()) for s in mosaic) == 1
    # deterministic
    m2 = create_training_dataset(sc["imagery"], sc["buildings"], str(tmp_path / "ds2"), "building",
                                 poi_points_path=sc["pois"], poi_category_field="shop",
                                 poi_max_distances=(12, 12, 20), chip_size=64, split_tile_m=64)
    assert [(c["file"], c["pixels"]) for c in m["chips"]] == [(c["file"], c["pixels"]) for c in m2["chips"]]


def test_poi_raster_on_another_grid_is_resampled(tmp_path):
    img, b = _small_scene(tmp_path)
    poi = np.stack([np.full((32, 32), v, np.float32) for v in (0.2, 0.5, 0.8)])
    S.write_raster(tmp_path / "poi.tif", poi, Affine(2, 0, S.X0, 0, -2, S.Y0))
    m = create_training_dataset(img, b, str(tmp_path / "ds"), "building", poi_raster_path=str(tmp_path / "poi.tif"),
                                chip_size=32, split_tile_m=32, min_building_pixels=1)
    assert m["sources"]["poi"]["resampled"] is True
    z = np.load(tmp_path / "ds" / m["chips"][0]["file"])
    assert np.allclose(z["poi"][:, 10, 10], [0.2, 0.5, 0.8], atol=1e-5)


def test_errors_are_clear_and_leave_nothing(tmp_path):
    img, b = _small_scene(tmp_path)
    with pytest.raises(InputError, match="USE_FIELD.*'nope' is not"):
        create_training_dataset(img, b, str(tmp_path / "o1"), "nope")
    # no overlap: imagery 100 km away
    S.write_raster(tmp_path / "far.tif", np.zeros((3, 64, 64), np.uint8), Affine(1, 0, S.X0 + 1e5, 0, -1, S.Y0))
    with pytest.raises(InputError, match="no building overlaps"):
        create_training_dataset(str(tmp_path / "far.tif"), b, str(tmp_path / "o2"), "building")
    # no mappable use value
    S.write_polygons(tmp_path / "u.gpkg", [_px_box(2, 2, 10, 10)] * 6, {"kind": ["foo"] * 6}, S.CRS_LL)
    with pytest.raises(InputError, match="no value of 'kind' maps"):
        create_training_dataset(img, str(tmp_path / "u.gpkg"), str(tmp_path / "o3"), "kind",
                                use_preset="eubucco_type")
    # too few buildings
    S.write_polygons(tmp_path / "few.gpkg", [_px_box(2, 2, 10, 10), _px_box(40, 40, 50, 50)],
                     {"building": ["house", "retail"]}, S.CRS_LL)
    with pytest.raises(InputError, match="too few"):
        create_training_dataset(img, str(tmp_path / "few.gpkg"), str(tmp_path / "o4"), "building",
                                chip_size=32, split_tile_m=32)
    # a failure after the temporary folder exists leaves nothing behind
    S.write_raster(tmp_path / "poi2.tif", np.zeros((2, 64, 64), np.float32), Affine(1, 0, S.X0, 0, -1, S.Y0))
    with pytest.raises(InputError, match="POI_RASTER"):
        create_training_dataset(img, b, str(tmp_path / "o5"), "building", poi_raster_path=str(tmp_path / "poi2.tif"),
                                chip_size=32, split_tile_m=32)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".o", "o"))]
    # existing non-empty output is refused unless overwrite
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(InputError, match="OUTPUT"):
        create_training_dataset(img, b, str(tmp_path / "full"), "building", chip_size=32, split_tile_m=32)
    create_training_dataset(img, b, str(tmp_path / "full"), "building", chip_size=32, split_tile_m=32,
                            min_building_pixels=1, overwrite=True)
    assert not (tmp_path / "full" / "x").exists()


def test_presets_follow_the_seed():
    osm = load_building_mapping("osm_building")
    cases = {("building", "warehouse"): "industrial", ("building", "train_station"): "industrial",
             ("building", "school"): "commercial", ("building", "hospital"): "commercial",
             ("building", "house"): "residential", ("building", "yes"): "unknown"}
    for tag, cls in cases.items():
        assert osm.classify([tag]) == cls, tag
    assert osm.classify_record({"building": "yes", "shop": "bakery"}, "building") == "commercial"
    assert osm.classify_record({"building": "yes", "amenity": "school"}, "building") == "commercial"
    eu = load_building_mapping("eubucco_type")
    assert [eu.classify_record({"type": t}, "type") for t in
            ("residential", "commercial", "industrial", "public", "agricultural", "others")] == \
        ["residential", "commercial", "industrial", "commercial", "unknown", "unknown"]
    with pytest.raises(InputError, match="USE_PRESET"):
        load_building_mapping("nope")


def test_footprint_only_dataset(tmp_path):
    img, b = _small_scene(tmp_path)
    m = create_training_dataset(img, b, str(tmp_path / "ds"), None, chip_size=32, split_tile_m=32,
                                min_building_pixels=1)
    assert m["buildings"]["unknown"] == m["buildings"]["kept"] == 7
    _, a = _chip(tmp_path / "ds", m, 5, 5)
    assert a["footprint"][5, 5] == 1 and a["use"][5, 5] == IGNORE and a["use"][0, 0] == 0
