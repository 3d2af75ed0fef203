"""``edifice retinex --cluster``: multi-scale Retinex on a Dask cluster, equal to one machine.

Retinex has image-wide statistics, computed as one machine computes them:

0. the driver reads the raster once without halo (:func:`core.use.retinex.whole_raster_pass`):
   cell sums of the large scales (memory-mapped files in ``<output>_blocks/cells``, which the
   workers open read-only: a folder they share) and the minimum of signed rasters;
1. one Dask task per block computes the block's histogram of Retinex values
   (:meth:`RetinexPass.histogram`, saved as ``histograms/<block>.npy``); the driver sums
   them (integer counts: the sum does not depend on the order) and takes the global stretch;
2. one Dask task per block writes the block, stretched with that one stretch
   (:meth:`RetinexPass.stretched`), as its own tiled GeoTIFF; the driver writes the VRT and,
   for an output not ending in ``.vrt``, a COG mosaic.

Each pass keeps its own manifest, so a rerun skips the finished blocks of both.
"""
from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..outputs import atomic_output, refuse_input_as_output
from ..progress import Progress, ensure
from ..raster_io import bounded_gdal_cache, open_raster
from ..use.retinex import (RetinexPass, RetinexSettings, _check_input, _HIST_BINS, block_halo, output_descriptions,
                       output_type, stretch_from_histogram, whole_raster_pass)
from .blocks import ClusterBlock, pixel_blocks, with_halo
from .client import parse_cluster
from .mosaic import VrtBands
from .runner import run_dir_for, run_on_cluster, write_block_raster, write_mosaic


def histogram_block(block: ClusterBlock, files: dict, input_path: str, run: RetinexPass, halo: int) -> dict:
    """Dask task (pass 1): the block's histogram of Retinex values, saved as ``.npy``."""
    with bounded_gdal_cache(), open_raster(input_path, "INPUT") as ds:
        hist, n_valid = run.histogram(ds, with_halo(_grid(ds), block, halo))
    with atomic_output(files["histogram"]) as tmp, open(tmp, "wb") as f:
        np.save(f, hist)
    return {"valid_pixels": n_valid}


def stretched_block(block: ClusterBlock, files: dict, input_path: str, run: RetinexPass, halo: int,
                    stretch: tuple[float, float], out_dtype: str, nodata, descriptions: list[str]) -> dict:
    """Dask task (pass 2): the block stretched with the global stretch, as its own GeoTIFF."""
    with bounded_gdal_cache(), open_raster(input_path, "INPUT") as ds:
        grid = _grid(ds)
        out = run.stretched(ds, with_halo(grid, block, halo), stretch, np.dtype(out_dtype), nodata)
    write_block_raster(files["output"], grid, block.window, out, nodata, descriptions=descriptions)
    return {}


def _grid(ds):
    from ..grid import Grid

    return Grid.from_dataset(ds)


class _RetinexBlocks:
    """Blocks of ``block_size`` px read with the halo of the small scales (no torch, no plugin)."""

    unit = "blocks"
    needs_torch = False

    def __init__(self, input_path: str, grid, run: RetinexPass, settings: RetinexSettings, block_size: int):
        from ..sliding_window import file_fingerprint

        self.input_path, self.grid, self.run, self.block_size = input_path, grid, run, block_size
        self.halo = block_halo(settings)
        self._fingerprint = {"cluster_run": 1, "tool": "retinex", "input": file_fingerprint(input_path),
                             "settings": {k: list(v) if isinstance(v, tuple) else v
                                          for k, v in asdict(settings).items()},
                             "block_size": block_size, "shift": run.shift}

    def plan(self) -> list[ClusterBlock]:
        return pixel_blocks(self.grid, self.block_size)

    def fingerprint(self) -> dict:
        return self._fingerprint

    def worker_plugins(self) -> dict:
        return {}


class HistogramBlocks(_RetinexBlocks):
    """Pass 1 as a :class:`.runner.BlockTool`: every block's histogram, summed by the driver."""

    task = staticmethod(histogram_block)

    def block_files(self, run_dir: Path, block: ClusterBlock) -> dict:
        return {"histogram": str(run_dir / f"{block.id}.npy")}

    def task_args(self) -> tuple:
        return self.input_path, self.run, self.halo

    def assemble(self, blocks, files, results, run_dir, progress) -> dict:
        hist = np.zeros(_HIST_BINS, np.int64)
        for b in blocks:
            hist += np.load(files[b.id]["histogram"])
        return {"histogram": hist, "valid_pixels": sum(int(r["valid_pixels"]) for r in results.values())}


class StretchedBlocks(_RetinexBlocks):
    """Pass 2 as a :class:`.runner.BlockTool`: every block written with the global stretch."""

    task = staticmethod(stretched_block)

    def __init__(self, *args, stretch, out_dtype: np.dtype, nodata, descriptions, output_path: str):
        super().__init__(*args)
        self.stretch, self.out_dtype, self.nodata = stretch, out_dtype, nodata
        self.descriptions, self.output_path = descriptions, output_path
        self._fingerprint = dict(self._fingerprint, stretch=list(stretch), dtype=out_dtype.name, nodata=repr(nodata))

    def block_files(self, run_dir: Path, block: ClusterBlock) -> dict:
        return {"output": str(run_dir / f"{block.id}.tif")}

    def task_args(self) -> tuple:
        return self.input_path, self.run, self.halo, self.stretch, self.out_dtype.name, self.nodata, self.descriptions

    def assemble(self, blocks, files, results, run_dir, progress) -> dict:
        bands = VrtBands(len(self.descriptions), self.out_dtype.name, self.nodata, tuple(self.descriptions))
        return {"outputs": write_mosaic(self.output_path, self.grid, bands, blocks,
                                        {b.id: files[b.id]["output"] for b in blocks}, progress)}


def retinex_on_cluster(input_path: str, output_path: str, settings: RetinexSettings | None = None,
                       output_dtype: str | None = None, block_size: int = 2048, *, cluster: str,
                       resume: bool = True, progress: Progress | None = None) -> dict:
    """:func:`core.use.retinex.retinex` on the Dask cluster ``cluster`` (``tcp://HOST:PORT`` or
    ``local:N``): same pixels; ``output_path`` ending in ``.vrt`` is a VRT of the blocks, any
    other a COG mosaic with the VRT beside it. Returns a summary."""
    refuse_input_as_output({"OUTPUT": output_path}, {"INPUT": input_path})
    settings = settings or RetinexSettings()
    progress = ensure(progress)
    parse_cluster(cluster)
    input_path = str(Path(input_path).resolve())
    run_dir = run_dir_for(output_path)
    with bounded_gdal_cache(), open_raster(input_path, "INPUT") as ds:
        grid = _check_input(ds, settings, progress)
        out_dtype, nodata = output_type(ds, output_dtype)
        descriptions = output_descriptions(ds)
        (run_dir / "cells").mkdir(parents=True, exist_ok=True)
        run = whole_raster_pass(ds, grid, settings, block_size, str(run_dir / "cells"), progress.span(0.0, 0.1))
    args = (input_path, grid, run, settings, block_size)
    progress.info("Pass 1: histograms of the Retinex values, block by block.")
    hist = run_on_cluster(HistogramBlocks(*args), cluster, run_dir / "histograms", resume, progress.span(0.1, 0.5))
    stretch = stretch_from_histogram(hist["histogram"], hist["valid_pixels"], settings.clip_percent, input_path)
    progress.info("Pass 2: the blocks with the global stretch.")
    tool = StretchedBlocks(*args, stretch=stretch, out_dtype=out_dtype, nodata=nodata, descriptions=descriptions,
                           output_path=output_path)
    out = run_on_cluster(tool, cluster, run_dir / "output", resume, progress.span(0.5, 1.0))
    shutil.rmtree(run_dir / "cells", ignore_errors=True)
    return {"output": output_path, "valid_pixels": hist["valid_pixels"], "stretch_low": stretch[0],
            "stretch_high": stretch[1], "nodata": nodata, "dtype": out_dtype.name, "bands": len(descriptions), "blocks": out["blocks"],
            "blocks_run": out["blocks_run"] + hist["blocks_run"], "blocks_skipped": out["blocks_skipped"],
            "histogram_blocks_skipped": hist["blocks_skipped"], "outputs": out["outputs"], "shift": run.shift,
            "run_folder": str(run_dir)}
