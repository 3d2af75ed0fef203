"""Multi-scale Retinex illumination correction (seed 000 §2.4.1), block by block.

For every scale sigma (pixels) the illumination ``L`` is a nodata-aware
Gaussian blur of the image (normalised convolution: blur(value*valid) /
blur(valid)); the reflectance is ``R = sum_s w_s * (log(I - m + c) - log(L_s - m + c))``
with ``c`` one grey level for integers, 1e-3 for floats, and ``m = min(0, global
minimum of the valid values of all bands)``. So rasters without negative values
are corrected as they are (the ratio model ``I = R * L``), and a raster with
negative values (float noise, signed integers, calibrated data) is corrected as
the raster minus its minimum: its result does not change when a constant that
keeps the minimum negative is added, and equals the result of ``I - m``.
One linear stretch, computed once for the whole raster from a histogram of
``R`` (never per block), maps ``R`` onto the output data type.

Large scales are blurred on a grid of cells of ``f x f`` pixels aligned to the
raster origin (``f = sigma // 8``) and interpolated back bilinearly. A first
pass sums value and validity per cell over the whole raster into scratch files
(1/f^2 of the raster, on disk next to the output) and finds the global minimum
(for signed and float rasters); small scales (f = 1) read a
halo of 4 sigma. So the block-wise result equals the whole-image result, every
pixel is read three times with small halos, and memory depends on the block
size only.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from ..errors import InputError
from ..grid import Grid
from ..progress import Progress, ensure
from ..outputs import check_output_folder, refuse_input_as_output, scratch_prefix
from ..raster_io import atomic_raster, bounded_gdal_cache, open_raster, read_masked, require_real

DEFAULT_SIGMAS = (15.0, 80.0, 250.0)
#: Retinex values outside this range (natural-log units) are pooled in the end bins.
_HIST_RANGE = (-16.0, 16.0)
_HIST_BINS = 1 << 16
_TRUNCATE = 4.0


@dataclass(frozen=True)
class _Scale:
    """A blur scale: ``sigma`` in pixels, computed on cells of ``factor`` pixels."""

    sigma: float
    weight: float

    @property
    def factor(self) -> int:
        return max(1, int(self.sigma // 8))

    @property
    def cell_sigma(self) -> float:
        return self.sigma / self.factor

    @property
    def cell_radius(self) -> int:
        # scipy's kernel radius for truncate=4
        return int(_TRUNCATE * self.cell_sigma + 0.5)

    @property
    def halo(self) -> int:
        """Pixels of context a block needs so its result equals the whole-image one."""
        return (self.cell_radius + 2) * self.factor


def _interp_axis(n_pixels_lo: int, n_pixels_hi: int, f: int, n_cells: int, cell_lo: int):
    """Bilinear weights along one axis from cell centres to pixel centres
    ``[n_pixels_lo, n_pixels_hi)`` (global pixel indices): indices into a cell
    array starting at global cell ``cell_lo`` and the weight of the second cell."""
    p = np.arange(n_pixels_lo, n_pixels_hi, dtype=np.float64)
    u = (p + 0.5) / f - 0.5
    i0 = np.floor(u).astype(np.int64)
    t = (u - i0).astype(np.float32)
    i1 = np.clip(i0 + 1, 0, n_cells - 1) - cell_lo
    i0 = np.clip(i0, 0, n_cells - 1) - cell_lo
    return i0, i1, t


def _cell_range(p_lo: int, p_hi: int, f: int, radius: int, n_cells: int) -> tuple[int, int]:
    """Global cells [lo, hi) needed to produce pixels [p_lo, p_hi) along one axis."""
    first = math.floor((p_lo + 0.5) / f - 0.5)
    last = math.floor((p_hi - 1 + 0.5) / f - 0.5) + 1
    return max(first - radius, 0), min(last + radius, n_cells - 1) + 1


def _block_sum(a: np.ndarray, f: int) -> np.ndarray:
    """Sum over non-overlapping f x f cells; a ragged last row/column of cells
    sums what it has."""
    if f == 1:
        return a
    h, w = a.shape
    ph, pw = (-h) % f, (-w) % f
    if ph or pw:
        a = np.pad(a, ((0, ph), (0, pw)))
    return a.reshape(a.shape[0] // f, f, a.shape[1] // f, f).sum(axis=(1, 3))


def _blur_to_pixels(s: np.ndarray, n: np.ndarray, cr0: int, cc0: int,
                    inner_rows: tuple[int, int], inner_cols: tuple[int, int],
                    grid_shape: tuple[int, int], scale: _Scale, shift: float = 0.0) -> np.ndarray:
    """Normalised Gaussian blur of cell sums ``s`` (value*valid) and ``n`` (valid
    count), whose first cell is global cell (cr0, cc0), interpolated bilinearly
    to the pixel centres of the inner window. ``shift`` is subtracted from the
    values (the blur of ``value - shift``; never below 0 when shift is the minimum)."""
    f = scale.factor
    H, W = grid_shape
    ncr, ncc = -(-H // f), -(-W // f)
    gs = gaussian_filter(s, scale.cell_sigma, mode="constant", cval=0.0, truncate=_TRUNCATE)
    gn = gaussian_filter(n, scale.cell_sigma, mode="constant", cval=0.0, truncate=_TRUNCATE)
    if shift:
        cells = np.maximum((gs - shift * gn) / np.maximum(gn, 1e-12), 0.0).astype(np.float32)
    else:
        cells = (gs / np.maximum(gn, 1e-12)).astype(np.float32)
    ri0, ri1, rt = _interp_axis(*inner_rows, f, ncr, cr0)
    ci0, ci1, ct = _interp_axis(*inner_cols, f, ncc, cc0)
    rows = cells[ri0] * (1 - rt)[:, None] + cells[ri1] * rt[:, None]
    return rows[:, ci0] * (1 - ct)[None, :] + rows[:, ci1] * ct[None, :]


def _illumination(values: np.ndarray, valid: np.ndarray, read_row0: int, read_col0: int,
                  inner_rows: tuple[int, int], inner_cols: tuple[int, int],
                  grid_shape: tuple[int, int], scale: _Scale) -> np.ndarray:
    """Illumination estimate (same units as ``values``) over the inner window,
    from full-resolution pixels with a halo.

    ``values``/``valid`` cover the read window starting at global pixel
    (``read_row0``, ``read_col0``); ``inner_rows``/``inner_cols`` are global
    [start, stop) of the pixels wanted.
    """
    f = scale.factor
    H, W = grid_shape
    ncr, ncc = -(-H // f), -(-W // f)
    cr0, cr1 = _cell_range(*inner_rows, f, scale.cell_radius, ncr)
    cc0, cc1 = _cell_range(*inner_cols, f, scale.cell_radius, ncc)
    # pixel rows/cols of those cells, relative to the read window
    pr0, pr1 = cr0 * f - read_row0, min(cr1 * f, H) - read_row0
    pc0, pc1 = cc0 * f - read_col0, min(cc1 * f, W) - read_col0
    assert pr0 >= 0 and pc0 >= 0 and pr1 <= values.shape[0] and pc1 <= values.shape[1], "halo too small"
    v = values[pr0:pr1, pc0:pc1]
    m = valid[pr0:pr1, pc0:pc1]
    vm = np.where(m, v, 0).astype(np.float64 if f > 1 else np.float32)
    return _blur_to_pixels(_block_sum(vm, f), _block_sum(m.astype(vm.dtype), f), cr0, cc0,
                           inner_rows, inner_cols, grid_shape, scale)


class _CellSums:
    """Whole-raster sums of value*valid and of valid over the f x f cells of
    every large scale, for each plane, kept in scratch files (np.memmap) of
    1/f^2 of the raster's size. Blocks add their part (integers sum exactly
    in float64), so the result does not depend on the block layout."""

    def __init__(self, factors, n_planes: int, grid_shape: tuple[int, int], folder: str, mode: str = "w+"):
        H, W = grid_shape
        self.args = (tuple(sorted(set(factors))), n_planes, tuple(grid_shape), str(folder))
        self.s, self.n = {}, {}
        for f in self.args[0]:
            shape = (-(-H // f), -(-W // f))
            self.s[f] = np.memmap(f"{folder}/s{f}.bin", np.float64, mode, shape=(n_planes,) + shape)
            self.n[f] = np.memmap(f"{folder}/n{f}.bin", np.float64, mode, shape=shape)

    def __reduce__(self):
        """Sent to another process (a Dask worker) as its files, opened there read-only."""
        return _CellSums, self.args + ("r",)

    def flush(self) -> None:
        for a in list(self.s.values()) + list(self.n.values()):
            a.flush()

    def add(self, planes: np.ndarray, valid: np.ndarray, row0: int, col0: int) -> None:
        """Add a block's planes (k, h, w) and validity (h, w) starting at global pixel (row0, col0)."""
        for f in self.s:
            pr, pc = row0 % f, col0 % f
            m = np.pad(valid, ((pr, 0), (pc, 0))).astype(np.float64)
            nsum = _block_sum(m, f)
            r, c = row0 // f, col0 // f
            self.n[f][r:r + nsum.shape[0], c:c + nsum.shape[1]] += nsum
            for k, plane in enumerate(planes):
                vm = np.pad(np.where(valid, plane, 0).astype(np.float64), ((pr, 0), (pc, 0)))
                self.s[f][k, r:r + nsum.shape[0], c:c + nsum.shape[1]] += _block_sum(vm, f)

    def illumination(self, k: int, inner_rows, inner_cols, grid_shape, scale: _Scale,
                     shift: float = 0.0) -> np.ndarray:
        """Illumination of plane ``k`` minus ``shift`` (the sums hold the unshifted values)."""
        f = scale.factor
        ncr, ncc = self.n[f].shape
        cr0, cr1 = _cell_range(*inner_rows, f, scale.cell_radius, ncr)
        cc0, cc1 = _cell_range(*inner_cols, f, scale.cell_radius, ncc)
        s = np.array(self.s[f][k, cr0:cr1, cc0:cc1])
        n = np.array(self.n[f][cr0:cr1, cc0:cc1])
        return _blur_to_pixels(s, n, cr0, cc0, inner_rows, inner_cols, grid_shape, scale, shift)


@dataclass(frozen=True)
class RetinexSettings:
    """``sigmas`` in pixels; ``weights`` default to equal; ``mode`` is
    ``"luminance"`` (MSRCP: Retinex on the band mean, every band scaled by the same per-pixel
    factor, so hues are kept and no band clips) or ``"bands"`` (each band on its own);
    ``clip_percent`` is cut from each tail of the Retinex histogram for the stretch."""

    sigmas: Sequence[float] = DEFAULT_SIGMAS
    weights: Sequence[float] | None = None
    mode: str = "luminance"
    clip_percent: float = 1.0

    def scales(self) -> list[_Scale]:
        if not self.sigmas:
            raise InputError("SIGMAS", "is empty.", "give at least one scale in pixels, e.g. 15,80,250.")
        if any(not (s > 0) for s in self.sigmas):
            raise InputError("SIGMAS", f"must all be positive pixels, got {list(self.sigmas)}.")
        w = list(self.weights) if self.weights else [1.0 / len(self.sigmas)] * len(self.sigmas)
        if len(w) != len(self.sigmas):
            raise InputError("WEIGHTS", f"has {len(w)} values for {len(self.sigmas)} scales.")
        if self.mode not in ("luminance", "bands"):
            raise InputError("MODE", f"unknown mode '{self.mode}'.", "use 'luminance' or 'bands'.")
        if not (0 <= self.clip_percent < 50):
            raise InputError("CLIP_PERCENT", f"must be in [0, 50), got {self.clip_percent}.")
        return [_Scale(float(s), float(x)) for s, x in zip(self.sigmas, w)]


def _offset(dtype: np.dtype) -> float:
    """Constant added before the logarithm: 1 grey level for integers."""
    return 1.0 if dtype.kind in "iu" else 1e-3


def _bands(data: np.ndarray, valid: np.ndarray, shift: float = 0.0) -> np.ndarray:
    """float32 bands minus ``shift`` where valid, 0 elsewhere (values under nodata never
    reach a sum, a logarithm or an overflow)."""
    x = data.astype(np.float32, copy=False)
    if shift:
        x = x - np.float32(shift)
    return np.where(valid, x, np.float32(0))


def _planes(bands: np.ndarray, mode: str) -> list[np.ndarray]:
    """The planes Retinex works on: the mean of the bands (luminance) or each band."""
    return [bands.mean(axis=0)] if mode == "luminance" else list(bands)


def _retinex_block(bands: np.ndarray, valid: np.ndarray, block, grid_shape, scales, mode, offset,
                   cells: "_CellSums | None" = None, shift: float = 0.0):
    """Retinex values over ``block.window``: (k, rows, cols) float32, k = 1 in
    luminance mode (plus the luminance itself), else one per band. ``bands`` come
    from :func:`_bands` (already minus ``shift``). Scales with cells of more than
    one pixel come from ``cells`` when given (unshifted sums: ``shift`` is taken off there)."""
    w = block.window
    rows = (int(w.row_off), int(w.row_off + w.height))
    cols = (int(w.col_off), int(w.col_off + w.width))
    r0, c0 = int(block.read_window.row_off), int(block.read_window.col_off)
    planes = _planes(bands, mode)
    inner = block.inner
    out = np.zeros((len(planes),) + valid[inner].shape, np.float32)
    for k, plane in enumerate(planes):
        log_i = np.log(plane[inner] + offset)
        for s in scales:
            if cells is not None and s.factor > 1:
                ill = cells.illumination(k, rows, cols, grid_shape, s, shift)
            else:
                ill = _illumination(plane, valid, r0, c0, rows, cols, grid_shape, s)
            out[k] += s.weight * (log_i - np.log(ill + offset))
    lum = planes[0][inner] if mode == "luminance" else None
    return out, lum


def _output_range(dtype: np.dtype, nodata) -> tuple[float, float]:
    if dtype.kind == "f":
        lo, hi = 0.0, 1.0
    else:
        info = np.iinfo(dtype)
        lo, hi = (0.0 if info.min < 0 else float(info.min)), float(info.max)
    if nodata is not None and not np.isnan(nodata):
        if nodata == lo:
            lo += 1 if dtype.kind in "iu" else 0
        elif nodata == hi:
            hi -= 1 if dtype.kind in "iu" else 0
    return lo, hi


def _default_nodata(in_nodata, dtype: np.dtype):
    if in_nodata is not None:
        if dtype.kind == "f":
            return float(in_nodata)
        info = np.iinfo(dtype)
        if not np.isnan(in_nodata) and info.min <= in_nodata <= info.max and float(in_nodata).is_integer():
            return int(in_nodata)
    return float("nan") if dtype.kind == "f" else 0


@dataclass
class RetinexPass:
    """What every block of one run needs once the whole-raster pass is done: the grid shape,
    scales, mode, log offset, large-scale cell sums (or None) and the shift ``m``."""

    grid_shape: tuple[int, int]
    scales: list
    mode: str
    offset: float
    cells: "_CellSums | None"
    shift: float

    def values(self, ds, block):
        """(Retinex values, luminance, shifted bands, validity inside the block) of ``block``
        read with its halo from ``ds``; None when the block holds no valid pixel."""
        data, valid = read_masked(ds, block.read_window, "INPUT")
        v_in = valid[block.inner]
        if not v_in.any():
            return None
        x = _bands(data, valid, self.shift)
        r, lum = _retinex_block(x, valid, block, self.grid_shape, self.scales, self.mode, self.offset, self.cells,
                                self.shift)
        return r, lum, x[(slice(None),) + block.inner], v_in

    def histogram(self, ds, block) -> tuple[np.ndarray, int]:
        """Histogram of the block's Retinex values (:data:`_HIST_BINS` bins) and its valid pixels."""
        got = self.values(ds, block)
        if got is None:
            return np.zeros(_HIST_BINS, np.int64), 0
        r, _, _, v_in = got
        return np.histogram(r[:, v_in].ravel(), bins=_HIST_BINS, range=_HIST_RANGE)[0], int(v_in.sum())

    def stretched(self, ds, block, stretch: tuple[float, float], out_dtype: np.dtype, nodata) -> np.ndarray:
        """The block's output (bands, rows, cols) in ``out_dtype``: values stretched from the
        Retinex range ``stretch`` onto the type's range, nodata where the input has none."""
        h, w = int(block.window.height), int(block.window.width)
        out = np.full((ds.count, h, w), nodata, dtype=out_dtype)
        got = self.values(ds, block)
        if got is None:
            return out
        r, lum, bands, v_in = got
        lo_r, hi_r = stretch
        out_lo, out_hi = _output_range(out_dtype, nodata)
        s = out_lo + (r - lo_r) * ((out_hi - out_lo) / (hi_r - lo_r))
        if self.mode == "luminance":
            # MSRCP (Petro et al. 2014): scale every band by one factor per pixel, the
            # stretched/original luminance ratio, capped so the largest band does not clip
            bands = bands + np.float32(self.offset)
            gain = np.minimum(s[0] / (lum + self.offset), out_hi / bands.max(axis=0))
            s = bands * gain
        s = np.clip(s, out_lo, out_hi)
        if out_dtype.kind in "iu":
            s = np.rint(s)
        out[:, v_in] = s[:, v_in].astype(out_dtype)
        return out


def whole_raster_pass(ds, grid: Grid, settings: "RetinexSettings", block_size: int, scratch: str,
                      progress: Progress) -> RetinexPass:
    """Pass 0 (read once, no halo): whole-raster cell sums of the large scales (memory-mapped
    files in ``scratch``) and the global minimum of signed and float rasters."""
    scales = settings.scales()
    in_dtype = np.dtype(ds.dtypes[0])
    large = [s for s in scales if s.factor > 1]
    n_planes = 1 if settings.mode == "luminance" else ds.count
    cells = _CellSums([s.factor for s in large], n_planes, grid.shape, scratch) if large else None
    shift = 0.0
    if large or in_dtype.kind != "u":
        lowest = math.inf
        pass0 = list(grid.blocks(block_size, 0))
        for i, block in enumerate(pass0):
            progress.check_cancelled()
            data, valid = read_masked(ds, block.window, "INPUT")
            if valid.any():
                if in_dtype.kind != "u":
                    lowest = min(lowest, float(data[:, valid].min()))
                if cells is not None:
                    cells.add(np.stack(_planes(_bands(data, valid), settings.mode)), valid,
                              int(block.window.row_off), int(block.window.col_off))
            progress.set_fraction((i + 1) / len(pass0))
        if lowest < 0:
            shift = lowest
            progress.info(f"INPUT has negative values (minimum {lowest:g}): Retinex works on "
                          "the raster minus its minimum.")
    if cells is not None:
        cells.flush()
    return RetinexPass(grid.shape, scales, settings.mode, _offset(in_dtype), cells, shift)


def stretch_from_histogram(hist: np.ndarray, n_valid: int, clip_percent: float, input_path: str) -> tuple[float, float]:
    """The global stretch (Retinex values at the clip percentiles); refuses an all-nodata raster."""
    if n_valid == 0:
        raise InputError("INPUT", f"'{input_path}' holds no valid pixel (all nodata).",
                         "check the raster and its nodata value.")
    return _percentiles(hist, clip_percent)


def output_type(ds, output_dtype: str | None) -> tuple[np.dtype, float | int]:
    """The output's data type (``None``: the input's) and nodata value."""
    out_dtype = np.dtype(output_dtype) if output_dtype else np.dtype(ds.dtypes[0])
    if out_dtype.kind not in "uif":
        raise InputError("OUTPUT_TYPE", f"unsupported data type '{out_dtype}'.")
    return out_dtype, _default_nodata(ds.nodatavals[0], out_dtype)


def block_halo(settings: "RetinexSettings") -> int:
    """Pixels of context a block reads around itself (4 sigma of the scales blurred per pixel)."""
    return max([s.halo for s in settings.scales() if s.factor == 1], default=0)


def output_descriptions(ds) -> list[str]:
    return [d or f"band {i + 1}" for i, d in enumerate(ds.descriptions)]


def retinex(input_path: str, output_path: str, settings: RetinexSettings | None = None,
            output_dtype: str | None = None, block_size: int = 2048,
            progress: Progress | None = None) -> dict:
    """Correct illumination of ``input_path`` with (multi-scale) Retinex and write
    ``output_path`` (tiled, compressed GeoTIFF, written atomically).

    ``output_dtype``: ``None`` keeps the input's type; integers are stretched
    to their full range, floats to [0, 1]. Returns a summary dict with the
    stretch (in natural-log Retinex units), pixel counts, the nodata value and
    the shift ``m`` (0, or the raster's negative minimum; see the module docstring).
    The output's folder is created when missing.
    """
    refuse_input_as_output({"OUTPUT": output_path}, {"INPUT": input_path})
    settings = settings or RetinexSettings()
    progress = ensure(progress)
    with bounded_gdal_cache(), open_raster(input_path, "INPUT") as ds:
        grid = _check_input(ds, settings, progress)
        out_dtype, nodata = output_type(ds, output_dtype)
        halo = block_halo(settings)
        blocks = list(grid.blocks(block_size, halo))
        progress.info(f"{len(blocks)} block(s) with a {halo} px halo.")
        out_dir = check_output_folder("OUTPUT", output_path)  # the scratch folder lives there
        with tempfile.TemporaryDirectory(prefix=scratch_prefix("retinex"), dir=out_dir) as scratch:
            run = whole_raster_pass(ds, grid, settings, block_size, scratch, progress.span(0.0, 0.2))
            # Pass 1: histogram of Retinex values over the whole raster -> one stretch.
            hist = np.zeros(_HIST_BINS, np.int64)
            n_valid = 0
            for i, block in enumerate(blocks):
                progress.check_cancelled()
                h, n = run.histogram(ds, block)
                hist += h
                n_valid += n
                progress.set_fraction(0.2 + 0.4 * (i + 1) / len(blocks))
            stretch = stretch_from_histogram(hist, n_valid, settings.clip_percent, input_path)
            # Pass 2: recompute block by block and write with the global stretch.
            with atomic_raster(output_path, grid, ds.count, out_dtype, nodata=nodata,
                               descriptions=output_descriptions(ds), style=_style_of(out_dtype)) as dst:
                for i, block in enumerate(blocks):
                    progress.check_cancelled()
                    dst.write(run.stretched(ds, block, stretch, out_dtype, nodata), window=block.window)
                    progress.set_fraction(0.6 + 0.4 * (i + 1) / len(blocks))
            shift = run.shift
            del run  # closes the scratch memory maps before the folder goes
    return {"output": output_path, "valid_pixels": n_valid, "stretch_low": stretch[0], "stretch_high": stretch[1],
            "nodata": nodata, "dtype": out_dtype.name, "blocks": len(blocks), "halo": halo, "bands": int(ds.count),
            "shift": shift}


def _check_input(ds, settings: "RetinexSettings", progress: Progress) -> Grid:
    """The input's grid, after the checks and the log line of a run."""
    require_real(ds, "INPUT")
    grid = Grid.from_dataset(ds)
    if ds.crs is None:
        progress.warning("INPUT has no CRS; the output will have none either.")
    progress.info(f"Retinex on {grid.width} x {grid.height} px, {ds.count} band(s), "
                  f"scales {[s.sigma for s in settings.scales()]} px, mode {settings.mode}.")
    return grid


def _percentiles(hist: np.ndarray, clip_percent: float) -> tuple[float, float]:
    """Low/high Retinex values at ``clip_percent`` and ``100 - clip_percent`` of the histogram."""
    cdf = np.cumsum(hist) / hist.sum()
    edges = np.linspace(*_HIST_RANGE, _HIST_BINS + 1)
    lo_i = int(np.searchsorted(cdf, clip_percent / 100.0, side="left"))
    hi_i = int(np.searchsorted(cdf, 1.0 - clip_percent / 100.0, side="left"))
    lo, hi = float(edges[lo_i]), float(edges[min(hi_i + 1, _HIST_BINS)])
    if hi - lo < 1e-6:
        hi = lo + 1e-6
    return lo, hi


def _style_of(dtype) -> str | None:
    """The QML of a Retinex output of ``dtype`` (qgis_plugin/styles/retinex_<dtype>.qml), None for others."""
    name = np.dtype(dtype).name
    return f"retinex_{name}.qml" if name in ("uint8", "uint16", "float32") else None
