"""Write a synthetic scene with KNOWN building use for the demo (and the tests).

    python scripts/make_synthetic_use_scene.py OUT_FOLDER [--size 512] [--seed 0]

Writes OUT_FOLDER/imagery.tif (1 m RGB, EPSG:32636), buildings.gpkg (field
``building`` with OSM values house / retail / warehouse = R / C / I) and pois.gpkg
(one OSM-tagged POI on 90 % of buildings). The generator is the one the
known-ground-truth tests use (tests/unit/_use_scene.py, which documents the scene):
residential and commercial roofs look alike, so only the POI maps tell them apart.
"""
import argparse
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--size", type=int, default=512, help="scene size in pixels (1 m)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    spec = importlib.util.spec_from_file_location("_use_scene", ROOT / "tests" / "unit" / "_use_scene.py")
    scene = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scene)
    a.folder.mkdir(parents=True, exist_ok=True)
    sc = scene.make_scene(a.folder, size=a.size, seed=a.seed)
    counts = {scene.NAMES[k]: int((sc["classes"] == k).sum()) for k in scene.NAMES}
    print(f"{a.folder}: {len(sc['classes'])} buildings {counts}")


if __name__ == "__main__":
    main()
