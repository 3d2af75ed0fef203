"""Height report: the bias-by-height chart plots the signed ME around a zero line."""
import re

import numpy as np

from edifice.core.evaluation import regression as H
from edifice.core.evaluation import reports as R


def _bars(page: str) -> dict[str, tuple[float, float]]:
    """Bias chart bars: bin name -> (y, height), from the rects' titles."""
    out = {}
    for y, h, title in re.findall(r'<rect x="[^"]+" y="([^"]+)" width="12" height="([^"]+)"[^>]*>'
                                  r'<title>([^<]*)</title>', page):
        if "ME (m)" in title:
            out[title.split(" ME (m)")[0]] = (float(y), float(h))
    return out


def test_bias_chart_is_signed_with_zero_line():
    rng = np.random.default_rng(1)
    ref = rng.uniform(0.5, 11.5, 400)
    # low buildings under-estimated by 4 m, tall ones over-estimated by 2 m
    pred = np.where(ref < 6, ref - 4.0, ref + 2.0)
    res = H.regression_metrics(ref, pred)
    me = {b["lower"]: b["me"] for b in res["bins"] if b["n"]}
    assert me[0] < -3.9 and me[6] > 1.9
    page = R.html_report(res)
    zero = re.findall(r'<line class="zero" x1="[^"]+" x2="[^"]+" y1="([^"]+)" y2="([^"]+)"', page)
    assert len(zero) == 1
    y0 = float(zero[0][0])
    bars = _bars(page)
    low, high = bars["0–3 m"], bars["6–9 m"]
    # negative ME: the bar starts at the zero line and hangs below it (SVG y grows downwards)
    assert low[0] == y0 and low[1] > 0
    # positive ME: the bar ends at the zero line, above it, and is half as long as the -4 m one
    assert abs(high[0] + high[1] - y0) < 0.02 and high[1] > 0
    assert abs(low[1] / high[1] - 2.0) < 0.05
    # the title carries the signed value, as the table does
    assert "0–3 m ME (m), prediction − reference: -4.000" in page
