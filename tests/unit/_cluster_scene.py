"""Shared by the cluster tests in QGIS and through qgis_process: a tiny imagery-only checkpoint
and the single-machine reference run through the CLI, with one math thread and batches of one
window (the settings the Dask workers of the tests get), so that pixels compare exactly."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ["--window", "256", "--overlap", "32", "--batch-size", "1", "--device", "cpu"]


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


procs = load("_dask_procs", Path(__file__).with_name("_dask_procs.py"))


def tiny_checkpoint(path: Path) -> Path:
    conftest = load("_edifice_root_conftest", ROOT / "tests" / "conftest.py")
    return conftest.make_tiny_use_checkpoint(path, variant="imagery_multitask", window=256)


def single_machine_use_class(imagery: Path, checkpoint: Path, out: Path) -> Path:
    r = subprocess.run([sys.executable, "-m", "edifice.core.cli", "map-building-use", str(imagery), str(checkpoint),
                        *SETTINGS, "--use-class", str(out)], capture_output=True, text=True, env=procs.cli_env(),
                       timeout=600)
    assert r.returncode == 0, r.stderr
    return out


def one_worker_cluster(folder: Path):
    """A scheduler and one worker (processes on 127.0.0.1), ready; stop it with ``.stop()``."""
    dask = procs.DaskProcs(folder)
    try:
        dask.add_worker("w")
        dask.wait_for_workers(1)
    except BaseException:
        dask.stop()
        raise
    return dask


#: kriging settings of the cloud-gap-fill cluster tests (small, so that they run in seconds)
GAP_SETTINGS = {"NEIGHBOURS": 8, "SEARCH_RADIUS": 20.0, "MAX_LAG": 20, "SAMPLE_WINDOWS": 4}


def cloudy_scene(folder: Path, height: int = 150, width: int = 170) -> dict:
    """A smooth 2-band uint16 image (no nodata, 10 m UTM pixels) and a cloud mask of discs plus
    a bottom-right square whose inside is farther than 20 px from any clear pixel. Returns the
    paths, the cloud mask and the image array."""
    import numpy as np
    from affine import Affine
    from pyproj import CRS
    from scipy import ndimage

    from edifice.core.grid import Grid
    from edifice.core.raster_io import atomic_raster

    folder.mkdir(parents=True, exist_ok=True)
    grid = Grid(Affine(10, 0, 450000, 0, -10, 40000), width, height, CRS.from_epsg(32636).to_wkt())
    rng = np.random.default_rng(3)
    bands = [ndimage.gaussian_filter(rng.normal(size=(height, width)), 6) for _ in range(2)]
    img = np.stack([1000 + 300 * b / b.std() for b in bands]).astype(np.uint16)
    yy, xx = np.mgrid[0:height, 0:width]
    clouds = ((yy - 64) ** 2 + (xx - 64) ** 2 <= 14 ** 2) | ((yy - 30) ** 2 + (xx - 140) ** 2 <= 9 ** 2) \
        | ((yy - 120) ** 2 + (xx - 40) ** 2 <= 6 ** 2) | ((yy >= 100) & (xx >= 110))
    paths = {}
    for name, arr in (("image", img), ("mask", clouds[None].astype(np.uint8))):
        paths[name] = str(folder / f"{name}.tif")
        with atomic_raster(paths[name], grid, arr.shape[0], arr.dtype) as dst:
            dst.write(arr)
    return {**paths, "clouds": clouds, "img": img}
