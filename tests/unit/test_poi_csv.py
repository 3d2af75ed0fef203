"""Issue 16 item 9: a POI CSV with coordinate columns (x/y + a CRS, or lon/lat) gives the same
points as a point layer, in core, the CLI (poi-probability) and the building-use tools."""
import subprocess
import sys

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
from pyproj import Transformer

from edifice.core.errors import InputError
from edifice.core.use.poi_sources import coordinate_columns, read_point_file

PTS = [(454400.0, 38800.0, "shop"), (454700.0, 38600.0, "school"), (454900.0, 38520.0, "industrial")]
TAGS = {"shop": '"shop"=>"supermarket"', "school": '"amenity"=>"school"', "industrial": '"landuse"=>"industrial"'}


def _csv(path, header, rows):
    path.write_text(header + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    return path


def _xy_csv(tmp_path):
    return _csv(tmp_path / "pois.csv", "X,Y,other_tags",
                [(x, y, '"' + TAGS[k].replace('"', '""') + '"') for x, y, k in PTS] + [("", "", "")])


def test_xy_columns_with_a_crs(tmp_path):
    xs, ys, recs, crs = read_point_file(str(_xy_csv(tmp_path)), None, "other_tags", crs="EPSG:32636")
    assert np.allclose(xs, [p[0] for p in PTS]) and np.allclose(ys, [p[1] for p in PTS])  # empty row skipped
    assert recs[0]["other_tags"] == TAGS["shop"] and "32636" in crs
    with pytest.raises(InputError, match="POINTS_CRS.*without a CRS"):
        read_point_file(str(_xy_csv(tmp_path)), None, "other_tags")


def test_lon_lat_columns_default_to_wgs84(tmp_path):
    tr = Transformer.from_crs("EPSG:32636", "EPSG:4326", always_xy=True)
    rows = [(*tr.transform(x, y), k) for x, y, k in PTS]
    path = _csv(tmp_path / "ll.csv", "longitude,latitude,kind", rows)
    xs, ys, recs, crs = read_point_file(str(path), None, "kind")
    assert np.allclose(xs, [r[0] for r in rows]) and "4326" in crs and [r["kind"] for r in recs] == ["shop", "school",
                                                                                                     "industrial"]
    assert coordinate_columns(["a", "easting", "Northing"]) == ("easting", "Northing", False)
    assert coordinate_columns(["a", "b"]) is None
    with pytest.raises(InputError, match="no column 'px'"):
        coordinate_columns(["a", "b"], "px", "b")


def test_cli_poi_probability_from_csv_equals_point_layer(tmp_path, kampala_rgb):
    gpkg = tmp_path / "pois.gpkg"
    pyogrio.raw.write(str(gpkg), shapely.to_wkb(shapely.points([(x, y) for x, y, _ in PTS])),
                      [np.array([TAGS[k] for *_, k in PTS], dtype=object)], ["other_tags"], driver="GPKG",
                      geometry_type="Point", crs="EPSG:32636")
    outs = []
    for src, extra in ((gpkg, []), (_xy_csv(tmp_path), ["--points-crs", "EPSG:32636"])):
        out = tmp_path / f"{src.stem}_{src.suffix[1:]}.tif"
        r = subprocess.run([sys.executable, "-m", "edifice.core.cli", "poi-probability", str(src), str(out),
                            "--reference", str(kampala_rgb), *extra], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        with rasterio.open(out) as ds:
            outs.append(ds.read())
    assert outs[0].max() > 0 and np.array_equal(outs[0], outs[1])
