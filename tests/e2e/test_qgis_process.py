"""End to end through /usr/bin/qgis_process.bin: the plugin as QGIS loads it
(classFactory(None) + initProcessing()), algorithms and a graphical model."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [p.stem for p in (ROOT / "examples").glob("*.model3")]


def test_provider_is_listed(qp):
    r = qp("list")
    assert "edifice:retinex" in r.stdout and "edifice:poiprobability" in r.stdout


def test_retinex_json_run(qp, kampala_rgb, tmp_path):
    out = tmp_path / "r.tif"
    r = qp("--json", "run", "edifice:retinex", "--", f"INPUT={kampala_rgb}", "SIGMAS=15,80,250",
           "OUTPUT_TYPE=3", f"OUTPUT={out}")
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout[r.stdout.index("{"):])
    assert res["results"]["OUTPUT"] == str(out)
    with rasterio.open(out) as ds:
        assert ds.dtypes[0] == "float32" and ds.count == 3
        a = ds.read(masked=True)
    assert 0 <= a.min() and a.max() <= 1 and a.count() > 0.1 * a.size


def test_bad_input_exits_non_zero_without_output(qp, helsinki_pbf, tmp_path):
    out = tmp_path / "p.tif"
    r = qp("run", "edifice:poiprobability", "--", f"INPUT={helsinki_pbf}|layername=points",
           "CATEGORY_FIELD=other_tags", "PRESET=4", f"OUTPUT={out}",
           "EXTENT=385000,385100,6671500,6671600 [EPSG:3067]", "TARGET_CRS=EPSG:3067")
    assert r.returncode != 0
    assert "MAPPING_FILE" in r.stdout + r.stderr
    assert list(tmp_path.iterdir()) == [helsinki_pbf]


def _helsinki_image(path: Path) -> None:
    """A textured 3-band uint8 raster on a 1 m EPSG:3067 grid in central Helsinki."""
    rng = np.random.default_rng(0)
    h, w = 300, 400
    yy, xx = np.mgrid[0:h, 0:w]
    base = 80 + 60 * np.sin(xx / 13.0) * np.cos(yy / 17.0) + rng.normal(0, 8, (h, w))
    shade = 0.4 + 0.6 * xx / w
    img = np.clip(np.stack([base * shade, base * shade * 0.9, base * shade * 0.8]), 1, 255).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs="EPSG:3067",
                       transform=Affine(1, 0, 385300, 0, -1, 6672300), nodata=0) as dst:
        dst.write(img)


def test_graphical_model_chains_retinex_and_poi_maps(qp, helsinki_pbf, tmp_path):
    model = tmp_path / "chain.model3"
    shutil.copy(ROOT / "examples" / "retinex_poi_chain.model3", model)
    img = tmp_path / "helsinki_rgb.tif"
    _helsinki_image(img)
    corrected, maps = tmp_path / "corrected.tif", tmp_path / "maps.tif"
    r = qp("run", str(model), "--", f"imagery={img}", f"pois={helsinki_pbf}|layername=points",
           f"retinex:corrected={corrected}", f"poimaps:poi_maps={maps}")
    assert r.returncode == 0, r.stdout + r.stderr
    with rasterio.open(img) as a, rasterio.open(corrected) as b, rasterio.open(maps) as c:
        assert a.transform == b.transform == c.transform and a.shape == b.shape == c.shape
        assert c.count == 3 and c.crs.to_epsg() == 3067
        left, right = b.read(1)[:, :100].mean(), b.read(1)[:, -100:].mean()
        p = c.read()
    assert 0.8 < left / right < 1.25  # the east-west shading is corrected
    assert p[1].max() > 0.9 and 0 <= p.min() and p.max() <= 1


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_model_files_are_current(qp_env, tmp_path, name):
    """examples/*.model3 must be what scripts/build_example_models.py writes now."""
    env = dict(qp_env)
    code = ("import os\nfrom qgis.core import QgsApplication\nQgsApplication.setPrefixPath('/usr', True)\n"
            "app = QgsApplication([], False); app.initQgis()\n"
            "from edifice.qgis_plugin.example_models import EXAMPLES\n"
            f"EXAMPLES[{name!r}]().toFile({str(tmp_path / 'm.model3')!r})\nos._exit(0)\n")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    from xml.etree.ElementTree import canonicalize  # attribute order varies between runs

    def canon(path):
        return canonicalize(path.read_text().split("\n", 1)[1], strip_text=True)

    assert canon(tmp_path / "m.model3") == canon(ROOT / "examples" / f"{name}.model3")
