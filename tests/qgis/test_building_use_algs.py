"""edifice:builtupmask / mapbuildinguse / assignbuildinguse through processing.run in real QGIS,
with a random-weights checkpoint made in the test."""
import numpy as np
import pyogrio
import pytest
import rasterio

pytestmark = pytest.mark.qgis

BUILDINGS = __import__("pathlib").Path(__file__).resolve().parents[2] / "samples" / "kampala" / "buildings_osm.geojson"


def test_algorithms_are_listed(provider):
    ids = {a.id() for a in provider.algorithms()}
    assert {"edifice:builtupmask", "edifice:mapbuildinguse", "edifice:assignbuildinguse"} <= ids


def test_mask_map_assign_and_styles(provider, kampala_rgb, kampala_pois, tiny_use_checkpoint, tmp_path):
    import processing
    from qgis.core import QgsProject

    mask = tmp_path / "mask.tif"
    processing.run("edifice:builtupmask", {"REFERENCE": str(kampala_rgb), "POLYGONS": [str(BUILDINGS)],
                                           "OUTPUT": str(mask)})
    with rasterio.open(mask) as ds:
        assert 0 < ds.read(1).mean() < 1
    uc, up, poly = tmp_path / "uc.tif", tmp_path / "up.tif", tmp_path / "b.gpkg"
    QgsProject.instance().removeAllMapLayers()
    res = processing.runAndLoadResults("edifice:mapbuildinguse", {
        "IMAGERY": str(kampala_rgb), "CHECKPOINT": str(tiny_use_checkpoint), "POI_LAYER": str(kampala_pois),
        "CATEGORY_FIELD": "other_tags", "MASK": str(mask), "DEVICE": "cpu", "BATCH_SIZE": 2, "WINDOW": 256,
        "OVERLAP": 32, "USE_CLASS": str(uc), "USE_PROBABILITIES": str(up), "POLYGONS": str(poly)})
    assert res["DEVICE_USED"].startswith("cpu")
    layers = {lyr.source().split("|")[0]: lyr for lyr in QgsProject.instance().mapLayers().values()}
    assert layers[str(uc)].renderer().type() == "paletted"
    assert layers[str(up)].renderer().type() == "multibandcolor"
    assert layers[str(poly)].renderer().type() == "categorizedSymbol"
    QgsProject.instance().removeAllMapLayers()
    with rasterio.open(uc) as ds:
        c = ds.read(1)
    assert set(np.unique(c)) <= {0, 1, 2, 3, 255} and (c < 4).sum() > 0
    assert pyogrio.read_info(poly)["features"] > 0

    out = tmp_path / "assigned.gpkg"
    processing.run("edifice:assignbuildinguse", {"INPUT": str(BUILDINGS), "PROBABILITIES": str(up),
                                                 "OUTPUT": str(out)})
    info = pyogrio.read_info(out)
    assert info["features"] == pyogrio.read_info(BUILDINGS)["features"]
    assert {"use_class", "p_residential", "confidence"} <= set(info["fields"])


def test_bad_checkpoint_is_a_processing_exception(provider, kampala_rgb, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    out = tmp_path / "uc.tif"
    with pytest.raises(QgsProcessingException, match="CHECKPOINT"):
        processing.run("edifice:mapbuildinguse", {"IMAGERY": str(kampala_rgb), "CHECKPOINT": str(bad),
                                                  "USE_CLASS": str(out)})
    assert not out.exists()
