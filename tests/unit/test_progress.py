"""The core Progress protocol: cancelling retinex and POI maps at any check leaves no output and
no temporary file; TerminalProgress prints a bar on a terminal and messages on any stream."""
import io
import time

import numpy as np
import pytest
from affine import Affine
from pyproj import CRS

from edifice.core.errors import Cancelled
from edifice.core.grid import Grid
from edifice.core.use.poi_probability import PoiSet, poi_probability
from edifice.core.progress import Progress, TerminalProgress
from edifice.core.raster_io import atomic_raster
from edifice.core.use.retinex import RetinexSettings, retinex

UTM = CRS.from_epsg(32636).to_wkt()


class CancelAfter(Progress):
    """Says "cancelled" from the (n+1)-th check on; counts checks and records fractions."""

    def __init__(self, n=None):
        self.n, self.checks, self.fractions = n, 0, []

    def is_cancelled(self):
        self.checks += 1
        return self.n is not None and self.checks > self.n

    def set_fraction(self, fraction):
        self.fractions.append(fraction)


def _cancel_points(total):
    """First check, one in the middle, the last one (during the write pass)."""
    return sorted({0, total // 2, total - 1})


def _retinex_run(tmp_path, progress, out_dir):
    src = tmp_path / "in" / "img.tif"
    if not src.exists():
        src.parent.mkdir()
        rng = np.random.default_rng(0)
        img = rng.integers(1, 255, (3, 150, 160)).astype(np.uint8)
        g = Grid(Affine(0.5, 0, 450000, 0, -0.5, 40000), 160, 150, UTM)
        with atomic_raster(src, g, 3, np.uint8, nodata=0) as dst:
            dst.write(img)
    return retinex(str(src), str(out_dir / "o.tif"), RetinexSettings(sigmas=[10.0, 40.0]), block_size=64,
                   progress=progress)


def test_retinex_cancel_leaves_nothing(tmp_path):
    full = CancelAfter()
    _retinex_run(tmp_path, full, tmp_path / "ok")
    assert full.fractions[-1] == pytest.approx(1.0) and np.all(np.diff(full.fractions) >= 0)
    assert full.checks == 3 * 9  # 9 blocks of 64 px; pass 0 (cell sums), histogram, write
    out = tmp_path / "out"
    out.mkdir()
    for n in _cancel_points(full.checks):
        p = CancelAfter(n)
        with pytest.raises(Cancelled, match="no output was written"):
            _retinex_run(tmp_path, p, out)
        assert p.checks == n + 1  # stopped at the first check that said "cancelled"
        assert list(out.iterdir()) == []  # no output, no .partial file, no scratch folder


def test_poi_cancel_leaves_nothing(tmp_path):
    grid = Grid(Affine(2, 0, 450000, 0, -2, 40000), 100, 90, UTM)
    pois = PoiSet([450030.0, 450100.0, 450150.0], [39950.0, 39900.0, 39850.0], [0, 1, 2], UTM)
    full = CancelAfter()
    poi_probability(pois, grid, str(tmp_path / "p.tif"), block_size=32, progress=full)
    assert full.checks == 4 * 3 and full.fractions[-1] == pytest.approx(1.0)
    out = tmp_path / "out"
    out.mkdir()
    for n in _cancel_points(full.checks):
        p = CancelAfter(n)
        with pytest.raises(Cancelled):
            poi_probability(pois, grid, str(out / "p.tif"), block_size=32, progress=p)
        assert p.checks == n + 1
        assert list(out.iterdir()) == []


def test_cancel_through_a_span_reaches_the_parent(tmp_path):
    """Adapters hand tools a span of their progress: cancelling the parent cancels the tool."""
    parent = CancelAfter(2)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(Cancelled):
        _retinex_run(tmp_path, parent.span(0.1, 1.0), out)
    assert parent.checks == 3 and list(out.iterdir()) == []
    assert all(0.1 <= f <= 1.0 for f in parent.fractions)


class FakeTty(io.StringIO):
    def isatty(self):
        return True


def test_terminal_progress_on_a_terminal(monkeypatch):
    monkeypatch.setattr(time, "monotonic", lambda: 60.0)  # a machine booted a minute ago
    s = FakeTty()
    t = TerminalProgress(s, min_interval_s=3600)
    t.set_fraction(0.5)
    t.set_fraction(0.6)  # within min_interval of the last bar: not drawn
    t.info("hello")
    t.warning("careful")
    t.set_fraction(1.0)  # the end is always drawn
    assert s.getvalue() == ("\r[###############...............]  50.0 %"
                            "\r\033[Khello\n"
                            "\r\033[Kwarning: careful\n"
                            "\r[##############################] 100.0 %\n")


def test_terminal_progress_to_a_file_prints_messages_only():
    s = io.StringIO()
    t = TerminalProgress(s, min_interval_s=0)
    for f in (0.0, 0.25, 1.0):
        t.set_fraction(f)
    t.info("Retinex on 2 x 2 px")
    t.warning("INPUT has no CRS")
    assert s.getvalue() == "Retinex on 2 x 2 px\nwarning: INPUT has no CRS\n"
    assert not t.is_cancelled()


def test_terminal_progress_defaults_to_stderr(capsys):
    TerminalProgress().info("to stderr")
    cap = capsys.readouterr()
    assert cap.err == "to stderr\n" and cap.out == ""
