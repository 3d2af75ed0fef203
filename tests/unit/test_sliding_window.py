"""The sliding-window engine: exact stitching with models whose output is a known function
of their input, independence from batch size / readers / order, resume, OOM, disk full."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from edifice.core import sliding_window as sw
from edifice.core.errors import Cancelled, InputError
from edifice.core.grid import Grid
from edifice.core.progress import Progress
from edifice.core.sliding_window import (DiskFullError, Predictor, RasterOutput, WindowLayout, block_size_for,
                                         compression_options, pad_reflect, resolve_device, run_sliding_window)

H, W = 181, 263  # several windows each way, ragged last tiles


class ArrayReader:
    def __init__(self, data, valid, mask=None):
        self.data, self.valid, self.mask = data, valid, mask

    def _sl(self, w):
        return slice(int(w.row_off), int(w.row_off + w.height)), slice(int(w.col_off), int(w.col_off + w.width))

    def read(self, w):
        r, c = self._sl(w)
        return self.data[:, r, c].copy(), self.valid[r, c].copy()

    def read_mask(self, w):
        if self.mask is None:
            return None
        r, c = self._sl(w)
        return self.mask[r, c].copy()

    def close(self):
        pass


class Conv3(torch.nn.Module):
    """Fixed 3x3 convolution (receptive field 1 px, less than any margin used) plus a
    per-pixel function: channel 0 = conv of band 0, channel 1 = tanh(b0 * b1)."""

    def __init__(self):
        super().__init__()
        self.k = torch.tensor([[0.1, 0.2, 0.05], [-0.3, 1.0, 0.25], [0.15, -0.1, 0.4]])

    def forward(self, x):
        # the convolution as a sum of shifted copies: element-wise ops give the same bits
        # whatever the batch size (oneDNN's conv2d kernels may differ in the last bit)
        p = torch.nn.functional.pad(x[:, :1], (1, 1, 1, 1))
        h, w = x.shape[-2:]
        c = sum(float(self.k[a, b]) * p[..., a:a + h, b:b + w] for a in range(3) for b in range(3))
        return torch.cat([c, torch.tanh(x[:, :1] * x[:, 1:2])], dim=1)


def reference(data, valid):
    x = np.where(valid[None], data, 0).astype(np.float64)
    p = np.pad(x[0], 1, mode="reflect")
    k = Conv3().k.numpy().astype(np.float64)
    conv = sum(k[a, b] * p[a:a + H, b:b + W] for a in range(3) for b in range(3))
    return np.stack([conv, np.tanh(x[0] * x[1])]).astype(np.float32)


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(4)
    data = rng.normal(size=(2, H, W)).astype(np.float32)
    valid = np.ones((H, W), bool)
    valid[20:60, 30:90] = False          # a nodata hole
    valid[:, -7:] = False                # a nodata strip along the border
    valid[100:181, 0:120] = False        # a hole that covers whole tiles
    mask = np.ones((H, W), bool)
    mask[:, 200:230] = False
    grid = Grid(Affine(0.5, 0, 1000, 0, -0.5, 2000), W, H, "EPSG:32636")
    return grid, data, valid, mask


def _run(tmp_path, scene, name, batch=4, workers=1, order="rows", layout=WindowLayout(48, 6), mask=True,
         predictor=None, progress=None, resume=True):
    grid, data, valid, m = scene
    outs = [RasterOutput(str(tmp_path / f"{name}_a.tif"), 2, "float32", -9999.0),
            RasterOutput(str(tmp_path / f"{name}_b.tif"), 1, "uint8", 255)]
    pred = predictor or Predictor(Conv3(), "cpu")

    def finalize(vals, ok):
        return [vals, (vals[1:2] > 0).astype(np.uint8)]

    s = run_sliding_window(grid, layout, lambda: ArrayReader(data, valid, m if mask else None), pred, outs,
                           finalize, batch_size=batch, workers=workers, order=order, progress=progress,
                           resume=resume)
    with rasterio.open(outs[0].path) as a, rasterio.open(outs[1].path) as b:
        return a.read(), b.read(), s


def test_layout_tiles_cover_the_grid_once():
    grid = Grid(Affine(1, 0, 0, 0, -1, 0), 100, 70)
    lay = WindowLayout(1024, 128)
    assert lay.stride == 768 and WindowLayout(32, 4).stride == 24
    count = np.zeros((70, 100), int)
    for t in WindowLayout(32, 4).tiles(grid):
        count[int(t.out.row_off):int(t.out.row_off + t.out.height), int(t.out.col_off):int(t.out.col_off + t.out.width)] += 1
        assert t.row0 == t.out.row_off - 4 and t.col0 == t.out.col_off - 4
    assert (count == 1).all()
    with pytest.raises(InputError, match="OVERLAP"):
        WindowLayout(64, 30)


def test_pad_reflect_longer_than_the_array():
    a = np.arange(3.0)[None]
    assert pad_reflect(a, (0, 0, 4, 4)).tolist() == [[0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2]]
    assert pad_reflect(np.ones((1, 1)), (1, 1, 1, 1)).shape == (3, 3)


def test_stitching_is_exact_with_holes_mask_and_any_batch_size(tmp_path, scene):
    grid, data, valid, mask = scene
    ok = valid & mask
    ref = reference(data, valid)
    a, b, s = _run(tmp_path, scene, "b1", batch=1)
    assert s["tiles_skipped"] > 0 and s["tiles_run"] > 4
    assert np.allclose(a[:, ok], ref[:, ok], atol=1e-5)
    assert (a[:, ~ok] == -9999).all() and (b[0, ~ok] == 255).all()
    assert (b[0, ok] == (ref[1, ok] > 0)).all()
    for kw in ({"batch": 3}, {"batch": 8, "workers": 2}, {"batch": 5, "order": "reverse"}):
        a2, b2, _ = _run(tmp_path, scene, f"x{kw['batch']}", **kw)
        np.testing.assert_array_equal(a2, a)
        np.testing.assert_array_equal(b2, b)


def test_border_pixels_have_reflected_context(tmp_path, scene):
    """Without nodata, the border pixels equal the convolution of the reflected raster."""
    grid, data, _, _ = scene
    allv = np.ones((H, W), bool)
    a, _, _ = _run(tmp_path, (grid, data, allv, None), "full", mask=False, layout=WindowLayout(64, 4))
    ref = reference(data, allv)
    assert np.allclose(a, ref, atol=1e-5)


def test_blend_equals_the_function_where_windows_agree(tmp_path, scene):
    grid, data, valid, mask = scene
    a, _, s = _run(tmp_path, scene, "blend", layout=WindowLayout(48, 8, blend=True), batch=3)
    ok = valid & mask
    assert np.allclose(a[:, ok], reference(data, valid)[:, ok], atol=1e-5)
    a2, _, _ = _run(tmp_path, scene, "blend2", layout=WindowLayout(48, 8, blend=True), batch=7, order="reverse")
    np.testing.assert_array_equal(a, a2)


class MeanModel(torch.nn.Module):
    """Output = window mean everywhere: differs from window to window, so seams show."""

    def forward(self, x):
        return x[:, :1].mean(dim=(2, 3), keepdim=True).expand(-1, 2, x.shape[2], x.shape[3]) + 0


def test_blend_cross_fades_between_windows(tmp_path, scene):
    grid, data, _, _ = scene
    allv = np.ones((H, W), bool)
    lay = WindowLayout(40, 8, blend=True)  # stride 24, ramp 4
    hard, _, _ = _run(tmp_path, (grid, data, allv, None), "h", mask=False, layout=WindowLayout(40, 8),
                      predictor=Predictor(MeanModel(), "cpu"))
    soft, _, _ = _run(tmp_path, (grid, data, allv, None), "s", mask=False, layout=lay,
                      predictor=Predictor(MeanModel(), "cpu"))
    row = 10
    jumps_hard = np.abs(np.diff(hard[0, row])).max()
    jumps_soft = np.abs(np.diff(soft[0, row])).max()
    assert jumps_soft < 0.5 * jumps_hard
    # away from the seams (further than the ramp) both agree
    assert np.allclose(hard[0, row, 8:16], soft[0, row, 8:16], atol=1e-6)


class CancelAfter(Progress):
    def __init__(self, fraction):
        self.fraction, self.last = fraction, 0.0

    def set_fraction(self, f):
        self.last = f

    def is_cancelled(self):
        return self.last >= self.fraction


def test_resume_after_cancel_gives_the_same_output(tmp_path, scene):
    full, fullb, _ = _run(tmp_path / "ref", scene, "out")
    work = tmp_path / "work"
    with pytest.raises(Cancelled):
        _run(work, scene, "out", progress=CancelAfter(0.4), batch=2)
    assert not (work / "out_a.tif").exists()
    assert (work / ".out_a.resume.json").exists() and (work / ".out_a.partial.tif").exists()
    a, b, s = _run(work, scene, "out", batch=5)
    assert s["rows_resumed"] >= 1 and s["tiles_run"] < 30
    np.testing.assert_array_equal(a, full)
    np.testing.assert_array_equal(b, fullb)
    assert sorted(p.name for p in work.iterdir()) == ["out_a.tif", "out_b.tif"]


def test_resume_is_refused_when_settings_change(tmp_path, scene):
    work = tmp_path / "w"
    with pytest.raises(Cancelled):
        _run(work, scene, "out", progress=CancelAfter(0.4))
    a, _, s = _run(work, scene, "out", layout=WindowLayout(64, 8))
    assert s["rows_resumed"] == 0


class OomAbove2(Conv3):
    calls: list = []

    def forward(self, x):
        OomAbove2.calls.append(len(x))
        if len(x) > 2:
            raise torch.OutOfMemoryError("fake OOM")
        return super().forward(x)


class Warnings(Progress):
    def __init__(self):
        self.warnings = []

    def warning(self, m):
        self.warnings.append(m)


def test_out_of_memory_halves_the_batch_and_goes_on(tmp_path, scene):
    ref, _, _ = _run(tmp_path, scene, "r", batch=8)
    pr = Warnings()
    a, _, _ = _run(tmp_path, scene, "oom", batch=8, predictor=Predictor(OomAbove2(), "cpu", progress=pr))
    np.testing.assert_array_equal(a, ref)
    assert any("batch size lowered to 2" in w for w in pr.warnings)
    assert max(OomAbove2.calls[-3:]) <= 2


def test_disk_full_leaves_nothing(tmp_path, scene, monkeypatch):
    calls = {"n": 0}
    real = sw._write_block

    def full(ds, data, window):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(ds, data, window)

    monkeypatch.setattr(sw, "_write_block", full)
    with pytest.raises(DiskFullError, match="disk is full"):
        _run(tmp_path, scene, "full")
    assert list(tmp_path.iterdir()) == []


def test_model_errors_remove_partials(tmp_path, scene):
    class Boom(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _run(tmp_path, scene, "boom", predictor=Predictor(Boom(), "cpu"))
    assert list(tmp_path.iterdir()) == []


def test_device_choice_is_explicit():
    dev, desc = resolve_device("cpu")
    assert dev.type == "cpu" and "cpu" in desc
    if not torch.cuda.is_available():
        dev, desc = resolve_device("auto")
        assert dev.type == "cpu" and "CUDA is not available" in desc
        with pytest.raises(InputError, match="DEVICE"):
            resolve_device("cuda:3")
    with pytest.raises(InputError, match="DEVICE"):
        resolve_device("tpu")


def test_resolve_device_uses_core_devices_only():
    """The engine's device choice is core/devices.py's (no import of the training module)."""
    code = ("import sys; from edifice.core.sliding_window import resolve_device; d, _ = resolve_device('cpu'); "
            "assert d.type == 'cpu'; print('edifice.core.use.training' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_errors_wait_for_the_writer_before_closing_the_outputs(tmp_path, scene, monkeypatch):
    """A tile write slower than any join timeout (here 5.5 s) ends before the outputs it
    writes to are closed and removed (closing GDAL handles under the writer can crash QGIS)."""
    real = sw._write_block
    seen = {"n": 0, "closed": None}

    def slow(ds, data, window):
        seen["n"] += 1
        if seen["n"] == 1:
            time.sleep(5.5)
            seen["closed"] = ds.closed
        real(ds, data, window)

    calls = {"n": 0}
    conv = Predictor(Conv3(), "cpu")

    def boom_second(x):
        calls["n"] += 1
        if calls["n"] > 1:
            t0 = time.perf_counter()
            while seen["n"] == 0 and time.perf_counter() - t0 < 10:  # the writer is inside its first write
                time.sleep(0.01)
            raise RuntimeError("boom")
        return conv(x)

    monkeypatch.setattr(sw, "_write_block", slow)
    with pytest.raises(RuntimeError, match="boom"):
        _run(tmp_path, scene, "slow", predictor=boom_second, batch=2)
    assert seen["closed"] is False
    assert list(tmp_path.iterdir()) == []


def test_block_size_follows_the_stride():
    assert [block_size_for(s) for s in (768, 192, 96, 48, 40, 36)] == [256, 64, 32, 16, 256, 256]


def test_outputs_are_not_bloated_by_rewritten_blocks(tmp_path):
    """A 128/16 run (stride 96, not a multiple of 256): the output is about as small as the
    same raster re-encoded in one go with the same creation options (no dead block copies)."""
    import rasterio.shutil

    h, w = 700, 900
    rng = np.random.default_rng(0)
    data = rng.normal(size=(2, h, w)).astype(np.float32)
    valid = np.ones((h, w), bool)
    grid = Grid(Affine(0.5, 0, 1000, 0, -0.5, 2000), w, h, "EPSG:32636")
    outs = [RasterOutput(str(tmp_path / "a.tif"), 2, "float32", -9999.0),
            RasterOutput(str(tmp_path / "b.tif"), 1, "uint8", 255)]
    run_sliding_window(grid, WindowLayout(128, 16), lambda: ArrayReader(data, valid), Predictor(Conv3(), "cpu"),
                       outs, lambda v, ok: [v, (v[1:2] > 0).astype(np.uint8)], batch_size=4)
    for o in outs:
        with rasterio.open(o.path) as ds:
            bs = ds.block_shapes[0]
            pred = 3 if o.dtype == "float32" else 2
        copy = tmp_path / "copy.tif"
        rasterio.shutil.copy(o.path, copy, driver="GTiff", tiled=True, blockysize=bs[0], blockxsize=bs[1],
                             predictor=pred, **compression_options(None))
        assert os.path.getsize(o.path) < 1.1 * os.path.getsize(copy), o.path


def test_relative_output_paths_resume_from_another_directory(tmp_path, scene, monkeypatch):
    work = tmp_path / "w"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(Cancelled):
        _run(__import__("pathlib").Path("out"), scene, "o", progress=CancelAfter(0.4))
    monkeypatch.chdir(tmp_path)
    _, _, s = _run(work / "out", scene, "o")
    assert s["rows_resumed"] >= 1


def test_reduced_precision_runs_through_autocast():
    """precision bf16 (on the CPU here; CUDA takes the same code) runs the network under
    autocast: the result is float32, close to fp32 (bf16 keeps ~3 significant digits) but not
    bit-identical (so autocast really ran); an unknown precision is refused."""
    from edifice.models.unet import UNetResNet

    torch.manual_seed(0)
    model = UNetResNet(encoder="resnet18", in_channels=3, variant="imagery_multitask", num_classes=3, base_width=8)
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    fp32 = Predictor(model, "cpu", precision="fp32")(x)
    bf16 = Predictor(model, "cpu", precision="bf16")(x)
    assert fp32.dtype == bf16.dtype == np.float32 and fp32.shape == bf16.shape == (2, 4, 64, 64)
    assert np.abs(bf16 - fp32).max() < 0.05
    assert not np.array_equal(bf16, fp32)
    with pytest.raises(InputError, match="PRECISION"):
        Predictor(model, "cpu", precision="int8")
