"""Write a SHAFTS-architecture checkpoint with RANDOM (seeded, untrained) weights.

No pretrained SHAFTS weights are available offline; this lets the demo, tests and benchmarks run the
height/footprint pipeline end to end. ITS OUTPUTS ARE NOT MEANINGFUL HEIGHTS OR FOOTPRINTS.

A freshly initialised network predicts ~0 m and ~0.5 everywhere (its output layers see nearly
constant features). With ``--spread-on S1 S2 DEM xmin,ymin,xmax,ymax`` the two output layers are
rescaled (an affine change of the last Linear layer, nothing learned) so that, on those inputs, the
outputs spread over 0-30 m and 0.05-0.6: still random, but with enough spatial contrast for the CCAP
step to find a threshold. The model card says all this.

    python scripts/make_random_shafts_checkpoint.py OUT.pth [--resolution 100] [--seed 0]
        [--spread-on S1.tif S2.tif DEM.tif xmin,ymin,xmax,ymax [--padding 0.005]]
"""
import argparse
import sys
from pathlib import Path

HEIGHT_RANGE_M = (0.0, 30.0)        # q10 and q95 of the rescaled heights
FOOTPRINT_RANGE = (0.05, 0.6)       # q05 and q95 of the rescaled footprints


def _spread_outputs(model, s1, s2, dem, extent, padding) -> None:
    import numpy as np
    import torch

    from edifice.core.height.shafts_inference import gather_patches, prepare_inputs, shafts_output_grid
    xmin, ymin, xmax, ymax = extent
    prep, crs = prepare_inputs(s1, s2, dem, (xmin - padding, ymin - padding, xmax + padding, ymax + padding))
    xs, ys = shafts_output_grid(extent, model.resolution_m, crs).pixel_centres()
    x, d, valid = gather_patches(prep, xs.ravel(), ys.ravel(), model.patch_size)
    ok = valid & np.isfinite(d).all(axis=(1, 2, 3))
    with torch.no_grad():
        z = torch.cat([model.features(torch.from_numpy(x[ok]).float() / 255.0),
                       model.aux_features(torch.from_numpy(d[ok]))], dim=1)
        f_lo, f_hi = FOOTPRINT_RANGE
        for name, (q_lo, lo, hi) in {"height": (10, *HEIGHT_RANGE_M),
                                     "footprint": (5, np.log(f_lo / (1 - f_lo)), np.log(f_hi / (1 - f_hi)))}.items():
            y = model._head(z, "_" + name).numpy()
            a_, b_ = np.percentile(y, [q_lo, 95])
            scale = (hi - lo) / max(b_ - a_, 1e-12)
            fc = getattr(model, "fc_out_" + name)
            fc.weight.mul_(float(scale))
            fc.bias.mul_(float(scale)).add_(float(lo - scale * a_))


def make_random_checkpoint(path, resolution_m: int = 100, seed: int = 0, spread_on=None,
                           padding: float = 0.005) -> Path:
    """Seeded random multi-task SHAFTS network saved in the Edifice format; ``spread_on`` =
    (s1, s2, dem, extent) rescales its output layers on those inputs (see the module docstring)."""
    import torch

    from edifice.models.checkpoint import save_checkpoint
    from edifice.models.shafts import build_shafts_model, shafts_card

    torch.manual_seed(seed)
    model = build_shafts_model(resolution_m, "multi").eval()
    note = "RANDOM WEIGHTS (torch.manual_seed), not trained: outputs are not meaningful heights or footprints"
    if spread_on is not None:
        _spread_outputs(model, *spread_on, padding)
        note += "; output layers rescaled to spread over 0-30 m / 0.05-0.6 on the inputs named in spread_on"
    card = shafts_card(resolution_m, "multi", 1, training={
        "note": note, "seed": seed, "spread_on": [str(v) for v in spread_on] if spread_on else None})
    save_checkpoint(path, model.state_dict(), card)
    return Path(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="SHAFTS checkpoint with random weights (not trained)")
    p.add_argument("output")
    p.add_argument("--resolution", type=int, default=100, choices=[100, 250, 500, 1000])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spread-on", nargs=4, metavar=("S1", "S2", "DEM", "EXTENT"), default=None)
    p.add_argument("--padding", type=float, default=0.005)
    a = p.parse_args(argv)
    spread = None
    if a.spread_on:
        s1, s2, dem, ext = a.spread_on
        spread = (s1, s2, dem, tuple(float(v) for v in ext.split(",")))
    out = make_random_checkpoint(a.output, a.resolution, a.seed, spread, a.padding)
    print(f"wrote {out}: SHAFTS {a.resolution} m multi-task network with RANDOM weights (seed {a.seed})"
          + (", output layers rescaled" if spread else "") + " -- NOT a trained model; its outputs are not "
          "meaningful heights or footprints")
    return 0


if __name__ == "__main__":
    sys.exit(main())
