"""``edifice map-building-use --cluster``: the building-use map on a Dask cluster.

Same inputs, checks and outputs as :func:`core.building_use_map.map_building_use`; the
windows are run block by block (:mod:`.blocks`) on Dask workers, each block written as its
own tiled GeoTIFFs in ``<first output>_blocks/<product>/<block>.tif`` (and, with polygons,
its buildings in ``polygons/<block>.gpkg`` plus the parts cut by its borders in
``polygons/<block>.seams.json``). Raster outputs: a path ending in ``.vrt`` gets a VRT of
the blocks; any other path (``.tif``) gets the VRT beside it (``.vrt``) and a single COG
mosaic at the path. Building polygons are merged across block borders.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path

from ..building_use_map import PRODUCTS, UseJob, UsePlan, plan_building_use, product_output
from ..errors import Cancelled, EdificeError
from ..progress import Progress, ensure
from ..raster_io import atomic_output, bounded_gdal_cache
from . import BLOCK_WINDOWS
from .blocks import ClusterBlock, plan_blocks
from .client import ModelPlugin, PLUGIN_NAME, check_workers, connect, parse_cluster, worker_predictor
from .manifest import Manifest
from .mosaic import VrtBands, tile_paths, write_cog, write_vrt, mosaic_tiles



def run_dir_for(anchor: str) -> Path:
    """The folder of a cluster run's blocks and manifest, beside its first output."""
    a = Path(anchor)
    return a.parent / f"{a.stem}_blocks"


def imagery_from_tiles(imagery, anchor: str, progress: Progress) -> str:
    """``imagery`` itself, or for a folder/list of tiles a VRT of them beside ``anchor``."""
    tiles = tile_paths(imagery)
    if tiles is None:
        return str(imagery)
    a = Path(anchor)
    vrt = mosaic_tiles(tiles, a.parent / f"{a.stem}_imagery.vrt")
    progress.info(f"IMAGERY: {len(tiles)} tiles mosaicked in '{vrt}'.")
    return vrt


def _block_files(run_dir: Path, block: ClusterBlock, plan: UsePlan) -> dict:
    files = {name: str(run_dir / name / f"{block.id}.tif") for name in plan.paths}
    if plan.polygons:
        files["polygons"] = str(run_dir / "polygons" / f"{block.id}.gpkg")
        files["seams"] = str(run_dir / "polygons" / f"{block.id}.seams.json")
    return files


def run_use_block(job: UseJob, block: ClusterBlock, files: dict, fingerprint: dict, plugin_args: tuple) -> dict:
    """Dask task: run the windows of ``block`` with the worker's model and write its files."""
    from distributed import get_worker

    name = get_worker().address
    try:
        predictor = worker_predictor(plugin_args)
        t0 = time.perf_counter()
        with bounded_gdal_cache():
            engine = {k: v for k, v in files.items() if k not in ("polygons", "seams")}
            s = job.run(predictor, engine, fingerprint, region=block.region, resume=True)
            out = {"worker": name, "windows_run": s["tiles_run"], "windows_skipped": s["tiles_skipped"]}
            if "polygons" in files:
                out.update(_block_polygons(job, block, files))
        out["seconds"] = time.perf_counter() - t0
        return out
    except Exception as exc:  # noqa: BLE001 - sent to the driver as one readable error
        text = str(exc) if isinstance(exc, EdificeError) else f"{type(exc).__name__}: {exc}"
    # raised outside the handler, so that it carries no unpicklable context to the driver
    raise EdificeError(f"block {block.id} on worker {name}: {text}")


def _block_polygons(job: UseJob, block: ClusterBlock, files: dict) -> dict:
    from ..building_use_map import grid_gsd_m
    from ..vectorize import polygonize_buildings

    w = block.window
    r = polygonize_buildings(files["fp_mask"], files["use_probs"], files["polygons"], grid_gsd_m(job.grid) ** 2,
                             origin=(int(w.row_off), int(w.col_off)), grid_shape=(job.grid.height, job.grid.width),
                             transform=job.grid.transform, seams_path=files["seams"])
    return {"buildings": r["buildings"], "seam_parts": r["seam_parts"]}


def map_building_use_on_cluster(imagery, checkpoint: str, *, cluster: str, block_windows: int = BLOCK_WINDOWS,
                                device: str = "auto", precision: str = "auto", resume: bool = True,
                                progress: Progress | None = None, **options) -> dict:
    """Map building use over ``imagery`` (a raster, a VRT, or a folder/list of tiles) on the
    Dask cluster ``cluster`` (``tcp://HOST:PORT`` or ``local:N``); other keyword arguments as
    :func:`core.building_use_map.plan_building_use`. Returns a summary."""
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
            return _run(plan, tiles, checkpoint, cluster, block_windows, device, precision, resume, progress)
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


def _run(plan: UsePlan, tiles: list[str], checkpoint: str, cluster: str, block_windows: int, device: str,
         precision: str, resume: bool, progress: Progress) -> dict:
    t0 = time.perf_counter()
    run_dir = run_dir_for(next(iter(plan.wanted.values())))
    blocks = plan_blocks(plan.job.grid, plan.job.layout, block_windows)
    fingerprint = _fingerprint(plan, tiles, block_windows)
    manifest = Manifest(run_dir, fingerprint, resume, progress)
    files = {b.id: _block_files(run_dir, b, plan) for b in blocks}
    todo = [b for b in blocks if not manifest.is_done(b.id, list(files[b.id].values()))]
    progress.info(f"{len(blocks)} block(s) of up to {block_windows} x {block_windows} windows in '{run_dir}': "
                  f"{len(blocks) - len(todo)} already done (skipped), {len(todo)} to run.")
    if todo:
        plugin_args = (str(Path(checkpoint).resolve()), device, precision, fingerprint["inputs"]["checkpoint"])
        with connect(cluster, progress) as client:
            check_workers(client, progress)
            client.register_plugin(ModelPlugin(*plugin_args), name=PLUGIN_NAME)
            t_blocks = time.perf_counter()
            _run_blocks(client, plan, todo, files, manifest, fingerprint, plugin_args, progress.span(0.0, 0.9))
            t_blocks = time.perf_counter() - t_blocks
    else:
        t_blocks = 0.0
    outputs, vrts = _write_mosaics(plan, blocks, files, run_dir, progress)
    summary = {"blocks": len(blocks), "blocks_run": len(todo), "blocks_skipped": len(blocks) - len(todo),
               "windows": sum(b.windows for b in blocks), "run_folder": str(run_dir), "outputs": outputs,
               "blocks_seconds": t_blocks, "windows_run": sum(int(manifest.done[b.id].get("windows_run", 0))
                                                              for b in todo),
               "grid": {"width": plan.job.grid.width, "height": plan.job.grid.height, "resampled": plan.resampled}}
    if plan.polygons:
        summary["polygons"] = _merge_polygons(plan, blocks, files, vrts["use_probs"], progress)
    summary["seconds"] = time.perf_counter() - t0
    progress.set_fraction(1.0)
    progress.info(f"{summary['blocks_run']} block(s) run, {summary['blocks_skipped']} skipped, in "
                  f"{summary['seconds']:.1f} s.")
    return summary


class _Tally:
    """Blocks, km² and windows done, with the rate and ETA, for the progress line."""

    def __init__(self, blocks: list[ClusterBlock], grid):
        self.total, self.grid, self.t0 = len(blocks), grid, time.perf_counter()
        self.windows_total = sum(b.windows for b in blocks)
        self.km2_total = sum(b.area_km2(grid) for b in blocks)
        self.done = self.windows = 0
        self.km2 = 0.0

    def add(self, block: ClusterBlock) -> str:
        self.done += 1
        self.windows += block.windows
        self.km2 += block.area_km2(self.grid)
        rate = self.windows / max(time.perf_counter() - self.t0, 1e-9)
        eta = (self.windows_total - self.windows) / rate if rate > 0 else float("nan")
        return (f"{self.done}/{self.total} blocks, {self.km2:.3f}/{self.km2_total:.3f} km², {rate:.2f} windows/s, "
                f"ETA {eta:.0f} s")


def _run_blocks(client, plan: UsePlan, todo: list[ClusterBlock], files: dict, manifest: Manifest,
                fingerprint: dict, plugin_args: tuple, progress: Progress) -> None:
    """Submit one task per block; record each finished block in the manifest as it arrives."""
    from distributed import as_completed

    run_id = uuid.uuid4().hex[:8]
    futures = {client.submit(run_use_block, plan.job, b, files[b.id], fingerprint["inputs"], plugin_args,
                             key=f"edifice-block-{b.id}-{run_id}", retries=1): b for b in todo}
    tally = _Tally(todo, plan.job.grid)
    arriving = as_completed(list(futures), loop=client.loop)
    try:
        while not arriving.is_empty():
            progress.check_cancelled()
            if not arriving.has_ready():
                time.sleep(0.2)
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


def _vrt_bands(name: str, plan: UsePlan) -> VrtBands:
    o = product_output(name, "", plan.job.colormap)
    return VrtBands(o.count, o.dtype, o.nodata, tuple(o.descriptions or ()) or None, o.colormap)


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
        vrt = target if target.suffix.lower() == ".vrt" else target.with_suffix(".vrt")
        sources = [(files[b.id][name], b.window, (int(b.window.width), int(b.window.height))) for b in blocks]
        write_vrt(vrt, plan.job.grid, _vrt_bands(name, plan), sources)
        vrts[name] = str(vrt)
        if asked:
            out[keys[name]] = [str(vrt)]
            if vrt != target:
                progress.info(f"Writing the COG mosaic '{target}'.")
                out[keys[name]].append(write_cog(str(vrt), str(target)))
    return out, vrts


def _merge_polygons(plan: UsePlan, blocks: list[ClusterBlock], files: dict, probs_vrt: str,
                    progress: Progress) -> dict:
    """The buildings of every block plus those cut by block borders, merged, in one GeoPackage."""
    from ..building_use_map import grid_gsd_m
    from ..vectorize import LayerWriter, merged_seam_buildings

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
