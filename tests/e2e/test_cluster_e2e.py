"""qgis_process: edifice:mapbuildinguse with CLUSTER on a real Dask scheduler + worker
(processes on 127.0.0.1): a .tif output is a COG mosaic (VRT beside it) with the pixels of the
single-machine run."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import rasterio

pytestmark = pytest.mark.e2e
pytest.importorskip("distributed")
_path = Path(__file__).resolve().parents[1] / "unit" / "_cluster_scene.py"
_spec = importlib.util.spec_from_file_location("_cluster_scene", _path)
scene = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scene)


def test_map_building_use_cluster_through_qgis_process(qp, kampala_rgb, tmp_path):
    ck = scene.tiny_checkpoint(tmp_path / "tiny.pt")
    ref = scene.single_machine_use_class(kampala_rgb, ck, tmp_path / "ref.tif")
    dask = scene.one_worker_cluster(tmp_path)
    try:
        out = tmp_path / "out" / "use_class.tif"
        r = qp("run", "edifice:mapbuildinguse", "--", f"IMAGERY={kampala_rgb}", f"CHECKPOINT={ck}", "DEVICE=cpu",
               "BATCH_SIZE=1", "WINDOW=256", "OVERLAP=32", f"USE_CLASS={out}", f"CLUSTER={dask.address}",
               "BLOCK_WINDOWS=4", timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Dask cluster" in r.stdout
    finally:
        dask.stop()
    with rasterio.open(out) as a, rasterio.open(ref) as b, rasterio.open(out.with_suffix(".vrt")) as v:
        assert a.driver == "GTiff" and a.transform == b.transform
        assert np.array_equal(a.read(), b.read()) and np.array_equal(v.read(), b.read())



def test_cloud_gap_fill_cluster_through_qgis_process(qp, tmp_path):
    """edifice:cloudgapfill with CLUSTER: a .tif output is a COG mosaic of the blocks with the
    pixels of the run on this machine."""
    cloudy = scene.cloudy_scene(tmp_path / "scene")
    common = [f"INPUT={cloudy['image']}", f"MASK={cloudy['mask']}"] + [f"{k}={v}" for k, v in scene.GAP_SETTINGS.items()]
    ref = tmp_path / "ref.tif"
    r = qp("run", "edifice:cloudgapfill", "--", *common, f"OUTPUT={ref}", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    dask = scene.one_worker_cluster(tmp_path)
    try:
        out = tmp_path / "out" / "filled.tif"
        r = qp("run", "edifice:cloudgapfill", "--", *common, f"OUTPUT={out}", f"CLUSTER={dask.address}", timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        dask.stop()
    with rasterio.open(out) as a, rasterio.open(ref) as b, rasterio.open(out.with_suffix(".vrt")) as v:
        assert a.driver == "GTiff" and a.transform == b.transform
        assert np.array_equal(a.read(), b.read()) and np.array_equal(v.read(), b.read())
        assert not np.array_equal(b.read(), cloudy["img"])
