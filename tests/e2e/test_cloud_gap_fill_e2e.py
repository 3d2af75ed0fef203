"""edifice:cloudgapfill through /usr/bin/qgis_process.bin: the algorithm on the real Kampala sample
and the example model examples/gapfill_retinex_chain.model3 (gap filling, then Retinex)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _blob_mask(src: Path, path: Path, radius: int) -> np.ndarray:
    """A disk of ``radius`` px in the covered part of ``src``, as a uint8 mask on its grid."""
    with rasterio.open(src) as ds:
        profile, img = ds.profile, ds.read()
    valid = (img != 0).all(axis=0)
    pts = np.argwhere(valid)
    r, c = pts[len(pts) // 2]
    yy, xx = np.mgrid[0:valid.shape[0], 0:valid.shape[1]]
    m = ((yy - r) ** 2 + (xx - c) ** 2 <= radius ** 2)
    profile.update(count=1, dtype="uint8", nodata=None)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(m.astype(np.uint8)[None])
    return m & valid


def test_cloud_gap_fill_json_run(qp, kampala_rgb, tmp_path):
    gap = _blob_mask(kampala_rgb, tmp_path / "clouds.tif", 8)
    out = tmp_path / "filled.tif"
    r = qp("--json", "run", "edifice:cloudgapfill", "--", f"INPUT={kampala_rgb}", f"MASK={tmp_path / 'clouds.tif'}",
           "MAX_LAG=20", f"OUTPUT={out}")
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout[r.stdout.index("{"):])["results"]
    assert res["OUTPUT"] == str(out) and res["GAP_PIXELS"] >= gap.sum()
    assert Path(res["VARIOGRAMS"]).is_file()
    with rasterio.open(out) as o, rasterio.open(kampala_rgb) as s:
        a, b = o.read(), s.read()
    assert np.array_equal(a[:, ~gap], b[:, ~gap]) and (a[:, gap] != 0).all()


def test_bad_mask_exits_non_zero_without_output(qp, kampala_rgb, tmp_path):
    with rasterio.open(kampala_rgb) as ds:
        profile = ds.profile
    profile.update(count=1, dtype="uint8", nodata=None, width=profile["width"] // 2)
    with rasterio.open(tmp_path / "half.tif", "w", **profile) as dst:
        dst.write(np.ones((1, profile["height"], profile["width"]), np.uint8))
    r = qp("run", "edifice:cloudgapfill", "--", f"INPUT={kampala_rgb}", f"MASK={tmp_path / 'half.tif'}",
           f"OUTPUT={tmp_path / 'o.tif'}")
    assert r.returncode != 0 and "another grid" in r.stdout + r.stderr
    written = [p.name for p in tmp_path.iterdir() if not p.name.endswith(".aux.xml")]  # QGIS's statistics of inputs
    assert sorted(written) == ["half.tif", "kampala_rgb_50cm.tif"]


def test_example_model_fills_then_corrects(qp, kampala_rgb, tmp_path):
    model = tmp_path / "chain.model3"
    shutil.copy(ROOT / "examples" / "gapfill_retinex_chain.model3", model)
    gap = _blob_mask(kampala_rgb, tmp_path / "clouds.tif", 10)
    filled, corrected = tmp_path / "filled.tif", tmp_path / "corrected.tif"
    r = qp("run", str(model), "--", f"imagery={kampala_rgb}", f"clouds={tmp_path / 'clouds.tif'}", "dilation=1",
           f"gapfill:filled={filled}", f"retinex:corrected={corrected}")
    assert r.returncode == 0, r.stdout + r.stderr
    with rasterio.open(kampala_rgb) as s, rasterio.open(filled) as f, rasterio.open(corrected) as c:
        assert s.transform == f.transform == c.transform and c.count == 3
        src, fil, cor = s.read(), f.read(), c.read()
    grown = gap | np.roll(gap, 1, 0) | np.roll(gap, -1, 0) | np.roll(gap, 1, 1) | np.roll(gap, -1, 1)
    assert (fil[:, grown] != 0).all()                      # the dilated cloud was filled ...
    assert (cor[:, grown] != 0).all()                      # ... so Retinex corrects it as image, not nodata
    assert np.array_equal(fil[:, ~grown], src[:, ~grown])  # cloud-free pixels untouched by the fill
