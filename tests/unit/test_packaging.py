"""The `edifice` distribution installs with pip outside QGIS, data files included."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pip_install_includes_data_and_cli(tmp_path):
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(target), str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    pkg = target / "edifice"
    assert (pkg / "core" / "taxonomies" / "poi" / "osm.csv").is_file()
    assert (pkg / "qgis_plugin" / "styles" / "poi_probability.qml").is_file()
    assert (pkg / "core" / "buildingsense" / "prompts" / "buildingsense.toml").is_file()
    assert (pkg / "metadata.txt").is_file()
    assert not (pkg / "tests").exists() and not (pkg / "samples").exists()
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", "import edifice.core.cli as c, edifice; print(edifice.__file__)"],
                         env=env, capture_output=True, text=True, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(pkg))
    # the `edifice` console script ([project.scripts]) is installed and runs: --help lists the tools
    script = target / "bin" / "edifice"
    assert script.is_file() and os.access(script, os.X_OK)
    out = subprocess.run([str(script), "--help"], env=env, capture_output=True, text=True, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: edifice")
    listed = set(out.stdout.split("{", 1)[1].split("}", 1)[0].split(","))    # {retinex,poi-probability,...}
    assert {"retinex", "poi-probability", "train-building-use", "map-building-use", "height-footprint",
            "evaluate-classification"} <= listed, listed
    # a subcommand's own parser is reachable through the script
    out = subprocess.run([str(script), "retinex", "--help"], env=env, capture_output=True, text=True,
                         cwd=str(tmp_path))
    assert out.returncode == 0 and "--sigmas" in out.stdout, out.stderr
