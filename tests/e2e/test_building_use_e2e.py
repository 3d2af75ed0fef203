"""qgis_process: the building-use algorithms and the imagery_poi_use_map graphical model."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import shapely

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_algorithms_listed(qp):
    out = qp("list").stdout
    for alg in ("edifice:builtupmask", "edifice:mapbuildinguse", "edifice:assignbuildinguse"):
        assert alg in out


def test_graphical_model_imagery_pois_to_use_polygons(qp, kampala_rgb, kampala_pois, tiny_use_checkpoint_1024,
                                                      tmp_path):
    model = tmp_path / "m.model3"
    shutil.copy(ROOT / "examples" / "imagery_poi_use_map.model3", model)
    uc, poly = tmp_path / "uc.tif", tmp_path / "buildings.gpkg"
    r = qp("run", str(model), "--", f"imagery={kampala_rgb}", f"pois={kampala_pois}",
           f"checkpoint={tiny_use_checkpoint_1024}", f"usemap:use_class={uc}", f"usemap:buildings={poly}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Device: cpu" in r.stdout + r.stderr
    with rasterio.open(kampala_rgb) as src, rasterio.open(uc) as ds:
        assert ds.transform == src.transform and ds.shape == src.shape
        c = ds.read(1)
        nodata = (src.read() == 0).any(axis=0)
    assert (c[nodata] == 255).all() and set(np.unique(c[~nodata])) <= {0, 1, 2, 3}
    info = pyogrio.read_info(poly)
    assert info["features"] > 0 and {"use_class", "use_name", "area_m2", "confidence"} <= set(info["fields"])


def test_bad_device_exits_non_zero_without_output(qp, kampala_rgb, tiny_use_checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    r = qp("run", "edifice:mapbuildinguse", "--", f"IMAGERY={kampala_rgb}", f"CHECKPOINT={tiny_use_checkpoint}",
           "DEVICE=cuda:9", f"POI_MAPS={kampala_rgb}", f"USE_CLASS={out / 'uc.tif'}")
    assert r.returncode != 0
    # the error itself (qgis_process echoes the inputs, 'DEVICE:<tab>cuda:9', on stdout): core/devices.py's
    # message without CUDA, or with fewer than 10 GPUs
    assert re.search(r"DEVICE: 'cuda:9' (was asked for but CUDA is not available here|does not exist; this "
                     r"machine has \d+ CUDA device)", r.stderr), r.stdout + r.stderr
    assert list(out.iterdir()) == []


@pytest.fixture
def trained_use_checkpoint(tmp_path, kampala_rgb, kampala_pois) -> Path:
    """A checkpoint the shipped tools make with their defaults (256 px chips, multi-task,
    imagery + POI): dataset on the Kampala sample, one epoch of a tiny network."""
    from edifice.core.use.training import train_building_use
    from edifice.core.use.training_dataset import create_training_dataset

    ds, ck = tmp_path / "ds", tmp_path / "trained.pt"
    create_training_dataset(str(kampala_rgb), str(ROOT / "samples" / "kampala" / "buildings_osm.geojson"), str(ds),
                            None, poi_points_path=str(kampala_pois), poi_category_field="other_tags",
                            split_tile_m=64.0)
    train_building_use(str(ds), str(ck), encoder="resnet18", base_width=4, epochs=1, batch_size=8, device="cpu",
                       augment=False)
    return ck


def test_example_use_map_runs_with_a_checkpoint_of_the_training_tool(qp, kampala_rgb, kampala_pois,
                                                                     trained_use_checkpoint, tmp_path):
    """Issue 16 item 2: the example model hard-coded OVERLAP 128, which a checkpoint trained on the
    default 256 px chips refused; it now takes the card's window and margin."""
    model = tmp_path / "m.model3"
    shutil.copy(ROOT / "examples" / "imagery_poi_use_map.model3", model)
    uc, poly = tmp_path / "uc.tif", tmp_path / "buildings.gpkg"
    r = qp("run", str(model), "--", f"imagery={kampala_rgb}", f"pois={kampala_pois}",
           f"checkpoint={trained_use_checkpoint}", f"usemap:use_class={uc}", f"usemap:buildings={poly}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Windows of 1024 px, 128 px margin" in r.stdout + r.stderr
    with rasterio.open(uc) as ds:
        assert set(np.unique(ds.read(1))) <= {0, 1, 2, 3, 255}


def test_example_model_use_and_height_per_building(qp, kampala_rgb, kampala_ndsm, tmp_path):
    """Issue 16 item 11: examples/building_use_and_height.model3 through qgis_process: footprints +
    use probabilities + an nDSM -> one GeoPackage with use and height per building."""
    ndsm, truth, geoms = kampala_ndsm
    with rasterio.open(kampala_rgb) as src:
        prof, (h, w) = src.profile, src.shape
    p = np.zeros((3, h, w), np.float32)
    p[0, :, : w // 2] = 0.8      # west residential
    p[1, :, w // 2:] = 0.7       # east commercial
    prof.update(count=3, dtype="float32", nodata=-1.0)
    probs = tmp_path / "probs.tif"
    with rasterio.open(probs, "w", **prof) as dst:
        dst.write(p)
    model = tmp_path / "uh.model3"
    shutil.copy(ROOT / "examples" / "building_use_and_height.model3", model)
    out = tmp_path / "use_height.gpkg"
    buildings = ROOT / "samples" / "kampala" / "buildings_osm.geojson"
    r = qp("run", str(model), "--", f"buildings={buildings}", f"probabilities={probs}", f"height={ndsm}",
           f"height:buildings={out}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    meta, _, _, data = pyogrio.raw.read(str(out))
    f = dict(zip(meta["fields"], data))
    assert {"use_class", "use_name", "confidence", "height", "height_source", "height_pixels"} <= set(f)
    with rasterio.open(kampala_rgb) as src:
        inside = shapely.within(geoms, shapely.box(*src.bounds)) & (shapely.area(geoms) > 20)
        mid = src.bounds.left + (src.bounds.right - src.bounds.left) / 2
    west = inside & (shapely.bounds(geoms)[:, 2] < mid)
    east = inside & (shapely.bounds(geoms)[:, 0] > mid)
    assert west.sum() > 10 and east.sum() > 10 and len(geoms) == len(f["height"])
    assert set(f["use_name"][west]) == {"residential"} and set(f["use_name"][east]) == {"commercial"}
    assert np.allclose(f["height"][inside], truth[inside])


def test_a_model_saved_with_the_old_automatic_values_still_runs(qp, kampala_rgb, kampala_pois, tiny_use_checkpoint,
                                                                tmp_path):
    """Issue 10 item 7: WINDOW 0 and OVERLAP -1 meant "automatic" before these parameters could be
    left unset; a model saved then (tests/data, the example as it was) still runs, and says the fix."""
    model = tmp_path / "m.model3"
    shutil.copy(ROOT / "tests" / "data" / "imagery_poi_use_map_saved_before.model3", model)
    uc = tmp_path / "uc.tif"
    r = qp("run", str(model), "--", f"imagery={kampala_rgb}", f"pois={kampala_pois}",
           f"checkpoint={tiny_use_checkpoint}", f"usemap:use_class={uc}")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "Window 256 px: the model card's window" in out and "Windows of 256 px, 32 px margin" in out
    assert "WINDOW=0 is the old way" in out and "Fix: leave WINDOW not set" in out
    assert uc.exists()


def test_qgis_process_field_left_out_takes_its_default(qp, kampala_rgb, kampala_pois, tmp_path):
    """A field parameter left out on the command line takes its default (QGIS 3.22 alone refuses it)."""
    out = tmp_path / "poi.tif"
    r = qp("run", "edifice:poiprobability", "--", f"INPUT={kampala_pois}", f"REFERENCE={kampala_rgb}", f"OUTPUT={out}")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert out.exists()
    r = qp("run", "edifice:poiprobability", "--", f"INPUT={kampala_pois}", f"REFERENCE={kampala_rgb}",
           "CATEGORY_FIELD=no_such_field", f"OUTPUT={tmp_path / 'x.tif'}")
    assert r.returncode == 1 and "no_such_field" in r.stdout + r.stderr and "other_tags" in r.stdout + r.stderr


def test_probability_type_default_uint8_through_qgis_process(qp, kampala_rgb, kampala_pois, tiny_use_checkpoint, tmp_path):
    """No PROBABILITY_TYPE: uint8 (the default, as PROBABILITY_TYPE=2), scaled probabilities with the band scale,
    nodata where the imagery has none."""
    fp, up = tmp_path / "fp.tif", tmp_path / "up.tif"
    r = qp("run", "edifice:mapbuildinguse", "--", f"IMAGERY={kampala_rgb}", f"CHECKPOINT={tiny_use_checkpoint}",
           f"POI_LAYER={kampala_pois}", "CATEGORY_FIELD=other_tags", "DEVICE=cpu", "WINDOW=256", "OVERLAP=32",
           f"FOOTPRINT_PROBABILITY={fp}", f"USE_PROBABILITIES={up}")
    assert r.returncode == 0, r.stdout + r.stderr
    with rasterio.open(kampala_rgb) as src, rasterio.open(up) as a, rasterio.open(fp) as b:
        nodata = (src.read() == 0).any(axis=0)
        assert a.dtypes[0] == b.dtypes[0] == "uint8" and a.scales == (0.004,) * 3 and b.scales == (0.004,)
        q = a.read()
    assert (q[:, nodata] == 255).all() and q[:, ~nodata].max() <= 250 and len(np.unique(q[:, ~nodata])) > 5
