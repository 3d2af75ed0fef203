"""CLI cloud-gap-fill as a user runs it (``python -m edifice.core.cli`` in a subprocess): a run on
the real Kampala sample with a blob mask, and bad input (one error line, exit 2, nothing written)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio

import edifice

ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(edifice.__file__).parent.parent),
                                                   os.environ.get("PYTHONPATH", "")]))
ENV.pop("WORLD_SIZE", None)


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "edifice.core.cli", *map(str, args)], capture_output=True,
                          text=True, env=ENV, cwd=str(cwd), timeout=300)


def _blob_mask(src, path, centre, radius):
    with rasterio.open(src) as ds:
        profile = ds.profile
        h, w = ds.shape
    yy, xx = np.mgrid[0:h, 0:w]
    m = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2).astype(np.uint8)
    profile.update(count=1, dtype="uint8", nodata=None)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(m[None])
    return m.astype(bool)


def test_cli_fills_a_cloud_on_kampala(kampala_rgb, tmp_path):
    with rasterio.open(kampala_rgb) as ds:
        img = ds.read()
    valid = (img != 0).all(axis=0)
    r, c = np.argwhere(valid)[len(np.argwhere(valid)) // 2]
    gap = _blob_mask(kampala_rgb, tmp_path / "clouds.tif", (r, c), 12) & valid
    res = _cli("cloud-gap-fill", kampala_rgb, tmp_path / "filled.tif", "--mask", tmp_path / "clouds.tif",
               "--variance", tmp_path / "var.tif", "--max-lag", "30", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["gap_pixels"] >= gap.sum() and summary["filled_per_band"][0] == summary["gap_pixels"]
    with rasterio.open(tmp_path / "filled.tif") as ds:
        out = ds.read()
        assert ds.nodata == 0 and ds.dtypes[0] == "uint8"
    assert np.array_equal(out[:, ~gap], img[:, ~gap])
    side = json.loads((tmp_path / "filled.variograms.json").read_text())
    assert len(side["bands"]) == 3 and "range_px" in side["bands"][0]["variogram"]


def test_cli_bad_input_is_one_line_and_writes_nothing(kampala_rgb, tmp_path):
    res = _cli("cloud-gap-fill", kampala_rgb, tmp_path / "o.tif", "--neighbours", "0", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.startswith("edifice: error: ")
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = _cli("cloud-gap-fill", kampala_rgb, tmp_path / "o.tif", "--nodata-gaps", "--neighbours", "0", cwd=tmp_path)
    assert res.returncode == 2 and "--neighbours" in res.stderr
    res = _cli("cloud-gap-fill", kampala_rgb, tmp_path / "o.tif", "--ranges", "9:0:1", cwd=tmp_path)
    assert res.returncode == 2 and "--ranges" in res.stderr and "band 9" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kampala_rgb_50cm.tif"]
