"""HTML report of a gap filling run: the fitted semivariograms (table and plots)
and the pixel counts. Self-contained (inline SVG), like the evaluation reports."""
from __future__ import annotations

import numpy as np

from ..evaluation.reports import escape_html, html_page, html_table
from .variogram import model_values


def variogram_svg(empirical: dict, variogram: dict, width: int = 420, height: int = 260) -> str:
    """Empirical semivariances (dots) and the fitted model (line) against lag (pixels)."""
    lag = np.asarray(empirical["lag_px"], float)
    gam = np.asarray(empirical["gamma"], float)
    hmax = float(max(lag.max(), variogram["range_px"]) * 1.05) if lag.size else 1.0
    h = np.linspace(0, hmax, 120)
    g = model_values(variogram["model"], h, variogram["nugget"], variogram["psill"], variogram["range_px"])
    gmax = float(max(gam.max() if gam.size else 0, g.max())) * 1.1 or 1.0
    left, top, pw, ph = 50, 15, width - 70, height - 55

    def xy(x, y):
        return left + pw * x / hmax, top + ph - ph * y / gmax

    out = [f'<svg width="{width}" height="{height}" role="img">',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for t in range(6):
        x, _ = xy(hmax * t / 5, 0)
        _, y = xy(0, gmax * t / 5)
        out.append(f'<text x="{x:.1f}" y="{top + ph + 14}" font-size="10" '
                   f'text-anchor="middle">{hmax * t / 5:.3g}</text>'
                   f'<text x="{left - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end">{gmax * t / 5:.3g}</text>')
    pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in (xy(x, y) for x, y in zip(h, g)))
    out.append(f'<polyline points="{pts}" fill="none" stroke="#d62728" stroke-width="1.5"/>')
    for x, y in zip(lag, gam):
        cx, cy = xy(x, y)
        out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="#4c78a8"/>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 8}" font-size="11" text-anchor="middle">lag (pixels)</text>'
               f'<text x="12" y="{top + ph / 2}" font-size="11" text-anchor="middle" '
               f'transform="rotate(-90 12 {top + ph / 2})">semivariance</text></svg>')
    return "".join(out)


def variogram_report_html(summary: dict) -> str:
    """The report page of a :func:`~edifice.core.gapfill.fill.cloud_gap_fill` summary."""
    rows = []
    for b in summary["bands"]:
        v = b["variogram"]
        rows.append([escape_html(b["name"]), v["model"], f"{v['nugget']:.4g}", f"{v['sill']:.4g}",
                     f"{v['range_px']:.3g}", f"{b['variogram']['range_crs_units']:.4g}", f"{v['fit_rmse']:.3g}"])
    body = [f"<h1>Cloud gap filling</h1><p class=\"note\">{escape_html(summary['input'])} → "
            f"{escape_html(summary['output'])}</p>",
            html_table(["band", "model", "nugget", "sill", "range (px)", "range (CRS units)", "fit RMSE"], rows),
            html_table(["pixels", "count"], [["gaps", summary["gap_pixels"]],
                                             ["cloud-free", summary["cloud_free_pixels"]],
                                             ["no neighbour within the search radius",
                                              summary["unfilled_no_neighbour"]],
                                             ["filled (per band)", summary["filled_per_band"]],
                                             ["beyond the range (per band)", summary["beyond_range_per_band"]]])]
    for b in summary["bands"]:
        body.append(f"<h2>{escape_html(b['name'])}</h2>" + variogram_svg(b["empirical"], b["variogram"]))
    return html_page("Cloud gap filling", "".join(body))
