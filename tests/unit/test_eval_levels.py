"""Table, building and pixel comparisons on hand-made data."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import shapely
from affine import Affine

from edifice.core.evaluation import classification as E
from edifice.core.errors import InputError


_spec = importlib.util.spec_from_file_location("_eval_files", Path(__file__).with_name("_eval_files.py"))
_files = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_files)
write_polys, write_raster = _files.write_polys, _files.write_raster


def test_table_single_and_two_tables(tmp_path):
    a = tmp_path / "a.csv"
    a.write_text("id,ref,pred\n1,house,house\n2,warehouse,factory\n3,school,house\n4,yes,house\n5,castle,house\n")
    res = E.evaluate_table(a, "ref", "pred", taxonomy="osm_building", levels=["rci", "building"], n_boot=0)
    assert res["levels"] == ["rci", "building"]
    assert res["classes"] == ["residential", "commercial", "industrial", "other"]
    # castle is unknown -> other; yes -> none (ignored)
    assert res["ignored"] == 1 and res["unknown_reference"] == {"castle": 1}
    assert res["confusion_matrix"] == [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]]
    assert res["overall_accuracy"] == pytest.approx(0.5)
    assert res["by_level"]["building"]["per_class"]["house"]["support"] == 1
    b = tmp_path / "b.csv"
    b.write_text("bid,use\n2,industrial\n3,commercial\n9,residential\n")
    res = E.evaluate_table(a, "ref", "use", id_field="id", prediction_path=b, prediction_id_field="bid",
                           taxonomy="osm_building", levels=["rci"], n_boot=0)
    assert (res["matched"], res["unmatched_reference"], res["unmatched_prediction"]) == (2, 3, 1)
    assert res["overall_accuracy"] == 1.0
    c = tmp_path / "c.csv"
    c.write_text("bid,use\n20,industrial\n")
    with pytest.raises(InputError, match="no id in common"):
        E.evaluate_table(a, "ref", "use", id_field="id", prediction_path=c, prediction_id_field="bid")
    with pytest.raises(InputError, match="no field 'nope'"):
        E.evaluate_table(a, "nope", "pred")
    with pytest.raises(InputError, match="not in taxonomy"):
        E.evaluate_table(a, "ref", "pred", taxonomy="osm_building", unknown="error")


def test_building_matching_largest_overlap(tmp_path):
    box = shapely.box
    ref = [box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 50, 10), box(60, 0, 70, 10)]
    # pred 0 covers 60 % of ref0, pred 1 covers 40 % of ref0 (and nothing else);
    # pred 2 covers ref1 fully; ref2 has only a sliver (5 %) -> unmatched; pred 3 is far away
    pred = [box(4, 0, 12, 10), box(-2, 0, 4, 10), box(19, -1, 31, 11), box(49.5, 0, 52, 10), box(100, 0, 110, 10)]
    best, frac = E.match_largest_overlap(np.array(ref), np.array(pred), 0.1)
    assert best.tolist() == [0, 2, -1, -1]
    assert frac[:2] == pytest.approx([0.6, 1.0])
    rp = write_polys(tmp_path / "ref.gpkg", ref, {"use": ["residential", "commercial", "industrial", "residential"],
                                                  "guess": ["residential"] * 4})
    pp = write_polys(tmp_path / "pred.gpkg", pred, {"cls": ["residential", "industrial", "commercial",
                                                           "industrial", "residential"]})
    res = E.evaluate_buildings(rp, "use", pp, "cls", n_boot=0)
    assert (res["matched"], res["unmatched_reference"], res["unmatched_prediction"]) == (2, 2, 3)
    assert res["overall_accuracy"] == 1.0
    # prediction as an attribute of the reference layer
    res = E.evaluate_buildings(rp, "use", None, "guess", taxonomy="eubucco_type", n_boot=0)
    assert res["matched"] == 4 and res["overall_accuracy"] == 0.5
    assert res["per_class"]["industrial"]["recall"] == 0.0


def test_building_reprojection(tmp_path):
    from pyproj import Transformer
    ref = [shapely.box(4321000, 3210000, 4321010, 3210010)]
    tr = Transformer.from_crs("EPSG:3035", "EPSG:4326", always_xy=True)
    pred = [shapely.transform(ref[0], lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))]
    rp = write_polys(tmp_path / "r.gpkg", ref, {"use": ["residential"]})
    pp = write_polys(tmp_path / "p.gpkg", pred, {"use": ["residential"]}, crs="EPSG:4326")
    res = E.evaluate_buildings(rp, "use", pp, "use", n_boot=0)
    assert res["matched"] == 1 and res["matching"]["mean_overlap"] == pytest.approx(1.0, abs=1e-3)
    far = write_polys(tmp_path / "far.gpkg", [shapely.box(0, 0, 1, 1)], {"use": ["x"]})
    with pytest.raises(InputError, match="no predicted polygon overlaps"):
        E.evaluate_buildings(rp, "use", far, "use")


def test_pixel_raster_vs_raster_and_polygons(tmp_path):
    t = Affine(1, 0, 100, 0, -1, 200)
    pred = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 0, 0], [3, 3, 0, 0]], dtype=np.uint8)
    ref = np.array([[1, 1, 2, 2], [1, 2, 2, 2], [3, 1, 0, 0], [255, 3, 0, 0]], dtype=np.uint8)
    pp = write_raster(tmp_path / "p.tif", pred, t, nodata=None)
    rp = write_raster(tmp_path / "r.tif", ref, t, nodata=255)
    names = {0: "background", 1: "residential", 2: "commercial", 3: "industrial"}
    res = E.evaluate_class_raster(pp, reference_raster=rp, class_names=names, reference_class_names=names,
                                  n_boot=0)
    # 15 valid pixels; 2 disagreements
    assert res["n"] == 15 and res["overall_accuracy"] == pytest.approx(13 / 15)
    # only building pixels: mask polygon over the top-left 3x3 block (pixel centres inside)
    mp = write_polys(tmp_path / "m.gpkg", [shapely.box(100, 197, 103, 200)], {"id": [1]})
    res = E.evaluate_class_raster(pp, reference_raster=rp, class_names=names, reference_class_names=names,
                                  building_mask=mp, n_boot=0)
    assert res["n"] == 9 and res["overall_accuracy"] == pytest.approx(7 / 9)
    # reference polygons rasterised on the prediction grid: left half residential, right top commercial
    polys = write_polys(tmp_path / "rp.gpkg", [shapely.box(100, 198, 102, 200), shapely.box(102, 198, 104, 200)],
                        {"use": ["house", "retail"]})
    res = E.evaluate_class_raster(pp, reference_vector=polys, reference_field="use", class_names=names,
                                  taxonomy="osm_building", levels=["rci"], n_boot=0)
    assert res["n"] == 8 and res["overall_accuracy"] == 1.0
    assert res["per_class"]["residential"]["support"] == 4
    # the reference raster offset by whole pixels: only the overlap is scored
    rp2 = write_raster(tmp_path / "r2.tif", ref[:2, :2].copy(), Affine(1, 0, 101, 0, -1, 199), nodata=255)
    res = E.evaluate_class_raster(pp, reference_raster=rp2, n_boot=0)
    assert res["n"] == 4 and res["classes"] == ["0", "1", "2", "3"]
    assert res["confusion_matrix"] == [[0, 0, 0, 0], [0, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]]
    bad = write_raster(tmp_path / "bad.tif", ref, Affine(1, 0, 100.5, 0, -1, 200), nodata=255)
    with pytest.raises(InputError, match="not aligned"):
        E.evaluate_class_raster(pp, reference_raster=bad)
    other_crs = write_raster(tmp_path / "crs.tif", ref, t, crs="EPSG:32633", nodata=255)
    with pytest.raises(InputError, match="CRS differs"):
        E.evaluate_class_raster(pp, reference_raster=other_crs)
    far = write_polys(tmp_path / "far.gpkg", [shapely.box(0, 0, 1, 1)], {"use": ["house"]})
    with pytest.raises(InputError, match="empty intersection"):
        E.evaluate_class_raster(pp, reference_vector=far, reference_field="use")


def test_prediction_taxonomy_without_the_scored_level_is_refused():
    ref = ["A1", "O4", "E1", "D6"]           # NYC building classes
    pred = ["house", "retail", "industrial", "apartments"]   # OSM building tags
    # rci is in both: scored normally, each side through its own taxonomy
    res = E.score_labels(ref, pred, "nyc_building_class", ["rci"], prediction_taxonomy="osm_building", n_boot=0)
    assert res["overall_accuracy"] == pytest.approx(1.0)
    # default levels: only those both taxonomies have (rci), not the reference's land_use
    res = E.score_labels(ref, pred, "nyc_building_class", None, prediction_taxonomy="osm_building", n_boot=0)
    assert res["levels"] == ["rci"]
    # land_use is only in the reference taxonomy: refused, not silently scored at osm's coarsest level
    with pytest.raises(InputError) as e:
        E.score_labels(ref, pred, "nyc_building_class", ["land_use", "rci"], prediction_taxonomy="osm_building",
                       n_boot=0)
    assert e.value.name == "SCORE_LEVEL"
    assert "'land_use'" in e.value.problem and "osm_building" in e.value.problem
    assert "rci" in e.value.fix


def test_prediction_taxonomy_without_common_level(tmp_path):
    p = tmp_path / "mine.csv"
    p.write_text("label,use\nhouse,residential\nshop,commercial\n")
    with pytest.raises(InputError) as e:
        E.score_labels(["A1"], ["house"], "nyc_building_class", None, prediction_taxonomy=str(p), n_boot=0)
    assert e.value.name == "SCORE_LEVEL" and "'rci'" in e.value.problem
    assert "level named like one of the reference's" in e.value.fix
    # reference labels used as they are: the prediction taxonomy's coarsest level, as documented
    res = E.score_labels(["residential", "commercial"], ["house", "shop"], None, None, prediction_taxonomy=str(p),
                         n_boot=0)
    assert res["overall_accuracy"] == pytest.approx(1.0)
