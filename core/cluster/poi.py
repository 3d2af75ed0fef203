"""``edifice poi-probability --cluster``: POI probability maps on a Dask cluster, equal to one machine.

The driver checks the inputs and selects, per class, the POIs that can reach the grid, as
:func:`core.use.poi_probability.poi_probability` does; then every block (the tool's blocks of
``block_size`` px, a multiple of its cells) is one Dask task that gets only its candidate POIs —
those within d_max (plus one cell) of the block's ECEF bounding box — and computes its pixels
with the tool's own block function, on the same cells of the grid, so the pixels equal the
single-machine pixels. Each block is its own tiled GeoTIFF; the driver writes the VRT and, for
an output not ending in ``.vrt``, a COG mosaic.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..outputs import refuse_input_as_output
from ..use.poi_probability import (CLASSES, DEFAULT_MAX_DISTANCES, NODATA, PoiSet, _block_probabilities, _CellFrames,
                                   _class_pois, _ClassPois, _grid_ecef_bounds, _open_reference, check_poi_inputs)
from ..progress import Progress, ensure
from ..raster_io import bounded_gdal_cache, read_masked
from .blocks import ClusterBlock, pixel_blocks
from .client import parse_cluster
from .mosaic import VrtBands
from .runner import run_dir_for, run_on_cluster, write_block_raster, write_mosaic

DESCRIPTIONS = [f"p_{c}" for c in CLASSES]


def poi_block(block: ClusterBlock, files: dict, grid, reference_path: str | None, dmax: tuple, limits: tuple,
              candidates: list) -> dict:
    """Dask task: the probabilities of ``block`` from its ``candidates`` (ECEF points per class, or
    None), nodata where the reference raster has none, written as the block's GeoTIFF."""
    from scipy.spatial import cKDTree

    from ..raster_io import open_raster

    w = block.window
    classes = [None if pts is None else _ClassPois(pts, cKDTree(pts), d, lim)
               for pts, d, lim in zip(candidates, dmax, limits)]
    valid = None
    if reference_path:
        with bounded_gdal_cache(), open_raster(reference_path, "REFERENCE") as ref:
            valid = read_masked(ref, w, "REFERENCE")[1]
    if valid is None or valid.any():
        out = _block_probabilities(classes, _CellFrames(grid), w)
    else:
        out = np.zeros((3, int(w.height), int(w.width)), np.float32)
    if valid is not None:
        out[:, ~valid] = NODATA
    write_block_raster(files["output"], grid, w, out, NODATA, descriptions=DESCRIPTIONS)
    return {"any_valid": valid is None or bool(valid.any())}


class PoiBlocks:
    """POI probability maps as a :class:`.runner.BlockTool` (blocks of ``block_size`` px)."""

    unit = "blocks"
    needs_torch = False
    task = staticmethod(poi_block)

    def __init__(self, grid, cells: _CellFrames, classes: list, dmax: tuple, reference_path: str | None,
                 block_size: int, output_path: str, fingerprint: dict):
        self.grid, self.cells, self.classes, self.dmax = grid, cells, classes, dmax
        self.reference_path, self.output_path, self._fingerprint = reference_path, output_path, fingerprint
        self.block_size = -(-block_size // cells.n) * cells.n  # whole cells: the same cells as one machine

    def plan(self) -> list[ClusterBlock]:
        return pixel_blocks(self.grid, self.block_size)

    def block_files(self, run_dir: Path, block: ClusterBlock) -> dict:
        return {"output": str(run_dir / f"{block.id}.tif")}

    def fingerprint(self) -> dict:
        return dict(self._fingerprint, block_size=self.block_size)

    def task_args(self) -> tuple:
        limits = tuple(c.limit if c is not None else 0.0 for c in self.classes)
        return self.grid, self.reference_path, self.dmax, limits

    def block_args(self, block: ClusterBlock) -> tuple:
        """The POIs of each class that can be a candidate of a pixel of the block: within d_max
        of the block grown by one cell (a cell's candidates reach its whole extent)."""
        from rasterio.windows import Window

        n, w = self.cells.n, block.window
        grown = Window(int(w.col_off) - n, int(w.row_off) - n, int(w.width) + 2 * n, int(w.height) + 2 * n)
        lo, hi = _grid_ecef_bounds(self.cells, grown)
        out = []
        for c in self.classes:
            sel = None if c is None else c.points[np.all((c.points >= lo - c.limit) & (c.points <= hi + c.limit),
                                                         axis=1)]
            out.append(sel if sel is not None and len(sel) else None)
        return (out,)

    def worker_plugins(self) -> dict:
        return {}

    def assemble(self, blocks, files, results, run_dir, progress) -> dict:
        if not any(r.get("any_valid") for r in results.values()):
            raise InputError("REFERENCE", f"'{self.reference_path}' holds no valid pixel (all nodata).",
                             "check the raster and its nodata value, or give no reference "
                             "(extent, pixel size and CRS) to map every pixel.")
        bands = VrtBands(3, "float32", NODATA, tuple(DESCRIPTIONS))
        return {"outputs": write_mosaic(self.output_path, self.grid, bands, blocks,
                                        {b.id: files[b.id]["output"] for b in blocks}, progress)}


def poi_probability_on_cluster(pois: PoiSet, grid, output_path: str,
                               max_distances=DEFAULT_MAX_DISTANCES, reference_path: str | None = None,
                               block_size: int = 512, *, cluster: str, resume: bool = True,
                               progress: Progress | None = None) -> dict:
    """:func:`core.use.poi_probability.poi_probability` on the Dask cluster ``cluster``
    (``tcp://HOST:PORT`` or ``local:N``), one task per block. Returns a summary."""
    from ..sliding_window import file_fingerprint

    refuse_input_as_output({"OUTPUT": output_path}, {"REFERENCE": reference_path})
    progress = ensure(progress)
    parse_cluster(cluster)
    dmax = check_poi_inputs(pois, max_distances)
    cells = _CellFrames(grid)
    if reference_path:
        _open_reference(reference_path, grid).close()  # fail before any work
        reference_path = str(Path(reference_path).resolve())
    classes, counts = _class_pois(pois, cells, dmax, progress)
    fingerprint = {"cluster_run": 1, "tool": "poi-probability", "grid": [list(grid.transform)[:6], grid.width,
                   grid.height, grid.crs], "dmax": list(dmax), "reference": file_fingerprint(reference_path),
                   "pois": [len(pois.x), float(np.sum(pois.x)), float(np.sum(pois.y)),
                            int(np.sum(pois.class_index * np.arange(1, len(pois.x) + 1)))]}
    tool = PoiBlocks(grid, cells, classes, dmax, reference_path, block_size, output_path, fingerprint)
    out = run_on_cluster(tool, cluster, run_dir_for(output_path), resume, progress)
    return {"output": output_path, "poi_counts": counts, "max_distances_m": list(dmax), "width": grid.width,
            "height": grid.height, "cell_pixels": cells.n, **{k: out[k] for k in ("blocks", "blocks_run",
                                                                                 "blocks_skipped", "outputs")}}
