"""Cloud gap filling by ordinary kriging (seed 000 §2.4.2), block by block.

1. A scan (no halo) counts gap and cloud-free pixels per block; an image without
   gaps is copied as it is, an image without cloud-free pixels is refused.
2. Per band, an empirical semivariogram from a bounded random sample of windows
   (so its cost does not grow with the image) and a fitted model (auto or given).
3. Each block with gaps is read with a halo of the search radius; every gap pixel is
   kriged from its ``n`` nearest cloud-free pixels within the radius, found by walking the
   pixel grid (:mod:`.search`) when numba is installed, else with a KD-tree (:mod:`.kriging`:
   a compiled kernel on numba's threads when numba is installed, else stacked numpy solves).
   Cloud-free pixels are copied bit for bit.

Outputs (written under temporary names and moved into place together at the end):
the filled image (input's type: integers rounded and clipped), an optional
kriging-variance raster (float32, value units squared, NaN where not kriged), a JSON
sidecar ``<output>.variograms.json`` and an optional HTML report with semivariogram plots.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from ..errors import InputError
from ..grid import Block, Grid
from ..progress import Progress, ensure
from ..outputs import refuse_input_as_output
from ..raster_io import atomic_output, atomic_raster, bounded_gdal_cache, open_raster
from .gaps import GapReader, GapSpec, halo_for, open_mask
from .kriging import krige, pixel_xy, tie_break_xy
from .search import PixelGridIndex
from .variogram import MODELS, EmpiricalVariogram, Variogram, VariogramAccumulator, fit_variogram


@dataclass(frozen=True)
class KrigingSettings:
    """``n_neighbours`` nearest cloud-free pixels within ``search_radius`` (pixels);
    ``model`` one of :data:`MODELS` or ``"auto"``; ``max_lag`` (pixels) of the empirical
    semivariogram, sampled from up to ``sample_windows`` windows of ``4 * max_lag`` px
    (at least 256) chosen with ``seed``; ``beyond_range``: ``"fill"`` (with a warning) or
    ``"nodata"`` for gap pixels farther than the variogram range from any cloud-free pixel."""

    n_neighbours: int = 32
    search_radius: float = 256.0
    model: str = "auto"
    max_lag: int = 100
    sample_windows: int = 8
    beyond_range: str = "fill"
    seed: int = 0

    def check(self) -> None:
        if self.n_neighbours < 1:
            raise InputError("NEIGHBOURS", f"must be at least 1, got {self.n_neighbours}.")
        if not self.search_radius >= 1:
            raise InputError("SEARCH_RADIUS", f"must be at least 1 pixel, got {self.search_radius}.")
        if self.model not in MODELS + ("auto",):
            raise InputError("MODEL", f"unknown model '{self.model}'.", f"use auto or one of {', '.join(MODELS)}.")
        if self.max_lag < 2:
            raise InputError("MAX_LAG", f"must be at least 2 pixels, got {self.max_lag}.")
        if self.beyond_range not in ("fill", "nodata"):
            raise InputError("BEYOND_RANGE", f"unknown choice '{self.beyond_range}'.", "use fill or nodata.")
        if self.sample_windows < 1:
            raise InputError("SAMPLE_WINDOWS", f"must be at least 1, got {self.sample_windows}.")


@dataclass
class _Counts:
    """Pixel counts over the whole run (per band where a list)."""

    gap: int = 0
    known: int = 0
    unfilled: int = 0  # gap pixels without any cloud-free pixel within the search radius
    beyond: list = field(default_factory=list)
    filled: list = field(default_factory=list)


def sidecar_path(output_path: str) -> Path:
    """``<output without suffix>.variograms.json``."""
    return Path(output_path).with_suffix(".variograms.json")


# -- pass 1: scan ---------------------------------------------------------------
def _scan(reader: GapReader, grid: Grid, block_size: int, progress: Progress) -> tuple[list[int], _Counts]:
    """Indices of blocks that hold gap pixels, and the gap / cloud-free totals."""
    counts, with_gaps = _Counts(), []
    blocks = list(grid.blocks(block_size, 0))
    for i, block in enumerate(blocks):
        progress.check_cancelled()
        _, valid, gap = reader.read(block.window)
        n_gap = int(gap.sum())
        counts.gap += n_gap
        counts.known += int((valid & ~gap).sum())
        if n_gap:
            with_gaps.append(block.index)
        progress.set_fraction((i + 1) / len(blocks))
    return with_gaps, counts


# -- pass 2: variograms ------------------------------------------------------------
def _sample_windows(grid: Grid, size: int, seed: int):
    """Windows of ``size`` px tiling the grid, in a seeded random order."""
    blocks = list(grid.blocks(size, 0))
    order = np.random.default_rng(seed).permutation(len(blocks))
    return [blocks[i].window for i in order]


def sample_variograms(reader: GapReader, grid: Grid, settings: KrigingSettings, bands: int,
                      progress: Progress) -> tuple[list[EmpiricalVariogram], int]:
    """Empirical semivariogram of every band from up to ``settings.sample_windows`` windows
    holding cloud-free pixels (at most 4x as many windows are read); and the number of
    cloud-free pixels sampled."""
    aspect = grid.res[1] / grid.res[0]
    acc = [VariogramAccumulator(settings.max_lag, aspect) for _ in range(bands)]
    size = max(4 * settings.max_lag, 256)
    used = sampled = 0
    for tries, window in enumerate(_sample_windows(grid, size, settings.seed)):
        if used >= settings.sample_windows or tries >= 4 * settings.sample_windows:
            break
        progress.check_cancelled()
        data, valid, gap = reader.read(window)
        known = valid & ~gap
        if known.sum() < 2:
            continue
        for b in range(bands):
            acc[b].add(data[b], known)
        used += 1
        sampled += int(known.sum())
        progress.set_fraction(used / settings.sample_windows)
    return [a.result() for a in acc], sampled


def _band_name(ds, b: int) -> str:
    d = ds.descriptions[b] if ds.descriptions else None
    return f"band {b + 1}" + (f" ({d})" if d else "")


def fit_band_variograms(ds, emps: list[EmpiricalVariogram], sampled: int, model: str,
                        progress: Progress) -> tuple[list[Variogram], list[dict]]:
    """Fit every band's variogram; a band without pairs or with a zero semivariogram is refused."""
    out, tried = [], []
    unit = ds.res[0]
    for b, emp in enumerate(emps):
        if emp.lag.size == 0:
            raise InputError("INPUT", f"{_band_name(ds, b)}: the {sampled} cloud-free pixels sampled have no "
                                      "neighbouring pairs, so no semivariogram can be estimated.",
                             "check the gap definition (is nearly everything a gap?) or lower DILATION.")
        if not emp.gamma.max() > 0:
            raise InputError("INPUT", f"{_band_name(ds, b)} has the same value in all {sampled} cloud-free pixels "
                                      "sampled: its semivariogram is zero (degenerate) and kriging is undefined.",
                             "remove the constant band (e.g. gdal_translate -b), or fill it with its constant.")
        v, t = fit_variogram(emp, model)
        out.append(v)
        tried.append(t)
        progress.info(f"{_band_name(ds, b)}: {v.model} variogram, nugget {v.nugget:.4g}, sill {v.sill:.4g}, "
                      f"range {v.range_px:.3g} px ({v.range_px * unit:.4g} CRS units), fit RMSE {v.fit_rmse:.3g}")
    return out, tried


# -- pass 3: kriging -----------------------------------------------------------
def _output_limits(dtype: np.dtype, nodata) -> tuple[float, float] | None:
    """Clip limits of kriged values for an integer type (the nodata value excluded), None for floats."""
    if dtype.kind == "f":
        return None
    info = np.iinfo(dtype)
    lo, hi = float(info.min), float(info.max)
    if nodata is not None and not math.isnan(nodata):
        lo += 1 if nodata == lo else 0
        hi -= 1 if nodata == hi else 0
    return lo, hi


def _to_dtype(values: np.ndarray, dtype: np.dtype, limits) -> np.ndarray:
    if limits is None:
        return values.astype(dtype)
    return np.clip(np.rint(values), *limits).astype(dtype)


@dataclass
class _BlockJob:
    """What every block needs: the grid, variograms, settings, output type and nodata."""

    grid: Grid
    variograms: list
    settings: KrigingSettings
    dtype: np.dtype
    nodata: float
    limits: tuple | None


def _known_points(known: np.ndarray, gap_in: np.ndarray, block: Block, job: _BlockJob):
    """Cloud-free pixels of the read window within the search radius of the block's gap
    bounding box: their (rows, cols) in the read window and tie-broken coordinates."""
    rr, cc = np.nonzero(gap_in)
    r_in, c_in = block.inner[0].start, block.inner[1].start
    h = halo_for(job.settings.search_radius)
    box = np.zeros_like(known)
    box[max(rr.min() + r_in - h, 0):rr.max() + r_in + h + 1,
        max(cc.min() + c_in - h, 0):cc.max() + c_in + h + 1] = True
    kr, kc = np.nonzero(known & box)
    r0, c0 = int(block.read_window.row_off), int(block.read_window.col_off)
    aspect = job.grid.res[1] / job.grid.res[0]
    return kr, kc, tie_break_xy(kr + r0, kc + c0, job.grid.width, aspect)


def _neighbour_index(kr: np.ndarray, kc: np.ndarray, known_xy: np.ndarray, shape: tuple[int, int], block: Block,
                     job: _BlockJob):
    """The known pixels (window rows ``kr``, cols ``kc``, coordinates ``known_xy``) searchable by
    ``cKDTree.query``: a walk over the pixel grid when numba is installed (:mod:`.search`), else a KD-tree."""
    from . import _compiled

    if not _compiled.AVAILABLE:
        return cKDTree(known_xy)
    r0, c0 = int(block.read_window.row_off), int(block.read_window.col_off)
    return PixelGridIndex(kr, kc, known_xy, shape, r0, c0, job.grid.res[1] / job.grid.res[0])


def fill_block(data: np.ndarray, valid: np.ndarray, gap: np.ndarray, block: Block, job: _BlockJob,
               counts: _Counts, progress: Progress) -> tuple[np.ndarray, np.ndarray]:
    """Filled values (bands, rows, cols) of ``block.window`` in the output type, and kriging
    variances (float32, NaN where not kriged). ``data``/``valid``/``gap`` cover the read window."""
    inner = (slice(None),) + block.inner
    out = data[inner].copy()
    var = np.full(out.shape, np.nan, np.float32)
    gap_in = gap[block.inner]
    if not gap_in.any():
        return out, var
    kr, kc, known_xy = _known_points(valid & ~gap, gap_in, block, job)
    gr, gc = np.nonzero(gap_in)
    aspect = job.grid.res[1] / job.grid.res[0]
    targets = pixel_xy(gr + int(block.window.row_off), gc + int(block.window.col_off), aspect)
    values = data[:, kr, kc].astype(np.float64)
    s = job.settings
    tree = _neighbour_index(kr, kc, known_xy, gap.shape, block, job) if kr.size else None
    pred, kvar, nearest = krige(known_xy, values, targets, job.variograms, s.n_neighbours, s.search_radius,
                                tree=tree, check=progress.check_cancelled)
    counts.unfilled += int((~np.isfinite(nearest)).sum())
    for b, v in enumerate(job.variograms):
        filled = np.isfinite(pred[b])
        beyond = filled & (nearest > v.range_px)
        counts.beyond[b] += int(beyond.sum())
        if s.beyond_range == "nodata":
            filled &= ~beyond
        counts.filled[b] += int(filled.sum())
        band = out[b]
        band[gr, gc] = job.nodata
        band[gr[filled], gc[filled]] = _to_dtype(pred[b, filled], job.dtype, job.limits)
        var[b, gr[filled], gc[filled]] = kvar[b, filled]
    return out, var


# -- the tool -------------------------------------------------------------------
def _open_inputs(stack: contextlib.ExitStack, input_path: str, gaps: GapSpec):
    """Open (into ``stack``, so they are closed on any error) and check the image and the mask."""
    ds = stack.enter_context(open_raster(input_path, "INPUT"))
    dtype = np.dtype(ds.dtypes[0])
    if dtype.kind not in "uif" or len(set(ds.dtypes)) > 1:
        raise InputError("INPUT", f"data type {ds.dtypes[0]} is not supported (or bands differ in type).",
                         "give an 8/16/32-bit integer or float raster.")
    gaps.check(ds.count)
    grid = Grid.from_dataset(ds)
    mask = stack.enter_context(open_mask(gaps.mask_path, grid)) if gaps.mask_path else None
    return ds, mask, grid, dtype


def _nodata_value(ds, dtype: np.dtype):
    nd = ds.nodatavals[0]
    if nd is not None:
        return nd
    return float("nan") if dtype.kind == "f" else 0


def checked_settings(settings: KrigingSettings | None, input_path: str, output_path: str, gaps: GapSpec,
                     variance_path: str | None, report_path: str | None) -> KrigingSettings:
    """The run's settings (defaults when None), checked, after refusing outputs that are inputs."""
    settings = settings or KrigingSettings()
    settings.check()
    refuse_input_as_output({"OUTPUT": output_path, "OUTPUT_VARIANCE": variance_path, "OUTPUT_HTML": report_path,
                            "VARIOGRAMS": sidecar_path(output_path)}, {"INPUT": input_path, "MASK": gaps.mask_path})
    return settings


def cloud_gap_fill(input_path: str, output_path: str, gaps: GapSpec, settings: KrigingSettings | None = None,
                   variance_path: str | None = None, report_path: str | None = None, block_size: int = 1024,
                   progress: Progress | None = None) -> dict:
    """Fill the gaps of ``input_path`` by ordinary kriging and write ``output_path`` (same type,
    bands and grid), the JSON sidecar and, when given, the variance raster and HTML report.
    Returns a summary (pixel counts, variograms, output paths)."""
    settings = checked_settings(settings, input_path, output_path, gaps, variance_path, report_path)
    progress = ensure(progress)
    with contextlib.ExitStack() as stack:
        stack.enter_context(bounded_gdal_cache())
        ds, mask, grid, dtype = _open_inputs(stack, input_path, gaps)
        reader = GapReader(ds, mask, gaps, grid)
        halo = halo_for(settings.search_radius)
        progress.info(f"Cloud gap filling on {grid.width} x {grid.height} px, {ds.count} band(s), "
                      f"{settings.n_neighbours} neighbours within {settings.search_radius:g} px, "
                      f"blocks of {block_size} px with a {halo} px halo.")
        with_gaps, counts = _scan(reader, grid, block_size, progress.span(0.0, 0.1))
        variograms, tried, emps = _variograms(ds, reader, grid, settings, counts, progress.span(0.1, 0.2))
        job = _BlockJob(grid, variograms, settings, dtype, _nodata_value(ds, dtype),
                        _output_limits(dtype, ds.nodatavals[0]))
        counts.beyond, counts.filled = [0] * ds.count, [0] * ds.count
        summary = _summary(ds, input_path, output_path, gaps, settings, counts, variograms, tried, emps)
        _write_all(ds, reader, grid, job, set(with_gaps), block_size, counts, output_path, variance_path,
                   report_path, summary, progress.span(0.2, 1.0))
        _warn(progress, counts, variograms, settings, ds.nodatavals[0] is None)
    return summary


def _variograms(ds, reader, grid, settings, counts: _Counts, progress: Progress):
    """Fitted variograms (empty when there is no gap), models tried, empirical variograms."""
    if counts.gap == 0:
        progress.info("No gap pixel: the output is a copy of the input.")
        return [], [], []
    if counts.known == 0:
        raise InputError("MASK", f"every one of the {grid.width * grid.height} pixels is a gap or nodata: "
                                 "there is no cloud-free pixel to krige from.",
                         "check the mask / ranges / nodata, or lower DILATION.")
    progress.info(f"{counts.gap} gap pixel(s), {counts.known} cloud-free pixel(s).")
    emps, sampled = sample_variograms(reader, grid, settings, ds.count, progress)
    variograms, tried = fit_band_variograms(ds, emps, sampled, settings.model, progress)
    return variograms, tried, emps


def _write_all(ds, reader, grid, job, with_gaps: set, block_size, counts, output_path, variance_path,
               report_path, summary, progress: Progress) -> None:
    """Write the filled image (and variance, sidecar, report) atomically, block by block."""
    halo = halo_for(job.settings.search_radius)
    blocks = list(grid.blocks(block_size, halo))
    descriptions = [d or f"band {i + 1}" for i, d in enumerate(ds.descriptions)]
    with contextlib.ExitStack() as outputs:
        # entered first, so moved last: the sidecar and report appear only after the rasters
        side_tmp = outputs.enter_context(atomic_output(sidecar_path(output_path), "OUTPUT"))
        report_tmp = outputs.enter_context(atomic_output(report_path, "OUTPUT_HTML")) if report_path else None
        dst = outputs.enter_context(atomic_raster(output_path, grid, ds.count, job.dtype, nodata=ds.nodatavals[0],
                                                  descriptions=descriptions))
        vdst = None
        if variance_path:
            vdst = outputs.enter_context(atomic_raster(variance_path, grid, ds.count, np.float32,
                                                       nodata=float("nan"), name="OUTPUT_VARIANCE",
                                                       descriptions=[f"kriging variance, {d}" for d in descriptions]))
        for i, block in enumerate(blocks):
            progress.check_cancelled()
            if block.index in with_gaps:
                data, valid, gap = reader.read(block.read_window)
                out, var = fill_block(data, valid, gap, block, job, counts, progress)
            else:
                out = ds.read(window=block.window)
                var = np.full(out.shape, np.nan, np.float32)
            dst.write(out, window=block.window)
            if vdst is not None:
                vdst.write(var, window=block.window)
            progress.set_fraction((i + 1) / len(blocks))
        _declare_nodata(dst, ds, job, counts)
        summary.update(_final_counts(counts, output_path, variance_path))
        _write_reports(side_tmp, report_tmp, summary)


def _declare_nodata(dst, ds, job: _BlockJob, counts: _Counts) -> None:
    """An input without nodata gets one on the output only when some gap stayed unfilled."""
    left = counts.gap * ds.count - sum(counts.filled)
    if ds.nodatavals[0] is None and left > 0:
        dst.nodata = job.nodata


def _write_reports(side_tmp: Path, report_tmp: Path | None, summary: dict) -> None:
    """The JSON sidecar (and HTML report) into their temporary names."""
    from ..evaluation.reports import write_json_report
    from .report import variogram_report_html

    write_json_report(summary, side_tmp)
    if report_tmp is not None:
        report_tmp.write_text(variogram_report_html(summary), encoding="utf-8")


def _final_counts(counts: _Counts, output_path, variance_path) -> dict:
    return {"gap_pixels": counts.gap, "cloud_free_pixels": counts.known, "unfilled_no_neighbour": counts.unfilled,
            "filled_per_band": counts.filled, "beyond_range_per_band": counts.beyond,
            "output": str(output_path), "variance": str(variance_path) if variance_path else None,
            "sidecar": str(sidecar_path(output_path))}


def _summary(ds, input_path, output_path, gaps: GapSpec, settings, counts, variograms, tried, emps) -> dict:
    unit = ds.res[0]
    bands = []
    for b, v in enumerate(variograms):
        d = v.as_dict()
        d["range_crs_units"] = v.range_px * unit
        bands.append({"band": b + 1, "name": _band_name(ds, b), "variogram": d, "models_tried_fit_rmse": tried[b],
                      "empirical": emps[b].as_dict()})
    spec = asdict(gaps)
    spec["ranges"] = [asdict(r) for r in gaps.ranges]
    return {"input": str(input_path), "pixel_size_crs_units": list(ds.res), "gap_definition": spec,
            "settings": asdict(settings), "bands": bands}


def _warn(progress: Progress, counts: _Counts, variograms, settings, no_input_nodata: bool) -> None:
    if counts.unfilled:
        progress.warning(f"{counts.unfilled} gap pixel(s) have no cloud-free pixel within "
                         f"{settings.search_radius:g} px "
                         "and were left as nodata (raise SEARCH_RADIUS to fill them).")
    for b, v in enumerate(variograms):
        n = counts.beyond[b] if counts.beyond else 0
        if n:
            what = "filled (they tend to the local mean)" if settings.beyond_range == "fill" else "left as nodata"
            progress.warning(f"band {b + 1}: {n} gap pixel(s) are farther than the variogram range "
                             f"({v.range_px:.3g} px) from any cloud-free pixel: {what}.")
    if no_input_nodata and counts.filled and counts.gap * len(counts.filled) > sum(counts.filled):
        progress.warning("INPUT has no nodata value: unfilled gap pixels were set to 0 (NaN for floats), "
                         "now declared the output's nodata.")
