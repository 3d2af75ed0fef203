"""``edifice map-building-use --cluster``: the building-use map on a Dask cluster.

Same inputs, checks and outputs as :func:`core.use.building_use_map.map_building_use`; the
windows are run block by block (:mod:`.blocks`) on Dask workers, each block written as its
own tiled GeoTIFFs in ``<first output>_blocks/<product>/<block>.tif`` (and, with polygons,
its buildings in ``polygons/<block>.gpkg`` plus the parts cut by its borders in
``polygons/<block>.seams.json``). Raster outputs: a path ending in ``.vrt`` gets a VRT of
the blocks; any other path (``.tif``) gets the VRT beside it (``.vrt``) and a single COG
mosaic at the path. Building polygons are merged across block borders.
"""
from __future__ import annotations

from pathlib import Path

from ..use.building_use_map import (PRODUCTS, UseJob, UsePlan, plan_building_use, polygon_probs_product,
                                   product_output)
from ..progress import Progress, ensure
from ..raster_io import atomic_output, bounded_gdal_cache
from . import BLOCK_WINDOWS
from .blocks import ClusterBlock, plan_blocks
from .client import ModelPlugin, PLUGIN_NAME, parse_cluster, worker_predictor
from .mosaic import VrtBands, tile_paths, mosaic_tiles
from .runner import run_dir_for, run_on_cluster, write_mosaic



def imagery_from_tiles(imagery, anchor: str, progress: Progress) -> str:
    """``imagery`` itself, or for a folder/list of tiles a VRT of them beside ``anchor``."""
    tiles = tile_paths(imagery)
    if tiles is None:
        return str(imagery)
    a = Path(anchor)
    vrt = mosaic_tiles(tiles, a.parent / f"{a.stem}_imagery.vrt")
    progress.info(f"IMAGERY: {len(tiles)} tiles mosaicked in '{vrt}'.")
    return vrt


class UseBlocks:
    """The building-use map as a :class:`.runner.BlockTool`: blocks of whole windows, the
    engine run per block with the worker's model (:class:`.client.ModelPlugin`), one VRT (and
    COG) per product, building polygons merged across block borders."""

    unit = "windows"
    needs_torch = True

    def __init__(self, plan: UsePlan, tiles: list[str], checkpoint: str, block_windows: int, device: str,
                 precision: str):
        self.use, self.tiles, self.block_windows = plan, tiles, block_windows
        self.grid = plan.job.grid
        self._fingerprint = _fingerprint(plan, tiles, block_windows)
        self.plugin_args = (str(Path(checkpoint).resolve()), device, precision,
                            self._fingerprint["inputs"]["checkpoint"])

    def plan(self) -> list[ClusterBlock]:
        return plan_blocks(self.grid, self.use.job.layout, self.block_windows)

    def block_files(self, run_dir: Path, block: ClusterBlock) -> dict:
        files = {name: str(run_dir / name / f"{block.id}.tif") for name in self.use.paths}
        if self.use.polygons:
            files["polygons"] = str(run_dir / "polygons" / f"{block.id}.gpkg")
            files["seams"] = str(run_dir / "polygons" / f"{block.id}.seams.json")
        return files

    def fingerprint(self) -> dict:
        return self._fingerprint

    @staticmethod
    def task(block: ClusterBlock, files: dict, job: UseJob, inputs_fingerprint: dict, plugin_args: tuple) -> dict:
        return run_use_block(job, block, files, inputs_fingerprint, plugin_args)

    def task_args(self) -> tuple:
        return self.use.job, self._fingerprint["inputs"], self.plugin_args

    def worker_plugins(self) -> dict:
        return {PLUGIN_NAME: ModelPlugin(*self.plugin_args)}

    def assemble(self, blocks: list[ClusterBlock], files: dict, results: dict, run_dir: Path,
                 progress: Progress) -> dict:
        outputs, vrts = _write_mosaics(self.use, blocks, files, run_dir, progress)
        out = {"outputs": outputs, "grid": {"width": self.grid.width, "height": self.grid.height, "resampled": self.use.resampled}}
        if self.use.polygons:
            out["polygons"] = _merge_polygons(self.use, blocks, files, vrts[polygon_probs_product(vrts)],
                                              progress)
        return out


def run_use_block(job: UseJob, block: ClusterBlock, files: dict, fingerprint: dict, plugin_args: tuple) -> dict:
    """Run the windows of ``block`` with the worker's model and write its files."""
    predictor = worker_predictor(plugin_args)
    with bounded_gdal_cache():
        engine = {k: v for k, v in files.items() if k not in ("polygons", "seams")}
        s = job.run(predictor, engine, fingerprint, region=block.region, resume=True)
        out = {"windows_run": s["tiles_run"], "windows_skipped": s["tiles_skipped"]}
        if "polygons" in files:
            out.update(_block_polygons(job, block, files))
    return out


def _block_polygons(job: UseJob, block: ClusterBlock, files: dict) -> dict:
    from ..use.building_use_map import grid_gsd_m
    from ..use.vectorize import polygonize_buildings

    w = block.window
    r = polygonize_buildings(files["fp_mask"], files[polygon_probs_product(files)], files["polygons"],
                             grid_gsd_m(job.grid) ** 2,
                             origin=(int(w.row_off), int(w.col_off)), grid_shape=(job.grid.height, job.grid.width),
                             transform=job.grid.transform, seams_path=files["seams"])
    return {"buildings": r["buildings"], "seam_parts": r["seam_parts"]}


def map_building_use_on_cluster(imagery, checkpoint: str, *, cluster: str, block_windows: int = BLOCK_WINDOWS,
                                device: str = "auto", precision: str = "auto", resume: bool = True,
                                progress: Progress | None = None, **options) -> dict:
    """Map building use over ``imagery`` (a raster, a VRT, or a folder/list of tiles) on the
    Dask cluster ``cluster`` (``tcp://HOST:PORT`` or ``local:N``); other keyword arguments as
    :func:`core.use.building_use_map.plan_building_use`. Returns a summary."""
    progress = ensure(progress)
    parse_cluster(cluster)
    anchor = next((v for k, v in options.items() if k in ("footprint_probability", "footprint_mask", "use_class",
                                                          "use_probabilities", "polygons") and v), None)
    if anchor is None:
        plan_building_use(imagery, checkpoint, progress=progress, **options)  # raises the usual error
    tiles = tile_paths(imagery) or []
    imagery = imagery_from_tiles(imagery, anchor, progress)
    with bounded_gdal_cache():
        plan = plan_building_use(imagery, checkpoint, device=device, precision=precision, progress=progress,
                                 **options)
        try:
            tool = UseBlocks(plan, tiles, checkpoint, block_windows, device, precision)
            progress.info(f"Blocks of up to {block_windows} x {block_windows} windows.")
            return run_on_cluster(tool, cluster, run_dir_for(next(iter(plan.wanted.values()))), resume, progress)
        finally:
            plan.cleanup()


def _fingerprint(plan: UsePlan, tiles: list[str], block_windows: int) -> dict:
    """Inputs (each image tile too: a VRT's own fingerprint does not change with its tiles' pixels)
    and settings of the run."""
    from ..sliding_window import file_fingerprint

    lay, g = plan.job.layout, plan.job.grid
    return {"cluster_run": 1, "inputs": plan.fingerprint, "tiles": [file_fingerprint(t) for t in tiles],
            "layout": [lay.window, lay.margin, lay.blend], "grid": [list(g.transform)[:6], g.width, g.height],
            "block_windows": block_windows, "products": sorted(plan.paths), "polygons": bool(plan.polygons)}


def _vrt_bands(name: str, plan: UsePlan) -> VrtBands:
    o = product_output(name, "", plan.job.colormap, plan.job.probability_type)
    return VrtBands(o.count, o.dtype, o.nodata, tuple(o.descriptions or ()) or None, o.colormap, o.scale, o.offset)


def _write_mosaics(plan: UsePlan, blocks: list[ClusterBlock], files: dict, run_dir: Path,
                   progress: Progress) -> tuple[dict, dict]:
    """A VRT per product (the wanted ones where asked, the others in the run folder) and a
    COG mosaic for wanted paths not ending in .vrt. Returns ({output keyword: [paths]},
    {product: VRT path})."""
    out, vrts = {}, {}
    keys = dict(PRODUCTS)
    for name in plan.paths:
        asked = plan.wanted.get(keys[name])
        target = Path(asked) if asked else run_dir / f"{name}.vrt"
        paths = write_mosaic(target, plan.job.grid, _vrt_bands(name, plan), blocks,
                             {b.id: files[b.id][name] for b in blocks}, progress, cog=bool(asked))
        vrts[name] = paths[0]
        if asked:
            out[keys[name]] = paths
    return out, vrts


def _merge_polygons(plan: UsePlan, blocks: list[ClusterBlock], files: dict, probs_vrt: str,
                    progress: Progress) -> dict:
    """The buildings of every block plus those cut by block borders, merged, in one GeoPackage."""
    from ..use.building_use_map import grid_gsd_m
    from ..use.vectorize import LayerWriter, merged_seam_buildings

    g = plan.job.grid
    area = grid_gsd_m(g) ** 2
    with atomic_output(plan.polygons) as tmp:
        writer = LayerWriter(g.transform, g.crs, area, path=tmp)
        for b in blocks:
            writer.append_layer(files[b.id]["polygons"])
        inside = writer.total
        merged, attrs = merged_seam_buildings([files[b.id]["seams"] for b in blocks], probs_vrt, area)
        writer.write(merged, attrs)
        writer.finish()
    progress.info(f"{writer.total} building(s): {inside} inside one block, {len(merged)} merged across block borders.")
    return {"buildings": writer.total, "merged_across_blocks": len(merged), "path": plan.polygons}
