"""One block runner for every tool that runs on a Dask cluster.

A tool describes its run as a :class:`BlockTool`:

* ``plan()``: the blocks (:class:`.blocks.ClusterBlock`, each a rectangle of the output grid;
  the tool reads around it the halo it needs);
* ``block_files(run_dir, block)``: the files one block writes (its own tiled GeoTIFFs, ...);
* ``fingerprint()``: inputs and settings, so that a rerun skips the blocks already finished;
* ``task``: a picklable function ``task(block, files, *task_args, *block_args) -> dict`` run on a
  worker, computing one block and writing its files (temporary file, then rename); the optional
  ``block_args(block)`` gives what only that block needs (e.g. its candidate POIs);
* ``assemble(blocks, files, results, run_dir, progress)``: the driver's last step (VRT, COG, merges).

:func:`run_on_cluster` does the rest for every tool: the manifest (resume), connecting to
the cluster, checking its workers, the worker plugins (a model kept loaded; Dask's statistical
profiler paused during the run, :class:`.client.ProfilerPause`), one Dask task
per block with Dask's retries, progress (blocks, km², units/s, ETA) and cancellation.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Callable, Protocol

from ..errors import Cancelled, EdificeError
from ..progress import Progress
from .blocks import ClusterBlock
from .client import PROFILER_PAUSE, ProfilerPause, check_workers, connect
from .manifest import Manifest
from .mosaic import VrtBands, write_cog, write_vrt


class BlockTool(Protocol):
    """What a tool gives :func:`run_on_cluster` (see the module docstring)."""

    grid: object
    #: name of a block's units in the progress line ("windows", "blocks")
    unit: str
    #: workers must import torch (checked before any block is sent)
    needs_torch: bool
    task: Callable

    def plan(self) -> list[ClusterBlock]: ...

    def block_files(self, run_dir: Path, block: ClusterBlock) -> dict: ...

    def fingerprint(self) -> dict: ...

    def task_args(self) -> tuple: ...

    def worker_plugins(self) -> dict: ...

    def assemble(self, blocks: list[ClusterBlock], files: dict, results: dict, run_dir: Path,
                 progress: Progress) -> dict: ...


def run_dir_for(anchor: str) -> Path:
    """The folder of a cluster run's blocks and manifest, beside its first output."""
    a = Path(anchor)
    return a.parent / f"{a.stem}_blocks"


def run_block(task: Callable, block: ClusterBlock, files: dict, args: tuple) -> dict:
    """Dask task: ``task(block, files, *args)`` on this worker, timed; any error comes back as
    one :class:`EdificeError` naming the block and the worker."""
    from distributed import get_worker

    name = get_worker().address
    try:
        t0 = time.perf_counter()
        out = dict(task(block, files, *args))
        out.update(worker=name, seconds=time.perf_counter() - t0)
        return out
    except Exception as exc:  # noqa: BLE001 - sent to the driver as one readable error
        text = str(exc) if isinstance(exc, EdificeError) else f"{type(exc).__name__}: {exc}"
    # raised outside the handler, so that it carries no unpicklable context to the driver
    raise EdificeError(f"block {block.id} on worker {name}: {text}")


def run_on_cluster(tool: BlockTool, cluster: str, run_dir: Path, resume: bool, progress: Progress) -> dict:
    """Run ``tool`` block by block on ``cluster`` (finished blocks of an earlier run with the
    same fingerprint are skipped) and assemble its outputs. Returns a summary."""
    t0 = time.perf_counter()
    blocks = tool.plan()
    manifest = Manifest(run_dir, tool.fingerprint(), resume, progress)
    files = {b.id: tool.block_files(run_dir, b) for b in blocks}
    todo = [b for b in blocks if not manifest.is_done(b.id, list(files[b.id].values()))]
    progress.info(f"{len(blocks)} block(s) in '{run_dir}': {len(blocks) - len(todo)} already done (skipped), "
                  f"{len(todo)} to run.")
    t_blocks = 0.0
    if todo:
        with connect(cluster, progress) as client:
            check_workers(client, progress, needs_torch=tool.needs_torch)
            for name, plugin in tool.worker_plugins().items():
                client.register_plugin(plugin, name=name)
            client.register_plugin(ProfilerPause(), name=PROFILER_PAUSE)
            try:
                t_blocks = time.perf_counter()
                _run_blocks(client, tool, todo, files, manifest, progress.span(0.0, 0.9))
                t_blocks = time.perf_counter() - t_blocks
            finally:
                _unregister(client, PROFILER_PAUSE)
    summary = {"blocks": len(blocks), "blocks_run": len(todo), "blocks_skipped": len(blocks) - len(todo),
               tool.unit: sum(b.windows for b in blocks), "run_folder": str(run_dir), "blocks_seconds": t_blocks,
               f"{tool.unit}_run": sum(int(manifest.done[b.id].get(f"{tool.unit}_run", b.windows)) for b in todo),
               "block_task_seconds": sum(float(manifest.done[b.id].get("seconds", 0.0)) for b in todo)}
    summary.update(tool.assemble(blocks, files, {b.id: manifest.done[b.id] for b in blocks}, run_dir, progress))
    summary["seconds"] = time.perf_counter() - t0
    progress.set_fraction(1.0)
    progress.info(f"{summary['blocks_run']} block(s) run, {summary['blocks_skipped']} skipped, in "
                  f"{summary['seconds']:.1f} s.")
    return summary


def _unregister(client, name: str) -> None:
    """Unregister the worker plugin ``name`` (its teardown runs on each worker); a worker that has
    gone or a closing cluster is no error here."""
    try:
        client.unregister_worker_plugin(name)
    except Exception:  # noqa: BLE001 - best effort at the end of a run
        pass


class _Tally:
    """Blocks, km² and units done, with the rate and ETA, for the progress line."""

    def __init__(self, blocks: list[ClusterBlock], grid, unit: str):
        self.total, self.grid, self.unit, self.t0 = len(blocks), grid, unit, time.perf_counter()
        self.units_total = sum(b.windows for b in blocks)
        self.km2_total = sum(b.area_km2(grid) for b in blocks)
        self.done = self.units = 0
        self.km2 = 0.0

    def add(self, block: ClusterBlock) -> str:
        self.done += 1
        self.units += block.windows
        self.km2 += block.area_km2(self.grid)
        rate = self.units / max(time.perf_counter() - self.t0, 1e-9)
        eta = (self.units_total - self.units) / rate if rate > 0 else float("nan")
        return (f"{self.done}/{self.total} blocks, {self.km2:.3f}/{self.km2_total:.3f} km², {rate:.2f} {self.unit}/s, "
                f"ETA {eta:.0f} s")


def _run_blocks(client, tool: BlockTool, todo: list[ClusterBlock], files: dict, manifest: Manifest,
                progress: Progress) -> None:
    """Submit one task per block; record each finished block in the manifest as it arrives."""
    from distributed import as_completed

    run_id = uuid.uuid4().hex[:8]
    args = tool.task_args()
    per_block = getattr(tool, "block_args", lambda b: ())  # inputs of one block only (e.g. its candidate POIs)
    futures = {client.submit(run_block, tool.task, b, files[b.id], args + tuple(per_block(b)),
                             key=f"edifice-block-{b.id}-{run_id}", retries=1): b for b in todo}
    tally = _Tally(todo, tool.grid, tool.unit)
    arriving = as_completed(list(futures), loop=client.loop)
    try:
        while not arriving.is_empty():
            progress.check_cancelled()
            if not arriving.has_ready():
                time.sleep(0.1)
                continue
            for fut in arriving.next_batch(block=False):
                block = futures[fut]
                result = _block_result(fut, block)
                manifest.mark_done(block.id, result)
                progress.info(f"block {block.id} done on {result['worker']}: {tally.add(block)}.")
                progress.set_fraction(tally.done / tally.total)
    except (Cancelled, KeyboardInterrupt):
        client.cancel([f for f in futures if not f.done()])
        progress.info(f"Stopped; {len(manifest.done)} finished block(s) are recorded in {manifest.path}, so "
                      "running the same command again resumes.")
        raise
    except BaseException:
        client.cancel([f for f in futures if not f.done()])
        raise


def _block_result(fut, block: ClusterBlock) -> dict:
    """The block's summary, or its error as one readable :class:`EdificeError` (e.g. Dask's
    KilledWorker when workers kept dying on it)."""
    try:
        return fut.result()
    except EdificeError:
        raise
    except Exception as exc:  # noqa: BLE001 - Dask's own errors
        text = f"{type(exc).__name__}: {exc}"
    raise EdificeError(f"CLUSTER: block {block.id} failed: {text}")


def write_block_raster(path: str, grid, window, array, nodata, name: str = "OUTPUT",
                       descriptions=None) -> None:
    """Write a block's ``array`` (bands, rows, cols) covering ``window`` of ``grid`` as its own
    tiled GeoTIFF (temporary file, verified, then renamed: never half-written)."""
    from ..grid import Grid
    from ..raster_io import atomic_raster

    sub = Grid(grid.window_transform(window), int(window.width), int(window.height), grid.crs)
    with atomic_raster(path, sub, array.shape[0], array.dtype, nodata=nodata, descriptions=descriptions,
                       overviews=False, name=name) as dst:
        dst.write(array)


def write_mosaic(target: Path, grid, bands: VrtBands, blocks: list[ClusterBlock], paths: dict,
                 progress: Progress, cog: bool = True) -> list[str]:
    """A VRT of the blocks' files ``paths`` {block id: file} at ``target`` (``.vrt``), or beside
    it plus a COG mosaic at ``target`` (any other ending, when ``cog``). Returns the paths."""
    target = Path(target)
    vrt = target if target.suffix.lower() == ".vrt" else target.with_suffix(".vrt")
    sources = [(paths[b.id], b.window, (int(b.window.width), int(b.window.height))) for b in blocks]
    write_vrt(vrt, grid, bands, sources)
    out = [str(vrt)]
    if cog and vrt != target:
        progress.info(f"Writing the COG mosaic '{target}'.")
        out.append(write_cog(str(vrt), str(target)))
    return out
