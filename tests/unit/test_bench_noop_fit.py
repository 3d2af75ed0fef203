"""The no-op figure of benchmarks/bench_inference.py: raster sizes of whole tiles and the least-squares slope of
CPU-s against km² with its standard error (what the printed figure and its steadiness are made of)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_inference.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_inference_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_noop_sizes_are_whole_tiles_around_the_size_asked(bench):
    assert bench.noop_sizes(4096, 768) == [2304, 3072, 3840, 4608]
    assert bench.noop_sizes(512, 96) == [288, 384, 480, 576]
    assert bench.noop_sizes(200, 96) == [96, 192, 288, 384]  # small: never a size of zero tiles
    for n in bench.noop_sizes(3000, 768):
        assert n % 768 == 0


def test_least_squares_gives_slope_intercept_and_spread(bench):
    km2 = [1.0, 2.0, 3.0, 4.0]
    exact = bench.least_squares(km2, [0.5 + 0.4 * k for k in km2])
    assert exact["slope"] == pytest.approx(0.4) and exact["intercept"] == pytest.approx(0.5)
    assert exact["slope_se"] == pytest.approx(0.0, abs=1e-9) and exact["rms"] == pytest.approx(0.0, abs=1e-9)
    noisy = bench.least_squares(km2, [0.9, 1.4, 1.6, 2.2])
    want = np.polyfit(km2, [0.9, 1.4, 1.6, 2.2], 1)
    assert noisy["slope"] == pytest.approx(want[0]) and noisy["intercept"] == pytest.approx(want[1])
    resid = np.array([0.9, 1.4, 1.6, 2.2]) - np.polyval(want, km2)
    assert noisy["rms"] == pytest.approx(np.sqrt(np.mean(resid ** 2)))
    assert noisy["slope_se"] == pytest.approx(np.sqrt(resid @ resid / 2 / 5.0))  # sum of (x - mean)^2 = 5
