"""The host side of the sliding-window engine (issue 17): in-place mirroring, reused window
buffers read in place, output compression setting, precision choices, channels-last, the
allocator and OpenMP settings. Outputs must stay bit-identical for the same device and precision."""
from __future__ import annotations

import os
import subprocess
import threading
import sys

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from edifice.core import host_tuning
from edifice.core.use.building_use_map import _Reader
from edifice.core.errors import InputError
from edifice.core.grid import Grid
from edifice.core.progress import RecordingProgress
from edifice.core.sliding_window import (Predictor, RasterOutput, WindowLayout, _WindowPool, compression_options,
                                         fill_reflect, pad_reflect, pool_windows, reflect_index,
                                         resolve_precision, run_sliding_window)

H, W = 181, 263
GRID = Grid(Affine(0.5, 0, 1000, 0, -0.5, 2000), W, H, "EPSG:32636")


class Pixelwise(torch.nn.Module):
    """Per-pixel only (bit-identical whatever the batch or memory layout): tanh(b0 * b1), b2 / 2."""

    def forward(self, x):
        return torch.cat([torch.tanh(x[:, :1] * x[:, 1:2]), x[:, 2:3] / 2], dim=1)


class Reader:
    """An in-memory reader of (3, H, W) float32 data; ``read_into`` optional, buffers it got recorded."""

    def __init__(self, data, valid, into: bool, seen: list | None = None):
        self.data, self.valid, self.into, self.seen = data, valid, into, seen
        self.bands = data.shape[0]
        if not into:
            self.read_into = None
            del self.read_into

    def _sl(self, w):
        return slice(int(w.row_off), int(w.row_off + w.height)), slice(int(w.col_off), int(w.col_off + w.width))

    def read(self, w):
        r, c = self._sl(w)
        return self.data[:, r, c].copy(), self.valid[r, c].copy()

    def read_into(self, w, out):
        r, c = self._sl(w)
        if self.seen is not None:  # the buffer ``out`` is (a view of)
            root = out
            while root.base is not None:
                root = root.base
            self.seen.append(root.__array_interface__["data"][0])
        out[...] = self.data[:, r, c]
        return self.valid[r, c].copy()

    def read_mask(self, w):
        return None

    def close(self):
        pass


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(7)
    data = rng.normal(size=(3, H, W)).astype(np.float32)
    valid = np.ones((H, W), bool)
    valid[20:60, 30:90] = False
    valid[:, -7:] = False
    data[0, 25, 35] = np.nan  # invalid pixels may hold anything
    return data, valid


def _run(tmp_path, name, scene, into, compression=None, seen=None, batch_size=3, layout=WindowLayout(64, 8)):
    data, valid = scene
    outs = [RasterOutput(str(tmp_path / f"{name}.tif"), 2, "float32", -9999.0)]
    run_sliding_window(GRID, layout, lambda: Reader(data, valid, into, seen), Predictor(Pixelwise(), "cpu"), outs,
                       lambda v, ok: [v], batch_size=batch_size, compression=compression)
    with rasterio.open(outs[0].path) as ds:
        return ds.read(), ds.compression


@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (3, 5, 7, 2), (0, 9, 4, 0), (12, 0, 0, 12), (30, 30, 1, 1),
                                  (2, 15, 18, 18), (14, 1, 3, 21), (40, 0, 0, 40)])
@pytest.mark.parametrize("shape", [(2, 13, 17), (1, 1, 9), (2, 4, 1)])
def test_fill_reflect_is_pad_reflect_in_place(pads, shape):
    rng = np.random.default_rng(1)
    inner = rng.normal(size=shape).astype(np.float32)
    top, bottom, left, right = pads
    buf = np.full((shape[0], shape[1] + top + bottom, shape[2] + left + right), np.nan, np.float32)
    buf[:, top:top + shape[1], left:left + shape[2]] = inner
    fill_reflect(buf, pads)
    assert np.array_equal(buf, pad_reflect(inner, pads))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 13])
def test_reflect_index_mirrors_again_and_again_like_numpy_2(n):
    """Far outside the axis the mirror repeats with period 2 (n - 1), with no jump where two reflections meet (numpy
    1's np.pad jumped there when the axis was padded on both sides and one pad was as long as it or longer); inside
    it is the identity."""
    i = np.arange(-60, n + 60)
    j = reflect_index(i, n)
    assert np.array_equal(j[60:60 + n], np.arange(n))
    assert j.min() == 0 and j.max() == n - 1
    if n > 1:
        assert np.all(np.abs(np.diff(j)) == 1)  # neighbours stay neighbours: a mirror, never a jump
        assert np.array_equal(j[:-2 * (n - 1)], j[2 * (n - 1):])
        assert np.array_equal(j[60 - 1::-1][:n - 1], np.arange(1, n))  # -1, -2, ... mirror 1, 2, ...
    a, mode = np.arange(n, dtype=np.float32), "reflect" if n > 1 else "edge"
    short = max(n - 1, 1)  # pads shorter than the axis: every numpy mirrors alike
    assert np.array_equal(np.pad(a, (short, short), mode=mode), a[j[60 - short:60 + n + short]])
    if int(np.__version__.split(".")[0]) >= 2:
        assert np.array_equal(np.pad(a, (60, 60), mode=mode), a[j])


def test_read_in_place_gives_the_same_bits_as_read(tmp_path, scene):
    """Windows read into reused buffers (read_into) and through read(): identical outputs, bit for bit,
    with nodata holes, a NaN in a hole and borders mirrored."""
    a, _ = _run(tmp_path, "into", scene, into=True)
    b, _ = _run(tmp_path, "read", scene, into=False)
    assert np.array_equal(a, b, equal_nan=True)
    data, valid = scene
    want = np.tanh(data[0] * data[1])
    got = a[0]
    assert np.allclose(got[valid], want[valid], atol=1e-6, rtol=0) and np.all(got[~valid] == -9999.0)


def test_window_buffers_are_reused_not_allocated_per_window(tmp_path, scene):
    """Windows are read straight into pool buffers (border ones into their interior): far fewer distinct buffers
    than windows."""
    seen: list = []
    layout = WindowLayout(32, 4)  # stride 24: 8 x 11 windows, most of them inside the raster
    _run(tmp_path, "pool", scene, into=True, seen=seen, batch_size=2, layout=layout)
    pool_size = pool_windows(2, 1)  # the batch run + the batch read ahead, as the engine sizes it
    windows = len(seen)
    distinct = {ptr for ptr in seen}
    assert windows >= 40
    assert len(distinct) <= pool_size, (len(distinct), windows)


class _GatedPredictor:
    """The Pixelwise model, whose every batch first waits (up to 60 s) until the readers are blocked (every buffer of
    the pool taken, or the input queue full) or have all ended: the readers run as far ahead as the engine lets
    them. ``pools``: (pool, input queue) of each run."""

    def __init__(self, pools: list):
        self.inner, self.pools = Predictor(Pixelwise(), "cpu"), pools

    def __call__(self, x):
        import time

        end = time.monotonic() + 60
        while time.monotonic() < end:
            pool, in_q = self.pools[-1]
            readers = [th for th in threading.enumerate() if th.name.startswith("edifice-reader-")]
            if (pool.made >= pool.count and pool.free.empty()) or in_q.full() or \
                    not any(th.is_alive() for th in readers):
                break
            time.sleep(0.005)
        return self.inner(x)


@pytest.mark.parametrize("workers", [1, 2])
def test_window_pool_does_not_grow_with_the_raster(tmp_path, scene, monkeypatch, workers):
    """With a model slower than the readers, the buffers made are at most the batch run + the batch read ahead (+ one
    per further reader, in whole slabs of a batch), for a raster of 24 windows as for one of 88: memory does not
    follow the raster's size."""
    import edifice.core.sliding_window as sw

    pools, made = [], []
    new = _WindowPool._new

    def counting(self, shape):
        made.append(shape)
        return new(self, shape)

    monkeypatch.setattr(_WindowPool, "_new", counting)
    monkeypatch.setattr(sw._Pipeline, "__init__", _recording_init(sw._Pipeline.__init__, pools))
    data, valid = scene
    counts = []
    for layout in (WindowLayout(64, 8), WindowLayout(32, 4)):  # 4 x 6 and 8 x 11 windows
        made.clear()
        outs = [RasterOutput(str(tmp_path / f"w{layout.window}_{workers}.tif"), 2, "float32", -9999.0)]
        run_sliding_window(GRID, layout, lambda: Reader(data, valid, True), _GatedPredictor(pools), outs,
                           lambda v, ok: [v], batch_size=2, workers=workers)
        counts.append(len(made))
    bound = pool_windows(2, workers) + pool_windows(2, workers) % 2  # whole slabs of 2
    assert max(counts) == bound and min(counts) > 2, counts  # the readers did run ahead, as far as the bound


def _recording_init(init, pools: list):
    def recording(self, *a, **k):
        init(self, *a, **k)
        pools.append((self.pool, self.in_q))
    return recording


def test_window_pool_hands_back_the_same_buffers():
    import threading

    pool = _WindowPool(2, threading.Event())
    a, b = pool.take((2, 4, 4)), pool.take((2, 4, 4))
    pool.give(a)
    assert pool.take((2, 4, 4)) is a
    stop = threading.Event()
    empty = _WindowPool(0, stop)
    stop.set()
    assert empty.take((1, 1, 1)) is None  # a stopping run never blocks on the pool
    assert b.shape == (2, 4, 4)


def test_reader_read_into_matches_read_with_nodata_and_nan(tmp_path):
    """The building-use reader: uint8 imagery with nodata 0 + float32 POI maps with nodata -1 and NaN."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (3, 70, 90)).astype(np.uint8)
    poi = rng.random((3, 70, 90)).astype(np.float32)
    poi[1, 5:9, 5:9] = -1.0
    poi[2, 30, 40] = np.nan
    prof = dict(driver="GTiff", width=90, height=70, crs="EPSG:32636", transform=Affine(0.5, 0, 0, 0, -0.5, 0))
    with rasterio.open(tmp_path / "i.tif", "w", count=3, dtype="uint8", nodata=0, **prof) as ds:
        ds.write(img)
    with rasterio.open(tmp_path / "p.tif", "w", count=3, dtype="float32", nodata=-1.0, **prof) as ds:
        ds.write(poi)
    with rasterio.open(tmp_path / "i.tif") as ds:
        grid = Grid.from_dataset(ds)
    rd = _Reader(str(tmp_path / "i.tif"), grid, [1 / 255] * 3 + [1.0] * 3, [0.0] * 3 + [0.5] * 3,
                 str(tmp_path / "p.tif"), None)
    try:
        win = rasterio.windows.Window(7, 3, 60, 50)
        x, v = rd.read(win)
        out = np.empty((rd.bands, 50, 60), np.float32)
        v2 = rd.read_into(win, out)
        assert np.array_equal(v, v2) and not v.all()
        assert np.array_equal(x[:, v], out[:, v])
    finally:
        rd.close()


def test_reader_scaling_is_the_cards_formula_bit_for_bit_with_identity_bands(tmp_path):
    """Bands with offset 0 and scale 1 are left as read (no pass over them): every value, valid or not,
    has the bits of (value - offset) * scale in float32, as the model was trained with."""
    rng = np.random.default_rng(5)
    img = rng.integers(1, 256, (3, 40, 50)).astype(np.uint8)
    poi = (rng.random((3, 40, 50)) * 3 - 1).astype(np.float32)
    prof = dict(driver="GTiff", width=50, height=40, crs="EPSG:32636", transform=Affine(0.5, 0, 0, 0, -0.5, 0))
    with rasterio.open(tmp_path / "i.tif", "w", count=3, dtype="uint8", **prof) as ds:
        ds.write(img)
    with rasterio.open(tmp_path / "p.tif", "w", count=3, dtype="float32", **prof) as ds:
        ds.write(poi)
    with rasterio.open(tmp_path / "i.tif") as ds:
        grid = Grid.from_dataset(ds)
    scales, offsets = [1 / 255, 1.0, 1.0, 1.0, 0.5, 1.0], [0.0, 0.0, 10.0, 0.0, 0.0, -0.25]
    rd = _Reader(str(tmp_path / "i.tif"), grid, scales, offsets, str(tmp_path / "p.tif"), None)
    try:
        out = np.empty((6, 40, 50), np.float32)
        assert rd.read_into(rasterio.windows.Window(0, 0, 50, 40), out).all()
    finally:
        rd.close()
    raw = np.concatenate([img.astype(np.float32), poi])
    want = (raw - np.asarray(offsets, np.float32)[:, None, None]) * np.asarray(scales, np.float32)[:, None, None]
    assert np.array_equal(out.view(np.uint32), want.view(np.uint32))
    assert np.array_equal(out[[1, 3]], raw[[1, 3]])


def test_reader_read_into_declines_types_float32_does_not_hold(tmp_path):
    prof = dict(driver="GTiff", width=20, height=20, crs="EPSG:32636", transform=Affine(0.5, 0, 0, 0, -0.5, 0))
    with rasterio.open(tmp_path / "f.tif", "w", count=3, dtype="float64", **prof) as ds:
        ds.write(np.full((3, 20, 20), 0.1))
    with rasterio.open(tmp_path / "f.tif") as ds:
        grid = Grid.from_dataset(ds)
    rd = _Reader(str(tmp_path / "f.tif"), grid, [1.0] * 3, [0.0] * 3, None, None)
    try:
        assert rd.read_into(rasterio.windows.Window(0, 0, 20, 20), np.empty((3, 20, 20), np.float32)) is None
    finally:
        rd.close()


def test_compression_setting_is_written_and_keeps_the_values(tmp_path, scene):
    default, comp = _run(tmp_path, "z", scene, into=True)
    assert comp.name.lower() == "zstd"
    for spec, name in (("deflate:6", "deflate"), ("lzw", "lzw"), ("none", None)):
        vals, comp = _run(tmp_path, spec.replace(":", "_"), scene, into=True, compression=spec)
        assert (comp.name.lower() if comp else None) == name
        assert np.array_equal(vals, default, equal_nan=True)


@pytest.mark.parametrize("spec", ["gzip", "zstd:0", "zstd:23", "deflate:x", "lzw:3"])
def test_bad_compression_is_refused_before_anything_is_written(tmp_path, scene, spec):
    with pytest.raises(InputError, match="COMPRESSION"):
        _run(tmp_path, "bad", scene, into=True, compression=spec)
    assert list(tmp_path.iterdir()) == []


def test_compression_options():
    assert compression_options("zstd:3") == {"compress": "zstd", "zstd_level": 3}
    assert compression_options("deflate") == {"compress": "deflate", "zlevel": 1}
    assert compression_options(None)["compress"] == "zstd"


def test_precision_choices():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("BF16", "cpu") == "bf16"
    with pytest.raises(InputError, match="PRECISION"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(InputError, match="PRECISION"):
        resolve_precision("fp8", "cpu")


def test_bf16_on_the_cpu_reports_its_difference_from_fp32():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 3, padding=1),
                              torch.nn.Sigmoid())
    x = np.random.default_rng(0).random((2, 3, 32, 32)).astype(np.float32)
    fp32 = Predictor(net, "cpu", precision="fp32")(x)
    rec = RecordingProgress()
    p = Predictor(net, "cpu", precision="bf16", progress=rec)
    y = p(x)
    diff = float(np.abs(y[:1] - fp32[:1]).max())  # measured on the first window
    assert p.precision_difference == pytest.approx(diff, abs=1e-7)
    assert 0 < diff < 0.05  # bf16 keeps 8 bits of mantissa: probabilities differ, but only slightly
    assert any("largest difference from fp32" in m for m in rec.infos)


def test_channels_last_gives_the_plain_model_result_and_the_same_bits_every_run():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 3, padding=1))
    x = np.random.default_rng(0).random((3, 3, 40, 40)).astype(np.float32)
    with torch.inference_mode():
        plain = net(torch.from_numpy(x)).numpy()
    p = Predictor(net, "cpu", precision="fp32")
    assert p.channels_last
    a, b = p(x), p(x)
    assert np.array_equal(a, b)
    assert np.abs(a - plain).max() < 1e-5


def test_retained_allocations_nest_and_restore(monkeypatch):
    monkeypatch.setenv("EDIFICE_KEEP_FREED_MEMORY", "1")
    with host_tuning.retained_allocations():
        with host_tuning.retained_allocations():
            assert host_tuning._active in (0, 2)  # 0 where there is no glibc
        big = np.ones(50_000_000 // 8)
        del big
    assert host_tuning._active == 0


def test_quiet_cpu_threads_keeps_a_users_setting(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    host_tuning.quiet_cpu_threads()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    host_tuning.quiet_cpu_threads()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_cli_sets_the_passive_wait_before_torch_is_imported():
    """The CLI's entry point sets OMP_WAIT_POLICY before any command imports torch."""
    code = ("import os, sys\n"
            "os.environ.pop('OMP_WAIT_POLICY', None)\n"
            "from edifice.core import cli\n"
            "assert 'torch' not in sys.modules\n"
            "try:\n"
            "    cli.main(['--help'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "PASSIVE False"


def test_predictor_releasing_its_input_reads_the_next_batch_into_the_same_buffers(tmp_path, scene, monkeypatch):
    """The Predictor hands the batch back once copied into its tensor: the run makes one batch of buffers (+ the
    reader's), not two, and writes the same bits as a predictor that keeps its input to the end."""
    made = []
    new = _WindowPool._new

    def counting(self, shape):
        made.append(shape)
        return new(self, shape)

    monkeypatch.setattr(_WindowPool, "_new", counting)
    data, valid = scene
    layout, got = WindowLayout(32, 4), {}
    keeping = Predictor(Pixelwise(), "cpu")
    for name, pred in (("releasing", Predictor(Pixelwise(), "cpu")), ("keeping", lambda x: keeping(x))):
        made.clear()
        out = RasterOutput(str(tmp_path / f"{name}.tif"), 2, "float32", -9999.0)
        run_sliding_window(GRID, layout, lambda: Reader(data, valid, True), pred, [out], lambda v, ok: [v],
                           batch_size=2)
        with rasterio.open(out.path) as ds:
            got[name] = (ds.read(), len(made))
    assert np.array_equal(got["releasing"][0], got["keeping"][0])
    assert got["releasing"][1] <= pool_windows(2, 1, released_early=True) + 1  # whole slabs of 2
    assert pool_windows(2, 1, released_early=True) < pool_windows(2, 1)


@pytest.mark.parametrize("bands", [1, 3])
def test_a_released_batch_is_the_models_own_copy(bands):
    """Once the Predictor calls ``release``, the engine refills the batch's buffers while the model runs: the model
    must hold a copy, also where channels-last needs no copy of the layout (one band)."""
    class Twice(torch.nn.Module):
        def forward(self, t):
            return t * 2

    x = np.arange(2 * bands * 4 * 4, dtype=np.float32).reshape(2, bands, 4, 4)
    expected = 2 * x
    y = Predictor(Twice(), "cpu")(x, release=lambda: x.fill(-1))  # the reader overwrites the buffers at once
    assert np.array_equal(y, expected)


def _tiled_geotiff(path, data, valid) -> str:
    """``data`` as a float32 GeoTIFF of 16 px blocks (a 64 px window spans 16 of them), nodata where not ``valid``."""
    with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=3, dtype="float32", crs=GRID.crs,
                       transform=GRID.transform, nodata=-9999.0, tiled=True, blockxsize=16, blockysize=16,
                       compress="deflate") as ds:
        ds.write(np.where(valid[None], data, -9999.0).astype(np.float32))
    return str(path)


def test_gdal_threads_decode_and_compress_to_the_same_outputs(tmp_path, scene):
    """IO_THREADS (GDAL decoding a reader's blocks and compressing the outputs in threads, as on a GPU host): the
    setting reaches every reader thread, and only it (not the calling thread), and the outputs are the same bits."""
    from edifice.core.sliding_window import _profile

    data, valid = scene
    src = _tiled_geotiff(tmp_path / "in.tif", data, valid)
    got, seen = {}, []

    def reader():
        seen.append(rasterio.env.get_gdal_config("GDAL_NUM_THREADS"))
        return _Reader(src, GRID, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), None, None)

    for threads in (1, 4):
        seen.clear()
        out = RasterOutput(str(tmp_path / f"t{threads}.tif"), 2, "float32", -9999.0)
        run_sliding_window(GRID, WindowLayout(64, 8), reader, Predictor(Pixelwise(), "cpu"), [out],
                           lambda v, ok: [v], batch_size=3, workers=2, io_threads=threads)
        with rasterio.open(out.path) as ds:
            got[threads] = ds.read()
        assert seen == ([None, None] if threads == 1 else [4, 4])  # rasterio gives the number
    assert rasterio.env.get_gdal_config("GDAL_NUM_THREADS") is None
    assert np.array_equal(got[1], got[4], equal_nan=True)
    assert np.allclose(got[1][0][valid], np.tanh(data[0] * data[1])[valid], atol=1e-6, rtol=0)
    out = RasterOutput("x.tif", 2, "float32", -9999.0)
    assert _profile(GRID, out, 16, "zstd:1", 4)["num_threads"] == 4 and "num_threads" not in _profile(GRID, out, 16)
    assert "num_threads" not in _profile(GRID, out, 16, "none", 4)  # nothing to compress


def test_io_threads_follow_the_models_device():
    """The host's cores go to GDAL only when the model runs off the CPU (the CPU's model threads need them)."""
    from types import SimpleNamespace

    from edifice.core.sliding_window import host_io_threads

    assert host_io_threads(Predictor(Pixelwise(), "cpu")) == 1
    assert host_io_threads(lambda x: x) == 1  # a plain callable: on the CPU
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert host_io_threads(SimpleNamespace(device=torch.device("cuda", 0))) == cores


def test_windows_are_read_into_the_predictors_host_buffers(tmp_path, scene):
    """The engine's window buffers come from the predictor's ``host_buffer`` (page-locked memory on CUDA): every window
    is read into one of them, and the outputs are the same bits as with plain buffers."""
    data, valid = scene
    made, seen, got = [], [], {}

    class Recording(Predictor):
        def host_buffer(self, shape):
            buf = super().host_buffer(shape)
            made.append((buf.__array_interface__["data"][0], buf.nbytes))
            return buf

    for name, pred in (("plain", lambda x: Predictor(Pixelwise(), "cpu")(x)), ("host", Recording(Pixelwise(), "cpu"))):
        out = RasterOutput(str(tmp_path / f"{name}.tif"), 2, "float32", -9999.0)
        run_sliding_window(GRID, WindowLayout(32, 4), lambda: Reader(data, valid, True, seen), pred, [out],
                           lambda v, ok: [v], batch_size=2)
        with rasterio.open(out.path) as ds:
            got[name] = ds.read()
        if name == "plain":
            seen.clear()
    assert np.array_equal(got["plain"], got["host"], equal_nan=True)
    assert made and len(seen) >= 40
    assert all(any(a <= p < a + n for a, n in made) for p in seen)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_page_locked_buffers_give_the_same_results():
    """On CUDA: host_buffer is page-locked, a batch in it goes straight to the GPU (and may be overwritten once
    ``release`` is called), and the result is the same bits as from plain memory (and the CPU's values: fp32,
    per-pixel model; the GPU's tanh may differ in the last bit)."""
    pred = Predictor(Pixelwise(), "cuda", precision="fp32")
    rng = np.random.default_rng(3)
    plain = rng.normal(size=(4, 3, 64, 64)).astype(np.float32)
    buf = pred.host_buffer(plain.shape)
    assert torch.from_numpy(buf).is_pinned() and torch.from_numpy(buf[1:3]).is_pinned()
    buf[...] = plain
    want = pred(plain)
    assert np.allclose(want, Predictor(Pixelwise(), "cpu")(plain), atol=1e-6, rtol=0)
    assert np.array_equal(pred(buf, release=lambda: buf.fill(np.nan)), want)
    assert np.isnan(buf).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a system that refuses page-locked memory")
def test_refused_page_locked_memory_gives_plain_buffers_and_one_warning():
    """Where the system refuses page-locked memory (here: no CUDA at all; on a GPU host, a locked-memory limit) the
    CUDA predictor's window buffers are plain arrays, the run goes on, and the log says so once."""
    progress = RecordingProgress()
    pred = Predictor(Pixelwise(), "cpu", progress=progress)
    pred.device = torch.device("cuda")  # a CUDA predictor, as far as its host memory goes
    bufs = [pred.host_buffer((2, 3, 8, 8)) for _ in range(3)]
    assert all(b.shape == (2, 3, 8, 8) and b.dtype == np.float32 and b.flags.writeable for b in bufs)
    assert len(progress.warnings) == 1 and "page-locked host memory refused" in progress.warnings[0]
