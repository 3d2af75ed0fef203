"""Shared parts of the composite sources (core/acquire/composites.py): grids, chunk planning and
splitting, the resumable chunk store, the mosaic, and a cancelled run leaving no output."""
from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from edifice.core.acquire.composites import (DEM, NODATA_SENTINEL, S1, S2, ChunkStore, DownloadOptions,
                                             RequestTooLarge, chunk_side, composite_grid, download_composite,
                                             make_composites, required_padding, split_window)
from edifice.core.errors import Cancelled, InputError
from edifice.core.progress import Progress


def test_grid_snapped_to_pixel_multiples_and_covering_the_padded_extent():
    ext, pad = (116.3, 39.98, 116.34, 40.02), 0.03
    for product in (S1, S2, DEM):
        g = composite_grid(ext, product, pad)
        px = product.pixel_deg
        assert g.res == (px, px)
        for v in (g.transform.c, g.transform.f):
            assert abs(v / px - round(v / px)) < 1e-6
        xmin, ymin, xmax, ymax = g.bounds
        assert xmin <= ext[0] - pad < xmin + px and xmax - px < ext[2] + pad <= xmax
        assert ymin <= ext[1] - pad < ymin + px and ymax - px < ext[3] + pad <= ymax
    assert S1.pixel_deg == pytest.approx(10 * 360 / (2 * math.pi * 6378137))


def test_padding_grows_with_the_model_patch():
    assert required_padding(100) == 0.03                      # the height tool's default suffices
    p1000 = required_padding(1000)
    assert p1000 >= 160 * DEM.pixel_deg + 0.009                # a 160-px DEM patch plus one output pixel
    with pytest.raises(InputError):
        required_padding(300)


def test_extent_must_be_degrees():
    with pytest.raises(InputError) as exc:
        composite_grid((500000, 4400000, 510000, 4410000), S1, 0.0)
    assert exc.value.name == "EXTENT"


def test_chunks_fit_the_request_size_and_split_tile_aligned():
    side = chunk_side(S2, 32 * 2**20)
    assert side % 256 == 0 and side * side * S2.bytes_per_pixel <= 32 * 2**20
    assert (side + 256) ** 2 * S2.bytes_per_pixel > 32 * 2**20
    parts = split_window(Window(1024, 0, 1024, 700))
    assert [(p.col_off, p.row_off, p.width, p.height) for p in parts] == [
        (1024, 0, 512, 256), (1536, 0, 512, 256), (1024, 256, 512, 444), (1536, 256, 512, 444)]
    assert sum(p.width * p.height for p in split_window(Window(0, 0, 3, 1))) == 3
    with pytest.raises(RequestTooLarge):
        split_window(Window(5, 5, 1, 1))


def test_store_resumes_its_own_request_and_clears_another(tmp_path):
    w = Window(0, 0, 4, 3)
    store = ChunkStore(tmp_path / "c", {"year": 2020})
    store.save(w, np.ones((2, 3, 4), np.float32))
    store.mark_split(Window(0, 0, 600, 600))
    with open(tmp_path / "c" / "manifest.jsonl", "a") as f:
        f.write('{"done": "r9_c9_')                           # a line cut short by a kill
    again = ChunkStore(tmp_path / "c", {"year": 2020})
    assert again.done == {"r0_c0_3x4"} and len(again.leaves([Window(0, 0, 600, 600)])) == 4
    other = ChunkStore(tmp_path / "c", {"year": 2021})
    assert other.done == set() and not list((tmp_path / "c").glob("*.npy"))


def _fake_fetch(product, grid, window):
    """Values that encode the pixel position (row * 10000 + col), -32768 on the first row (no data)."""
    r = np.arange(int(window.row_off), int(window.row_off + window.height))[:, None]
    c = np.arange(int(window.col_off), int(window.col_off + window.width))[None, :]
    v = (r * 10000 + c).astype(np.float32)
    v[r[:, 0] == 0, :] = NODATA_SENTINEL
    return np.broadcast_to(v, (len(product.bands),) + v.shape).copy()


def test_mosaic_places_every_chunk_and_sets_nodata(tmp_path):
    grid = composite_grid((116.30, 39.98, 116.33, 40.0), S1, 0.0)
    out = download_composite(_fake_fetch, S1, grid, tmp_path / "s1.tif", {"t": 1},
                             DownloadOptions(workers=3, max_request_bytes=256 * 256 * 8))
    assert out["chunks"] == math.ceil(grid.width / 256) * math.ceil(grid.height / 256) > 1
    with rasterio.open(tmp_path / "s1.tif") as ds:
        data = ds.read()
        assert ds.descriptions == S1.bands and np.isnan(ds.nodata)
    r, c = np.mgrid[0:grid.height, 0:grid.width]
    want = (r * 10000 + c).astype(np.float32)
    want[0] = np.nan
    np.testing.assert_array_equal(data[1], want)
    assert not (tmp_path / ".s1.chunks").exists()


class _CancelAfter(Progress):
    def __init__(self, n):
        self.calls, self.n = 0, n

    def is_cancelled(self):
        self.calls += 1
        return self.calls > self.n


def test_cancel_leaves_no_output_and_keeps_finished_chunks(tmp_path):
    grid = composite_grid((116.30, 39.98, 116.33, 40.0), S1, 0.0)
    with pytest.raises(Cancelled):
        download_composite(_fake_fetch, S1, grid, tmp_path / "s1.tif", {"t": 1},
                           DownloadOptions(workers=1, max_request_bytes=256 * 256 * 8), progress=_CancelAfter(2))
    assert not (tmp_path / "s1.tif").exists() and not list(tmp_path.glob(".s1*.partial*"))
    assert list((tmp_path / ".s1.chunks").glob("*.npy"))


def test_unknown_product_refused():
    class Src:
        name = "x"
    with pytest.raises(InputError) as exc:
        make_composites(Src(), (0, 0, 1, 1), {"S3": "a.tif"})
    assert exc.value.name == "OUTPUTS"


def test_outputs_checked_before_any_fetch(tmp_path):
    calls = []

    class Src:
        name = "fake"

        def spec(self):
            return {}

        def fetch(self, *a):
            calls.append(a)
            return _fake_fetch(*a)

    same = str(tmp_path / "x.tif")
    with pytest.raises(InputError) as exc:
        make_composites(Src(), (116.30, 39.98, 116.31, 39.99), {"S1": same, "S2": same}, padding=0.0)
    assert exc.value.name == "OUTPUT_S2" and not calls
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(InputError) as exc:
        make_composites(Src(), (116.30, 39.98, 116.31, 39.99), {"DEM": str(blocked / "dem.tif")}, padding=0.0)
    assert exc.value.name == "OUTPUT_DEM" and not calls
