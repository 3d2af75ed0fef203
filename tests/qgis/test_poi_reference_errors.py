"""edifice:poiprobability refuses a REFERENCE raster with no valid pixel or no CRS with a
QgsProcessingException naming REFERENCE, and writes nothing."""
import numpy as np
import pytest
from affine import Affine

from edifice.core.grid import Grid
from edifice.core.raster_io import atomic_raster

pytestmark = pytest.mark.qgis


def _raster(path, arr, crs):
    g = Grid(Affine(10, 0, 385000, 0, -10, 6671900), arr.shape[2], arr.shape[1], crs)
    with atomic_raster(path, g, 1, arr.dtype, nodata=0) as dst:
        dst.write(arr)
    return str(path)


@pytest.mark.parametrize("values,crs,message", [
    (0, "EPSG:3067", "REFERENCE: .*no valid pixel"),
    (7, None, "REFERENCE: .*no coordinate reference system"),
])
def test_bad_reference_through_processing_run(provider, helsinki_pbf, tmp_path, values, crs, message):
    import processing
    from qgis.core import QgsProcessingException

    ref = _raster(tmp_path / "ref.tif", np.full((1, 20, 20), values, np.uint8), crs)
    out = tmp_path / "p.tif"
    with pytest.raises(QgsProcessingException, match=message):
        processing.run("edifice:poiprobability", {
            "INPUT": f"{helsinki_pbf}|layername=points", "CATEGORY_FIELD": "other_tags",
            "REFERENCE": ref, "OUTPUT": str(out)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Helsinki.osm.pbf", "ref.tif"]
