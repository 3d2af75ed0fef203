"""Resume after a hard kill: a run killed with SIGKILL after some tile rows are finished
resumes those rows when started again and ends with the same bytes as an uninterrupted run (rows are
put on disk after every row here: ``flush_seconds=0``).

Run as a script (``python test_sliding_window_kill.py OUT_DIR DELAY``) it is the child
process: a numpy 'model' (no torch), ``DELAY`` seconds per batch.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

H, W = 300, 420


def _run(out: Path, delay: float, flush_seconds: float = 0.0) -> dict:
    from affine import Affine

    from edifice.core.grid import Grid
    from edifice.core.sliding_window import RasterOutput, WindowLayout, run_sliding_window

    rng = np.random.default_rng(7)
    data = rng.normal(size=(2, H, W)).astype(np.float32)
    valid = np.ones((H, W), bool)
    valid[40:90, 100:170] = False

    class Reader:
        def read(self, w):
            r = slice(int(w.row_off), int(w.row_off + w.height))
            c = slice(int(w.col_off), int(w.col_off + w.width))
            return data[:, r, c].copy(), valid[r, c].copy()

        def read_mask(self, w):
            return None

        def close(self):
            pass

    def predictor(x):
        time.sleep(delay)
        return np.stack([x[:, 0] * 2 + x[:, 1], np.tanh(x[:, 0] * x[:, 1])], axis=1).astype(np.float32)

    grid = Grid(Affine(0.5, 0, 1000, 0, -0.5, 2000), W, H, "EPSG:32636")
    outs = [RasterOutput(str(out / "a.tif"), 2, "float32", -9999.0),
            RasterOutput(str(out / "b.tif"), 1, "uint8", 255)]
    return run_sliding_window(grid, WindowLayout(64, 8), Reader, predictor, outs,
                              lambda v, ok: [v, (v[1:2] > 0).astype(np.uint8)], batch_size=2,
                              flush_seconds=flush_seconds)


def _child(out: Path, delay: float) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.Popen([sys.executable, __file__, str(out), str(delay)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_resume_after_sigkill_is_bit_for_bit(tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    _run(ref, 0.0)
    work = tmp_path / "work"
    work.mkdir()
    proc = _child(work, 0.15)
    sidecar = work / ".a.resume.json"
    t0 = time.monotonic()
    done = []
    try:
        while time.monotonic() - t0 < 20:
            if proc.poll() is not None:
                pytest.fail(f"the child ended before it was killed: {proc.stderr.read()}")
            try:
                done = json.loads(sidecar.read_text())["done_rows"]
            except (OSError, ValueError, KeyError):
                done = []
            if len(done) >= 2:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert len(done) >= 2, "no tile row was finished in time"
    assert not (work / "a.tif").exists() and (work / ".a.partial.tif").exists()
    s = _run(work, 0.0)
    assert s["rows_resumed"] >= 2 and s["tiles_run"] < s["tiles"]
    for name in ("a.tif", "b.tif"):
        import rasterio

        with rasterio.open(ref / name) as x, rasterio.open(work / name) as y:
            np.testing.assert_array_equal(x.read(), y.read())
            assert x.profile == y.profile
    assert sorted(p.name for p in work.iterdir()) == ["a.tif", "b.tif"]


if __name__ == "__main__":
    _run(Path(sys.argv[1]), float(sys.argv[2]))
