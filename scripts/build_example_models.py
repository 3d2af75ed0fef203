"""Write the example graphical models to examples/*.model3 (run inside the .venv)."""
from pathlib import Path

from qgis.core import QgsApplication

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], False)  # noqa: F841
    app.initQgis()
    from edifice.qgis_plugin.example_models import EXAMPLES

    out = ROOT / "examples"
    out.mkdir(exist_ok=True)
    failed = 0
    for name, build in EXAMPLES.items():
        ok = build().toFile(str(out / f"{name}.model3"))
        print(f"wrote examples/{name}.model3" if ok else f"failed: {name}")
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    import os
    rc = main()
    os._exit(rc)  # skip exitQgis(): avoids the known exit-time segfault
