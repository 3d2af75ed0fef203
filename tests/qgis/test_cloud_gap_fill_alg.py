"""edifice:cloudgapfill in real QGIS through processing.run: a real image with a blob mask, the
style of the input on the loaded output, and bad input as a QgsProcessingException with nothing written."""
import json

import numpy as np
import pytest
import rasterio

pytestmark = pytest.mark.qgis


def _mask_like(src, path, centre, radius, shift_x=0.0):
    with rasterio.open(src) as ds:
        profile = ds.profile
        h, w = ds.shape
    yy, xx = np.mgrid[0:h, 0:w]
    m = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2).astype(np.uint8)
    t = profile["transform"]
    profile.update(count=1, dtype="uint8", nodata=None, transform=t @ t.translation(shift_x, 0))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(m[None])
    return m.astype(bool)


def _covered_centre(src):
    with rasterio.open(src) as ds:
        valid = (ds.read() != 0).all(axis=0)
    pts = np.argwhere(valid)
    return valid, tuple(pts[len(pts) // 2])


def test_cloud_gap_fill_through_processing_run(provider, kampala_rgb, tmp_path):
    import processing

    valid, centre = _covered_centre(kampala_rgb)
    gap = _mask_like(kampala_rgb, tmp_path / "clouds.tif", centre, 10) & valid
    out, var, html = tmp_path / "f.tif", tmp_path / "v.tif", tmp_path / "r.html"
    res = processing.run("edifice:cloudgapfill", {"INPUT": str(kampala_rgb), "MASK": str(tmp_path / "clouds.tif"),
                                                  "MAX_LAG": 30, "OUTPUT": str(out), "OUTPUT_VARIANCE": str(var),
                                                  "OUTPUT_HTML": str(html)})
    assert res["OUTPUT"] == str(out) and res["GAP_PIXELS"] >= gap.sum() and res["UNFILLED_PIXELS"] == 0
    with rasterio.open(out) as o, rasterio.open(kampala_rgb) as s, rasterio.open(var) as v:
        a, b = o.read(), s.read()
        assert o.transform == s.transform and o.dtypes == s.dtypes and o.nodata == s.nodata
        assert v.dtypes[0] == "float32" and v.count == 3
        vv = v.read()
    assert np.array_equal(a[:, ~gap], b[:, ~gap])
    assert (vv[:, gap] > 0).all()
    assert json.loads(open(res["VARIOGRAMS"]).read())["bands"][0]["variogram"]["model"] in (
        "spherical", "exponential", "gaussian")
    assert "<svg" in html.read_text()


def test_filled_output_is_styled_like_its_input(provider, kampala_rgb, tmp_path):
    """The input layer shown as false colour (bands 3, 1, 2): the loaded output is shown the same way."""
    import processing
    from qgis.core import QgsProject, QgsRasterLayer

    _, centre = _covered_centre(kampala_rgb)
    _mask_like(kampala_rgb, tmp_path / "clouds.tif", centre, 5)
    QgsProject.instance().removeAllMapLayers()
    layer = QgsRasterLayer(str(kampala_rgb), "input")
    r = layer.renderer().clone()
    r.setRedBand(3), r.setGreenBand(1), r.setBlueBand(2)
    layer.setRenderer(r)
    QgsProject.instance().addMapLayer(layer)
    processing.runAndLoadResults("edifice:cloudgapfill", {"INPUT": layer, "MAX_LAG": 20,
                                                          "MASK": str(tmp_path / "clouds.tif"),
                                                          "OUTPUT": str(tmp_path / "f.tif")})
    loaded = [x for x in QgsProject.instance().mapLayers().values() if x.id() != layer.id()]
    assert len(loaded) == 1
    r = loaded[0].renderer()
    assert r.type() == "multibandcolor" and (r.redBand(), r.greenBand(), r.blueBand()) == (3, 1, 2)
    QgsProject.instance().removeAllMapLayers()


def test_mask_on_another_grid_raises_and_writes_nothing(provider, kampala_rgb, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    _mask_like(kampala_rgb, tmp_path / "shifted.tif", (10, 10), 5, shift_x=3.0)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(QgsProcessingException, match="MASK.*another grid"):
        processing.run("edifice:cloudgapfill", {"INPUT": str(kampala_rgb), "MASK": str(tmp_path / "shifted.tif"),
                                                "OUTPUT": str(tmp_path / "f.tif")})
    with pytest.raises(QgsProcessingException, match="RANGES"):
        processing.run("edifice:cloudgapfill", {"INPUT": str(kampala_rgb), "RANGES": "1:2",
                                                "OUTPUT": str(tmp_path / "f.tif")})
    assert sorted(p.name for p in tmp_path.iterdir()) == before
