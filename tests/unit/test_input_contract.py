"""Wrong inputs are refused up front with the parameter named, not accepted into plausible garbage or
blamed on another parameter; nothing is written at the output path."""
from __future__ import annotations

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin

from edifice.core.use.building_use_map import assign_building_use
from edifice.core.use.builtup_mask import builtup_mask
from edifice.core.height.ccap import ccap_files
from edifice.core.errors import InputError
from edifice.core.progress import RecordingProgress
from edifice.core.use.retinex import retinex


def raster(path, data, crs="EPSG:32636", origin=(454000, 39000), res=0.5, nodata=None):
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, crs=crs, transform=from_origin(*origin, res, res), nodata=nodata) as d:
        d.write(data)
    return path


def polygons(path, geoms, crs="EPSG:32636"):
    kind = "Point" if shapely.get_type_id(geoms[0]) == 0 else "Polygon"
    pyogrio.raw.write(str(path), shapely.to_wkb(geoms), [np.arange(len(geoms))], ["id"], driver="GPKG",
                      geometry_type=kind, crs=crs)
    return path


@pytest.fixture
def probabilities(tmp_path):
    p = np.full((3, 40, 40), 0.2, np.float32)
    p[0] = 0.6
    return raster(tmp_path / "probs.tif", p)


def boxes(n=3, x0=454002.0, y0=38990.0):
    return np.array([shapely.box(x0 + 4 * k, y0, x0 + 4 * k + 3, y0 + 3) for k in range(n)], dtype=object)


def test_assign_refuses_an_rgb_image_as_probabilities(tmp_path, kampala_rgb):
    b = polygons(tmp_path / "b.gpkg", boxes())
    with pytest.raises(InputError, match="PROBABILITIES: holds uint8 values, not probabilities"):
        assign_building_use(str(b), str(kampala_rgb), str(tmp_path / "out.gpkg"))
    assert not (tmp_path / "out.gpkg").exists()


def test_assign_refuses_values_outside_0_1(tmp_path):
    p = raster(tmp_path / "p.tif", np.full((3, 40, 40), 7.0, np.float32))
    b = polygons(tmp_path / "b.gpkg", boxes())
    with pytest.raises(InputError, match="holds values from 7 to 7, not probabilities"):
        assign_building_use(str(b), str(p), str(tmp_path / "out.gpkg"))


def test_assign_refuses_a_raster_far_from_the_buildings(tmp_path, probabilities):
    b = polygons(tmp_path / "b.gpkg", boxes(x0=654000.0))  # 200 km east
    with pytest.raises(InputError, match="PROBABILITIES: covers none of the buildings"):
        assign_building_use(str(b), str(probabilities), str(tmp_path / "out.gpkg"))
    assert not (tmp_path / "out.gpkg").exists()


def test_assign_refuses_points(tmp_path, probabilities):
    pts = polygons(tmp_path / "pts.gpkg", np.array([shapely.Point(454005, 38995)], dtype=object))
    with pytest.raises(InputError, match="INPUT: .* holds Point geometries, not polygons"):
        assign_building_use(str(pts), str(probabilities), str(tmp_path / "out.gpkg"))


def test_assign_warns_about_features_without_geometry(tmp_path, probabilities):
    geoms = boxes()
    geoms[1] = None
    b = polygons(tmp_path / "b.gpkg", geoms)
    progress = RecordingProgress()
    assign_building_use(str(b), str(probabilities), str(tmp_path / "out.gpkg"), progress=progress)
    assert any("1 of 3 features have no geometry" in w for w in progress.warnings)
    meta, _, _, fields = pyogrio.raw.read(str(tmp_path / "out.gpkg"))
    names = list(meta["fields"])
    use = fields[names.index("use_name")]
    assert use[0] == "residential" and use[2] == "residential"


def test_ccap_refuses_a_three_band_height_raster(tmp_path):
    h = raster(tmp_path / "h.tif", np.full((3, 20, 20), 10, np.float32), crs="EPSG:4326", origin=(116, 40), res=0.001)
    f = raster(tmp_path / "f.tif", np.full((20, 20), 0.3, np.float32), crs="EPSG:4326", origin=(116, 40), res=0.001)
    with pytest.raises(InputError, match="HEIGHT_1: .* has 3 band\\(s\\)"):
        ccap_files([(str(h), str(f))], str(tmp_path / "m.tif"))
    assert not (tmp_path / "m.tif").exists()


def test_ccap_names_an_all_nodata_height_raster(tmp_path):
    """It used to be reported as 'FOOTPRINT: no knee'."""
    h = raster(tmp_path / "h.tif", np.full((20, 20), -9999, np.float32), crs="EPSG:4326", origin=(116, 40),
               res=0.001, nodata=-9999)
    f = raster(tmp_path / "f.tif", np.random.default_rng(0).random((20, 20)).astype(np.float32), crs="EPSG:4326",
               origin=(116, 40), res=0.001)
    with pytest.raises(InputError, match="HEIGHT_1: .* has no valid pixels"):
        ccap_files([(str(h), str(f))], str(tmp_path / "m.tif"))


def test_builtup_mask_refuses_points_and_complex_rasters(tmp_path, kampala_rgb):
    pts = polygons(tmp_path / "pts.gpkg", np.array([shapely.Point(454005, 38995)], dtype=object))
    with pytest.raises(InputError, match="POLYGONS: .* holds Point geometries"):
        builtup_mask(str(kampala_rgb), str(tmp_path / "m.tif"), polygons=[str(pts)])
    c = raster(tmp_path / "c.tif", np.ones((20, 20), np.complex64))
    with pytest.raises(InputError, match="RASTERS\\[0\\]: .* holds complex numbers"):
        builtup_mask(str(kampala_rgb), str(tmp_path / "m.tif"), rasters=[(str(c), "1")])
    assert not (tmp_path / "m.tif").exists()


def test_retinex_blames_a_complex_input_not_the_output_type(tmp_path):
    c = raster(tmp_path / "c.tif", np.ones((20, 20), np.complex64))
    with pytest.raises(InputError, match="^INPUT: .* holds complex numbers"):
        retinex(str(c), str(tmp_path / "out.tif"))


def test_ccap_refuses_before_allocating_more_memory_than_available(tmp_path):
    """A 200,000 x 200,000 px prediction (sparse: tiny on disk) would need terabytes in memory."""
    from edifice.core.raster_io import available_memory_bytes

    if available_memory_bytes() is None:
        pytest.skip("no /proc/meminfo on this system")
    paths = []
    for n in ("h", "f"):
        p = tmp_path / f"{n}.tif"
        with rasterio.open(p, "w", driver="GTiff", width=200_000, height=200_000, count=1, dtype="float32",
                           crs="EPSG:4326", transform=from_origin(116, 40, 1e-6, 1e-6), tiled=True,
                           compress="deflate", sparse_ok=True):
            pass
        paths.append(str(p))
    with pytest.raises(InputError, match=r"HEIGHT_1: CCAP on 200000 x 200000 px needs about \d+\.\d GiB"):
        ccap_files([tuple(paths)], str(tmp_path / "m.tif"))


def test_band_out_of_range_is_named(tmp_path, kampala_rgb):
    from edifice.core.evaluation.runs import evaluate_regression

    with pytest.raises(InputError, match="PREDICTION: band 9 does not exist: .* has 3 band"):
        evaluate_regression(str(kampala_rgb), str(kampala_rgb), band=9)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", None])
def test_bad_initial_height_checkpoint_is_named_before_work(tmp_path, content):
    """Any bad INIT_CHECKPOINT used to end in a traceback, after the training patches were cut."""
    from edifice.core.height.shafts_workflows import train_shafts_from_rasters

    ck = tmp_path / "init.pt"
    if content is None:  # a building-use checkpoint: the wrong network
        import importlib.util
        from pathlib import Path
        spec = importlib.util.spec_from_file_location("c", Path(__file__).resolve().parents[1] / "conftest.py")
        conf = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(conf)
        conf.make_tiny_use_checkpoint(ck)
    else:
        ck.write_bytes(content)
    with pytest.raises(InputError, match="INIT_CHECKPOINT: "):
        train_shafts_from_rasters("absent_s1.tif", "absent_s2.tif", "absent_dem.tif", "absent_f.tif",
                                     "absent_h.tif", 100, str(tmp_path / "out.pt"), init_checkpoint=str(ck))
    assert not (tmp_path / "out.pt").exists()


def test_map_building_use_refuses_all_nodata_imagery(tmp_path, tiny_use_checkpoint, kampala_pois):
    from edifice.core.use.building_use_map import map_building_use

    img = raster(tmp_path / "empty.tif", np.zeros((3, 300, 300), np.uint8), nodata=0)
    with pytest.raises(InputError, match="IMAGERY: 'empty.tif' has no valid pixels"):
        map_building_use(str(img), str(tiny_use_checkpoint), poi_points=str(kampala_pois),
                         poi_category_field="other_tags", use_class=str(tmp_path / "u.tif"))
    assert not (tmp_path / "u.tif").exists()


def _buildings(path, geoms, heights, height_type="float"):
    data = np.array(heights, dtype=object if height_type == "text" else np.float64)
    kind = "Point" if len(geoms) and geoms[0] is not None and shapely.get_type_id(geoms[0]) == 0 else "Polygon"
    wkb = np.array([None if g is None else shapely.to_wkb(g) for g in geoms], dtype=object)
    pyogrio.raw.write(str(path), wkb, [data], ["height"], driver="GPKG", geometry_type=kind, crs="EPSG:32636")
    return str(path)


@pytest.mark.parametrize("case, words", [
    ("text", r"HEIGHT_FIELD: field 'height' holds text that is not a number \('tall'\)"),
    ("points", "BUILDINGS: .* holds Point geometries, not polygons"),
    ("empty", "BUILDINGS: "),
    ("null", "BUILDINGS: holds no building geometry"),
    ("elsewhere", "EXTENT: holds no building of BUILDINGS"),
])
def test_reference_grids_name_bad_buildings(tmp_path, case, words):
    """Each of these used to end in a traceback or an empty-but-successful grid."""
    from edifice.core.height.reference_grids import reference_grids_from_file

    box = shapely.box(454000, 39000, 454020, 39020)
    extent = None
    if case == "text":
        src = _buildings(tmp_path / "b.gpkg", [box], ["tall"], "text")
    elif case == "points":
        src = _buildings(tmp_path / "b.gpkg", [shapely.Point(454000, 39000)], [10.0])
    elif case == "empty":
        src = _buildings(tmp_path / "b.gpkg", [], [])
    elif case == "null":
        src = _buildings(tmp_path / "b.gpkg", [None, None], [10.0, 12.0])
    else:
        src = _buildings(tmp_path / "b.gpkg", [box], [10.0])
        extent = (500000, 39000, 501000, 40000)
    with pytest.raises(InputError, match=words):
        reference_grids_from_file(src, "height", 100, str(tmp_path / "f.tif"), str(tmp_path / "h.tif"), extent=extent)
    assert not (tmp_path / "f.tif").exists() and not (tmp_path / "h.tif").exists()


def test_reference_grids_repair_invalid_polygons(tmp_path):
    from edifice.core.height.reference_grids import reference_grids_from_file

    bowtie = shapely.Polygon([(454000, 39000), (454100, 39100), (454100, 39000), (454000, 39100)])
    src = _buildings(tmp_path / "b.gpkg", [bowtie, shapely.box(454000, 39000, 454050, 39050)], [10.0, 20.0])
    progress = RecordingProgress()
    out = reference_grids_from_file(src, "height", 100, str(tmp_path / "f.tif"), str(tmp_path / "h.tif"),
                                    progress=progress)
    assert any("1 invalid polygon(s) were repaired" in w for w in progress.warnings)
    assert out["cells_with_buildings"] >= 1 and (tmp_path / "f.tif").exists()


def test_street_view_points_refuse_to_overwrite_their_roads(tmp_path):
    from edifice.core.buildingsense.streetview import street_view_points

    roads = polygons(tmp_path / "roads.gpkg", boxes())
    before = roads.read_bytes()
    with pytest.raises(InputError, match="OUTPUT: .* is also the input ROADS"):
        street_view_points(str(polygons(tmp_path / "b.gpkg", boxes())), str(roads), str(roads))
    assert roads.read_bytes() == before
