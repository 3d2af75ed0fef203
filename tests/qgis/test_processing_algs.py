"""Integration tests in real QGIS through processing.run (pytest-qgis)."""
import pytest
import rasterio

pytestmark = pytest.mark.qgis


def test_provider_lists_both_algorithms(provider):
    ids = sorted(a.id() for a in provider.algorithms())
    assert "edifice:retinex" in ids and "edifice:poiprobability" in ids


def test_retinex_through_processing_run(provider, kampala_rgb, tmp_path):
    import processing

    out = tmp_path / "r.tif"
    res = processing.run("edifice:retinex", {"INPUT": str(kampala_rgb), "SIGMAS": "15,80", "OUTPUT": str(out)})
    assert res["OUTPUT"] == str(out)
    with rasterio.open(out) as ds, rasterio.open(kampala_rgb) as src:
        a, s = ds.read(), src.read()
        assert ds.crs == src.crs and ds.transform == src.transform and ds.dtypes[0] == "uint8"
    invalid = (s == 0).any(axis=0)  # a pixel is nodata when any band holds the nodata value
    assert ((a == 0).all(axis=0) == invalid).all() and ((a == 0).any(axis=0) == invalid).all()


def test_poi_maps_through_processing_run(provider, helsinki_pbf, tmp_path):
    import processing

    out = tmp_path / "p.tif"
    res = processing.run("edifice:poiprobability", {
        "INPUT": f"{helsinki_pbf}|layername=points", "CATEGORY_FIELD": "other_tags", "PRESET": 0,
        "EXTENT": "385000,386000,6671500,6672500 [EPSG:3067]", "PIXEL_SIZE": 5, "TARGET_CRS": "EPSG:3067",
        "MAX_DISTANCES": "300,300,1000", "OUTPUT": str(out)})
    assert res["UNMAPPED"] > 0
    with rasterio.open(out) as ds:
        p = ds.read()
        assert ds.count == 3 and ds.shape == (200, 200) and ds.crs.to_epsg() == 3067
        assert [ds.descriptions[i] for i in range(3)] == ["p_residential", "p_commercial", "p_industrial"]
    assert p[1].max() > 0.95  # central Helsinki is full of shops
    assert 0 <= p.min() and p.max() <= 1


def test_bad_input_raises_processing_exception_and_writes_nothing(provider, helsinki_pbf, kampala_rgb, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    out = tmp_path / "p.tif"
    with pytest.raises(QgsProcessingException, match="CATEGORY_FIELD"):
        processing.run("edifice:poiprobability", {
            "INPUT": f"{helsinki_pbf}|layername=points", "CATEGORY_FIELD": "nope",
            "REFERENCE": str(kampala_rgb), "OUTPUT": str(out)})
    with pytest.raises(QgsProcessingException, match="EXTENT|TARGET_CRS"):
        processing.run("edifice:poiprobability", {
            "INPUT": f"{helsinki_pbf}|layername=points", "CATEGORY_FIELD": "other_tags", "OUTPUT": str(out)})
    with pytest.raises(QgsProcessingException, match="SIGMAS"):
        processing.run("edifice:retinex", {"INPUT": str(kampala_rgb), "SIGMAS": "a,b", "OUTPUT": str(out)})
    assert not out.exists()


@pytest.mark.parametrize("alg,params,renderer_max", [
    ("edifice:retinex", {"SIGMAS": "15"}, 255),
    ("edifice:poiprobability", {"CATEGORY_FIELD": "other_tags", "MAX_DISTANCES": "300,300,1000"}, 1),
])
def test_outputs_are_styled_when_loaded(provider, kampala_rgb, helsinki_pbf, tmp_path, alg, params, renderer_max):
    import processing
    from qgis.core import QgsProject

    p = dict(params, OUTPUT=str(tmp_path / "o.tif"))
    if alg == "edifice:retinex":
        p["INPUT"] = str(kampala_rgb)
    else:
        p.update(INPUT=f"{helsinki_pbf}|layername=points", EXTENT="385000,385500,6671500,6672000 [EPSG:3067]",
                 PIXEL_SIZE=5, TARGET_CRS="EPSG:3067")
    QgsProject.instance().removeAllMapLayers()
    processing.runAndLoadResults(alg, p)
    layers = list(QgsProject.instance().mapLayers().values())
    assert len(layers) == 1
    r = layers[0].renderer()
    assert r.type() == "multibandcolor" and (r.redBand(), r.greenBand(), r.blueBand()) == (1, 2, 3)
    assert r.redContrastEnhancement().maximumValue() == renderer_max
    assert r.blueContrastEnhancement().minimumValue() == 0
    QgsProject.instance().removeAllMapLayers()


def test_core_warnings_reach_the_log_as_warnings_not_errors(provider, kampala_rgb, tmp_path):
    """A core ``progress.warning`` (here the split warning: the Kampala sample in 256 m split
    tiles (6 of them) comes out 48/36/16 %, not 6:2:2) arrives through pushWarning, so qgis_process prints
    it as a WARNING and the dialog shows it in orange, not as an error."""
    from pathlib import Path

    import processing
    from qgis.core import QgsProcessingFeedback

    class Log(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.warnings, self.errors = [], []

        def pushWarning(self, text):  # noqa: N802
            self.warnings.append(text)

        def reportError(self, text, fatalError=False):  # noqa: N802, N803
            self.errors.append(text)

    buildings = Path(__file__).parents[2] / "samples" / "kampala" / "buildings_osm.geojson"
    fb = Log()
    processing.run("edifice:trainingdataset", {"IMAGERY": str(kampala_rgb), "BUILDINGS": str(buildings),
                                               "USE_FIELD": "", "CHIP_SIZE": 128, "SPLIT_TILE": 256,
                                               "OUTPUT_FOLDER": str(tmp_path / "ds")}, feedback=fb)
    assert any("split" in w and "SPLIT_TILE" in w for w in fb.warnings), fb.warnings
    assert not any("split" in e for e in fb.errors), fb.errors
