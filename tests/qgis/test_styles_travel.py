"""Outputs written by the CLI (no QGIS involved) look right when QGIS opens them from disk:
the use-class raster gets its palette with class names and a transparent class 0 (QML sidecar),
probabilities their ramps, the building polygons their categorised style from the GeoPackage's
layer_styles table; and GDAL sees the colour table, category names and attribute table."""
import subprocess
import sys

import pytest

pytestmark = pytest.mark.qgis


@pytest.fixture
def cli_outputs(kampala_rgb, kampala_pois, tiny_use_checkpoint, tmp_path):
    out = {k: tmp_path / f"{k}.tif" for k in ("use_class", "footprint_mask", "footprint_probability",
                                              "use_probabilities")}
    out["polygons"] = tmp_path / "buildings.gpkg"
    r = subprocess.run([sys.executable, "-m", "edifice.core.cli", "map-building-use", str(kampala_rgb),
                        str(tiny_use_checkpoint), "--poi-points", str(kampala_pois), "--device", "cpu",
                        "--window", "256", "--overlap", "32"]
                       + [a for k, p in out.items() for a in (f"--{k.replace('_', '-')}", str(p))],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out, r.stderr


def test_cli_outputs_open_styled_in_qgis(qgis_app, cli_outputs):
    from qgis.core import QgsRasterLayer, QgsVectorLayer

    out, log = cli_outputs
    uc = QgsRasterLayer(str(out["use_class"]), "uc")
    assert uc.isValid() and uc.renderer().type() == "paletted"
    classes = {c.value: c for c in uc.renderer().classes()}
    assert [classes[v].label for v in (0, 1, 2, 3)] == ["non-building", "residential", "commercial", "industrial"]
    assert classes[0].color.alpha() == 0 and classes[2].color.name() == "#d7263d"
    fm = QgsRasterLayer(str(out["footprint_mask"]), "fm")
    assert fm.renderer().type() == "paletted" and "building" in {c.label for c in fm.renderer().classes()}
    assert QgsRasterLayer(str(out["footprint_probability"]), "fp").renderer().type() == "singlebandpseudocolor"
    assert QgsRasterLayer(str(out["use_probabilities"]), "up").renderer().type() == "multibandcolor"
    poly = QgsVectorLayer(f"{out['polygons']}|layername=buildings", "b", "ogr")
    assert poly.isValid() and poly.featureCount() > 0
    renderer = poly.renderer()
    assert renderer.type() == "categorizedSymbol" and renderer.classAttribute() == "use_class"
    del uc, fm, poly
    _check_gdal_sees_classes(out)
    assert "building polygon(s) written to" in log


def _check_gdal_sees_classes(out):
    """GDAL (any GIS) sees the colour table, the category names and the attribute table."""
    import json

    from osgeo import gdal

    info = json.loads(subprocess.run(["gdalinfo", "-json", str(out["use_class"])], capture_output=True,
                                     text=True, check=True).stdout)["bands"][0]
    assert info["categories"][:4] == ["non-building", "residential", "commercial", "industrial"]
    assert info["colorInterpretation"] == "Palette"
    assert info["colorTable"]["entries"][1][:3] == [0xe8, 0xc5, 0x47]  # GeoTIFF palettes hold no alpha
    ds = gdal.Open(str(out["use_class"]))
    rat = ds.GetRasterBand(1).GetDefaultRAT()
    assert rat.GetRowCount() == 4 and rat.GetValueAsString(3, 1) == "industrial"
    assert rat.GetValueAsInt(0, 5) == 0  # class 0 transparent
    del rat, ds
