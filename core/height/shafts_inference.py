"""Building height and footprint from Sentinel-1/2 + SRTM with a SHAFTS network,
reproducing SHAFTS's own inference numbers (``docs/shafts-compat.md``, steps 1-9).

Inputs are GeoTIFFs on one geographic CRS (EPSG:4326, degrees): Sentinel-1 (VV, VH in dB),
Sentinel-2 (R=B4, G=B3, B=B2, NIR=B8 as reflectance x 1e4) and an SRTM DEM (metres).
Outputs are float32 GeoTIFFs on SHAFTS's output grid: mean building height (metres) and
building footprint fraction (0-1), with nodata.

Memory: SHAFTS scales each Sentinel-2 band by statistics of the whole clipped band and fills
gaps from anywhere in it, so each clip (extent plus padding, or one tile of ``max_tile_deg``) is
held whole while it is prepared. The Sentinel bands are clipped band by band into float32; the
peak comes while the Sentinel-2 bands are filled and scaled one at a time: the four clipped
bands (16 bytes per 10 m pixel of the clip), the nearest-neighbour fill's index arrays (8) and
the band being filled and scaled (4-12), beside the six uint8 channels and masks already made:
about 37 bytes per 10 m pixel in all, plus GDAL's block cache (up to GDAL_CACHEMAX, by default
5 % of RAM). Measured (``benchmarks/bench_shafts.py --memory``): a 0.5° extent with 0.03°
padding (38.9 M pixels) peaks at 2.0 GiB resident, 1.4 GiB with GDAL_CACHEMAX=16 (3.0 GiB when
the clips were float64). What stays for the network is uint8 (6 bytes per pixel), two bool
masks (2) and the float32 DEM at 30 m; the network then runs over the output in row chunks,
batch by batch (patches gathered per batch from strided views of pixel-interleaved uint8 channels,
straight into a channels-last batch; BatchNorm folded into the convolutions; inference_mode; on a CPU in
fp32, the 3x3 stride-1 convolutions by Winograd F(5,3), ``models/winograd.py``: those of 64 channels and
more with numba's compiled transforms, else those of 128 and more).

Where this differs from SHAFTS on purpose: declared input nodata is honoured (SHAFTS reads it as
a value); outputs get nodata where the patch centre has no Sentinel data or the DEM patch has
none, instead of SHAFTS's NaN-free Float64; the DEM's coverage is checked too; a last batch of one
pixel works. Ties in the nearest-neighbour gap fill may pick another equally near pixel.
"""
from __future__ import annotations

import os

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from affine import Affine
from rasterio.windows import Window

from ..errors import InputError
from ..devices import resolve_device  # noqa: F401  (re-exported for callers)
from ..grid import Grid
from ..progress import Progress, ensure
from ..outputs import refuse_input_as_output
from ..raster_io import atomic_raster, open_raster, read_masked, require_crs

#: Default padding (degrees) added around the extent before clipping, as in SHAFTS.
DEFAULT_PADDING_DEG = 0.03
DEFAULT_NODATA = -9999.0
#: Largest extent side (degrees) processed as one SHAFTS clip; larger extents are cut into tiles of this
#: size, each preprocessed on its own (as when SHAFTS is run tile by tile), so memory stays bounded.
#: 0 (or None) processes any extent as one clip, exactly as one SHAFTS run over the whole extent.
DEFAULT_MAX_TILE_DEG = 0.5
#: Patches per network call by device type (batch_size=None): on a CPU small batches keep the
#: activations in cache (CPU time is the same from 16 to 256; 64 needs less memory; each CPU worker thread
#: runs its own batches, :func:`_batch_workers`), a GPU needs large ones.
DEFAULT_BATCH_SIZE = {"cpu": 64, "cuda": 512}


# ---------------------------------------------------------------------------
# grids
# ---------------------------------------------------------------------------
def shafts_output_grid(extent: tuple[float, float, float, float], resolution_m: int,
                       crs: str | None = None) -> Grid:
    """SHAFTS's output grid for ``extent`` (xmin, ymin, xmax, ymax in degrees): pixel size
    0.0009/0.00225/0.0045/0.009 degrees for 100/250/500/1000 m, anchored at (xmin, ymax),
    ``nx = ceil(round(round(xmax - xmin, 6) / res, 6))`` (same for ny), so it may extend past
    xmax and ymin."""
    from ...models.shafts import OUTPUT_RES_DEG
    if int(resolution_m) not in OUTPUT_RES_DEG:
        raise InputError("RESOLUTION", f"must be one of {sorted(OUTPUT_RES_DEG)} m, got {resolution_m}.")
    res = OUTPUT_RES_DEG[int(resolution_m)]
    xmin, ymin, xmax, ymax = (float(v) for v in extent)
    if not (xmax > xmin and ymax > ymin):
        raise InputError("EXTENT", f"is empty ({xmin}, {ymin}, {xmax}, {ymax}).",
                         "give xmin < xmax and ymin < ymax in degrees.")
    nx = int(math.ceil(round(round(xmax - xmin, 6) / res, 6)))
    ny = int(math.ceil(round(round(ymax - ymin, 6) / res, 6)))
    return Grid(Affine(res, 0.0, xmin, 0.0, -res, ymax), nx, ny, crs)


def gdal_clip_grid(src_transform: Affine, bounds: tuple[float, float, float, float],
                   crs: str | None = None) -> Grid:
    """The grid GDAL's warp makes for ``outputBounds=bounds`` with no resolution given (same CRS):
    bounds kept exactly, ``n = int(span / source pixel size + 0.5)`` per axis and the pixel size
    re-derived as ``span / n``."""
    xmin, ymin, xmax, ymax = bounds
    sx, sy = abs(src_transform.a), abs(src_transform.e)
    nx = max(int((xmax - xmin) / sx + 0.5), 1)
    ny = max(int((ymax - ymin) / sy + 0.5), 1)
    return Grid(Affine((xmax - xmin) / nx, 0.0, xmin, 0.0, -(ymax - ymin) / ny, ymax), nx, ny, crs)


def _nearest_index(centres: np.ndarray, origin: float, step: float) -> np.ndarray:
    # GDAL's nearest-neighbour kernel: floor of the source pixel coordinate, plus a hair.
    return np.floor((centres - origin) / step + 1e-10).astype(np.int64)


def clip_nearest(ds, bounds, bands, name: str) -> tuple[np.ndarray, Grid]:
    """Resample bands of an open dataset onto :func:`gdal_clip_grid` by nearest neighbour, band by band.
    Returns ((bands, rows, cols) float32 with NaN where the source has no data in any of the bands, grid).

    float32 gives SHAFTS's numbers: it casts the Sentinel bands to float32 before any arithmetic, and the
    DEM ends as float32 in the patches; a source value goes to float32 in one rounding either way."""
    grid = gdal_clip_grid(ds.transform, bounds, ds.crs.to_wkt() if ds.crs else None)
    xc, yc = grid.pixel_centres(Window(0, 0, grid.width, 1))[0][0], \
        grid.pixel_centres(Window(0, 0, 1, grid.height))[1][:, 0]
    cols = _nearest_index(xc, ds.transform.c, ds.transform.a)
    rows = _nearest_index(yc, ds.transform.f, ds.transform.e)
    inside_c = (cols >= 0) & (cols < ds.width)
    inside_r = (rows >= 0) & (rows < ds.height)
    c0, c1 = int(cols[inside_c].min()), int(cols[inside_c].max()) + 1
    r0, r1 = int(rows[inside_r].min()), int(rows[inside_r].max()) + 1
    window = Window(c0, r0, c1 - c0, r1 - r0)
    rr = np.clip(rows - r0, 0, r1 - r0 - 1)
    cc = np.clip(cols - c0, 0, c1 - c0 - 1)
    out = np.empty((len(bands), grid.height, grid.width), dtype=np.float32)
    ok = inside_r[:, None] & inside_c[None, :]
    for b, band in enumerate(bands):           # one source band in memory at a time
        data, valid = read_masked(ds, window, name, (band,))
        ok &= _take(valid, rr, cc)
        del valid
        out[b] = _take(data[0], rr, cc)        # cast to float32 on assignment
        del data
    out[:, ~ok] = np.nan                       # no data in any band -> NaN in all, as before
    return out, grid


def _take(a: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``a[np.ix_(rows, cols)]``, taking a consecutive run of rows or columns as a slice (no gather), as
    where the clip keeps the source's pixel size (the common case)."""
    def run(idx):
        return slice(int(idx[0]), int(idx[-1]) + 1) if idx.size and np.all(np.diff(idx) == 1) else idx
    r, c = run(rows), run(cols)
    if isinstance(r, slice) or isinstance(c, slice):
        return a[r][:, c] if isinstance(c, slice) else np.take(a[r], c, axis=1)
    return a[np.ix_(rows, cols)]


# ---------------------------------------------------------------------------
# preprocessing (steps 3, 4, 6)
# ---------------------------------------------------------------------------
def fill_nan_nearest(band: np.ndarray, name: str = "INPUT") -> np.ndarray:
    """Fill NaNs of a 2-D array with the value of the nearest (Euclidean, pixel units) valid pixel."""
    nan = np.isnan(band)
    if not nan.any():
        return band
    if nan.all():
        raise InputError(name, "has no valid pixel inside the extent plus padding.",
                         "check the raster covers the area and its nodata setting.")
    from scipy.ndimage import distance_transform_edt
    idx = distance_transform_edt(nan, return_distances=False, return_indices=True)
    return band[tuple(idx)]


def s1_to_unit(db: np.ndarray) -> np.ndarray:
    """Sentinel-1 backscatter in dB (float32) to SHAFTS's input: ``min(10^(dB/10), 1)``, float32."""
    x = np.power(np.float32(10.0), db.astype(np.float32, copy=False) / np.float32(10.0))
    return np.minimum(x, np.float32(1.0))


def s2_to_unit(band: np.ndarray) -> np.ndarray:
    """Sentinel-2 band (float32, whole clipped band) scaled as SHAFTS does, in float32:
    ``clip((x - min) / (q98 - q02), 0, 1)`` with linear ``np.quantile``."""
    x = band.astype(np.float32, copy=False)
    lo = np.min(x)
    q02, q98 = np.quantile(x, [0.02, 0.98])    # one partition for both (same values)
    denom = q98 - q02
    if not denom > 0:
        denom = np.float32(1.0)
    return np.clip((x - lo) / denom, 0, 1)


def quantise_uint8(x: np.ndarray) -> np.ndarray:
    """``uint8(x * 255)`` with truncation (x in [0, 1], float32)."""
    return (x * np.float32(255)).astype(np.uint8)


# ---------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------
@dataclass
class PreparedInputs:
    s1: np.ndarray             # (2, H1, W1) uint8 VV, VH on grid_s1
    s2: np.ndarray             # (4, H2, W2) uint8 R, G, B, NIR on grid_s2
    centre_valid_s1: np.ndarray
    centre_valid_s2: np.ndarray
    grid_s1: Grid
    grid_s2: Grid
    dem: np.ndarray            # (H, W) float32 metres, NaN where no data, on grid_dem
    grid_dem: Grid


def _patch_index(grid: Grid, xs: np.ndarray, ys: np.ndarray, patch_size: int, name: str):
    ii = np.floor((xs - grid.transform.c) / grid.transform.a).astype(np.int64)
    jj = np.floor((ys - grid.transform.f) / grid.transform.e).astype(np.int64)
    before, after = patch_size // 2 - 1, patch_size // 2
    if ii.size and (ii.min() - before < 0 or jj.min() - before < 0 or ii.max() + after >= grid.width
                    or jj.max() + after >= grid.height):
        raise InputError("PADDING", f"is too small: {patch_size}-pixel {name} patches at the edge of the "
                                    "extent reach outside the clipped raster.",
                         f"use a padding of at least {patch_size * max(grid.res):.4f}°.")
    return ii, jj


def _windows(arr: np.ndarray, patch_size: int) -> np.ndarray:
    """All ``patch_size`` x ``patch_size`` windows of ``arr`` as a strided view (no copy): for a
    (C, H, W) array, shape (H - s + 1, W - s + 1, s, s, C) (a window is one compact block of memory
    when ``arr`` is pixel-interleaved, as :func:`_channels_view` makes it); for a 2-D (H, W) array,
    (H - s + 1, W - s + 1, s, s).
    ``view[j, i]`` is the window whose top-left pixel is (row j, col i)."""
    if arr.ndim == 2:
        return np.lib.stride_tricks.sliding_window_view(arr, (patch_size, patch_size))
    c, h, w = arr.shape
    sc, sh, sw = arr.strides
    return np.lib.stride_tricks.as_strided(
        arr, shape=(h - patch_size + 1, w - patch_size + 1, patch_size, patch_size, c),
        strides=(sh, sw, sh, sw, sc), writeable=False)


@dataclass
class PatchIndex:
    """Where the patches of a set of points start on each clipped grid (top-left row/col of the
    window) and which points have Sentinel data at the patch centre."""
    s1: tuple[np.ndarray, np.ndarray]
    s2: tuple[np.ndarray, np.ndarray]
    dem: tuple[np.ndarray, np.ndarray]
    centre_valid: np.ndarray

    def subset(self, keep) -> "PatchIndex":
        return PatchIndex(*((r[keep], c[keep]) for r, c in (self.s1, self.s2, self.dem)),
                          self.centre_valid[keep])


def patch_index(prep: PreparedInputs, xs: np.ndarray, ys: np.ndarray, patch_size: int) -> PatchIndex:
    """Patch positions for points (xs, ys in the inputs' CRS) as SHAFTS cuts them (step 5): rows/cols
    ``j - (s/2 - 1) … j + s/2`` around ``i = floor((x - x0)/dx)``, ``j = floor((y - y0)/dy)`` on each
    clipped grid (the DEM patch is s x s DEM pixels). Raises InputError if a patch leaves a clip."""
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    before = patch_size // 2 - 1
    starts, valid = [], None
    for g, name, ok in ((prep.grid_s1, "S1", prep.centre_valid_s1), (prep.grid_s2, "S2", prep.centre_valid_s2),
                        (prep.grid_dem, "DEM", None)):
        ii, jj = _patch_index(g, xs, ys, patch_size, name)
        if ok is not None:
            valid = ok[jj, ii] if valid is None else valid & ok[jj, ii]
        starts.append((jj - before, ii - before))
    return PatchIndex(*starts, valid)


def gather_dem(prep: PreparedInputs, index: PatchIndex, patch_size: int) -> np.ndarray:
    """DEM patches (N, 1, s, s) float32 metres, NaN where no data."""
    return _windows(prep.dem, patch_size)[index.dem[0], index.dem[1]].astype(np.float32, copy=False)[:, None]


def gather_sentinel_channels_last(prep: PreparedInputs, index: PatchIndex, patch_size: int) -> np.ndarray:
    """Sentinel patches (N, s, s, 6) uint8, channels VV, VH, R, G, B, NIR last (the memory layout of a
    channels-last batch), cut from strided window views of the prepared channels (one copy)."""
    n = index.centre_valid.size
    out = np.empty((n, patch_size, patch_size, 6), dtype=np.uint8)
    out[..., :2] = _windows(prep.s1, patch_size)[index.s1[0], index.s1[1]]
    out[..., 2:] = _windows(prep.s2, patch_size)[index.s2[0], index.s2[1]]
    return out


def gather_patches(prep: PreparedInputs, xs: np.ndarray, ys: np.ndarray, patch_size: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patches centred on points (xs, ys in the inputs' CRS) as SHAFTS cuts them (:func:`patch_index`).
    Returns (Sentinel (N, 6, s, s) uint8, DEM (N, 1, s, s) float32 metres with NaN where no data,
    (N,) bool: the centre pixel has S-1 and S-2 data)."""
    index = patch_index(prep, xs, ys, patch_size)
    x = gather_sentinel_channels_last(prep, index, patch_size).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x), gather_dem(prep, index, patch_size), index.centre_valid


def _check_inputs(dss: dict, bands: dict, bounds) -> str:
    crs = {}
    for key, ds in dss.items():
        crs[key] = require_crs(ds, key)
        need = max(bands[key])
        if ds.count < need or min(bands[key]) < 1:
            raise InputError(key, f"'{ds.name}' has {ds.count} band(s); bands {list(bands[key])} are needed.",
                             {"S1": "give a Sentinel-1 raster with VV and VH (dB) bands.",
                              "S2": "give a Sentinel-2 raster with R (B4), G (B3), B (B2), NIR (B8) bands.",
                              "DEM": "give a one-band SRTM DEM."}[key])
        if ds.transform.b != 0 or ds.transform.d != 0 or ds.transform.e >= 0:
            raise InputError(key, f"'{ds.name}' is not a north-up grid.", "warp it to a north-up EPSG:4326 grid.")
    first = dss["S1"].crs
    for key, ds in dss.items():
        if ds.crs != first:
            raise InputError(key, f"is on {ds.crs.to_string()} while S1 is on {first.to_string()}.",
                             "warp all inputs to EPSG:4326 (gdalwarp -t_srs EPSG:4326).")
    if not first.is_geographic:
        raise InputError("S1", f"is on the projected CRS {first.to_string()}; SHAFTS models work in degrees.",
                         "warp all inputs to EPSG:4326 (gdalwarp -t_srs EPSG:4326).")
    xmin, ymin, xmax, ymax = bounds
    tol = 1e-9
    for key, ds in dss.items():
        b = ds.bounds
        if b.left > xmin + tol or b.right < xmax - tol or b.bottom > ymin + tol or b.top < ymax - tol:
            raise InputError(key, f"'{ds.name}' covers ({b.left:.6f}, {b.bottom:.6f}, {b.right:.6f}, {b.top:.6f}), "
                                  f"not the extent plus padding ({xmin:.6f}, {ymin:.6f}, {xmax:.6f}, {ymax:.6f}).",
                             "download a larger raster or choose a smaller extent or padding.")
    return crs["S1"]


def sentinel_grid_note(s1_ds, s2_ds) -> str | None:
    """A note when Sentinel-1 and Sentinel-2 are not on one grid (pixel size, origin or size differ),
    else None. SHAFTS accepts it (each is clipped on its own grid), and so do we."""
    t1, t2 = s1_ds.transform, s2_ds.transform
    if t1.almost_equals(t2, precision=1e-12) and (s1_ds.width, s1_ds.height) == (s2_ds.width, s2_ds.height):
        return None
    return (f"S1 and S2 are on different grids (S1 pixel {abs(t1.a):.6g} x {abs(t1.e):.6g}, origin "
            f"({t1.c:.6f}, {t1.f:.6f}), {s1_ds.width} x {s1_ds.height} px; S2 pixel {abs(t2.a):.6g} x "
            f"{abs(t2.e):.6g}, origin ({t2.c:.6f}, {t2.f:.6f}), {s2_ds.width} x {s2_ds.height} px). Accepted "
            "as SHAFTS does: each is clipped on its own grid and patches are cut from each, so S-1 and S-2 "
            "pixels of a patch need not coincide. For aligned patches, export both on one grid.")


def _filled_uint8(bands: np.ndarray, channels: int, shape: tuple[int, int], to_unit, name: str) -> np.ndarray:
    """Steps 3-4 and 6 for one sensor: the first ``channels`` bands, NaNs filled with the nearest valid
    pixel, scaled to [0, 1] by ``to_unit`` and quantised to uint8, in a pixel-interleaved array."""
    out = _channels_view(shape, channels)
    for b in range(channels):
        out[b] = quantise_uint8(to_unit(fill_nan_nearest(bands[b], name)))
    return out


def _channels_view(shape: tuple[int, int], channels: int) -> np.ndarray:
    """A (channels, rows, cols) uint8 array stored pixel-interleaved (rows, cols, channels), so that a
    patch of all channels is one strided window of memory and patches gather straight into the
    channels-last batch the network runs on (:func:`_gather_channels_last`)."""
    return np.empty(tuple(shape) + (channels,), dtype=np.uint8).transpose(2, 0, 1)


def _prepare(dss, bands, bounds, progress: Progress) -> PreparedInputs:
    """Steps 2-4 and 6: clip, fill, scale and quantise the Sentinel bands; clip the DEM."""
    s1, g1 = clip_nearest(dss["S1"], bounds, bands["S1"], "S1")
    valid1 = np.isfinite(s1[0])                # clip_nearest sets NaN in all bands alike
    n_valid = int(valid1.sum())
    if n_valid and sum(int(np.count_nonzero(s1[b][valid1] >= 0)) for b in range(2)) > 0.9 * 2 * n_valid:
        progress.warning("S1: values look like linear backscatter, not dB (over 90 % are >= 0); "
                         "SHAFTS models expect dB (10*log10 of the linear value).")
    s1u8 = _filled_uint8(s1, 2, g1.shape, s1_to_unit, "S1")
    del s1
    progress.set_fraction(0.3)
    progress.check_cancelled()
    s2, g2 = clip_nearest(dss["S2"], bounds, bands["S2"], "S2")
    valid2 = np.isfinite(s2[0])
    s2u8 = _filled_uint8(s2, 4, g2.shape, s2_to_unit, "S2")
    del s2
    progress.set_fraction(0.8)
    progress.check_cancelled()
    dem, gd = clip_nearest(dss["DEM"], bounds, bands["DEM"], "DEM")
    progress.set_fraction(1.0)
    return PreparedInputs(s1u8, s2u8, valid1, valid2, g1, g2, dem[0], gd)


def prepare_inputs(s1_path, s2_path, dem_path, bounds: tuple[float, float, float, float],
                   s1_bands=(1, 2), s2_bands=(1, 2, 3, 4), dem_band: int = 1,
                   progress: Progress | None = None) -> tuple[PreparedInputs, str]:
    """Open and check the three inputs, clip them to ``bounds`` (degrees, extent plus padding) and
    preprocess them as SHAFTS does (steps 2-4, 6). Returns (inputs, CRS WKT)."""
    progress = ensure(progress)
    bands = {"S1": tuple(s1_bands), "S2": tuple(s2_bands), "DEM": (int(dem_band),)}
    with contextlib.ExitStack() as stack:
        dss = {"S1": stack.enter_context(open_raster(s1_path, "S1")),
               "S2": stack.enter_context(open_raster(s2_path, "S2")),
               "DEM": stack.enter_context(open_raster(dem_path, "DEM"))}
        crs = _check_inputs(dss, bands, bounds)
        return _prepare(dss, bands, bounds, progress), crs


def _load_model(checkpoint, resolution_m, target):
    from ...models.checkpoint import CheckpointError
    from ...models.shafts import ShaftsCheckpoint, ShaftsNet, load_shafts_checkpoint
    if isinstance(checkpoint, ShaftsNet):
        model, res, task = checkpoint, checkpoint.resolution_m, checkpoint.task
    elif isinstance(checkpoint, ShaftsCheckpoint):
        model, res, task = checkpoint.model, checkpoint.resolution_m, checkpoint.task
    else:
        try:
            ck = load_shafts_checkpoint(checkpoint, None, target)
        except CheckpointError as exc:
            if "single-task" in str(exc):
                raise InputError("TARGET", f"is not set, but {exc}.",
                                 "set TARGET (what a single-task SHAFTS checkpoint predicts) to height or "
                                 "footprint.") from exc
            if "say which resolution" not in str(exc):
                raise InputError("CHECKPOINT", str(exc), "give a SHAFTS or Edifice height/footprint checkpoint.") from exc
            try:
                ck = load_shafts_checkpoint(checkpoint, resolution_m, target)
            except CheckpointError as exc2:
                if "single-task" in str(exc2):
                    raise InputError("TARGET", f"is not set, but {exc2}.",
                                     "set TARGET (what a single-task SHAFTS checkpoint predicts) to height or "
                                     "footprint.") from exc2
                raise InputError("CHECKPOINT", str(exc2), "give the checkpoint for the requested resolution.") from exc2
        model, res, task = ck.model, ck.resolution_m, ck.task
    if int(res) != int(resolution_m):
        raise InputError("CHECKPOINT", f"is a {res} m model but {resolution_m} m was requested.",
                         f"choose resolution {res} m or the {resolution_m} m checkpoint.")
    return model, task


# ---------------------------------------------------------------------------
# main entry point
# ---------------------------------------------------------------------------
_DESCRIPTIONS = {"height": "mean building height (m)", "footprint": "building footprint fraction"}
_STYLES = {"height": "height_m.qml", "footprint": "footprint_fraction.qml"}


@dataclass(frozen=True)
class ShaftsRun:
    """Everything but the network that predicting one tile needs (picklable: a Dask task gets it).

    ``grid``: SHAFTS's output grid of the whole extent (degrees); ``tile_px``: output pixels along a
    tile's side (each tile is clipped with ``padding`` degrees and preprocessed on its own);
    ``outputs``: "height" and/or "footprint"; ``limits``: {output: (min, max)} of the post-processing."""
    s1_path: str
    s2_path: str
    dem_path: str
    bands: tuple            # (S1 bands, S2 bands, (DEM band,))
    extent: tuple           # xmin, ymin, xmax, ymax (degrees)
    padding: float          # degrees
    grid: Grid
    tile_px: int
    chunk_rows: int
    batch_size: int | None  # None: by the device type of the process that runs it
    task: str
    outputs: tuple
    limits: dict
    nodata: float

    def tiles(self) -> list:
        """The tiles (:class:`core.grid.Block`) of the output grid, row-major."""
        return list(self.grid.blocks(self.tile_px))

    def tile_bounds(self, window: Window) -> tuple[float, float, float, float]:
        """The clip of the tile ``window`` (degrees): its part of the extent (the output grid may
        reach past xmax and ymin) plus the padding, the halo its patches read."""
        res = self.grid.res[0]
        c0, r0, tw, th = int(window.col_off), int(window.row_off), int(window.width), int(window.height)
        tx0 = self.grid.transform.c + c0 * res
        ty1 = self.grid.transform.f - r0 * res
        xmin, ymin, xmax, _ = self.extent
        return (tx0 - self.padding, max(ty1 - th * res, ymin) - self.padding,
                min(tx0 + tw * res, xmax) + self.padding, ty1 + self.padding)


def _check_options(precision, batch_size, padding, max_tile_deg) -> None:
    if precision not in PRECISIONS:
        raise InputError("PRECISION", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    if batch_size is not None and batch_size < 1:
        raise InputError("BATCH_SIZE", f"must be at least 1, got {batch_size}.")
    if not padding >= 0:
        raise InputError("PADDING", f"must be >= 0 degrees, got {padding}.")
    if max_tile_deg is not None and not max_tile_deg >= 0:
        raise InputError("MAX_TILE_DEG", f"must be >= 0 degrees (0: one clip), got {max_tile_deg}.")


def _check_outputs(task: str, out_height, out_footprint) -> tuple:
    if task in ("multi", "height") and out_height is None:
        raise InputError("OUTPUT_HEIGHT", "is required for this model.", "give an output file name.")
    if task in ("multi", "footprint") and out_footprint is None:
        raise InputError("OUTPUT_FOOTPRINT", "is required for this model.", "give an output file name.")
    return tuple(k for k in ("height", "footprint") if task in ("multi", k))


def _checked_crs(paths: tuple, bands: tuple, bounds, progress: Progress) -> str:
    """Check all three inputs cover ``bounds`` (extent plus padding) before any work; their CRS (WKT)."""
    with contextlib.ExitStack() as stack:
        dss = {k: stack.enter_context(open_raster(p, k)) for k, p in zip(("S1", "S2", "DEM"), paths)}
        crs = _check_inputs(dss, dict(zip(("S1", "S2", "DEM"), bands)), bounds)
        note = sentinel_grid_note(dss["S1"], dss["S2"])
    if note:
        progress.warning(note)
    return crs


def plan_shafts_run(s1_path, s2_path, dem_path, extent, resolution_m: int, task: str, out_height, out_footprint,
                    *, padding: float, h_min: float, h_max: float, f_min: float, f_max: float,
                    batch_size: int | None, chunk_rows: int | None, nodata: float, s1_bands, s2_bands,
                    dem_band: int, max_tile_deg: float | None, precision: str,
                    progress: Progress) -> ShaftsRun:
    """Check the settings and inputs of a SHAFTS run (one machine or a Dask cluster) and cut its
    output grid into tiles of ``max_tile_deg`` degrees. Raises InputError naming the setting."""
    outputs = _check_outputs(task, out_height, out_footprint)
    _check_options(precision, batch_size, padding, max_tile_deg)
    xmin, ymin, xmax, ymax = (float(v) for v in extent)
    bands = (tuple(s1_bands), tuple(s2_bands), (int(dem_band),))
    crs = _checked_crs((str(s1_path), str(s2_path), str(dem_path)), bands,
                       (xmin - padding, ymin - padding, xmax + padding, ymax + padding), progress)
    grid = shafts_output_grid((xmin, ymin, xmax, ymax), resolution_m, crs)
    tile_px = max(grid.width, grid.height)
    if max_tile_deg and max(xmax - xmin, ymax - ymin) > max_tile_deg:
        tile_px = max(1, int(max_tile_deg // grid.res[0]))
    if chunk_rows is None:
        chunk_rows = max(1, 16384 // min(tile_px, grid.width))
    run = ShaftsRun(str(s1_path), str(s2_path), str(dem_path), bands, (xmin, ymin, xmax, ymax), float(padding),
                    grid, tile_px, int(chunk_rows), batch_size, task, outputs,
                    {"height": (h_min, h_max), "footprint": (f_min, f_max)}, float(nodata))
    n = len(run.tiles())
    if n > 1:
        progress.warning(f"extent larger than {max_tile_deg} degrees: processed as {n} tiles of "
                         f"{tile_px} x {tile_px} output pixels, each preprocessed on its own (Sentinel-2 "
                         f"scaling per tile, as when SHAFTS is run tile by tile).")
    return run


def postprocess(v: np.ndarray, output: str, run: ShaftsRun) -> np.ndarray:
    """Network output (float64, NaN where not predicted) to the written float32: multi-task: below
    min -> 0 (not clipped to min), above max -> max; single-task: first above max -> max, then
    below min -> 0; NaN -> nodata."""
    lo, hi = run.limits[output]
    ok = np.isfinite(v)
    if run.task == "multi":
        v = np.where(v > hi, hi, np.where(v < lo, 0.0, v))
    else:
        v = np.where(v > hi, hi, v)
        v = np.where(v < lo, 0.0, v)
    return np.where(ok, v, run.nodata).astype(np.float32)


def predict_tile(run: ShaftsRun, model, dev, window: Window, write, progress: Progress) -> dict:
    """Predict the tile ``window`` of ``run.grid``: clip and prepare its inputs (its part of the extent
    plus the padding, :meth:`ShaftsRun.tile_bounds`), then run the network over it in chunks of
    ``run.chunk_rows`` rows, calling ``write(output, float32 array, chunk window)`` for each output.
    The one code path of both the single-machine run and a cluster block. Returns the pixel counts."""
    s1_bands, s2_bands, (dem_band,) = run.bands
    prep, _ = prepare_inputs(run.s1_path, run.s2_path, run.dem_path, run.tile_bounds(window), s1_bands, s2_bands,
                             dem_band, progress.span(0.0, 0.15))
    progress.check_cancelled()
    # patches at the tile's corners must lie inside its clip (clear error otherwise)
    xs_c, ys_c = run.grid.pixel_centres(window)
    gather_patches(prep, xs_c[[0, -1]][:, [0, -1]].ravel(), ys_c[[0, -1]][:, [0, -1]].ravel(), model.patch_size)
    batch_size = run.batch_size or DEFAULT_BATCH_SIZE.get(dev.type, 64)
    model_progress = progress.span(0.15, 1.0)
    c0, r0, tw, th = int(window.col_off), int(window.row_off), int(window.width), int(window.height)
    stats = {"pixels": 0, "valid": 0}
    for a in range(r0, r0 + th, run.chunk_rows):
        progress.check_cancelled()
        b = min(a + run.chunk_rows, r0 + th)
        chunk = Window(c0, a, tw, b - a)
        pred = _predict_window(model, dev, run.grid, chunk, prep, batch_size, run.outputs, progress)
        for k in run.outputs:
            write(k, postprocess(pred[k], k, run), chunk)
        stats["pixels"] += (b - a) * tw
        stats["valid"] += int(np.isfinite(pred[run.outputs[0]]).sum())
        model_progress.set_fraction((b - r0) / th)
    return stats


def predict_height_footprint_shafts(
        s1_path, s2_path, dem_path, extent: tuple[float, float, float, float], checkpoint,
        resolution_m: int, out_height=None, out_footprint=None, *,
        padding: float = DEFAULT_PADDING_DEG, target: str | None = None,
        h_min: float = 2.0, h_max: float = 1000.0, f_min: float = 0.0, f_max: float = 1.0,
        device: str = "auto", batch_size: int | None = None, chunk_rows: int | None = None,
        nodata: float = DEFAULT_NODATA, s1_bands=(1, 2), s2_bands=(1, 2, 3, 4), dem_band: int = 1,
        max_tile_deg: float | None = DEFAULT_MAX_TILE_DEG, precision: str = "fp32",
        progress: Progress | None = None) -> dict:
    """Predict mean building height (metres) and footprint fraction (0-1) on SHAFTS's output grid.

    An extent wider or taller than ``max_tile_deg`` degrees is cut into tiles of that size on the
    output grid; each tile is clipped (with ``padding``) and preprocessed on its own, exactly as
    SHAFTS does for one extent, so the result equals running SHAFTS tile by tile and memory is
    bounded by the tile size. ``0`` (or ``None``) processes any extent as one clip, identical to one
    SHAFTS run over the whole extent (memory grows with the extent).

    ``extent`` (xmin, ymin, xmax, ymax) and ``padding`` are in degrees of the inputs' geographic CRS
    (EPSG:4326). ``checkpoint``: path to a SHAFTS or Edifice ``shafts_senet`` checkpoint, or a loaded
    model. Post-processing: :func:`postprocess`. Outputs are float32 GeoTIFFs with
    ``nodata``, written atomically. ``precision``: "fp32" (default) or "bf16" (faster, not SHAFTS's
    numbers: the difference depends on the network, see :data:`PRECISIONS`). Returns {"grid", "height", "footprint", "device", "pixels"}.
    """
    import torch
    refuse_input_as_output({"OUTPUT_HEIGHT": out_height, "OUTPUT_FOOTPRINT": out_footprint},
                           {"SENTINEL1": s1_path, "SENTINEL2": s2_path, "DEM": dem_path,
                            "CHECKPOINT": checkpoint if isinstance(checkpoint, (str, os.PathLike)) else None})
    progress = ensure(progress)
    model, task = _load_model(checkpoint, resolution_m, target)
    _check_outputs(task, out_height, out_footprint)
    _check_options(precision, batch_size, padding, max_tile_deg)
    dev = resolve_device(device)
    progress.info(f"SHAFTS {resolution_m} m {task}-task model on device {dev}"
                  + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""))
    run = plan_shafts_run(s1_path, s2_path, dem_path, extent, resolution_m, task, out_height, out_footprint,
                          padding=padding, h_min=h_min, h_max=h_max, f_min=f_min, f_max=f_max,
                          batch_size=batch_size, chunk_rows=chunk_rows, nodata=nodata, s1_bands=s1_bands,
                          s2_bands=s2_bands, dem_band=dem_band, max_tile_deg=max_tile_deg, precision=precision,
                          progress=progress)
    model = inference_model(model, dev, owned=isinstance(checkpoint, (str, os.PathLike)), precision=precision)
    paths = {"height": out_height, "footprint": out_footprint}
    tiles = run.tiles()
    stats = {"pixels": 0, "valid": 0}
    with contextlib.ExitStack() as stack:
        dsts = {k: stack.enter_context(atomic_raster(paths[k], run.grid, 1, "float32", nodata=nodata,
                                                     descriptions=[_DESCRIPTIONS[k]], style=_STYLES[k]))
                for k in run.outputs}
        for t, tile in enumerate(tiles):
            s = predict_tile(run, model, dev, tile.window, lambda k, v, w: dsts[k].write(v[None], window=w),
                             progress.span(t / len(tiles), (t + 1) / len(tiles)))
            stats = {k: stats[k] + s[k] for k in stats}
    progress.info(f"{stats['valid']} of {stats['pixels']} output pixels predicted")
    return {"grid": run.grid, "height": out_height if "height" in run.outputs else None,
            "footprint": out_footprint if "footprint" in run.outputs else None,
            "device": str(dev), "pixels": stats["pixels"], "valid_pixels": stats["valid"],
            "tiles": len(tiles)}


#: Arithmetic of the network: "fp32" (default; SHAFTS's numbers up to float32 rounding) or "bf16"
#: (opt-in autocast to bfloat16: on a CPU with AMX about 0.3x the CPU time of fp32, but NOT SHAFTS's
#: numbers: how far it moves depends on the network. Measured: within 2^-5 of the largest output on the
#: unit-test network; up to 2.4 m height / 0.046 footprint on bench_shafts.py's random checkpoint, whose
#: output layer is scaled up ~400x. Compare with fp32 on your checkpoint before relying on it.)
PRECISIONS = ("fp32", "bf16")


def inference_model(model, dev, owned: bool = False, precision: str = "fp32"):
    """The network as it runs here: BatchNorm folded into the layers before it
    (:func:`~edifice.models.shafts.fuse_for_inference`; on a copy unless ``owned``), on ``dev``,
    weights in channels-last memory format (the batches are built channels-last too); on a CPU in fp32,
    the 3x3 stride-1 convolutions computed by Winograd F(5,3) (:mod:`~edifice.models.winograd`): where
    numba is installed those with >= 64 input channels on maps up to 20 px, with compiled cache-blocked
    transforms and products (numba is loaded in the background meanwhile; on an AMD Zen 5 core the network
    0.81-0.85 ms a patch against 1.41 direct), else those with >= 128 on maps up to 10 px (0.8x the
    network's CPU time); then the ReLU after
    each Winograd conv1 of an SE block is applied in its output transform and, with numba, each block's
    tail runs in one compiled pass (:func:`~edifice.models.shafts.fuse_relu_and_se_tails`: the same
    values, 0.97x the CPU time per patch). Freed memory is kept in the process for reuse
    (:func:`~edifice.core.host_tuning.keep_freed_memory`, as the mapping engine does): the first 10x run in
    a process had 680,000 page faults and 2.1 s of system time (of 35 CPU-s), 53,000 and 0.3 s with it.
    Outputs equal the plain float32 network's up to float32 rounding (tested on the THU sample in
    ``tests/unit/test_shafts_inference.py``: within 1e-5 of the output range)."""
    import torch
    from ...models.shafts import fuse_for_inference
    from ..host_tuning import keep_freed_memory
    keep_freed_memory()   # activations reused, not page-faulted again every batch (core/host_tuning.py)
    fast = fuse_for_inference(model, copy_model=not owned).to(dev).to(memory_format=torch.channels_last)
    fast.autocast_dtype = torch.bfloat16 if precision == "bf16" else None
    if dev.type == "cpu" and precision == "fp32":
        from ...models.shafts import fuse_relu_and_se_tails
        from ...models.winograd import warm_up_compiled, winograd_layers
        if winograd_layers(fast):
            warm_up_compiled()        # numba loads while the inputs are prepared
        fuse_relu_and_se_tails(fast)
    return fast


def _run_batch(model, dev, x: np.ndarray, d: np.ndarray) -> dict:
    """Model outputs for one batch: ``x`` (N, s, s, 6) uint8 channels-last Sentinel patches, scaled by
    1/255 as torchvision's ToTensor does; ``d`` (N, 1, s, s) float32 DEM metres."""
    import torch
    xt = torch.from_numpy(x).to(dev).permute(0, 3, 1, 2).float() / 255.0   # channels-last (N, 6, s, s)
    dt = torch.from_numpy(d).to(dev)
    dtype = getattr(model, "autocast_dtype", None)
    with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
        y = model(xt, dt)
    return {k: v.float().cpu().numpy() for k, v in y.items()}


def _batch_workers(dev) -> int:
    """Worker threads for the forward passes: on a CPU one per intra-op thread torch would use
    (``torch.get_num_threads()``), each running whole batches with one thread (:mod:`core.batch_workers`);
    elsewhere 1 (batches run in the calling thread)."""
    import torch
    return torch.get_num_threads() if dev.type == "cpu" else 1


def _map_batches(run, batches, workers: int, progress) -> Iterator:
    """``run(batch)`` for each batch in order: on ``workers`` threads (at most two batches each in
    flight) when ``workers`` > 1, else in this thread; cancellation is checked before each batch."""
    if workers <= 1:
        for batch in batches:
            progress.check_cancelled()
            yield run(batch)
        return
    from ..batch_workers import cpu_batch_workers, ordered_map
    with cpu_batch_workers(workers) as pool:
        yield from ordered_map(pool, run, batches, 2 * workers, progress.check_cancelled)


def _predict_window(model, dev, grid: Grid, window: Window, prep: PreparedInputs, batch_size: int,
                    outputs, progress):
    """Model outputs (float64, NaN where not predicted) for ``window`` of the output grid: patches of
    the points with Sentinel data at the centre and a DEM patch without gaps, in batches of at most
    ``batch_size`` (on a CPU, one batch per core at a time: :func:`_batch_workers`)."""
    from ..batch_workers import even_batches
    xs, ys = grid.pixel_centres(window)
    index = patch_index(prep, xs.ravel(), ys.ravel(), model.patch_size)
    dem = gather_dem(prep, index, model.patch_size)
    ok = np.flatnonzero(index.centre_valid & np.isfinite(dem).all(axis=(1, 2, 3)))
    out = {k: np.full(xs.size, np.nan) for k in outputs}

    def run(bounds):
        sel = ok[bounds[0]:bounds[1]]
        x = gather_sentinel_channels_last(prep, index.subset(sel), model.patch_size)
        return sel, _run_batch(model, dev, x, dem[sel])

    workers = _batch_workers(dev)
    for sel, y in _map_batches(run, even_batches(ok.size, batch_size, workers), workers, progress):
        for k in outputs:
            out[k][sel] = y[k]
    return {k: v.reshape(int(window.height), int(window.width)) for k, v in out.items()}
