"""``edifice cloud-gap-fill --cluster``: kriging gap fill on a Dask cluster.

The driver does the cheap whole-image passes of :func:`core.gapfill.cloud_gap_fill` (gap
scan, sampled semivariograms: the same functions, so the same variograms); then every block
of ``block_size`` px is one Dask task that reads the block with a halo of the search radius
and calls the tool's own :func:`core.gapfill.fill.fill_block`, so a block's pixels equal the
single-machine result on those pixels. Each block is written as its own tiled GeoTIFF
(``<output>_blocks/output/<block>.tif``, and ``variance/`` when asked); the driver writes a
VRT and, for an output not ending in ``.vrt``, a COG mosaic, plus the variogram sidecar and
the HTML report with the pixel counts summed over all blocks.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from ..progress import Progress, ensure
from ..raster_io import atomic_output, bounded_gdal_cache
from ..gapfill.fill import (KrigingSettings, checked_settings, _BlockJob, _Counts, _final_counts, _nodata_value, _open_inputs,
                            _output_limits, _scan, _summary, _variograms, _warn, _write_reports, fill_block,
                            sidecar_path)
from ..gapfill.gaps import GapReader, GapSpec, halo_for
from .blocks import ClusterBlock, pixel_blocks, with_halo
from .client import parse_cluster
from .mosaic import VrtBands
from .runner import run_dir_for, run_on_cluster, write_block_raster, write_mosaic


def fill_cluster_block(block: ClusterBlock, files: dict, input_path: str, gaps: GapSpec, job: _BlockJob) -> dict:
    """Dask task: fill ``block`` (read with a halo of the search radius) with the tool's own
    :func:`fill_block` and write it (and its variance) as tiled GeoTIFFs. Returns its counts."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(bounded_gdal_cache())
        ds, mask, grid, _ = _open_inputs(stack, input_path, gaps)
        reader = GapReader(ds, mask, gaps, grid)
        b = with_halo(grid, block, halo_for(job.settings.search_radius))
        counts = _Counts(beyond=[0] * ds.count, filled=[0] * ds.count)
        data, valid, gap = reader.read(b.read_window)
        out, var = fill_block(data, valid, gap, b, job, counts, ensure(None))
        write_block_raster(files["output"], grid, block.window, out, ds.nodatavals[0])
        if "variance" in files:
            write_block_raster(files["variance"], grid, block.window, var, float("nan"), "OUTPUT_VARIANCE")
    return {"gap_pixels": int(gap[b.inner].sum()), "unfilled": counts.unfilled, "filled": counts.filled,
            "beyond": counts.beyond}


class GapFillBlocks:
    """Cloud gap filling as a :class:`.runner.BlockTool` (blocks of ``block_size`` px)."""

    unit = "blocks"
    needs_torch = False

    def __init__(self, ds, input_path: str, gaps: GapSpec, job: _BlockJob, counts: _Counts, summary: dict,
                 block_size: int, outputs: dict):
        self.ds, self.input_path, self.gaps, self.job = ds, str(Path(input_path).resolve()), gaps, job
        self.counts, self.summary, self.block_size, self.outputs = counts, summary, block_size, outputs
        self.grid = job.grid

    def plan(self) -> list[ClusterBlock]:
        return pixel_blocks(self.grid, self.block_size)

    def block_files(self, run_dir: Path, block: ClusterBlock) -> dict:
        names = ["output"] + (["variance"] if self.outputs.get("variance") else [])
        return {n: str(run_dir / n / f"{block.id}.tif") for n in names}

    def fingerprint(self) -> dict:
        from dataclasses import asdict

        from ..sliding_window import file_fingerprint

        return {"cluster_run": 1, "tool": "cloud-gap-fill", "input": file_fingerprint(self.input_path),
                "mask": file_fingerprint(self.gaps.mask_path), "gaps": repr(self.gaps),
                "settings": asdict(self.job.settings), "variograms": [v.as_dict() for v in self.job.variograms],
                "block_size": self.block_size, "variance": bool(self.outputs.get("variance"))}

    task = staticmethod(fill_cluster_block)

    def task_args(self) -> tuple:
        return self.input_path, self.gaps, self.job

    def worker_plugins(self) -> dict:
        return {}

    def assemble(self, blocks: list[ClusterBlock], files: dict, results: dict, run_dir: Path,
                 progress: Progress) -> dict:
        bands = self.ds.count
        c = self.counts
        c.unfilled = sum(int(r["unfilled"]) for r in results.values())
        c.filled = [sum(int(r["filled"][b]) for r in results.values()) for b in range(bands)]
        c.beyond = [sum(int(r["beyond"][b]) for r in results.values()) for b in range(bands)]
        nodata = self.ds.nodatavals[0]
        if nodata is None and c.gap * bands - sum(c.filled) > 0:
            nodata = self.job.nodata  # as the single-machine run declares it
        desc = tuple(d or f"band {i + 1}" for i, d in enumerate(self.ds.descriptions))
        out = {"outputs": {"output": write_mosaic(self.outputs["output"], self.grid,
                                                  VrtBands(bands, self.job.dtype.name, nodata, desc), blocks,
                                                  {b.id: files[b.id]["output"] for b in blocks}, progress)}}
        if self.outputs.get("variance"):
            out["outputs"]["variance"] = write_mosaic(
                self.outputs["variance"], self.grid,
                VrtBands(bands, "float32", float("nan"), tuple(f"kriging variance, {d}" for d in desc)), blocks,
                {b.id: files[b.id]["variance"] for b in blocks}, progress)
        self._write_sidecars(progress)
        _warn(progress, c, self.job.variograms, self.job.settings, self.ds.nodatavals[0] is None)
        return out

    def _write_sidecars(self, progress: Progress) -> None:
        self.summary.update(_final_counts(self.counts, self.outputs["output"], self.outputs.get("variance")))
        report = self.outputs.get("report")
        with contextlib.ExitStack() as stack:
            side_tmp = stack.enter_context(atomic_output(sidecar_path(self.outputs["output"]), "OUTPUT"))
            report_tmp = stack.enter_context(atomic_output(report, "OUTPUT_HTML")) if report else None
            _write_reports(side_tmp, report_tmp, self.summary)


def cloud_gap_fill_on_cluster(input_path: str, output_path: str, gaps: GapSpec, settings: KrigingSettings | None = None,
                              *, cluster: str, variance_path: str | None = None, report_path: str | None = None,
                              block_size: int = 1024, resume: bool = True, progress: Progress | None = None) -> dict:
    """:func:`core.gapfill.cloud_gap_fill` on the Dask cluster ``cluster`` (``tcp://HOST:PORT``
    or ``local:N``), one task per block of ``block_size`` px. ``output_path`` / ``variance_path``
    ending in ``.vrt`` get a VRT of the blocks, others a VRT beside them plus a COG mosaic."""
    settings = checked_settings(settings, input_path, output_path, gaps, variance_path, report_path)
    progress = ensure(progress)
    parse_cluster(cluster)
    with contextlib.ExitStack() as stack:
        stack.enter_context(bounded_gdal_cache())
        ds, mask, grid, dtype = _open_inputs(stack, input_path, gaps)
        reader = GapReader(ds, mask, gaps, grid)
        progress.info(f"Cloud gap filling on a Dask cluster: {grid.width} x {grid.height} px, {ds.count} band(s), "
                      f"blocks of {block_size} px with a {halo_for(settings.search_radius)} px halo.")
        _, counts = _scan(reader, grid, block_size, progress.span(0.0, 0.05))
        variograms, tried, emps = _variograms(ds, reader, grid, settings, counts, progress.span(0.05, 0.1))
        job = _BlockJob(grid, variograms, settings, dtype, _nodata_value(ds, dtype),
                        _output_limits(dtype, ds.nodatavals[0]))
        summary = _summary(ds, input_path, output_path, gaps, settings, counts, variograms, tried, emps)
        outputs = {"output": output_path, "variance": variance_path, "report": report_path}
        tool = GapFillBlocks(ds, input_path, gaps, job, counts, summary, block_size, outputs)
        run = run_on_cluster(tool, cluster, run_dir_for(output_path), resume, progress.span(0.1, 1.0))
    summary.update(run)
    return summary
