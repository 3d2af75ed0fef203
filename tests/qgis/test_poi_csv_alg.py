"""Issue 16 item 9 in real QGIS: edifice:poiprobability takes a CSV with x/y columns (+ POINTS_CRS)
or lon/lat columns and gives the maps a point layer gives; x/y without a CRS is refused."""
import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
from pyproj import Transformer

pytestmark = pytest.mark.qgis
PTS = [(454400.0, 38800.0, "shop=supermarket"), (454700.0, 38600.0, "amenity=school"),
       (454900.0, 38520.0, "landuse=industrial")]


def _tags(t):
    k, v = t.split("=")
    return f'"{k}"=>"{v}"'


def _run(src, out, kampala_rgb, **kw):
    import processing
    processing.run("edifice:poiprobability", {"INPUT": str(src), "CATEGORY_FIELD": "other_tags", "PRESET": 0,
                                              "REFERENCE": str(kampala_rgb), "MAX_DISTANCES": "500,500,1500",
                                              "OUTPUT": str(out), **kw})
    with rasterio.open(out) as ds:
        return ds.read()


def test_poi_csv_gives_the_maps_of_a_point_layer(provider, tmp_path, kampala_rgb):
    from qgis.core import QgsProcessingException

    gpkg = tmp_path / "pois.gpkg"
    pyogrio.raw.write(str(gpkg), shapely.to_wkb(shapely.points([(x, y) for x, y, _ in PTS])),
                      [np.array([_tags(t) for *_, t in PTS], dtype=object)], ["other_tags"], driver="GPKG",
                      geometry_type="Point", crs="EPSG:32636")
    ref = _run(gpkg, tmp_path / "ref.tif", kampala_rgb)
    xy = tmp_path / "xy.csv"
    xy.write_text("x,y,other_tags\n" + "".join(f'{x},{y},"{_tags(t).replace(chr(34), chr(34) * 2)}"\n'
                                              for x, y, t in PTS))
    got = _run(xy, tmp_path / "xy.tif", kampala_rgb, POINTS_CRS="EPSG:32636")
    assert ref.max() > 0 and np.allclose(got, ref, atol=1e-6)
    tr = Transformer.from_crs("EPSG:32636", "EPSG:4326", always_xy=True)
    ll = tmp_path / "ll.csv"
    ll.write_text("lon,lat,other_tags\n" + "".join(
        "{:.9f},{:.9f},\"{}\"\n".format(*tr.transform(x, y), _tags(t).replace('"', '""')) for x, y, t in PTS))
    got = _run(ll, tmp_path / "ll.tif", kampala_rgb)
    assert np.allclose(got, ref, atol=1e-3)
    with pytest.raises(QgsProcessingException, match="without a CRS"):
        _run(xy, tmp_path / "bad.tif", kampala_rgb)
