"""PROBABILITY_TYPE of edifice:mapbuildinguse: uint8 / uint16 probability rasters are the float32 run's values
scaled and rounded (DN = round(p x scale)), with GDAL band scale metadata; masks, classes and polygons are those of
the float32 run whatever the type; assignbuildinguse and vectorize read scaled rasters as probabilities."""
from __future__ import annotations

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio

from edifice.core.errors import InputError
from edifice.core.use.building_use_map import assign_building_use, map_building_use, product_output
from edifice.core.use.probability_type import (DEFAULT_PROBABILITY_TYPE, PROBABILITY_TYPES, check_probability_type,
                                               quantise)
from edifice.core.use.vectorize import polygonize_buildings

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
BUILDINGS = ROOT / "samples" / "kampala" / "buildings_osm.geojson"
STEPS = {"uint8": 250, "uint16": 50000}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run per PROBABILITY_TYPE on the Kampala sample (imagery nodata at its borders: holes), same inputs."""
    import importlib.util
    import shutil

    spec = importlib.util.spec_from_file_location("_edifice_root_conftest", ROOT / "tests" / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    d = tmp_path_factory.mktemp("ptype")
    img = d / "kampala.tif"
    shutil.copy(ROOT / "samples" / "kampala" / "kampala_rgb_50cm.tif", img)
    ck = conftest.make_tiny_use_checkpoint(d / "tiny.pt")
    poi = conftest.write_gradient_poi_maps(d, img)
    out = {}
    for t in PROBABILITY_TYPES:  # each named explicitly (the default is tested below)
        f = d / t
        f.mkdir()
        paths = {k: str(f / f"{k}.tif") for k in ("footprint_probability", "footprint_mask", "use_class",
                                                  "use_probabilities")}
        map_building_use(str(img), str(ck), poi_maps=poi, polygons=str(f / "b.gpkg"), window=256, overlap=32,
                         batch_size=2, device="cpu", probability_type=t, **paths)
        out[t] = dict(paths, polygons=str(f / "b.gpkg"), folder=f)
    out["inputs"] = {"imagery": str(img), "checkpoint": str(ck), "poi_maps": poi}
    return out


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.nodata, ds.scales, ds.offsets, ds.dtypes[0]


@pytest.mark.parametrize("ptype", ["uint8", "uint16"])
def test_scaled_probabilities_are_the_float_values_rounded(runs, ptype):
    steps = STEPS[ptype]
    for key in ("footprint_probability", "use_probabilities"):
        p, _, _, _, _ = _read(runs["float32"][key])
        q, nodata, scales, offsets, dtype = _read(runs[ptype][key])
        assert dtype == ptype and nodata == PROBABILITY_TYPES[ptype][2]
        assert scales == (1 / steps,) * len(scales) and offsets == (0.0,) * len(offsets)
        valid = p != -1
        assert (~valid).any() and valid.any()                     # the sample's nodata border is a hole
        assert (q[~valid] == nodata).all() and (q[valid] != nodata).all()
        want = np.floor(p[valid].astype(np.float32) * np.float32(steps) + np.float32(0.5)).astype(ptype)
        np.testing.assert_array_equal(q[valid], want)
        # the documented bound: a read-back probability within half a step of the model's
        assert np.abs(q[valid] / steps - p[valid]).max() <= 0.5 / steps + 1e-6
        assert len(np.unique(q[valid])) > 10


@pytest.mark.parametrize("ptype", ["uint8", "uint16"])
def test_masks_classes_and_polygons_do_not_depend_on_the_type(runs, ptype):
    for key in ("footprint_mask", "use_class"):
        with open(runs["float32"][key], "rb") as a, open(runs[ptype][key], "rb") as b:
            assert a.read() == b.read(), key
    info_f, info_q = pyogrio.read_info(runs["float32"]["polygons"], layer="buildings"), \
        pyogrio.read_info(runs[ptype]["polygons"], layer="buildings")
    assert info_f["features"] == info_q["features"] > 0
    _, _, wkb_f, fields_f = pyogrio.raw.read(runs["float32"]["polygons"], layer="buildings")
    _, _, wkb_q, fields_q = pyogrio.raw.read(runs[ptype]["polygons"], layer="buildings")
    assert list(wkb_f) == list(wkb_q)
    for a, b in zip(fields_f, fields_q):
        np.testing.assert_array_equal(a, b)
    # the hidden float32 probabilities the polygons were made from are gone
    assert [p.name for p in runs[ptype]["folder"].iterdir() if p.name.startswith(".")] == []


def test_assign_and_vectorize_read_scaled_probabilities(runs, tmp_path):
    """Both read p = DN x scale: the attributes agree with the float32 raster's to within half a step."""
    got = {}
    for t in ("float32", "uint8"):
        out = tmp_path / f"assigned_{t}.gpkg"
        assign_building_use(str(BUILDINGS), runs[t]["use_probabilities"], str(out))
        info = pyogrio.read_info(out, layer="buildings")
        _, _, _, f = pyogrio.raw.read(out, layer="buildings")
        names = list(info["fields"])
        got[t] = np.stack([f[names.index(n)] for n in ("p_residential", "p_commercial", "p_industrial")])
        poly = tmp_path / f"poly_{t}.gpkg"
        polygonize_buildings(runs[t]["footprint_mask"], runs[t]["use_probabilities"], str(poly), 0.25)
        _, _, _, pf = pyogrio.raw.read(poly)
        got[t + "_poly"] = np.stack([np.asarray(x, float) for x in pf[2:5]])
    known = np.isfinite(got["float32"])
    assert known.any()
    diff = np.abs(got["uint8"][known] - got["float32"][known])
    assert diff.max() <= 0.5 / 250 + 1e-6 and diff.max() > 0     # scaled (raw DNs would be off by ~100)
    pdiff = np.abs(got["uint8_poly"] - got["float32_poly"])
    assert np.nanmax(pdiff) <= 0.5 / 250 + 1e-6


def test_an_unscaled_integer_raster_is_still_refused_by_assign(runs, tmp_path):
    src = runs["uint8"]["use_probabilities"]
    plain = tmp_path / "plain.tif"
    with rasterio.open(src) as ds:
        prof, data = dict(ds.profile), ds.read()
    with rasterio.open(plain, "w", **prof) as dst:
        dst.write(data)
    with pytest.raises(InputError, match="PROBABILITIES"):
        assign_building_use(str(BUILDINGS), str(plain), str(tmp_path / "o.gpkg"))


def test_uint8_is_the_default_and_reads_as_probabilities(runs, tmp_path):
    """A run that names no PROBABILITY_TYPE writes uint8 (p = DN x 0.004, nodata 255), the same file contents as
    the explicit uint8 run; GDAL's band scale makes its values the float32 run's probabilities within 0.002."""
    assert DEFAULT_PROBABILITY_TYPE == "uint8" and check_probability_type(None) == "uint8"
    assert product_output("use_probs", "x.tif", {}).dtype == "uint8"
    paths = {k: str(tmp_path / f"{k}.tif") for k in ("footprint_probability", "use_probabilities")}
    map_building_use(runs["inputs"]["imagery"], runs["inputs"]["checkpoint"], poi_maps=runs["inputs"]["poi_maps"],
                     window=256, overlap=32, batch_size=2, device="cpu", **paths)
    for key, path in paths.items():
        q, nodata, scales, _, dtype = _read(path)
        assert dtype == "uint8" and nodata == 255 and scales == (0.004,) * len(scales)
        assert np.array_equal(q, _read(runs["uint8"][key])[0])
        with rasterio.open(path) as ds, rasterio.open(runs["float32"][key]) as f32:
            p = ds.read(masked=True).astype(np.float64) * np.array(ds.scales)[:, None, None]
            exact = f32.read(masked=True)
        assert np.array_equal(p.mask, exact.mask) and p.count() > 0
        assert np.abs(p - exact).max() <= 0.002 + 1e-6


def test_bad_types_are_refused(tmp_path, kampala_rgb, tiny_use_checkpoint, gradient_poi_maps):
    assert check_probability_type(" UINT8 ") == "uint8" and check_probability_type("Float32") == "float32"
    out = tmp_path / "up.tif"
    with pytest.raises(InputError, match="PROBABILITY_TYPE") as e:
        map_building_use(str(kampala_rgb), str(tiny_use_checkpoint), poi_maps=gradient_poi_maps(tmp_path, kampala_rgb),
                         use_probabilities=str(out), window=256, overlap=32, probability_type="int8")
    assert "uint8" in str(e.value)
    assert not out.exists()


def test_quantise_clips_and_never_writes_nodata():
    p = np.array([-0.1, 0.0, 0.001, 0.002, 0.5, 0.999, 1.0, 1.2, np.nan], np.float32)
    np.testing.assert_array_equal(quantise(p, "uint8"), [0, 0, 0, 1, 125, 250, 250, 250, 255])
    np.testing.assert_array_equal(quantise(p[:-1], "uint16"), [0, 0, 50, 100, 25000, 49950, 50000, 50000])
    np.testing.assert_array_equal(quantise(p[1:-2], "uint8"), [0, 0, 1, 125, 250, 250])
    assert quantise(p, "float32") is p


@pytest.mark.parametrize("ptype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("specials", [False, True])
def test_compiled_finalize_gives_the_numpy_values(ptype, specials):
    """The one-pass compiled finalisation (numba) gives the mask, classes and quantised values of the numpy
    functions: ties at half a step, ties between classes, values beyond [0, 1] and (``specials``) NaN and
    infinities (a tile with a NaN takes numpy's argmax path)."""
    compiled = pytest.importorskip("edifice.core.use._finalize_compiled")
    if not compiled.AVAILABLE:
        pytest.skip("numba is not installed")
    from edifice.core.use.building_use_map import use_classes
    from edifice.core.use.probability_type import PROBABILITY_TYPES

    dtype, steps, nodata = PROBABILITY_TYPES[ptype]
    rng = np.random.default_rng(1)
    v = rng.random((4, 60, 70), dtype=np.float32) * np.float32(1.2) - np.float32(0.1)
    if steps:  # exact half steps: the rounding ties
        v.flat[::7] = (np.arange(v.size)[::7] % steps + 0.5).astype(np.float32) / np.float32(steps)
    v[1, ::5] = v[0, ::5]  # equal use probabilities: the first wins
    if specials:
        v.flat[::101], v.flat[::103], v.flat[::107] = np.nan, np.inf, -np.inf
    mask, cls, qpb, quse = compiled.finalize_tile(v[:3], v[3], 0.5, steps, nodata, dtype)
    building = v[3] > 0.5
    assert np.array_equal(mask, building.view(np.uint8))
    assert np.array_equal(cls, use_classes(v[:3], building))
    assert set(np.unique(cls)) == {0, 1, 2, 3}
    if steps is None:
        assert qpb is None and quse is None
    else:
        assert qpb.dtype == np.dtype(dtype) and quse.dtype == np.dtype(dtype)
        assert np.array_equal(qpb, quantise(v[3][None], ptype)[0])
        assert np.array_equal(quse, quantise(v[:3], ptype))
