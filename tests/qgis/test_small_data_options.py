"""Issue 16 items 6 and 10 in real QGIS: trainingdataset's BACKGROUND_RATIO, CHIP_STRIDE and
SPLIT_RATIOS (8,2,0) reach the dataset, and trainbuildinguse's default λ_U is automatic (0 on
footprint-only data); Kampala with the old defaults is refused with the fix."""
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.qgis
KAMPALA = Path(__file__).resolve().parents[2] / "samples" / "kampala"


def test_small_data_options_and_auto_lambda(provider, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    from edifice.models.checkpoint import load_checkpoint

    params = {"IMAGERY": str(KAMPALA / "kampala_rgb_50cm.tif"), "BUILDINGS": str(KAMPALA / "buildings_osm.geojson"),
              "USE_FIELD": "", "CHIP_SIZE": 128, "SPLIT_TILE": 64, "BACKGROUND_RATIO": 0.5, "CHIP_STRIDE": 96,
              "SPLIT_RATIOS": "8,2,0", "OUTPUT_FOLDER": str(tmp_path / "ds")}
    processing.run("edifice:trainingdataset", params)
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert m["chip_stride"] == 96 and m["background_ratio"] == 0.5 and m["split"]["ratios"] == [8, 2, 0]
    assert m["split"]["subsets"]["test"]["chips"] == 0 and any(c["kind"] == "background" for c in m["chips"])
    processing.run("edifice:trainbuildinguse", {"DATASET": str(tmp_path / "ds"), "VARIANT": 3, "ENCODER": 0,
                                                "BASE_WIDTH": 4, "EPOCHS": 1, "BATCH_SIZE": 16, "DEVICE": "cpu",
                                                "OUTPUT_CHECKPOINT": str(tmp_path / "m.pt")})
    assert load_checkpoint(str(tmp_path / "m.pt"))[1]["training"]["config"]["lambda_use"] == 0.0
    with pytest.raises(QgsProcessingException, match="too few.*smaller split tile"):
        processing.run("edifice:trainingdataset", {**params, "CHIP_SIZE": 256, "SPLIT_TILE": 0, "CHIP_STRIDE": 0,
                                                   "SPLIT_RATIOS": "6,2,2", "OUTPUT_FOLDER": str(tmp_path / "d2")})
