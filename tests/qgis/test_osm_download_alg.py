"""edifice:osmdownload in real QGIS (processing.run) against the Overpass stand-in (a real process):
its layers load with their typed fields, and the POI layer goes as it is into edifice:poiprobability."""
import pytest

pytestmark = pytest.mark.qgis


def _run(overpass, extent, tmp_path, **extra):
    import processing

    params = {"EXTENT": "{},{},{},{} [EPSG:3067]".format(extent[0], extent[2], extent[1], extent[3]),
              "ENDPOINT": overpass.url + "/api/interpreter", "MAX_TILE_KM2": 0.2,
              "POIS": str(tmp_path / "pois.gpkg"), "BUILDINGS": str(tmp_path / "buildings.gpkg"), **extra}
    return processing.run("edifice:osmdownload", params)


def test_osmdownload_layers_feed_poiprobability(provider, overpass, helsinki_3067, tmp_path, monkeypatch):
    import processing
    from qgis.core import QgsVectorLayer

    monkeypatch.setenv("EDIFICE_CACHE_DIR", str(tmp_path / "cache"))
    res = _run(overpass, helsinki_3067, tmp_path)
    buildings = QgsVectorLayer(res["BUILDINGS"], "b", "ogr")
    assert buildings.isValid() and buildings.crs().authid() == "EPSG:3067"
    fields = buildings.fields()
    assert fields.field("building:levels").typeName().lower().startswith("int")
    assert fields.field("height").typeName().lower() in ("real", "double")
    uses = [f["use"] for f in buildings.getFeatures()]
    assert len(uses) == sum(res[f"{c}_COUNT"] for c in ("RESIDENTIAL", "COMMERCIAL", "INDUSTRIAL", "UNKNOWN")) > 20
    assert res["RESIDENTIAL_COUNT"] == uses.count("residential")
    assert res["OSM_TIMESTAMP"].startswith("20")
    sent = len(overpass.requests())
    assert sent >= 4
    out = processing.run("edifice:poiprobability", {
        "INPUT": res["POIS"], "CATEGORY_FIELD": "other_tags", "PRESET": 0,
        "EXTENT": "{},{},{},{} [EPSG:3067]".format(helsinki_3067[0], helsinki_3067[2], helsinki_3067[1],
                                                   helsinki_3067[3]),
        "PIXEL_SIZE": 10, "TARGET_CRS": "EPSG:3067", "OUTPUT": str(tmp_path / "poi.tif")})
    assert (tmp_path / "poi.tif").exists() and out["UNMAPPED"] < res["POI_COUNT"]
    _run(overpass, helsinki_3067, tmp_path / "again")
    assert len(overpass.requests()) == sent          # the re-run came from the cache


def test_osmdownload_wrong_content_type_fails_without_output(provider, overpass, helsinki_3067, tmp_path,
                                                             monkeypatch):
    from qgis.core import QgsProcessingException

    monkeypatch.setenv("EDIFICE_CACHE_DIR", str(tmp_path / "cache"))
    overpass.set_faults([{"kind": "content_type", "value": "text/html", "times": 20}])
    with pytest.raises(QgsProcessingException, match="text/html"):
        _run(overpass, helsinki_3067, tmp_path)
    assert not (tmp_path / "pois.gpkg").exists() and not (tmp_path / "buildings.gpkg").exists()
