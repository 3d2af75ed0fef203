"""Write the example graphical models to examples/*.model3 (run inside the .venv)."""
import sys
from pathlib import Path

from qgis.core import QgsApplication

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], False)  # noqa: F841
    app.initQgis()
    from edifice.qgis_plugin.example_models import retinex_poi_chain

    out = ROOT / "examples"
    out.mkdir(exist_ok=True)
    ok = retinex_poi_chain().toFile(str(out / "retinex_poi_chain.model3"))
    print("wrote examples/retinex_poi_chain.model3" if ok else "failed")
    return 0 if ok else 1


if __name__ == "__main__":
    import os
    rc = main()
    os._exit(rc)  # skip exitQgis(): avoids the known exit-time segfault
