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
    fp, fm = tmp_path / "fp.tif", tmp_path / "fm.tif"
    pois = _multi_layer_pois(tmp_path, kampala_pois)
    QgsProject.instance().removeAllMapLayers()
    res = processing.runAndLoadResults("edifice:mapbuildinguse", {
        "IMAGERY": str(kampala_rgb), "CHECKPOINT": str(tiny_use_checkpoint), "POI_LAYER": f"{pois}|layername=pois",
        "CATEGORY_FIELD": "other_tags", "MASK": str(mask), "DEVICE": "cpu", "BATCH_SIZE": 2, "WINDOW": 256,
        "OVERLAP": 32, "USE_CLASS": str(uc), "USE_PROBABILITIES": str(up), "POLYGONS": str(poly),
        "FOOTPRINT_PROBABILITY": str(fp), "FOOTPRINT_MASK": str(fm)})
    assert res["DEVICE_USED"].startswith("cpu")
    layers = {lyr.source().split("|")[0]: lyr for lyr in QgsProject.instance().mapLayers().values()}
    assert layers[str(uc)].renderer().type() == "paletted"
    assert layers[str(up)].renderer().type() == "multibandcolor"
    assert layers[str(poly)].renderer().type() == "categorizedSymbol"
    assert layers[str(fp)].renderer().type() == "singlebandpseudocolor"
    assert layers[str(fm)].renderer().type() == "paletted"
    # the styles' own classes, not QGIS's defaults for a palette raster
    assert "building" in {c.label for c in layers[str(fm)].renderer().classes()}
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


def _multi_layer_pois(tmp_path, kampala_pois):
    """A GeoPackage whose first layer is not the POIs: 'roads' (points without other_tags),
    then 'pois'."""
    import shapely

    path = tmp_path / "multi.gpkg"
    pyogrio.raw.write(str(path), shapely.to_wkb(shapely.points([(454300.0, 38700.0), (454800.0, 38650.0)])),
                      [np.array(["a", "b"], dtype=object)], ["name"], driver="GPKG", layer="roads",
                      geometry_type="Point", crs="EPSG:32636")
    meta, _, wkb, fields = pyogrio.raw.read(str(kampala_pois))
    pyogrio.raw.write(str(path), wkb, fields, list(meta["fields"]), driver="GPKG", layer="pois",
                      geometry_type="Point", crs="EPSG:32636", append=True)
    assert [n for n, _ in pyogrio.list_layers(path)] == ["roads", "pois"]
    return path


def test_builtup_mask_takes_memory_layers(provider, kampala_rgb, tmp_path):
    """Polygons from a memory layer (as in a graphical model) give the same mask as the file."""
    import processing
    from qgis.core import QgsFeatureRequest, QgsVectorLayer

    src = QgsVectorLayer(str(BUILDINGS), "buildings", "ogr")
    mem = src.materialize(QgsFeatureRequest())
    assert mem.providerType() == "memory" and mem.featureCount() == src.featureCount() > 0
    a, b = tmp_path / "file.tif", tmp_path / "mem.tif"
    try:
        processing.run("edifice:builtupmask", {"REFERENCE": str(kampala_rgb), "POLYGONS": [str(BUILDINGS)],
                                               "OUTPUT": str(a)})
        processing.run("edifice:builtupmask", {"REFERENCE": str(kampala_rgb), "POLYGONS": [mem], "OUTPUT": str(b)})
    finally:
        del mem, src
    with rasterio.open(a) as x, rasterio.open(b) as y:
        ma, mb = x.read(1), y.read(1)
    assert ma.any() and (ma == mb).all()


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


def test_precision_and_compression_reach_the_engine(provider, kampala_rgb, kampala_pois, tiny_use_checkpoint,
                                                    tmp_path):
    """PRECISION bf16 and COMPRESSION deflate:1 (advanced parameters) are used; fp16 on the CPU is refused."""
    import processing
    from qgis.core import QgsProcessingException

    base = {"IMAGERY": str(kampala_rgb), "CHECKPOINT": str(tiny_use_checkpoint), "POI_LAYER": str(kampala_pois),
            "CATEGORY_FIELD": "other_tags", "DEVICE": "cpu", "WINDOW": 256, "OVERLAP": 32,
            "PROBABILITY_TYPE": 0}  # float32: the probabilities' own values are compared (the default is uint8)
    fp32, bf16 = tmp_path / "fp32.tif", tmp_path / "bf16.tif"
    processing.run("edifice:mapbuildinguse", dict(base, FOOTPRINT_PROBABILITY=str(fp32), USE_CLASS=None))
    processing.run("edifice:mapbuildinguse", dict(base, FOOTPRINT_PROBABILITY=str(bf16), USE_CLASS=None,
                                                  PRECISION=2, COMPRESSION=1))
    with rasterio.open(fp32) as a, rasterio.open(bf16) as b:
        assert a.compression.name.lower() == "zstd" and b.compression.name.lower() == "deflate"
        pa, pb = a.read(1, masked=True), b.read(1, masked=True)
    assert np.array_equal(pa.mask, pb.mask) and 0 <= pb.min() and pb.max() <= 1
    assert np.abs(pa - pb).max() > 0  # bf16 was used (a random-weights network: no bound on the difference)
    out = tmp_path / "fp16.tif"
    with pytest.raises(QgsProcessingException, match="PRECISION"):
        processing.run("edifice:mapbuildinguse", dict(base, FOOTPRINT_PROBABILITY=str(out), USE_CLASS=None,
                                                      PRECISION=3))
    assert not out.exists()


def test_uint8_probabilities_are_read_as_probabilities_by_qgis(provider, kampala_rgb, kampala_pois,
                                                             tiny_use_checkpoint, tmp_path):
    """PROBABILITY_TYPE uint8 (the default; float32 is PROBABILITY_TYPE 0): QGIS's raster provider applies the band
    scale (p = DN x 0.004), so identify, sample and the 0..1 styles see probabilities; the values are the float32
    run's, rounded."""
    import processing
    from qgis.core import QgsPointXY, QgsProject, QgsRaster, QgsRasterLayer

    base = {"IMAGERY": str(kampala_rgb), "CHECKPOINT": str(tiny_use_checkpoint), "POI_LAYER": str(kampala_pois),
            "CATEGORY_FIELD": "other_tags", "DEVICE": "cpu", "WINDOW": 256, "OVERLAP": 32, "USE_CLASS": None}
    f32, q8, fp8 = tmp_path / "up32.tif", tmp_path / "up8.tif", tmp_path / "fp8.tif"
    processing.run("edifice:mapbuildinguse", dict(base, USE_PROBABILITIES=str(f32), PROBABILITY_TYPE=0))
    QgsProject.instance().removeAllMapLayers()
    processing.runAndLoadResults("edifice:mapbuildinguse", dict(base, USE_PROBABILITIES=str(q8),
                                                               FOOTPRINT_PROBABILITY=str(fp8)))
    layers = {lyr.source().split("|")[0]: lyr for lyr in QgsProject.instance().mapLayers().values()}
    assert layers[str(q8)].renderer().type() == "multibandcolor"
    assert layers[str(fp8)].renderer().type() == "singlebandpseudocolor"
    QgsProject.instance().removeAllMapLayers()
    with rasterio.open(f32) as a, rasterio.open(q8) as b:
        p, dn, t = a.read(), b.read(), b.transform
        assert a.dtypes[0] == "float32" and b.dtypes[0] == "uint8" and b.scales == (0.004,) * 3 and b.nodata == 255
    valid = p[0] != -1
    rows, cols = np.nonzero(valid)
    pick = np.linspace(0, len(rows) - 1, 25).astype(int)
    layer = QgsRasterLayer(str(q8), "q8", "gdal")
    assert layer.isValid()
    dp = layer.dataProvider()
    for k in pick:
        r, c = int(rows[k]), int(cols[k])
        x, y = rasterio.transform.xy(t, r, c)
        for band in (1, 2, 3):
            value, ok = dp.sample(QgsPointXY(x, y), band)
            assert ok and value == pytest.approx(dn[band - 1, r, c] * 0.004, abs=1e-6)
            assert abs(value - p[band - 1, r, c]) <= 0.002 + 1e-6
        ident = dp.identify(QgsPointXY(x, y), QgsRaster.IdentifyFormatValue).results()
        assert ident[1] == pytest.approx(dn[0, r, c] * 0.004, abs=1e-6)
    del layer
