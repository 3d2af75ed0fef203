"""edifice:streetviewpoints / buildingsamples / classifybuildingfunction through processing.run in real
QGIS, against the stand-in OpenAI-compatible server (a real process), with the key from QGIS's
authentication database; and the example graphical model (points -> samples -> classification ->
evaluation with the HTML report)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pyogrio.raw
import pytest

pytestmark = pytest.mark.qgis

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "tests" / "servers" / "llm_standin.py"
_spec = importlib.util.spec_from_file_location("_bsense_scene", ROOT / "tests" / "unit" / "_bsense_scene.py")
scene_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scene_mod)
KEY = "sk-qgis-4e8d2a6c0b1f3e5d7a9c"


@pytest.fixture(scope="module")
def auth_key(qgis_app):
    """An authentication configuration (Basic, the key as its password) -> its id."""
    from qgis.core import QgsApplication, QgsAuthMethodConfig

    manager = QgsApplication.authManager()
    if not manager.masterPasswordIsSet():
        assert manager.setMasterPassword("edifice-test-master", True)
    config = QgsAuthMethodConfig()
    config.setName("edifice llm test")
    config.setMethod("Basic")
    config.setConfig("username", "llm")
    config.setConfig("password", KEY)
    assert manager.storeAuthenticationConfig(config)
    return config.id()


class _Feedback:
    """A QgsProcessingFeedback that keeps every message."""

    def __new__(cls):
        from qgis.core import QgsProcessingFeedback

        class F(QgsProcessingFeedback):
            def __init__(self):
                super().__init__()
                self.lines = []

            def pushInfo(self, m):  # noqa: N802
                self.lines.append(m)

            def pushWarning(self, m):  # noqa: N802
                self.lines.append(m)

            def reportError(self, m, fatal=False):  # noqa: N802
                self.lines.append(m)

        return F()


def test_algorithms_are_listed(provider):
    ids = {a.id() for a in provider.algorithms()}
    assert {"edifice:streetviewpoints", "edifice:buildingsamples", "edifice:classifybuildingfunction"} <= ids


def test_chain_with_authcfg_key_never_written(provider, standin, auth_key, tmp_path):
    import processing
    from qgis.core import QgsProject

    sc = scene_mod.make_scene(tmp_path / "scene", 6)
    server = standin(SERVER, "--key", KEY, "--combination", "RST")
    fb = _Feedback()
    QgsProject.instance().removeAllMapLayers()
    pts = tmp_path / "points.gpkg"
    processing.runAndLoadResults("edifice:streetviewpoints", {
        "BUILDINGS": sc["buildings"], "ROADS": sc["roads"], "ID_FIELD": "bid", "HEIGHT_FIELD": "height",
        "MAX_DISTANCE": 100, "OUTPUT": str(pts)}, feedback=fb)
    meta, _, _, data = pyogrio.raw.read(str(pts))
    rec = dict(zip(meta["fields"], data))
    assert sorted(rec["building_id"]) == sc["ids"]
    assert set(rec["heading"].round(2)) == {0.0, 180.0}  # north and south of the street (convergence < 0.01°)
    samples = tmp_path / "samples"
    res = processing.run("edifice:buildingsamples", {
        "BUILDINGS": sc["buildings"], "ID_FIELD": "bid", "IMAGERY": sc["imagery"],
        "STREET_VIEW_FOLDER": sc["street_view"], "STREET_VIEW_POINTS": str(pts), "POIS": sc["pois"],
        "ATTRIBUTES": "use,height,year", "CHIP_MAX_PX": 64, "OUTPUT_FOLDER": str(samples)}, feedback=fb)
    assert res["SAMPLES"] == 6 and Path(res["MANIFEST"]).is_file()
    out = tmp_path / "function.gpkg"
    res = processing.runAndLoadResults("edifice:classifybuildingfunction", {
        "SAMPLES": str(samples), "URL": server.url + "/v1", "MODEL": "stand-in-vl", "AUTHCFG": auth_key,
        "COMBINATION": 6, "CONCURRENCY": 2, "CACHE_FOLDER": str(tmp_path / "cache"), "OUTPUT": str(out)}, feedback=fb)
    assert res["CLASSIFIED"] == 6 and res["REQUESTS_SENT"] == 6
    meta, _, _, data = pyogrio.raw.read(str(out))
    rec = dict(zip(meta["fields"], data))
    assert list(rec["function"]) == sc["uses"] and set(rec["status"]) == {"ok"}
    layers = {lyr.source().split("|")[0]: lyr for lyr in QgsProject.instance().mapLayers().values()}
    assert layers[str(out)].renderer().type() == "categorizedSymbol"
    assert layers[str(pts)].renderer().type() == "singleSymbol"
    project = tmp_path / "project.qgs"
    assert QgsProject.instance().write(str(project))
    QgsProject.instance().removeAllMapLayers()
    assert all(r["headers"]["authorization"] == f"Bearer {KEY}" for r in server.requests())
    assert not any(KEY in line for line in fb.lines)
    assert any(line.startswith("Tokens this run:") for line in fb.lines)
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f


def test_example_model_runs_to_the_evaluation_report(provider, standin, tmp_path, monkeypatch):
    import processing

    monkeypatch.setenv("EDIFICE_CACHE_DIR", str(tmp_path / "cache"))  # the model uses the default answer cache
    from edifice.qgis_plugin.example_models import buildingsense_function

    sc = scene_mod.make_scene(tmp_path / "scene", 8)
    server = standin(SERVER, "--combination", "RST")
    res = processing.run(buildingsense_function(), {
        "buildings": sc["buildings"], "roads": sc["roads"], "imagery": sc["imagery"], "pois": sc["pois"],
        "id_field": "bid", "height_field": "height", "attributes": "use,height",
        "street_view_folder": sc["street_view"], "reference_field": "use", "url": server.url + "/v1",
        "model": "stand-in-vl", "points:points": str(tmp_path / "p.gpkg"),
        "samples:samples": str(tmp_path / "samples"), "classify:functions": str(tmp_path / "f.gpkg"),
        "evaluate:report": str(tmp_path / "report.html")})
    assert Path(res["evaluate:report"]).is_file()
    html = Path(res["evaluate:report"]).read_text()
    assert "residential" in html and "office mix" in html  # scored at the fine level too ("all" levels)
    meta, _, _, data = pyogrio.raw.read(str(tmp_path / "f.gpkg"))
    rec = dict(zip(meta["fields"], data))
    assert list(rec["function"]) == sc["uses"]  # the stand-in read each building's use from the text
    assert len([r for r in server.requests() if r["path"].endswith("/chat/completions")]) == 8


def test_errors_are_clear(provider, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    base = {"SAMPLES": str(tmp_path), "MODEL": "m", "OUTPUT": str(tmp_path / "o.gpkg")}
    with pytest.raises(QgsProcessingException, match="URL: 'ftp://x' is not an http"):
        processing.run("edifice:classifybuildingfunction", {**base, "URL": "ftp://x"})
    with pytest.raises(QgsProcessingException, match="AUTHCFG: authentication configuration 'nope123'"):
        processing.run("edifice:classifybuildingfunction", {**base, "URL": "http://127.0.0.1:9/v1",
                                                            "AUTHCFG": "nope123"})
    with pytest.raises(QgsProcessingException, match="SAMPLES: .*is not a readable samples manifest"):
        processing.run("edifice:classifybuildingfunction", {**base, "URL": "http://127.0.0.1:9/v1"})
    assert not (tmp_path / "o.gpkg").exists()
