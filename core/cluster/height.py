"""``edifice height-footprint --cluster``: SHAFTS height and footprint on a Dask cluster.

The block of a cluster run is the single-machine run's own tile (``max_tile_deg``, 0.5° by
default: 555 x 555 output pixels at 100 m). Why not smaller blocks: SHAFTS prepares its inputs
per clip (the tile's part of the extent plus ``padding``): the nearest-neighbour gap fill takes
its value from the nearest valid pixel anywhere in the clip (no distance limit), and each
Sentinel-2 band is scaled by the minimum and the 2 % / 98 % quantiles of the whole *filled*
clip. A part of a tile therefore cannot be prepared from a window around it: its scaling depends
on every pixel of the tile's clip. A tile, on the other hand, reads only its own window of each
input (:func:`core.height.shafts_inference.clip_nearest` reads the source window under the clip:
the tile plus the padding, the halo its patches need) and nothing else, so one Dask task per tile
runs :func:`core.height.shafts_inference.predict_tile`, the same function the single-machine loop
calls for that tile, and its pixels equal the single-machine pixels exactly (same batches, same
chunks; the network's arithmetic is the same given the same device and math threads).

Each worker loads the checkpoint once (:class:`.client.ModelPlugin` under
:data:`PLUGIN_NAME`), on its own device; each tile is written as its own tiled GeoTIFF
(``<first output>_blocks/<height|footprint>/<block>.tif``); the driver writes a VRT and, for an
output not ending in ``.vrt``, a COG mosaic.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..progress import Progress, ensure
from ..raster_io import bounded_gdal_cache
from ..height.shafts_inference import (_DESCRIPTIONS, DEFAULT_MAX_TILE_DEG, DEFAULT_NODATA, DEFAULT_PADDING_DEG,
                                       ShaftsRun, _load_model, plan_shafts_run, predict_tile)
from ..outputs import refuse_input_as_output
from .blocks import ClusterBlock, pixel_blocks
from .client import ModelPlugin, parse_cluster, worker_predictor
from .mosaic import VrtBands
from .runner import run_dir_for, run_on_cluster, write_block_raster, write_mosaic

#: name of the worker plugin that keeps the SHAFTS network loaded
PLUGIN_NAME = "edifice-shafts-model"


def load_shafts_network(checkpoint: str, device: str, precision: str, resolution_m: int, target: str | None):
    """Worker side: the SHAFTS network of ``checkpoint`` as inference runs it, on the worker's
    device (``auto``: its GPU). Returns (network, torch device)."""
    from ..height.shafts_inference import inference_model, resolve_device

    model, _ = _load_model(checkpoint, resolution_m, target)
    dev = resolve_device(device)
    return inference_model(model, dev, owned=True, precision=precision), dev


def height_block(block: ClusterBlock, files: dict, run: ShaftsRun, plugin_args: tuple) -> dict:
    """Dask task: predict the tile ``block`` with the worker's network and write each output as its
    own tiled GeoTIFF. Returns its pixel counts."""
    model, dev = worker_predictor(plugin_args, PLUGIN_NAME)
    w = block.window
    r0, c0 = int(w.row_off), int(w.col_off)
    arrays = {k: np.full((1, int(w.height), int(w.width)), run.nodata, np.float32) for k in run.outputs}

    def keep(k, v, chunk):
        a, c = int(chunk.row_off) - r0, int(chunk.col_off) - c0
        arrays[k][0, a:a + v.shape[0], c:c + v.shape[1]] = v

    with bounded_gdal_cache():
        stats = predict_tile(run, model, dev, w, keep, ensure(None))
    for k in run.outputs:
        write_block_raster(files[k], run.grid, w, arrays[k], run.nodata, descriptions=[_DESCRIPTIONS[k]])
    return {"pixels": stats["pixels"], "valid_pixels": stats["valid"], "device": str(dev)}


class HeightBlocks:
    """SHAFTS height/footprint as a :class:`.runner.BlockTool`: one block per tile of the run."""

    unit = "tiles"
    needs_torch = True
    task = staticmethod(height_block)

    def __init__(self, run: ShaftsRun, checkpoint: str, device: str, precision: str, resolution_m: int,
                 target: str | None, paths: dict):
        from ..sliding_window import file_fingerprint

        self.run, self.grid, self.paths = run, run.grid, paths
        self._fingerprint = {
            "cluster_run": 1, "tool": "height-footprint",
            "inputs": {k: file_fingerprint(p) for k, p in (("S1", run.s1_path), ("S2", run.s2_path),
                                                           ("DEM", run.dem_path), ("CHECKPOINT", checkpoint))},
            "run": repr((run.bands, run.extent, run.padding, list(run.grid.transform)[:6], run.grid.width,
                         run.grid.height, run.tile_px, run.chunk_rows, run.batch_size, run.task, run.outputs,
                         sorted(run.limits.items()), run.nodata)),
            "precision": precision, "resolution": int(resolution_m), "target": target}
        loader = functools.partial(load_shafts_network, resolution_m=int(resolution_m), target=target)
        self.plugin_args = (checkpoint, device, precision, self._fingerprint["inputs"]["CHECKPOINT"], loader)

    def plan(self) -> list[ClusterBlock]:
        return pixel_blocks(self.grid, self.run.tile_px)

    def block_files(self, run_dir: Path, block: ClusterBlock) -> dict:
        return {k: str(run_dir / k / f"{block.id}.tif") for k in self.run.outputs}

    def fingerprint(self) -> dict:
        return self._fingerprint

    def task_args(self) -> tuple:
        return self.run, self.plugin_args

    def worker_plugins(self) -> dict:
        return {PLUGIN_NAME: ModelPlugin(*self.plugin_args)}

    def assemble(self, blocks: list[ClusterBlock], files: dict, results: dict, run_dir: Path,
                 progress: Progress) -> dict:
        out = {}
        for k in self.run.outputs:
            bands = VrtBands(1, "float32", self.run.nodata, (_DESCRIPTIONS[k],))
            out[k] = write_mosaic(self.paths[k], self.grid, bands, blocks, {b.id: files[b.id][k] for b in blocks},
                                  progress)
        return {"outputs": out, "pixels": sum(int(r["pixels"]) for r in results.values()),
                "valid_pixels": sum(int(r["valid_pixels"]) for r in results.values()),
                "worker_devices": sorted({str(r.get("device")) for r in results.values()})}


def height_footprint_on_cluster(s1_path, s2_path, dem_path, extent: tuple[float, float, float, float], checkpoint,
                                resolution_m: int, out_height=None, out_footprint=None, *, cluster: str,
                                padding: float = DEFAULT_PADDING_DEG, target: str | None = None,
                                h_min: float = 2.0, h_max: float = 1000.0, f_min: float = 0.0, f_max: float = 1.0,
                                device: str = "auto", batch_size: int | None = None, chunk_rows: int | None = None,
                                nodata: float = DEFAULT_NODATA, s1_bands=(1, 2), s2_bands=(1, 2, 3, 4),
                                dem_band: int = 1, max_tile_deg: float | None = DEFAULT_MAX_TILE_DEG,
                                precision: str = "fp32", resume: bool = True,
                                progress: Progress | None = None) -> dict:
    """:func:`core.height.shafts_inference.predict_height_footprint_shafts` on the Dask cluster
    ``cluster`` (``tcp://HOST:PORT`` or ``local:N``), one task per tile of ``max_tile_deg``
    degrees: the same pixels. Outputs ending in ``.vrt`` get a VRT of the tiles, others a VRT
    beside them plus a COG mosaic. The paths must be visible to the workers (a shared folder).
    Returns a summary (``height``/``footprint``: the paths written, ``valid_pixels``, blocks)."""
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise InputError("CHECKPOINT", "must be a checkpoint file on a cluster (each worker loads it).",
                         "give the path of the .pth file, in a folder the workers can read.")
    refuse_input_as_output({"OUTPUT_HEIGHT": out_height, "OUTPUT_FOOTPRINT": out_footprint},
                           {"SENTINEL1": s1_path, "SENTINEL2": s2_path, "DEM": dem_path, "CHECKPOINT": checkpoint})
    progress = ensure(progress)
    parse_cluster(cluster)
    s1_path, s2_path, dem_path, checkpoint = (str(Path(p).resolve()) for p in (s1_path, s2_path, dem_path, checkpoint))
    _, task = _load_model(checkpoint, resolution_m, target)  # checked here, loaded again by each worker
    run = plan_shafts_run(s1_path, s2_path, dem_path, extent, resolution_m, task, out_height, out_footprint,
                          padding=padding, h_min=h_min, h_max=h_max, f_min=f_min, f_max=f_max, batch_size=batch_size,
                          chunk_rows=chunk_rows, nodata=nodata, s1_bands=s1_bands, s2_bands=s2_bands,
                          dem_band=dem_band, max_tile_deg=max_tile_deg, precision=precision, progress=progress)
    paths = {"height": out_height, "footprint": out_footprint}
    tool = HeightBlocks(run, checkpoint, device, precision, resolution_m, target, paths)
    progress.info(f"SHAFTS {resolution_m} m {task}-task model on a Dask cluster: {len(tool.plan())} tile(s) of "
                  f"{run.tile_px} x {run.tile_px} output pixels, one task each.")
    summary = run_on_cluster(tool, cluster, run_dir_for(paths[run.outputs[0]]), resume, progress)
    summary.update({k: (paths[k] if k in run.outputs else None) for k in ("height", "footprint")},
                   grid=run.grid,
                   device=f"Dask cluster {cluster}: {summary['blocks_run']} block(s) run on "
                          f"{', '.join(summary['worker_devices'])}")
    return summary
