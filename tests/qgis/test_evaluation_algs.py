"""edifice:evaluateclassification / evaluateregression in real QGIS (processing.run),
checked against an independent computation (tests/_eval_truth.py: shapely + scikit-learn)."""
import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

pytestmark = pytest.mark.qgis
_spec = importlib.util.spec_from_file_location("_eval_truth", Path(__file__).resolve().parents[1] / "_eval_truth.py")
truth = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(truth)

EUBUCCO_TAXONOMY = 2 + ["eubucco_type", "osm_building"].index("eubucco_type")  # enum: none, custom, shipped...
REFUSE, TO_OTHER = 1, 0


@pytest.fixture(scope="module")
def expected():
    return truth.eubucco_expected(min_overlap=0.5)


def _outputs(tmp_path, stem="e"):
    return {"OUTPUT_JSON": str(tmp_path / f"{stem}.json"), "OUTPUT_HTML": str(tmp_path / f"{stem}.html"),
            "OUTPUT_TABLE": str(tmp_path / f"{stem}.csv")}


def _use_params(tmp_path, prediction=str(truth.OSM), **kw):
    p = {"LEVEL": 0, "PREDICTION": prediction, "PREDICTION_FIELD": "type", "REFERENCE": str(truth.GOV),
         "REFERENCE_FIELD": "type", "REFERENCE_TAXONOMY": EUBUCCO_TAXONOMY, "SCORE_LEVEL": "rci",
         "UNKNOWN_LABELS": REFUSE, "MIN_OVERLAP": 0.5, "N_BOOT": 50}
    p.update(_outputs(tmp_path))
    p.update(kw)
    return p


def _osm_layer():
    from qgis.core import QgsVectorLayer

    layer = QgsVectorLayer(str(truth.OSM), "osm", "ogr")
    assert layer.isValid()
    return layer


def test_algorithms_are_listed_and_html_is_a_results_viewer_output(provider):
    from qgis.core import QgsProcessingOutputHtml

    for name in ("evaluateclassification", "evaluateregression"):
        alg = provider.algorithm(name)
        assert alg is not None
        assert isinstance(alg.outputDefinition("OUTPUT_HTML"), QgsProcessingOutputHtml)


def test_eubucco_rci_matches_independent_computation(provider, expected, tmp_path):
    import processing

    res = processing.run("edifice:evaluateclassification", _use_params(tmp_path))
    out = json.loads(Path(res["OUTPUT_JSON"]).read_text())
    assert out["classes"] == expected["classes"]
    assert out["confusion_matrix"] == expected["confusion_matrix"]
    assert out["n"] == expected["n"]
    for c in expected["classes"]:
        assert out["per_class"][c]["f1"] == pytest.approx(expected["f1"][c], abs=1e-12)
    assert out["overall_accuracy"] == pytest.approx(expected["overall_accuracy"], abs=1e-12)
    assert out["kappa"] == pytest.approx(expected["kappa"], abs=1e-12)
    for key in ("matched", "unmatched_reference", "unmatched_prediction"):
        assert out[key] == expected[key] == res[key.upper()]
    assert res["OVERALL_ACCURACY"] == pytest.approx(expected["overall_accuracy"])
    # metrics table (CSV sink without geometry) and a self-contained HTML page
    rows = list(csv.DictReader(open(res["OUTPUT_TABLE"], newline="")))
    f1 = {r["class"]: float(r["value"]) for r in rows if r["level"] == "rci" and r["metric"] == "f1"}
    assert f1 == pytest.approx(expected["f1"])
    html = Path(res["OUTPUT_HTML"]).read_text()
    assert "<svg" in html and "<script" not in html and "http" not in html.replace("http://www.w3.org", "")


def test_reprojected_memory_layer_gives_the_same_result(provider, expected, tmp_path):
    """Prediction in EPSG:4326 as an in-memory layer: exported, then reprojected to the reference CRS."""
    import processing

    moved = processing.run("native:reprojectlayer", {"INPUT": _osm_layer(), "TARGET_CRS": "EPSG:4326",
                                                     "OUTPUT": "memory:osm4326"})["OUTPUT"]
    assert moved.crs().authid() == "EPSG:4326" and moved.providerType() == "memory"
    res = processing.run("edifice:evaluateclassification", _use_params(tmp_path, prediction=moved))
    out = json.loads(Path(res["OUTPUT_JSON"]).read_text())
    assert out["confusion_matrix"] == expected["confusion_matrix"]
    assert (out["matched"], out["unmatched_prediction"]) == (expected["matched"], expected["unmatched_prediction"])


def test_labels_outside_the_taxonomy(provider, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    from qgis.core import QgsFeatureRequest

    layer = _osm_layer().materialize(QgsFeatureRequest())
    idx = layer.fields().indexOf("type")
    layer.startEditing()
    changed = {"castle": 0, "spaceport": 0}
    for n, f in enumerate(layer.getFeatures()):
        if f["type"] and n % 7 == 0:
            label = "castle" if n % 2 else "spaceport"
            layer.changeAttributeValue(f.id(), idx, label)
            changed[label] += 1
    assert layer.commitChanges()
    with pytest.raises(QgsProcessingException, match="labels are not in taxonomy 'eubucco_type'") as err:
        processing.run("edifice:evaluateclassification", _use_params(tmp_path, prediction=layer, MIN_OVERLAP=0.0))
    assert "castle" in str(err.value) and "spaceport" in str(err.value) and "PREDICTION" in str(err.value)
    assert not (tmp_path / "e.json").exists() and not (tmp_path / "e.csv").exists()
    res = processing.run("edifice:evaluateclassification",
                         _use_params(tmp_path, prediction=layer, UNKNOWN_LABELS=TO_OTHER, MIN_OVERLAP=0.0))
    out = json.loads(Path(res["OUTPUT_JSON"]).read_text())
    assert set(out["unknown_prediction"]) == {"castle", "spaceport"}
    assert 0 < sum(out["unknown_prediction"].values()) <= sum(changed.values())


def test_no_overlap_and_no_common_ids_are_clear_errors(provider, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    far = processing.run("native:translategeometry", {"INPUT": _osm_layer(), "DELTA_X": 200000, "DELTA_Y": 0,
                                                      "OUTPUT": "memory:far"})["OUTPUT"]
    with pytest.raises(QgsProcessingException, match="no predicted polygon overlaps a reference polygon"):
        processing.run("edifice:evaluateclassification", _use_params(tmp_path, prediction=far))
    with pytest.raises(QgsProcessingException, match="no id in common"):
        processing.run("edifice:evaluateclassification", _use_params(tmp_path, LEVEL=2, ID_FIELD="id"))
    with pytest.raises(QgsProcessingException, match="pixel"):
        processing.run("edifice:evaluateclassification", _use_params(tmp_path, LEVEL=1))
    assert list(tmp_path.iterdir()) == []


def test_table_level_joins_on_ids(provider, tmp_path):
    """A CSV of predictions for 200 official buildings, joined on id."""
    import processing
    from sklearn.metrics import confusion_matrix

    _, f, _ = truth.read_layer(truth.GOV)
    keep = [i for i, t in enumerate(f["type"]) if t][:200]
    rng = np.random.default_rng(1)
    labels = ["residential", "commercial", "industrial", "public"]
    pred = [labels[rng.integers(4)] if rng.random() < 0.3 else f["type"][i] for i in keep]
    table = tmp_path / "pred.csv"
    with open(table, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["building", "use"])
        w.writerows(zip([f["id"][i] for i in keep], pred))
    res = processing.run("edifice:evaluateclassification", dict(
        _use_params(tmp_path, prediction=str(table), LEVEL=2, PREDICTION_FIELD="use", ID_FIELD="id",
                    PREDICTION_ID_FIELD="building")))
    out = json.loads(Path(res["OUTPUT_JSON"]).read_text())
    rci = truth.eubucco_type_to_rci()
    ref = [rci[f["type"][i]] for i in keep]
    assert out["confusion_matrix"] == confusion_matrix(ref, [rci[p] for p in pred], labels=truth.RCI).tolist()
    assert (out["matched"], out["unmatched_reference"], out["unmatched_prediction"]) == (200, len(f["id"]) - 200, 0)


def _raster(path, data, nodata=None, transform=Affine(10, 0, 500000, 0, -10, 5000000)):
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype, crs="EPSG:32633", transform=transform, nodata=nodata) as dst:
        dst.write(data, 1)


def test_pixel_level_class_rasters(provider, tmp_path):
    import processing
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(0)
    ref = rng.integers(0, 4, (60, 80)).astype(np.uint8)
    pred = np.where(rng.random(ref.shape) < 0.8, ref, rng.integers(1, 4, ref.shape)).astype(np.uint8)
    _raster(tmp_path / "ref.tif", ref, nodata=0)
    _raster(tmp_path / "pred.tif", pred, nodata=0)
    names = "none,residential,commercial,industrial"
    res = processing.run("edifice:evaluateclassification", dict(
        _outputs(tmp_path, "px"), LEVEL=1, PREDICTION=str(tmp_path / "pred.tif"), REFERENCE=str(tmp_path / "ref.tif"),
        CLASS_NAMES=names, REFERENCE_CLASS_NAMES=names, N_BOOT=0))
    out = json.loads(Path(res["OUTPUT_JSON"]).read_text())
    ok = (ref > 0) & (pred > 0)
    labels = names.split(",")
    cm = confusion_matrix([labels[v] for v in ref[ok]], [labels[v] for v in pred[ok]], labels=out["classes"])
    assert out["classes"] == ["commercial", "industrial", "residential"]  # sorted distinct labels (no taxonomy)
    assert out["confusion_matrix"] == cm.tolist() and out["matched"] == int(ok.sum())


def test_regression_per_building_matches_independent_computation(provider, expected, tmp_path):
    import processing

    res = processing.run("edifice:evaluateregression", dict(
        _outputs(tmp_path, "h"), PREDICTION=str(truth.OSM), PREDICTION_FIELD="height", REFERENCE=str(truth.GOV),
        REFERENCE_FIELD="height", MIN_OVERLAP=0.5))
    out = json.loads(Path(res["OUTPUT_JSON"]).read_text())
    exp = truth.regression_expected(*expected["heights"])
    for key in ("n", "rmse", "mae", "me", "cc"):
        assert out[key] == pytest.approx(exp[key], rel=1e-9)
    assert res["RMSE"] == pytest.approx(exp["rmse"]) and out["matched"] == exp["n"]
    rows = list(csv.DictReader(open(res["OUTPUT_TABLE"], newline="")))
    assert any(r["level"] == "height_bin" and r["metric"] == "me" for r in rows)


def test_regression_raster_vs_raster(provider, tmp_path):
    import processing

    rng = np.random.default_rng(2)
    ref = rng.uniform(3, 40, (50, 70)).astype(np.float32)
    pred = (ref + rng.normal(1.0, 2.0, ref.shape)).astype(np.float32)
    ref[:5] = -9999
    _raster(tmp_path / "ref.tif", ref, nodata=-9999)
    _raster(tmp_path / "pred.tif", pred, nodata=-9999)
    res = processing.run("edifice:evaluateregression", dict(
        _outputs(tmp_path, "rr"), PREDICTION=str(tmp_path / "pred.tif"), REFERENCE=str(tmp_path / "ref.tif")))
    out = json.loads(Path(res["OUTPUT_JSON"]).read_text())
    exp = truth.regression_expected(ref[5:].ravel(), pred[5:].ravel())
    for key in ("n", "rmse", "mae", "me", "cc"):
        assert out[key] == pytest.approx(exp[key], rel=1e-6)
    assert out["comparison"] == "pixel"
