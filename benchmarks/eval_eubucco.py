"""Real evaluation on EUBUCCO: official (government) building type as reference,
OpenStreetMap type as prediction, for buildings matched by largest overlap.

    PYTHONPATH=<dir containing edifice> python -m edifice.benchmarks.eval_eubucco [OUT_DIR]
    (or: python benchmarks/eval_eubucco.py [OUT_DIR] with edifice importable)

Prints the figures at EUBUCCO-type and R/C/I level and the height agreement of
the same matched buildings; with OUT_DIR it also writes JSON/HTML/CSV reports.
Buildings whose type is empty on either side are excluded (counted as ignored).
"""
from __future__ import annotations

import sys
from pathlib import Path

from edifice.core.evaluation.classification import evaluate_buildings
from edifice.core.evaluation.regression import evaluate_building_heights

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "eubucco"


def run(out_dir: str | None = None, min_overlap: float = 0.5) -> tuple[dict, dict]:
    """Evaluate OSM against government data; returns (use result, height result)."""
    out = Path(out_dir) if out_dir else None
    kw = {}
    if out:
        kw = dict(json_path=out / "eubucco_use.json", html_path=out / "eubucco_use.html",
                  csv_path=out / "eubucco_use.csv", title="EUBUCCO: OSM type vs official type")
    use = evaluate_buildings(SAMPLES / "buildings_gov.gpkg", "type", SAMPLES / "buildings_osm.gpkg", "type",
                             taxonomy="eubucco_type", levels=["rci", "type"], unknown="error",
                             min_overlap=min_overlap, n_boot=2000, seed=0, **kw)
    hk = {}
    if out:
        hk = dict(json_path=out / "eubucco_height.json", html_path=out / "eubucco_height.html",
                  csv_path=out / "eubucco_height.csv", title="EUBUCCO: OSM height vs official height")
    height = evaluate_building_heights(SAMPLES / "buildings_gov.gpkg", "height",
                                       prediction_path=SAMPLES / "buildings_osm.gpkg",
                                       prediction_height_field="height", min_overlap=min_overlap, **hk)
    return use, height


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    use, height = run(argv[0] if argv else None)
    m = use["matching"]
    print(f"buildings: {m['reference_count']} official, {m['prediction_count']} OSM; matched {m['matched']} "
          f"(min overlap {m['min_overlap']:.0%} of the official footprint, mean overlap {m['mean_overlap']:.2f}), "
          f"unmatched official {m['unmatched_reference']}, unmatched OSM {m['unmatched_prediction']}")
    for level in use["levels"]:
        s = use["by_level"][level]
        ci = s["confidence_intervals"]
        print(f"\n[{level}] scored {s['n']} pairs (ignored, type unknown on a side: {s['ignored']})")
        print(f"  overall accuracy {s['overall_accuracy']:.3f} (95 % CI {ci['overall_accuracy'][0]:.3f}-"
              f"{ci['overall_accuracy'][1]:.3f}), kappa {s['kappa']:.3f} ({ci['kappa'][0]:.3f}-{ci['kappa'][1]:.3f}), "
              f"macro F1 {s['averages']['macro']['f1']:.3f}, weighted F1 {s['averages']['weighted']['f1']:.3f}")
        print(f"  {'class':<13}{'support':>8}{'precision':>10}{'recall':>8}{'F1':>7}")
        for c in s["classes"]:
            v = s["per_class"][c]
            print(f"  {c:<13}{v['support']:>8}{v['precision']:>10.3f}{v['recall']:>8.3f}{v['f1']:>7.3f}")
        print("  confusion (rows official, columns OSM):", s["classes"])
        for c, row in zip(s["classes"], s["confusion_matrix"]):
            print(f"    {c:<13}{row}")
    h = height
    print(f"\n[height] {h['n']} matched buildings with both heights: RMSE {h['rmse']:.2f} m, wRMSE {h['wrmse']:.2f} m, "
          f"MAE {h['mae']:.2f} m, ME {h['me']:+.2f} m, NMAD {h['nmad']:.2f} m, CC {h['cc']:.3f}, "
          f"R² {h['r2']:.3f}, wR² {h['wr2']:.3f}")
    print("  bias by official height:", ", ".join(
        f"{b['lower']:g}-{b['upper']:g} m: {b['me']:+.2f} (n={b['n']})" if b["upper"] is not None
        else f">={b['lower']:g} m: {b['me']:+.2f} (n={b['n']})" for b in h["bins"] if b["n"]))


if __name__ == "__main__":
    main()
