"""The newer tools run from their dialogs in the real QGIS desktop (Xvfb), as an analyst runs them:
parameters in the dialog, the Run button (a background task), outputs loaded into the project on
completion — each with the renderer of the QML style the tool gives it (a tool whose style was lost
shows QGIS's default grey band or single symbol instead). Screenshots land in the test's folder."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
STYLES = ROOT / "qgis_plugin" / "styles"
MOSAIC = "/work/shared/data/kampala/kampala_rgb_7p5cm_epsg3857.tif"


def style_renderer(qml: str) -> str:
    """The renderer type a QML style file sets (raster or vector)."""
    text = (STYLES / qml).read_text()
    m = re.search(r"<rasterrenderer[^>]*\btype=\"(\w+)\"", text) or re.search(r"<renderer-v2[^>]*\btype=\"(\w+)\"", text)
    assert m, f"{qml} sets no renderer"
    return m.group(1)


def run_dialogs(env, jobs, tmp_path) -> list[dict]:
    """Run ``jobs`` from their dialogs in one fresh QGIS desktop under Xvfb."""
    if shutil.which("xvfb-run") is None:
        pytest.fail("xvfb-run is missing: run scripts/setup.sh")
    env = {k: v for k, v in env.items() if k != "QT_QPA_PLATFORM"}  # a real (virtual) display
    env.update(EDIFICE_DIALOG_JOBS=str(tmp_path / "jobs.json"), EDIFICE_DIALOG_RESULT=str(tmp_path / "result.json"),
               EDIFICE_DIALOG_SHOTS=str(tmp_path / "screenshots"), EDIFICE_CACHE_DIR=str(tmp_path / "cache"))
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    r = subprocess.run(["xvfb-run", "-a", "qgis", "--nologo", "--noversioncheck", "--code",
                        str(ROOT / "tests" / "data" / "dialog_jobs.py")], env=env, capture_output=True, text=True,
                       timeout=600)
    result = tmp_path / "result.json"
    assert result.exists(), r.stdout[-2000:] + r.stderr[-2000:]
    return json.loads(result.read_text())["jobs"]


def _gap_mask(image: Path, path: Path) -> None:
    """A 10 px disk of cloud in the covered middle of ``image``, as a uint8 mask on its grid."""
    with rasterio.open(image) as ds:
        profile, valid = ds.profile, (ds.read() != 0).all(axis=0)
    r, c = np.argwhere(valid)[valid.sum() // 2]
    yy, xx = np.mgrid[0:valid.shape[0], 0:valid.shape[1]]
    profile.update(count=1, dtype="uint8", nodata=None)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write((((yy - r) ** 2 + (xx - c) ** 2) <= 100).astype(np.uint8)[None])


def test_newer_tools_run_from_their_dialogs_with_styled_outputs(qp_env, kampala_rgb, kampala_pois, overpass,
                                                                helsinki_3067, standin, thu_dir, thu_checkpoint,
                                                                thu_extent, tmp_path):
    _gap_mask(kampala_rgb, tmp_path / "clouds.tif")
    tiles = standin(ROOT / "tests" / "servers" / "tile_server.py", "--source", MOSAIC)
    (ext, pad), (x0, y0, x1, y1) = thu_extent, helsinki_3067
    out = {name: str(tmp_path / name) for name in (
        "retinex.tif", "poi.tif", "filled.tif", "osm_pois.gpkg", "osm_buildings.gpkg", "imagery.tif",
        "height.tif", "footprint.tif", "mask.tif")}
    jobs = [
        {"alg": "edifice:retinex", "params": {"INPUT": str(kampala_rgb), "OUTPUT": out["retinex.tif"]},
         "styles": {"retinex.tif": None}},
        {"alg": "edifice:poiprobability", "params": {
            "INPUT": str(kampala_pois), "CATEGORY_FIELD": "other_tags", "REFERENCE": str(kampala_rgb),
            "OUTPUT": out["poi.tif"]}, "styles": {"poi.tif": "poi_probability.qml"}},
        {"alg": "edifice:cloudgapfill", "params": {
            "INPUT": str(kampala_rgb), "MASK": str(tmp_path / "clouds.tif"), "OUTPUT": out["filled.tif"]},
         "styles": {"filled.tif": "multibandcolor"}},  # styled like its input, an RGB image
        {"alg": "edifice:osmdownload", "params": {
            "EXTENT": f"{x0},{x1},{y0},{y1} [EPSG:3067]", "ENDPOINT": f"{overpass.url}/api/interpreter",
            "MAX_TILE_KM2": 0.2, "POIS": out["osm_pois.gpkg"], "BUILDINGS": out["osm_buildings.gpkg"]},
         "styles": {"osm_buildings.gpkg": "osm_buildings.qml"}, "unstyled": ["osm_pois.gpkg"]},
        {"alg": "edifice:imagerydownload", "params": {
            "SOURCE_TYPE": 0, "URL": tiles.url + "/xyz/{z}/{x}/{y}.png",
            "EXTENT": "32.5940,32.5960,0.3500,0.3514 [EPSG:4326]", "GSD": 0.5, "OUTPUT": out["imagery.tif"]},
         "styles": {"imagery.tif": "retinex_uint8.qml"}},
        {"alg": "edifice:heightfootprint", "params": {
            "SENTINEL1": str(thu_dir / "thu_s1_2020.tif"), "SENTINEL2": str(thu_dir / "thu_s2_synthetic.tif"),
            "DEM": str(thu_dir / "thu_srtm.tif"), "CHECKPOINT": str(thu_checkpoint), "RESOLUTION": "100",
            "EXTENT": f"{ext[0]},{ext[2]},{ext[1]},{ext[3]} [EPSG:4326]", "PADDING": pad, "MODE": 0,
            "DEVICE": "cpu", "OUTPUT_HEIGHT": out["height.tif"], "OUTPUT_FOOTPRINT": out["footprint.tif"]},
         "styles": {"height.tif": "height_m.qml", "footprint.tif": "footprint_fraction.qml"}},
        {"alg": "edifice:ccap", "params": {
            "HEIGHTS": out["height.tif"], "FOOTPRINTS": out["footprint.tif"], "H_MIN": 2, "OUTPUT_MASK": out["mask.tif"]},
         "styles": {"mask.tif": "ccap_mask.qml"}},
    ]
    for job in jobs:
        job["outputs"] = [out[name] for name in [*job["styles"], *job.get("unstyled", [])]]
    results = run_dialogs(qp_env, jobs, tmp_path)

    assert len(results) == len(jobs)
    for job, res in zip(jobs, results):
        assert res["loaded"], f"{job['alg']}: outputs not loaded\n{res['log'][-3000:]}"
        assert "Traceback" not in res["log"], res["log"]
        for name, style in job["styles"].items():
            if style is None:  # retinex: the style of the dtype it wrote
                with rasterio.open(out[name]) as ds:
                    style = f"retinex_{ds.dtypes[0]}.qml"
            expected = style_renderer(style) if style.endswith(".qml") else style
            kind, renderer = res["layers"][str(Path(out[name]))]
            assert renderer == expected, f"{job['alg']} {name}: {renderer} (expected {expected} from {style})"
    assert len(list((tmp_path / "screenshots").glob("*.png"))) == len(jobs)
