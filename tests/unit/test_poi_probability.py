import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import CRS, Geod, Transformer

from edifice.core.evaluation.category_mapping import parse_osm_tags
from edifice.core.errors import InputError
from edifice.core.grid import Grid
from edifice.core.use.poi_probability import NODATA, PoiSet, poi_probability
from edifice.core.use.poi_sources import classify_pois, load_poi_mapping, read_point_file
from edifice.core.progress import Progress
from edifice.core.raster_io import atomic_raster

UTM = CRS.from_epsg(32636).to_wkt()
LL = CRS.from_epsg(4326).to_wkt()
GEOD = Geod(ellps="WGS84")


class Recorder(Progress):
    def __init__(self):
        self.warnings = []

    def warning(self, message):
        self.warnings.append(message)


def _brute_force_distance(grid, pois_lonlat, cls, k):
    """Exact WGS84 geodesic distance from every pixel centre to the nearest POI of class k."""
    xs, ys = grid.pixel_centres()
    lon, lat = Transformer.from_crs(grid.crs, LL, always_xy=True).transform(xs.ravel(), ys.ravel())
    plon, plat = pois_lonlat[0][cls == k], pois_lonlat[1][cls == k]
    d = np.full(lon.shape, np.inf)
    for a, b in zip(plon, plat):
        _, _, dist = GEOD.inv(lon, lat, np.full_like(lon, a), np.full_like(lat, b))
        d = np.minimum(d, dist)
    return d.reshape(grid.shape)


@pytest.mark.parametrize("crs,res,origin", [(UTM, 2.0, (452000.0, 40400.0)),
                                            (LL, 0.0001, (32.59, 0.352))])
def test_matches_brute_force_geodesic(tmp_path, crs, res, origin):
    grid = Grid(Affine(res, 0, origin[0], 0, -res, origin[1]), 120, 90, crs)
    rng = np.random.default_rng(0)
    xmin, ymin, xmax, ymax = grid.bounds
    n = 40
    # POIs inside and just outside the grid
    px = rng.uniform(xmin - 0.2 * (xmax - xmin), xmax + 0.2 * (xmax - xmin), n)
    py = rng.uniform(ymin - 0.2 * (ymax - ymin), ymax + 0.2 * (ymax - ymin), n)
    cls = np.arange(n) % 3
    dmax = (150.0, 100.0, 400.0)
    poi_probability(PoiSet(px, py, cls, crs), grid, str(tmp_path / "p.tif"), dmax, block_size=50)
    with rasterio.open(tmp_path / "p.tif") as ds:
        p = ds.read()
        assert ds.count == 3 and ds.dtypes[0] == "float32"
    lonlat = Transformer.from_crs(crs, LL, always_xy=True).transform(px, py)
    for k in range(3):
        truth = _brute_force_distance(grid, lonlat, cls, k)
        ours = (1 - p[k]) * dmax[k]
        near = truth < dmax[k] * 0.999
        assert near.sum() > 100
        assert np.all(np.abs(ours[near] - truth[near]) <= 0.005 * truth[near] + 1e-3)
        assert np.all(p[k][truth >= dmax[k] * 1.001] == 0)
        assert p[k].min() >= 0 and p[k].max() <= 1


def test_pois_outside_the_grid_count(tmp_path):
    grid = Grid(Affine(1, 0, 450000, 0, -1, 40000), 50, 50, UTM)
    # one commercial POI 20 m east of the grid's right edge
    pois = PoiSet([450070.0], [39975.0], [1], UTM)
    rec = Recorder()
    poi_probability(pois, grid, str(tmp_path / "p.tif"), (100, 100, 100), progress=rec)
    with rasterio.open(tmp_path / "p.tif") as ds:
        p = ds.read()
    assert p[1, 25, 49] == pytest.approx(1 - 20.5 / 100, abs=2e-3)
    assert (p[0] == 0).all() and (p[2] == 0).all()
    assert sum("residential" in w for w in rec.warnings) == 1
    assert sum("industrial" in w for w in rec.warnings) == 1


def test_points_in_another_crs_are_reprojected(tmp_path):
    grid = Grid(Affine(1, 0, 450000, 0, -1, 40000), 40, 40, UTM)
    lon, lat = Transformer.from_crs(UTM, LL, always_xy=True).transform(450020.5, 39979.5)
    poi_probability(PoiSet([lon], [lat], [0], LL), grid, str(tmp_path / "p.tif"), (50, 50, 50))
    with rasterio.open(tmp_path / "p.tif") as ds:
        p = ds.read(1)
    assert np.unravel_index(np.argmax(p), p.shape) == (20, 20)
    assert p[20, 20] == pytest.approx(1.0, abs=1e-4)


def test_reference_nodata_becomes_output_nodata(tmp_path):
    grid = Grid(Affine(1, 0, 450000, 0, -1, 40000), 30, 20, UTM)
    ref = np.full((1, 20, 30), 7, np.uint8)
    ref[0, :5, :] = 0
    with atomic_raster(tmp_path / "ref.tif", grid, 1, np.uint8, nodata=0) as dst:
        dst.write(ref)
    poi_probability(PoiSet([450010.0], [39990.0], [2], UTM), grid, str(tmp_path / "p.tif"),
                    reference_path=str(tmp_path / "ref.tif"))
    with rasterio.open(tmp_path / "p.tif") as ds:
        p = ds.read()
        assert ds.nodata == NODATA
    assert (p[:, :5] == NODATA).all() and (p[:, 5:] >= 0).all()


def test_bad_inputs(tmp_path):
    grid = Grid(Affine(1, 0, 0, 0, -1, 0), 10, 10, UTM)
    with pytest.raises(InputError, match="no point"):
        poi_probability(PoiSet([], [], [], UTM), grid, str(tmp_path / "p.tif"))
    with pytest.raises(InputError, match="MAX_DISTANCES"):
        poi_probability(PoiSet([1.0], [1.0], [0], UTM), grid, str(tmp_path / "p.tif"), "500,abc,3")
    with pytest.raises(InputError, match="no CRS"):
        poi_probability(PoiSet([1.0], [1.0], [0], ""), grid, str(tmp_path / "p.tif"))
    with pytest.raises(InputError, match="unknown preset"):
        load_poi_mapping("yelp")
    with pytest.raises(InputError, match="MAPPING_FILE"):
        load_poi_mapping("csv")
    assert not (tmp_path / "p.tif").exists()


def test_presets_map_categories():
    gbt = load_poi_mapping("gbt35648")
    assert [gbt.classify_record({"c": v}, "c") for v in ("110101", "120201", "220200", "230130", "21")] == [
        "commercial", "residential", "industrial", "industrial", "residential"]
    osm = load_poi_mapping("osm")
    assert osm.classify_record({"other_tags": '"shop"=>"bakery","name"=>"X"'}, "other_tags") == "commercial"
    assert osm.classify_record({"other_tags": '"craft"=>"carpenter"'}, "other_tags") == "industrial"
    assert osm.classify_record({"man_made": "works", "other_tags": None}, "other_tags") == "industrial"
    assert osm.classify_record({"other_tags": '"natural"=>"tree"'}, "other_tags") is None
    assert osm.classify_record({"other_tags": '"amenity"=>"bench"'}, "other_tags") == "none"
    ov = load_poi_mapping("overture")
    assert ov.classify_record({"cat": "food_and_drink > restaurant"}, "cat") == "commercial"
    assert ov.classify_record({"cat": "manufacturer"}, "cat") == "industrial"
    gp = load_poi_mapping("google_places")
    assert gp.classify_record({"t": "apartment_building"}, "t") == "residential"
    assert gp.classify_record({"t": "cafe"}, "t") == "commercial"


def test_user_csv_mapping(tmp_path):
    f = tmp_path / "m.csv"
    f.write_text("value,class\nhouse,residential\nmill,industrial\nshop*,commercial\n")
    m = load_poi_mapping("csv", str(f))
    assert m.classify_record({"k": "shop_big"}, "k") == "commercial"
    f.write_text("value,class\nhouse,homes\n")
    with pytest.raises(InputError, match="unknown class 'homes'"):
        load_poi_mapping("csv", str(f))


def test_osm_other_tags_parsing():
    assert parse_osm_tags('"a"=>"1","b:c"=>"x \\"q\\" y"') == [("a", "1"), ("b:c", 'x "q" y')]
    assert parse_osm_tags(None) == []


def test_real_helsinki_pois_are_read_and_counted(helsinki_pbf):
    xs, ys, recs, crs = read_point_file(str(helsinki_pbf), "points", "other_tags")
    c = classify_pois(xs, ys, recs, "other_tags", load_poi_mapping("osm"), crs)
    assert len(xs) > 5000
    assert c.counts["commercial"] > 500 and c.counts["industrial"] > 0
    assert c.unmapped + c.ignored + sum(c.counts.values()) == len(xs)
    assert "unmapped" in c.summary()
    with pytest.raises(InputError, match="CATEGORY_FIELD"):
        read_point_file(str(helsinki_pbf), "points", "category")
    with pytest.raises(InputError, match="not points"):
        read_point_file(str(helsinki_pbf), "multipolygons", "other_tags")


def _reference(path, grid, arr, nodata=0, crs=True):
    """Write a reference raster; ``crs=False`` writes one without a CRS."""
    if not crs:
        grid = Grid(grid.transform, grid.width, grid.height, None)
    with atomic_raster(path, grid, 1, arr.dtype, nodata=nodata) as dst:
        dst.write(arr)
    return str(path)


def test_reference_without_valid_pixel_is_refused(tmp_path):
    grid = Grid(Affine(1, 0, 450000, 0, -1, 40000), 30, 20, UTM)
    ref = _reference(tmp_path / "ref.tif", grid, np.zeros((1, 20, 30), np.uint8))
    with pytest.raises(InputError, match=r"^REFERENCE: .*no valid pixel"):
        poi_probability(PoiSet([450010.0], [39990.0], [2], UTM), grid, str(tmp_path / "p.tif"),
                        reference_path=ref, block_size=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.tif"]


def test_reference_without_crs_is_refused(tmp_path):
    from edifice.core.use.poi_probability import reference_grid
    grid = Grid(Affine(1, 0, 450000, 0, -1, 40000), 30, 20, UTM)
    ref = _reference(tmp_path / "ref.tif", grid, np.full((1, 20, 30), 7, np.uint8), crs=False)
    with pytest.raises(InputError, match=r"^REFERENCE: .*has no coordinate reference system.*Fix: assign one"):
        reference_grid(ref)
    with pytest.raises(InputError, match=r"^REFERENCE: .*has no coordinate reference system"):
        poi_probability(PoiSet([450010.0], [39990.0], [2], UTM), grid, str(tmp_path / "p.tif"), reference_path=ref)
    with pytest.raises(InputError, match=r"^REFERENCE: the target grid has no CRS"):
        poi_probability(PoiSet([450010.0], [39990.0], [2], UTM), Grid(grid.transform, 30, 20, None),
                        str(tmp_path / "p.tif"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.tif"]


def test_reference_on_another_grid_is_refused(tmp_path):
    grid = Grid(Affine(1, 0, 450000, 0, -1, 40000), 30, 20, UTM)
    ref = _reference(tmp_path / "ref.tif", grid, np.full((1, 20, 30), 7, np.uint8))
    other = Grid(Affine(1, 0, 450000, 0, -1, 40000), 31, 20, UTM)
    with pytest.raises(InputError, match=r"^REFERENCE: .*grid"):
        poi_probability(PoiSet([450010.0], [39990.0], [2], UTM), other, str(tmp_path / "p.tif"), reference_path=ref)
    assert not (tmp_path / "p.tif").exists()


def test_poi_file_without_crs_is_refused(tmp_path):
    import pyogrio
    import shapely
    pts = shapely.points([450010.0, 450020.0], [39990.0, 39980.0])
    f = tmp_path / "nocrs.gpkg"
    with pytest.warns(UserWarning, match="crs"):
        pyogrio.raw.write(str(f), shapely.to_wkb(pts), [np.array(["shop", "house"], dtype=object)], ["kind"],
                          driver="GPKG", geometry_type="Point")
    with pytest.raises(InputError, match=r"^INPUT: .*has no CRS.*Fix: assign the layer's CRS"):
        read_point_file(str(f), None, "kind")


# ------------------------------------------------------------ per-cell candidates (issue 17)
def _geodesic_truth(grid, px, py, cls, k):
    lonlat = Transformer.from_crs(grid.crs, LL, always_xy=True).transform(px, py)
    return _brute_force_distance(grid, lonlat, np.asarray(cls), k)


def _assert_exact(p, truth, dmax):
    """Our distance (1 - p) d_max equals the WGS84 geodesic within the chord/sphere bound
    (1e-5 relative), the rounding of p to 2^-16 (d_max / 131072) and 1 mm; p = 0 beyond d_max."""
    from edifice.core.use.poi_probability import QUANTUM_STEPS
    near = truth < dmax * 0.999
    assert near.sum() > 100
    ours = (1 - p.astype(np.float64)) * dmax
    assert np.all(np.abs(ours[near] - truth[near]) <= 1e-5 * truth[near] + dmax / (2 * QUANTUM_STEPS) + 1e-3)
    assert np.all(p[truth >= dmax * 1.0001] == 0)


def test_cells_crowded_with_pois_match_brute_force(tmp_path):
    """A tight cluster of POIs gives cells with more candidates than the pairwise step takes:
    they are computed per pixel and still match exact geodesics."""
    from edifice.core.use import poi_probability as pp
    grid = Grid(Affine(1.0, 0, 452000.0, 0, -1.0, 40400.0), 96, 80, UTM)
    rng = np.random.default_rng(3)
    n = 3 * pp._MAX_CANDIDATES
    px = np.concatenate([452040.0 + rng.uniform(0, 4, n), rng.uniform(452000, 452096, 6)])
    py = np.concatenate([40360.0 + rng.uniform(0, 4, n), rng.uniform(40320, 40400, 6)])
    cls = np.concatenate([np.ones(n, int), np.arange(6) % 3])
    cells = pp._CellFrames(grid)
    classes, _ = pp._class_pois(PoiSet(px, py, cls, UTM), cells, (60.0, 60.0, 60.0), Progress())
    _, counts, _ = pp._candidates(classes[1].tree, cells.frames(grid.full_window()), classes[1].limit)
    assert counts.max() > pp._MAX_CANDIDATES  # the per-pixel path runs
    poi_probability(PoiSet(px, py, cls, UTM), grid, str(tmp_path / "p.tif"), (60.0, 60.0, 60.0))
    with rasterio.open(tmp_path / "p.tif") as ds:
        p = ds.read()
    for k in range(3):
        _assert_exact(p[k], _geodesic_truth(grid, px, py, cls, k), 60.0)


def test_sheared_grid_matches_brute_force(tmp_path):
    """Sinusoidal far from its central meridian: the grid's rows and columns are not
    perpendicular on the ground, so the squared chord needs its u*v term."""
    from edifice.core.use import poi_probability as pp
    sinu = CRS.from_proj4("+proj=sinu +lon_0=0 +datum=WGS84 +units=m").to_wkt()
    x0, y0 = Transformer.from_crs(LL, sinu, always_xy=True).transform(60.0, 55.0)
    grid = Grid(Affine(1.0, 0, x0, 0, -1.0, y0), 100, 90, sinu)
    cells = pp._CellFrames(grid)
    assert pp._is_twisted(cells.frames(grid.full_window()), cells.offsets)
    rng = np.random.default_rng(5)
    px, py = rng.uniform(x0 - 30, x0 + 130, 30), rng.uniform(y0 - 120, y0 + 30, 30)
    cls = np.arange(30) % 3
    dmax = (80.0, 50.0, 150.0)
    poi_probability(PoiSet(px, py, cls, sinu), grid, str(tmp_path / "p.tif"), dmax, block_size=64)
    with rasterio.open(tmp_path / "p.tif") as ds:
        p = ds.read()
    for k in range(3):
        _assert_exact(p[k], _geodesic_truth(grid, px, py, cls, k), dmax[k])


def test_long_distances_use_the_arc(tmp_path):
    """d_max beyond 10 km: the arc, not the chord (at 200 km the chord is 8 m short), and
    coarse pixels (one pixel per cell)."""
    grid = Grid(Affine(2000.0, 0, 300000.0, 0, -2000.0, 200000.0), 60, 60, UTM)
    rng = np.random.default_rng(2)
    px, py = rng.uniform(250000, 470000, 9), rng.uniform(30000, 250000, 9)
    cls = np.arange(9) % 3
    dmax = (200000.0, 150000.0, 250000.0)
    poi_probability(PoiSet(px, py, cls, UTM), grid, str(tmp_path / "p.tif"), dmax)
    with rasterio.open(tmp_path / "p.tif") as ds:
        p = ds.read()
    for k in range(3):
        _assert_exact(p[k], _geodesic_truth(grid, px, py, cls, k), dmax[k])


def test_output_is_rounded_float32_with_its_quantum_in_the_metadata(tmp_path):
    from edifice.core.use.poi_probability import QUANTUM_STEPS
    grid = Grid(Affine(1, 0, 450000, 0, -1, 40000), 300, 260, UTM)
    poi_probability(PoiSet([450100.0, 450200.0], [39900.0, 39800.0], [0, 2], UTM), grid,
                    str(tmp_path / "p.tif"), (120.0, 100.0, 250.0))
    with rasterio.open(tmp_path / "p.tif") as ds:
        p = ds.read()
        assert ds.dtypes == ("float32",) * 3 and ds.compression.name == "zstd"
        assert ds.tags()["POI_QUANTUM"] == f"1/{QUANTUM_STEPS}"
        assert ds.tags()["POI_MAX_DISTANCES_M"] == "120,100,250"
    scaled = p.astype(np.float64) * QUANTUM_STEPS
    assert np.array_equal(scaled, np.round(scaled)) and p[0].max() > 0.99 and (p[1] == 0).all()
