import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import CRS

from edifice.core.errors import Cancelled, InputError
from edifice.core.grid import Grid
from edifice.core.raster_io import atomic_raster, open_raster, read_masked

UTM = CRS.from_epsg(32636).to_wkt()


def test_blocks_tile_the_grid_exactly_with_clipped_halos():
    g = Grid(Affine(0.5, 0, 1000, 0, -0.5, 2000), 1000, 700, UTM)
    seen = np.zeros(g.shape, int)
    for b in g.blocks(256, halo=40):
        w, r = b.window, b.read_window
        seen[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width] += 1
        assert r.row_off == max(w.row_off - 40, 0) and r.col_off == max(w.col_off - 40, 0)
        assert r.row_off + r.height == min(w.row_off + w.height + 40, 700)
        rows, cols = b.inner
        assert rows.stop - rows.start == w.height and cols.stop - cols.start == w.width
    assert (seen == 1).all()
    assert g.block_count(256) == 4 * 3


def test_grid_from_extent_and_pixel_centres():
    g = Grid.from_extent(0, 0, 10.5, 4, 1.0, UTM)
    assert (g.width, g.height) == (11, 4)
    xs, ys = g.pixel_centres()
    assert xs[0, 0] == 0.5 and ys[0, 0] == 3.5 and xs[-1, -1] == 10.5
    with pytest.raises(InputError, match="EXTENT"):
        Grid.from_extent(5, 0, 5, 4, 1.0, UTM)


def test_atomic_raster_leaves_nothing_on_error(tmp_path):
    g = Grid(Affine(1, 0, 0, 0, -1, 0), 64, 64, UTM)
    out = tmp_path / "out.tif"
    with pytest.raises(Cancelled):
        with atomic_raster(out, g, 1, "uint8", nodata=0) as dst:
            dst.write(np.ones((1, 64, 64), np.uint8))
            raise Cancelled()
    assert list(tmp_path.iterdir()) == []
    with atomic_raster(out, g, 1, "uint8", nodata=0) as dst:
        dst.write(np.ones((1, 64, 64), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]
    with rasterio.open(out) as ds:
        assert ds.nodata == 0 and ds.profile["compress"] == "deflate"


def test_large_outputs_are_tiled(tmp_path):
    g = Grid(Affine(1, 0, 0, 0, -1, 0), 1500, 300, UTM)
    with atomic_raster(tmp_path / "t.tif", g, 1, "float32", nodata=-1) as dst:
        dst.write(np.zeros((1, 300, 1500), np.float32))
    with rasterio.open(tmp_path / "t.tif") as ds:
        assert ds.profile["tiled"] and ds.block_shapes[0] == (256, 256)
        assert ds.overviews(1)  # built for rasters > 1024 px


def test_open_raster_errors_name_the_input(tmp_path):
    with pytest.raises(InputError, match="REFERENCE: file .* does not exist"):
        open_raster(tmp_path / "missing.tif", "REFERENCE")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage")
    with pytest.raises(InputError, match="not a readable raster"):
        open_raster(bad, "INPUT")


def test_truncated_raster_read_gives_clear_error(tmp_path, kampala_rgb):
    data = kampala_rgb.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        with open_raster(cut) as ds:
            read_masked(ds, ds.window(*ds.bounds))


def test_read_masked_honours_nodata_and_nan(tmp_path):
    g = Grid(Affine(1, 0, 0, 0, -1, 0), 4, 3, UTM)
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    arr[0, 0, 0] = -9
    arr[1, 2, 3] = np.nan
    with atomic_raster(tmp_path / "m.tif", g, 2, "float32", nodata=-9) as dst:
        dst.write(arr)
    with rasterio.open(tmp_path / "m.tif") as ds:
        _, valid = read_masked(ds, None)
    assert not valid[0, 0] and not valid[2, 3] and valid.sum() == 10


@pytest.mark.parametrize("nodata, value", [(0.1, 0.1), (-9.0, -9.0), (-9.0, np.inf), (-9.0, -np.inf), (0.1, np.nan),
                                           (-9.0, 0.5)])
def test_read_masked_range_shortcut_is_the_pixel_check(tmp_path, nodata, value):
    """The min/max shortcut (nodata outside the band's range: every pixel valid) gives the validity of the
    pixel-by-pixel check, nodata not exact in float64 (0.1) and values inside the range included."""
    g = Grid(Affine(1, 0, 0, 0, -1, 0), 4, 3, UTM)
    arr = np.linspace(0.0, 1.0, 24, dtype=np.float32).reshape(2, 3, 4)
    arr[1, 1, 2] = value
    with atomic_raster(tmp_path / "m.tif", g, 2, "float32", nodata=nodata) as dst:
        dst.write(arr)
    with rasterio.open(tmp_path / "m.tif") as ds:
        _, valid = read_masked(ds, None)
        data = ds.read()
    nd = np.float32(nodata)
    expected = np.all((data != nd) & np.isfinite(data), axis=0)
    assert np.array_equal(valid, expected)
    assert valid[1, 2] == (value == 0.5)


@pytest.mark.parametrize("dtype, nodata, value", [("uint8", 0, 0), ("uint8", 0, 7), ("uint8", 255, 255),
                                                  ("uint8", 255, 9), ("uint8", 200, 200), ("uint8", None, 0),
                                                  ("uint16", 0, 0), ("uint16", 65535, 65535), ("int16", -5, -5),
                                                  ("int16", 300, 300), ("int16", 300, 4)])
def test_read_masked_shortcut_of_integers_read_as_floats(tmp_path, dtype, nodata, value):
    """Integer bands read into float32 (as the engine reads imagery): the one-reduction shortcut (nodata below the
    band's minimum or above its maximum) gives the pixel-by-pixel validity, a nodata inside the range included."""
    g = Grid(Affine(1, 0, 0, 0, -1, 0), 4, 3, UTM)
    arr = (np.arange(24).reshape(2, 3, 4) % 11 + 10).astype(dtype)  # 10..20: nodata 0 and 200 outside, 300 too
    arr[1, 1, 2] = value
    with atomic_raster(tmp_path / "m.tif", g, 2, dtype, nodata=nodata) as dst:
        dst.write(arr)
    with rasterio.open(tmp_path / "m.tif") as ds:
        data, valid = read_masked(ds, None, out=np.empty((2, 3, 4), np.float32))
    expected = np.ones((3, 4), bool) if nodata is None else np.all(arr != nodata, axis=0)
    assert data.dtype == np.float32 and np.array_equal(data, arr.astype(np.float32))
    assert np.array_equal(valid, expected)
    assert valid[1, 2] == (nodata is None or value != nodata)
