"""Issue 16 item 11 in real QGIS: edifice:assignbuildingheight through processing.run (hand-checked
heights, graduated style on load, errors) on the Kampala footprints with a synthetic nDSM whose
truth is known: every building at its own height, ground at 0."""
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely

pytestmark = pytest.mark.qgis
BUILDINGS = Path(__file__).resolve().parents[2] / "samples" / "kampala" / "buildings_osm.geojson"


def test_assign_building_height_in_qgis(provider, tmp_path, kampala_rgb, kampala_ndsm):
    import processing
    from qgis.core import QgsProcessingException, QgsProject

    ndsm, truth, geoms = kampala_ndsm
    out = tmp_path / "heights.gpkg"
    QgsProject.instance().removeAllMapLayers()
    processing.runAndLoadResults("edifice:assignbuildingheight", {"INPUT": str(BUILDINGS), "HEIGHT": str(ndsm),
                                                                  "OUTPUT": str(out)})
    layers = [lyr for lyr in QgsProject.instance().mapLayers().values() if lyr.source().startswith(str(out))]
    assert layers and layers[0].renderer().type() == "graduatedSymbol"
    QgsProject.instance().removeAllMapLayers()
    meta, _, _, data = pyogrio.raw.read(str(out))
    f = dict(zip(meta["fields"], data))
    with rasterio.open(kampala_rgb) as src:
        bounds = shapely.box(*src.bounds)
    big = (shapely.area(geoms) > 20) & shapely.within(geoms, bounds)   # >= 80 pixels, inside the raster
    assert big.sum() > 100
    assert np.allclose(f["height"][big], truth[big])                   # the median ignores edge pixels
    assert set(f["height_source"][big]) == {"ndsm.tif:median"} and (f["height_pixels"][big] >= 4).all()
    with pytest.raises(QgsProcessingException, match="OUTPUT: written as GeoPackage"):
        processing.run("edifice:assignbuildingheight", {"INPUT": str(BUILDINGS), "HEIGHT": str(ndsm),
                                                        "OUTPUT": str(tmp_path / "x.shp")})
