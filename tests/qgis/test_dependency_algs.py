"""edifice:diagnostics and edifice:installdependencies through processing.run in real QGIS, and
a tool whose package is missing: listed, refused with the package named and the fix."""
import pytest

pytestmark = pytest.mark.qgis


def test_diagnostics_report(provider, tmp_path):
    import processing

    out = tmp_path / "diag.txt"
    res = processing.run("edifice:diagnostics", {"OUTPUT": str(out)})
    text = out.read_text()
    assert res["REPORT"].strip() == text.strip()
    for item in ("QGIS", "GDAL (QGIS)", "GDAL (rasterio)", "GDAL (pyogrio)", "PyTorch", "Device 'auto' picks",
                 "QGIS's Python for pip", "Package folder"):
        assert any(line.startswith(item) for line in text.splitlines()), item
    import torch

    picks = next(line for line in text.splitlines() if line.startswith("Device 'auto' picks"))
    assert picks.split()[3].rstrip(":") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_install_with_nothing_missing_installs_nothing(provider, tmp_path):
    import processing

    res = processing.run("edifice:installdependencies", {"TARGET": str(tmp_path / "deps")})
    assert res["PACKAGE_FOLDER"] == str(tmp_path / "deps") and res["REPORT"] == ""
    assert not (tmp_path / "deps").exists()


def test_missing_package_refuses_with_fix(provider, monkeypatch):
    from qgis.core import QgsApplication, QgsProcessingContext

    alg = QgsApplication.processingRegistry().createAlgorithmById("edifice:retinex")
    monkeypatch.setattr(type(alg), "REQUIRES", ("numpy", "edifice_no_such_module"))
    ok, message = alg.canExecute()
    assert not ok and "edifice_no_such_module" in message and "edifice:installdependencies" in message
    ok, message = alg.checkParameterValues({"INPUT": "x.tif"}, QgsProcessingContext())
    assert not ok and "Install dependencies" in message
    assert alg.shortHelpString().startswith("<b>Cannot run yet.</b>")


def test_help_uses_the_dialogs_labels(provider):
    """No help text names a parameter by its id (POI_MAPS, BLEND): the dialog's labels instead."""
    import re

    for alg in provider.algorithms():
        text = alg.shortHelpString()
        ids = {p.name() for p in alg.parameterDefinitions()}
        found = {w for w in re.findall(r"\b[A-Z][A-Z0-9_]{2,}\b", re.sub(r"<i>.*?</i>", "", text)) if w in ids}
        assert not found, (alg.id(), found)
    help_text = provider.algorithm("mapbuildinguse").shortHelpString()
    assert "<i>POI probability maps</i>" in help_text and "<i>Blend neighbouring windows</i>" in help_text
    assert "seed" not in help_text.lower()


def test_device_parameters_offer_choices_and_take_text(provider):
    """DEVICE is a drop-down in the dialogs (value hints) and stays text for qgis_process."""
    from edifice.processing_algs.base import DEVICE_CHOICES

    with_device = [a for a in provider.algorithms() if a.parameterDefinition("DEVICE") is not None]
    assert len(with_device) >= 4
    for alg in with_device:
        p = alg.parameterDefinition("DEVICE")
        assert p.type() == "string" and p.metadata()["widget_wrapper"]["value_hints"] == list(DEVICE_CHOICES)
        assert p.checkValueIsAcceptable("cuda:3")
