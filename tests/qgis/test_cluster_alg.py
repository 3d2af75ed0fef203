"""edifice:mapbuildinguse with CLUSTER set, through processing.run in real QGIS: the windows run on
a real Dask scheduler + worker (processes on 127.0.0.1), the VRT comes back styled in the
project with the pixels of the single-machine run; an unreachable scheduler is a clear error."""
from pathlib import Path

import numpy as np
import pytest
import rasterio

pytestmark = pytest.mark.qgis
pytest.importorskip("distributed")


def _scene():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "unit" / "_cluster_scene.py"
    spec = importlib.util.spec_from_file_location("_cluster_scene", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_map_building_use_on_a_dask_cluster(provider, kampala_rgb, tmp_path):
    import processing
    from qgis.core import QgsProcessingException, QgsProject

    scene = _scene()
    ck = scene.tiny_checkpoint(tmp_path / "tiny.pt")
    ref = scene.single_machine_use_class(kampala_rgb, ck, tmp_path / "ref.tif")
    dask = scene.one_worker_cluster(tmp_path)
    try:
        uc = tmp_path / "out" / "use_class.vrt"
        QgsProject.instance().removeAllMapLayers()
        res = processing.runAndLoadResults("edifice:mapbuildinguse", {
            "IMAGERY": str(kampala_rgb), "CHECKPOINT": str(ck), "DEVICE": "cpu", "BATCH_SIZE": 1, "WINDOW": 256,
            "OVERLAP": 32, "USE_CLASS": str(uc), "CLUSTER": dask.address, "BLOCK_WINDOWS": 4})
        assert res["DEVICE_USED"].startswith(f"Dask cluster {dask.address}: 2 block(s) run")
        layers = {lyr.source(): lyr for lyr in QgsProject.instance().mapLayers().values()}
        assert layers[str(uc)].renderer().type() == "paletted"
        QgsProject.instance().removeAllMapLayers()
        with rasterio.open(uc) as a, rasterio.open(ref) as b:
            assert a.transform == b.transform and np.array_equal(a.read(), b.read())
        with scene.procs.refused_port() as port, \
                pytest.raises(QgsProcessingException, match="CLUSTER: no Dask scheduler answers"):
            processing.run("edifice:mapbuildinguse", {
                "IMAGERY": str(kampala_rgb), "CHECKPOINT": str(ck), "WINDOW": 256, "OVERLAP": 32,
                "USE_CLASS": str(tmp_path / "x" / "uc.vrt"), "CLUSTER": f"tcp://127.0.0.1:{port}"})
    finally:
        dask.stop()


def test_cloud_gap_fill_on_a_dask_cluster(provider, tmp_path):
    """edifice:cloudgapfill with CLUSTER: the VRT of the blocks has the pixels of the run on this machine."""
    import processing

    scene = _scene()
    cloudy = scene.cloudy_scene(tmp_path / "scene")
    common = {"INPUT": cloudy["image"], "MASK": cloudy["mask"], **scene.GAP_SETTINGS}
    ref = processing.run("edifice:cloudgapfill", {**common, "OUTPUT": str(tmp_path / "ref.tif")})
    dask = scene.one_worker_cluster(tmp_path)
    try:
        out = tmp_path / "out" / "filled.vrt"
        res = processing.run("edifice:cloudgapfill", {**common, "OUTPUT": str(out), "CLUSTER": dask.address})
    finally:
        dask.stop()
    assert res["GAP_PIXELS"] == ref["GAP_PIXELS"] > 0 and res["UNFILLED_PIXELS"] == ref["UNFILLED_PIXELS"]
    with rasterio.open(out) as a, rasterio.open(ref["OUTPUT"]) as b:
        assert a.transform == b.transform and np.array_equal(a.read(), b.read())
        assert not np.array_equal(a.read(), cloudy["img"])  # the gaps were filled


def test_retinex_on_a_dask_cluster(provider, tmp_path):
    """edifice:retinex with CLUSTER: the COG mosaic of the blocks has the pixels of the run on this
    machine (one global stretch)."""
    import processing

    scene = _scene()
    cloudy = scene.cloudy_scene(tmp_path / "scene")
    common = {"INPUT": cloudy["image"], "SIGMAS": "15,80", "OUTPUT_TYPE": 1}
    ref = processing.run("edifice:retinex", {**common, "OUTPUT": str(tmp_path / "ref.tif")})
    dask = scene.one_worker_cluster(tmp_path)
    try:
        out = tmp_path / "out" / "retinex.tif"
        processing.run("edifice:retinex", {**common, "OUTPUT": str(out), "CLUSTER": dask.address})
    finally:
        dask.stop()
    with rasterio.open(out) as a, rasterio.open(ref["OUTPUT"]) as b:
        assert a.transform == b.transform and a.dtypes == b.dtypes == ("uint8", "uint8")
        assert np.array_equal(a.read(), b.read()) and len(np.unique(b.read())) > 100


def test_poi_probability_on_a_dask_cluster(provider, kampala_pois, kampala_rgb, tmp_path):
    """edifice:poiprobability with CLUSTER: the VRT of the blocks (each given only its candidate
    POIs) has the pixels of the run on this machine."""
    import processing

    scene = _scene()
    common = {"INPUT": str(kampala_pois), "CATEGORY_FIELD": "other_tags", "PRESET": 0,
              "REFERENCE": str(kampala_rgb), "MAX_DISTANCES": "100,100,300"}
    ref = processing.run("edifice:poiprobability", {**common, "OUTPUT": str(tmp_path / "ref.tif")})
    dask = scene.one_worker_cluster(tmp_path)
    try:
        out = tmp_path / "out" / "poi.vrt"
        processing.run("edifice:poiprobability", {**common, "OUTPUT": str(out), "CLUSTER": dask.address})
    finally:
        dask.stop()
    with rasterio.open(out) as a, rasterio.open(ref["OUTPUT"]) as b:
        assert a.transform == b.transform and np.array_equal(a.read(), b.read())
        assert (b.read() > 0).any()


def test_height_footprint_on_a_dask_cluster(provider, thu_dir, thu_checkpoint, tmp_path):
    """edifice:heightfootprint with CLUSTER: one task per tile; the height VRT comes back styled in
    the project with the pixels of the single-machine CLI run (one math thread, as the worker)."""
    import json
    import subprocess
    import sys

    import processing
    from qgis.core import QgsProject

    scene = _scene()
    inputs = [str(thu_dir / f) for f in ("thu_s1_2020.tif", "thu_s2_synthetic.tif", "thu_srtm.tif")]
    r = subprocess.run([sys.executable, "-m", "edifice.core.cli", "height-footprint", *inputs, str(thu_checkpoint),
                        str(tmp_path / "h.tif"), str(tmp_path / "f.tif"), "--extent", "116.31,39.99,116.325,40.005",
                        "--padding", "0.005", "--max-tile-deg", "0.006", "--device", "cpu", "--batch-size", "5"],
                       capture_output=True, text=True, env=scene.procs.cli_env(), timeout=600)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tiles"] == 9
    dask = scene.one_worker_cluster(tmp_path)
    try:
        out_h = tmp_path / "out" / "height.vrt"
        QgsProject.instance().removeAllMapLayers()
        res = processing.runAndLoadResults("edifice:heightfootprint", {
            "SENTINEL1": inputs[0], "SENTINEL2": inputs[1], "DEM": inputs[2], "CHECKPOINT": str(thu_checkpoint),
            "RESOLUTION": "100", "EXTENT": "116.31,116.325,39.99,40.005 [EPSG:4326]", "PADDING": 0.005,
            "DEVICE": "cpu", "BATCH_SIZE": 5, "MAX_TILE_DEG": 0.006, "CLUSTER": dask.address,
            "OUTPUT_HEIGHT": str(out_h), "OUTPUT_FOOTPRINT": str(tmp_path / "out" / "footprint.tif")})
        assert res["DEVICE_USED"].startswith(f"Dask cluster {dask.address}: 9 block(s) run")
        layers = {lyr.source(): lyr for lyr in QgsProject.instance().mapLayers().values()}
        assert layers[str(out_h)].renderer().type() == "singlebandpseudocolor"
        QgsProject.instance().removeAllMapLayers()
    finally:
        dask.stop()
    for dist, single in ((out_h, "h.tif"), (tmp_path / "out" / "footprint.tif", "f.tif")):
        with rasterio.open(dist) as a, rasterio.open(tmp_path / single) as b:
            assert a.transform == b.transform and np.array_equal(a.read(), b.read())
