"""Imagery for an extent from an XYZ/TMS, WMTS or WMS service, as a tiled, compressed RGB
GeoTIFF at a chosen ground sample distance in the extent's UTM zone (or a chosen CRS).

Output blocks are mosaicked one at a time from the tiles they need (reprojected bilinearly by the
compiled kernel of :mod:`._warp_compiled` where numba is installed, else with ``rasterio.warp.reproject``
on premultiplied colours, see :func:`_premultiply_binary_alpha`; other resamplings by GDAL; cut
without resampling when the output grid is the tiles' own), so memory does not grow with
the extent; tiles are fetched concurrently through one :class:`~edifice.core.acquire.http.HttpClient`
(retries, cache); finished blocks are kept in a sidecar folder so that a cancelled or killed run resumes.

Pixel values: uint8 R, G, B with nodata 0 where the service has no imagery (missing tiles,
transparent pixels); valid pixels of value 0 are stored as 1.
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
import queue
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np
from affine import Affine
import rasterio
import rasterio.crs
from pyproj import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window

from ..errors import InputError
from ..grid import Block, Grid
from ..progress import Progress, ensure
from ..raster_io import atomic_raster
from .block_store import BlockStore
from .http import HttpClient, ResponseCache, default_cache_dir, redact, run_bounded
from .imagery_sources import (ImagerySource, TileService, WmsService, WmtsService, XyzService, check_source,
                              fill_secrets, secrets_from_url, wms_resolution)
from ._warp_grid import source_coordinate_grid, source_pixels
from .tile_fetch import TileFetcher
from .tiles import TileMatrix, choose_level, transformer

BANDS = ("red", "green", "blue")
#: Output block size (pixels); a multiple of the GeoTIFF's 256-pixel tiles. 512 rather than 1024:
#: the first blocks are done (and written) sooner and the last ones leave less to do after the last
#: tile arrives (1.2-1.3x the throughput on the benchmark, the same CPU time).
BLOCK_SIZE = 512
#: Width (pixels) of the vertical strips in which blocks are mosaicked and written (:func:`block_order`).
#: The tiles on the edge between two strips are needed by both (one column of tiles per edge: ~6 % of
#: the tiles at 4096 px), and held for the next strip (:data:`CARRIED_TILE_BYTES`); the tiles kept in
#: memory grow with the width, not the extent (:func:`_tiles_to_keep`: 57 tiles, 14 MiB, at 4096 px
#: and zoom 19 for 0.3 m).
STRIP_WIDTH = 4096
#: Decoded tiles on the edge between two strips held in memory from the last block of a row of
#: blocks in one strip to the first of that row in the next (:class:`_StripEdges`), so that they are
#: fetched and decoded once: one column of tiles per row of the extent, up to this many bytes of
#: tiles (16 MiB: 64 tiles of 256 px, an extent ~5 km tall at 0.3 m); beyond, fetched twice.
CARRIED_TILE_BYTES = 16 * 2**20
#: Output blocks mosaicked at once (each holds its tiles and a warp buffer: ~6 MiB at 512 px).
BLOCK_WORKERS = max(2, min(4, os.cpu_count() or 1))
#: Blocks whose tiles are requested ahead (those being mosaicked included): twice the blocks
#: mosaicked at once, so that the connections and the decoders always have work queued (with 4,
#: a block's tiles were only asked for when a block ended, and decoding waited on them).
PREFETCH_BLOCKS = 2 * BLOCK_WORKERS
#: Finished blocks held in memory for the writer while they wait for their turn (each 0.75 MiB at 512 px).
HELD_BLOCKS = 4
#: GDAL block cache while the GeoTIFF is assembled: blocks are written whole, in order, so a small
#: cache loses nothing and peak memory does not grow with the output (GDAL's default is 5 % of RAM).
ASSEMBLY_CACHE_BYTES = 16 * 2**20
#: Output compression: ZSTD level 1 with the horizontal predictor is 3x faster to write than DEFLATE
#: level 1 and as small (within 2 % on the Kampala mosaic); read by GDAL >= 2.3, so by any QGIS 3.
OUTPUT_COMPRESSION = {"compress": "zstd", "zstd_level": 1}
#: Threads in which GDAL compresses the output's tiles (its GTiff ``NUM_THREADS``). 1: in the thread
#: that writes (:class:`_BackgroundWriter`, beside the fetching and warping threads). GDAL's own
#: compression threads were worth it while the main thread wrote; with a writer thread they only add
#: CPU (a copy of each tile and the hand-overs: 4.3-5.5 against 3.5-5.0 CPU-ms per 512-pixel block
#: written, in isolation), which the 2-core benchmark pays for in wall time. The price: the writer
#: finishes 0.07-0.13 s after the last block on a machine loaded 6-8 (0.01-0.04 s with 2 threads).
#: The bytes are the same.
COMPRESSION_THREADS = 1
#: Bilinear warps by the compiled kernel of :mod:`._warp_compiled` where it applies (and numba is
#: installed); False: always GDAL's warp (the tests compare the two).
COMPILED_WARP = True


@dataclass(frozen=True)
class _Plan:
    """What a download does: the output grid, the service and the level whose tiles are used."""

    grid: Grid
    service: TileService
    level: TileMatrix
    level_gsd_m: float
    resampling: Resampling
    gsd_m: float


def download_imagery(source: ImagerySource, extent: tuple[float, float, float, float], extent_crs: str,
                     output: str | os.PathLike, gsd_m: float = 0.5, crs: str | None = None,
                     max_concurrency: int = 4, cache: str | os.PathLike | bool | None = True,
                     progress: Progress | None = None, block_size: int = BLOCK_SIZE) -> dict:
    """Download ``source`` over ``extent`` (xmin, ymin, xmax, ymax in ``extent_crs``) into the
    GeoTIFF ``output`` with pixels of ``gsd_m`` metres in ``crs`` (default: the UTM zone of the
    extent's centre). ``cache``: True for the default cache folder, a folder, or None/False for
    none. A run with the same parameters after a cancel or kill resumes. Returns a summary dict."""
    progress = ensure(progress)
    _warm_up_compiled_warp()
    source = _keys_out_of_url(source)
    check_source(source)
    if not (gsd_m and gsd_m > 0):
        raise InputError("GSD", f"must be a positive number of metres, got {gsd_m}.")
    client = HttpClient(f"imagery service {_host(source.url)}", cache=_response_cache(cache), progress=progress,
                        secrets=tuple(source.secrets.values()))
    plan = _plan(source, client, extent, extent_crs, gsd_m, crs, progress)
    store = BlockStore(output, _job(source, plan, block_size))
    if store.resumed:
        progress.info(f"Resuming: {store.resumed} of {plan.grid.block_count(block_size)} blocks were already done.")
    fetcher = TileFetcher(client, lambda c, r: fill_secrets(plan.service.tile_url(plan.level, c, r), source.secrets),
                          lambda c, r: redact(plan.service.tile_url(plan.level, c, r), source.secrets.values()),
                          (plan.level.tile_height, plan.level.tile_width), max_concurrency,
                          keep=_tiles_to_keep(plan, block_size), progress=progress)
    try:
        valid = _mosaic_into(output, plan, store, fetcher, block_size, _metadata(source, plan), progress)
    finally:
        fetcher.close()
    store.remove()
    if valid == 0:
        progress.warning("The service has no imagery over the extent: the output is all nodata.")
    return _summary(output, plan, fetcher, store, block_size, valid)


def _warm_up_compiled_warp() -> None:
    """Import numba and load the compiled warp in a background thread (the first time in a
    process: ~1 s) while the service is opened and the first tiles are fetched."""
    if COMPILED_WARP and not _WARMED.is_set():
        _WARMED.set()
        threading.Thread(target=_warm_up, name="edifice-warp-warm-up", daemon=True).start()


def _warm_up() -> None:
    try:
        from . import _warp_compiled

        _warp_compiled.warm_up()
    except Exception:  # noqa: BLE001 - only a head start: the first block reports any real error
        pass


_WARMED = threading.Event()


def _keys_out_of_url(source: ImagerySource) -> ImagerySource:
    """``source`` with credentials written literally in its URL (``?apikey=...``) moved to secrets."""
    url, found = secrets_from_url(source.url)
    if not found:
        return source
    return replace(source, url=url, secrets={**found, **source.secrets})


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).netloc


def _response_cache(cache) -> ResponseCache | None:
    if cache is None or cache is False:
        return None
    folder = default_cache_dir() / "imagery" if cache is True else Path(cache)
    return ResponseCache(folder)


# -- planning -------------------------------------------------------------------------------
def _plan(source: ImagerySource, client, extent, extent_crs: str, gsd_m: float, crs: str | None,
          progress: Progress) -> _Plan:
    lon, lat = _centre_lonlat(extent, extent_crs)
    out_crs = _output_crs(crs, lon, lat)
    grid = output_grid(extent, extent_crs, out_crs, gsd_m, lat)
    service = _open_service(source, client, grid, gsd_m, lon, lat)
    index, level_gsd, too_coarse = choose_level(service.tms, gsd_m, lon, lat)
    level = service.tms.matrices[index]
    if too_coarse:
        progress.warning(f"The requested GSD of {gsd_m:g} m is finer than the service's deepest level: level "
                         f"{level.identifier} ({level_gsd:.3g} m per pixel here) was used and upsampled.")
    else:
        progress.info(f"Level {level.identifier} ({level_gsd:.3g} m per pixel here) is used for {gsd_m:g} m pixels.")
    resampling = Resampling.average if level_gsd < 0.75 * gsd_m else Resampling.bilinear
    return _Plan(grid, service, level, level_gsd, resampling, gsd_m)


def _centre_lonlat(extent, extent_crs: str) -> tuple[float, float]:
    xmin, ymin, xmax, ymax = _check_extent(extent)
    try:
        to_ll = transformer(extent_crs, "EPSG:4326")
    except Exception as exc:  # noqa: BLE001 - pyproj's CRSError
        raise InputError("EXTENT", f"its CRS '{extent_crs}' is not known ({exc}).", "give e.g. EPSG:4326.") from exc
    lon, lat = to_ll.transform((xmin + xmax) / 2, (ymin + ymax) / 2)
    if not (math.isfinite(lon) and math.isfinite(lat) and abs(lat) < 85.06):
        raise InputError("EXTENT", f"its centre ({lon}, {lat}) is outside the area that web imagery covers.",
                         "check the extent and its CRS.")
    return lon, lat


def _check_extent(extent) -> tuple[float, float, float, float]:
    if extent is None or len(extent) != 4:
        raise InputError("EXTENT", "give four numbers xmin, ymin, xmax, ymax.")
    xmin, ymin, xmax, ymax = (float(v) for v in extent)
    if not (xmax > xmin and ymax > ymin):
        raise InputError("EXTENT", f"is empty ({xmin}, {ymin}, {xmax}, {ymax}).", "give xmax > xmin and ymax > ymin.")
    return xmin, ymin, xmax, ymax


def utm_crs(lon: float, lat: float) -> str:
    """The WGS84 UTM zone of (lon, lat) degrees, as 'EPSG:326zz' (north) or 'EPSG:327zz' (south)."""
    zone = min(int((lon + 180) // 6) + 1, 60)
    return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"


def _output_crs(crs: str | None, lon: float, lat: float) -> str:
    text = crs or utm_crs(lon, lat)
    try:
        return _pyproj_crs(text).to_wkt()
    except Exception as exc:  # noqa: BLE001 - pyproj's CRSError
        raise InputError("CRS", f"'{text}' is not a known CRS ({exc}).", "give e.g. EPSG:32636.") from exc


def output_grid(extent, extent_crs: str, out_crs: str, gsd_m: float, lat: float) -> Grid:
    """The output grid: ``extent`` transformed to ``out_crs``, pixels of ``gsd_m`` metres (for a
    geographic CRS, the equivalent in degrees at latitude ``lat``), corners on multiples of the pixel."""
    bounds = transform_bounds(_pyproj_crs(extent_crs), _pyproj_crs(out_crs), *extent, densify_pts=21)
    c = _pyproj_crs(out_crs)
    if c.is_geographic:
        size = gsd_m / (111320.0 * max(math.cos(math.radians(lat)), 1e-6))
    else:
        size = gsd_m / (c.axis_info[0].unit_conversion_factor or 1.0)
    xmin, ymax = math.floor(bounds[0] / size) * size, math.ceil(bounds[3] / size) * size
    return Grid.from_extent(xmin, bounds[1], bounds[2], ymax, size, out_crs)


def _open_service(source: ImagerySource, client, grid: Grid, gsd_m: float, lon: float, lat: float) -> TileService:
    if source.kind == "xyz":
        return XyzService(source)
    if source.kind == "wmts":
        resp = client.get(fill_secrets(source.url, source.secrets), accept=("text/xml", "application/xml",
                                                                              "application/vnd.ogc.wms_xml"))
        return WmtsService(source, resp.content)
    if _pyproj_crs(source.crs) == _pyproj_crs(grid.crs):
        res = grid.res[0]  # requests on the output grid itself: no resampling
    else:  # twice as fine as asked, then averaged: one resampling at the same resolution would blur
        res = wms_resolution(source.crs, gsd_m, lon, lat) / 2
    bounds = transform_bounds(_pyproj_crs(grid.crs), _pyproj_crs(source.crs), *grid.bounds,
                              densify_pts=21)
    return WmsService(source, res, bounds)


def _job(source: ImagerySource, plan: _Plan, block_size: int) -> dict:
    """What identifies a download for resuming (no secrets: the URL keeps its placeholders)."""
    g = plan.grid
    return {"version": 1, "kind": source.kind, "url": source.public_url(), "layer": source.layer,
            "style": source.style, "format": source.image_format, "tms": plan.service.tms.identifier,
            "level": plan.level.identifier, "crs_sha1": hashlib.sha1(g.crs.encode()).hexdigest(),
            "transform": list(g.transform)[:6], "width": g.width, "height": g.height, "block_size": block_size,
            "resampling": plan.resampling.name}


def _tiles_to_keep(plan: _Plan, block_size: int) -> int:
    """Decoded tiles kept in memory besides those of the blocks being mosaicked: three rows of a
    strip's tiles (see :func:`block_order`), so that the tiles on the edge between two rows of
    blocks are fetched once, and at least one block's worth; bounded whatever the extent."""
    tile_m = plan.level.tile_width * plan.level_gsd_m
    per_block = (block_size * plan.gsd_m / tile_m + 2) ** 2
    strip_row = min(STRIP_WIDTH, plan.grid.width) * plan.gsd_m / tile_m + 3
    return int(min(max(3 * strip_row, per_block, 16), 1024))


def block_order(grid: Grid, block_size: int) -> list[Block]:
    """The blocks of ``grid`` in the order they are mosaicked and written: vertical strips of
    :data:`STRIP_WIDTH` pixels, left to right, each row by row. A tile shared by two rows of
    blocks is then needed again soon after its first use, whatever the width of the extent."""
    per_strip = max(1, STRIP_WIDTH // block_size) * block_size
    return sorted(grid.blocks(block_size), key=lambda b: (int(b.window.col_off) // per_strip,
                                                          int(b.window.row_off), int(b.window.col_off)))


# -- mosaicking -----------------------------------------------------------------------------
def _mosaic_into(output, plan: _Plan, store: BlockStore, fetcher: TileFetcher, block_size: int, tags: dict,
                 progress: Progress) -> float:
    """Mosaic every unfinished block (each kept in ``store`` when done, for a resume) and write the
    blocks into the GeoTIFF ``output`` in order, each as soon as it and those before it are done,
    so that compressing overlaps fetching and warping; the file appears only when complete. No
    overviews: GDAL's overview builder holds rows of the whole width (memory would grow with the
    extent) and the mosaic is model input; ``gdaladdo`` adds them when wanted. Returns the
    fraction of valid pixels."""
    finished = _mosaic_blocks(plan, store, fetcher, block_size, progress)  # fetching starts now
    with rasterio.Env(GDAL_CACHEMAX=ASSEMBLY_CACHE_BYTES), \
            atomic_raster(output, plan.grid, 3, np.uint8, nodata=0, descriptions=BANDS, overviews=False,
                          num_threads=COMPRESSION_THREADS, **OUTPUT_COMPRESSION) as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
        dst.update_tags(**tags)
        writer = _OrderedWriter(dst, plan.grid, store, block_size)
        with _BackgroundWriter(writer) as background:
            for index, data in finished:
                background.finished(index, data)
        progress.set_fraction(1.0)
        return writer.valid / (plan.grid.width * plan.grid.height)


class _BackgroundWriter:
    """Runs an :class:`_OrderedWriter` in a thread of its own, so that the thread that hands blocks
    over (and with them submits the next blocks and requests their tiles, see :func:`_mosaic_blocks`)
    never waits on GDAL's writes: a write waits while GDAL's compression threads are busy, and
    meanwhile no block was submitted and no tile requested (the main thread spent 55-65 % of a
    1500 m download there, and the cores idled). The data of at most :data:`HELD_BLOCKS` blocks
    waits in the queue; beyond that the writer reads the block back from the store. A context
    manager: on a normal exit every block is written; on an error or cancel the thread stops
    (before the GeoTIFF is closed) and the error is raised; an error of the writer is raised here."""

    def __init__(self, writer: _OrderedWriter):
        self._writer = writer
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._queued_data = 0
        self._abort = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="edifice-imagery-writer", daemon=True)

    def __enter__(self) -> _BackgroundWriter:
        self._thread.start()
        return self

    def finished(self, index: int, data: np.ndarray | None) -> None:
        """Block ``index`` is in the store; ``data``: its pixels (dropped when the queue holds enough)."""
        self._raise_error()
        with self._lock:
            if data is not None and self._queued_data >= HELD_BLOCKS:
                data = None
            self._queued_data += data is not None
        self._queue.put((index, data))

    def __exit__(self, kind, exc, tb) -> None:
        self._abort = kind is not None
        self._queue.put(None)  # the last item: write what is left, then stop
        self._thread.join()
        if kind is None:
            self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            index, data = item if item is not None else (None, None)
            with self._lock:
                self._queued_data -= data is not None
            if self._error is None and not self._abort:
                try:
                    self._writer.finished(index, data)
                except BaseException as exc:  # noqa: BLE001 - raised in the thread that hands blocks over
                    self._error = exc
            if item is None:
                return


class _OrderedWriter:
    """Writes the blocks of ``grid`` into ``dst`` in :func:`block_order`, from ``store``, as they
    are finished (in any order): the GeoTIFF's bytes do not depend on the order of completion.
    The data of up to :data:`HELD_BLOCKS` blocks finished ahead of their turn is held in memory
    (no read back from the store); beyond that, and for blocks of an earlier run, the store's copy."""

    def __init__(self, dst, grid: Grid, store: BlockStore, block_size: int):
        self._dst, self._store = dst, store
        self._blocks = block_order(grid, block_size)
        self._next = 0
        self._done: set[int] = set()
        self._held: dict[int, np.ndarray] = {}
        self.valid = 0

    def finished(self, index: int | None, data: np.ndarray | None = None) -> None:
        """Block ``index`` is in the store (None: only those finished before this run, at the
        start and at the end), ``data`` its pixels if at hand; write every block that can now
        be written in order."""
        if index is not None:
            self._done.add(index)
            turn = self._next < len(self._blocks) and self._blocks[self._next].index == index
            if data is not None and (turn or len(self._held) < HELD_BLOCKS):
                self._held[index] = data
        while self._next < len(self._blocks):
            block = self._blocks[self._next]
            if block.index not in self._done and not self._store.is_done(block.index):
                return
            data = self._held.pop(block.index, None)
            if data is None:
                data = self._store.get(block.index, (3, int(block.window.height), int(block.window.width)))
            self._dst.write(data, window=block.window)
            self.valid += int(np.count_nonzero(data[0]))
            self._done.discard(block.index)
            self._next += 1


def _mosaic_blocks(plan: _Plan, store: BlockStore, fetcher: TileFetcher, block_size: int,
                   progress: Progress) -> Iterator[tuple[int, np.ndarray]]:
    """Mosaic every unfinished block into ``store``, :data:`BLOCK_WORKERS` blocks at a time (warps
    run in parallel: GDAL and the compiled kernel release the GIL). Each block is prepared here,
    in this thread (its tiles requested, its coarse grid of source coordinates computed: see
    :func:`_prepare`): the first :data:`PREFETCH_BLOCKS` now, in block order, and one more
    each time a block is submitted. Returns an iterator of (index, pixels) of each block once stored."""
    blocks = [b for b in block_order(plan.grid, block_size) if not store.is_done(b.index)]
    prepared: dict[int, _Prepared] = {}  # block -> its tiles (reserved) and coordinate grid
    edges = _StripEdges(plan, block_size, fetcher, store)

    def prepare(i: int) -> None:
        prepared[i] = _prepare(plan, blocks[i])
        fetcher.reserve(prepared[i].tiles)
        edges.prepared(blocks[i], prepared[i])

    for i in range(min(PREFETCH_BLOCKS, len(blocks))):
        prepare(i)

    def submitted() -> Iterator[int]:
        """Blocks as they are submitted (in this thread): each prepares the block that starts
        when one of those running ends, so a block's tiles are reserved before it runs."""
        for i in range(len(blocks)):
            if i + PREFETCH_BLOCKS < len(blocks):
                prepare(i + PREFETCH_BLOCKS)
            yield i

    def mosaic(i: int) -> np.ndarray:
        work = prepared.pop(i)
        rgb = _warp_block(plan, blocks[i], fetcher.get(work.tiles, reserved=True), work.coordinates, work.bounds)
        store.put(blocks[i].index, rgb)
        return rgb

    # queued: a worker that ends a block starts the next at once, not when this thread gets to it
    runs = run_bounded(mosaic, submitted(), BLOCK_WORKERS, progress, queued=BLOCK_WORKERS)
    return _report_blocks(runs, blocks, plan.grid.block_count(block_size), progress)


class _StripEdges:
    """Holds the tiles on the edge between two strips of blocks (:func:`block_order`) from the last
    block of a row in one strip (whose tiles are then reserved once more) to the first block of
    that row in the next strip (which releases them once it has reserved them itself), within
    :data:`CARRIED_TILE_BYTES`: without it they were fetched and decoded twice (439 requests for
    420 tiles at 1500 m), since a strip's rows of tiles are long gone when the next strip starts."""

    def __init__(self, plan: _Plan, block_size: int, fetcher: TileFetcher, store: BlockStore):
        self._plan, self._fetcher, self._store, self._block_size = plan, fetcher, store, block_size
        self._strip = max(1, STRIP_WIDTH // block_size) * block_size
        self._held: dict[int, list[tuple[int, int]]] = {}  # next strip's block -> tiles held for it
        self._room = CARRIED_TILE_BYTES // (4 * plan.level.tile_width * plan.level.tile_height)

    def prepared(self, block: Block, work: _Prepared) -> None:
        """``block``'s tiles are reserved (``work``): release those held for it; hold those
        that the block beside it in the next strip needs too."""
        held = self._held.pop(block.index, None)
        if held is not None:
            self._fetcher.release(held)
            self._room += len(held)
        right = self._beside(block)
        if right is None or self._store.is_done(right.index):
            return
        shared = sorted(set(work.tiles) & set(_tiles_in(self._plan, _block_bounds_in_tms(self._plan, right))))
        if shared and len(shared) <= self._room:
            self._fetcher.reserve(shared)
            self._held[right.index] = shared
            self._room -= len(shared)

    def _beside(self, block: Block) -> Block | None:
        """The first block of ``block``'s row in the next strip when ``block`` ends its strip's
        row, else None (blocks are numbered row by row: :meth:`.Grid.blocks`)."""
        col = int(block.window.col_off + block.window.width)
        if col % self._strip or col >= self._plan.grid.width:
            return None
        window = Window(col, block.window.row_off, min(self._block_size, self._plan.grid.width - col),
                        block.window.height)
        return Block(window, window, block.index + 1)


@dataclass(frozen=True)
class _Prepared:
    """What a block needs, computed ahead: its tiles and, where the compiled warp may apply,
    the coarse grid of its output pixels' coordinates in the tile set's CRS
    (:func:`._warp_grid.source_coordinate_grid`)."""

    tiles: list[tuple[int, int]]
    coordinates: tuple | None
    bounds: tuple[float, float, float, float]


def _prepare(plan: _Plan, block: Block) -> _Prepared:
    """The tiles and coordinate grid of ``block``. PROJ work is done here, in the long-lived
    submitting thread, not in the block workers: pyproj makes its transformer again in each new
    thread (~4 ms of PROJ database look-ups per worker and download)."""
    coordinates = None
    if COMPILED_WARP and plan.resampling == Resampling.bilinear:
        coordinates = source_coordinate_grid(plan.grid.window_transform(block.window), plan.grid.crs,
                                             plan.service.tms.crs,
                                             (int(block.window.height), int(block.window.width)))
    bounds = _block_bounds_in_tms(plan, block)
    return _Prepared(_tiles_in(plan, bounds), coordinates, bounds)


def _report_blocks(runs, blocks: list[Block], total: int, progress: Progress) -> Iterator[tuple[int, np.ndarray]]:
    for done, (i, rgb) in enumerate(runs, start=total - len(blocks) + 1):
        progress.set_fraction(done / total)
        yield blocks[i].index, rgb


def _block_bounds_in_tms(plan: _Plan, block: Block) -> tuple[float, float, float, float]:
    """Bounds of ``block`` in the tile set's CRS, grown by two source pixels for the resampling kernel."""
    b = transformer(plan.grid.crs, plan.service.tms.crs).transform_bounds(*_window_bounds(plan.grid, block),
                                                                          densify_pts=21)
    m = 2 * plan.level.resolution
    return b[0] - m, b[1] - m, b[2] + m, b[3] + m


@functools.lru_cache(maxsize=16)
def _pyproj_crs(text: str) -> CRS:
    """pyproj's CRS of ``text``, parsed once (a WKT costs milliseconds to read)."""
    return CRS.from_user_input(text)


@functools.lru_cache(maxsize=16)
def _crs(text: str) -> rasterio.crs.CRS:
    """rasterio's CRS of ``text``, parsed once (a WKT costs milliseconds to read)."""
    return rasterio.crs.CRS.from_user_input(text)


def _window_bounds(grid: Grid, block: Block) -> tuple[float, float, float, float]:
    t = grid.window_transform(block.window)
    x0, y0 = t.c, t.f
    return x0, y0 + t.e * block.window.height, x0 + t.a * block.window.width, y0


def _tiles_in(plan: _Plan, bounds: tuple[float, float, float, float]) -> list[tuple[int, int]]:
    """The tiles that overlap ``bounds`` (tile set's CRS)."""
    col0, row0, col1, row1 = plan.level.tile_range(bounds)
    return [(c, r) for r in range(row0, row1) for c in range(col0, col1)]


def _warp_block(plan: _Plan, block: Block, tiles: dict, coordinates: tuple | None = None,
                bounds: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """(3, rows, cols) uint8 RGB of ``block`` from its decoded ``tiles``; 0 where there is no imagery.
    ``coordinates``, ``bounds``: the block's coarse coordinate grid and its bounds in the tile set's
    CRS (:func:`_prepare`), computed here if None."""
    h, w = int(block.window.height), int(block.window.width)
    present = {k: t for k, t in tiles.items() if t is not None}
    if not present:
        return np.zeros((3, h, w), np.uint8)
    bounds = bounds or _block_bounds_in_tms(plan, block)
    src, src_transform = _tile_mosaic(plan.level, present, bounds)
    dst_transform = plan.grid.window_transform(block.window)
    offset = _pixel_offset(plan, src_transform, dst_transform)
    if offset is not None:  # the output grid is the tiles' own: no resampling at all
        return _rgb_where_valid(_cut(src, offset, h, w), premultiplied=False)
    rgb = _compiled_bilinear(plan, src, src_transform, dst_transform, (h, w), coordinates)
    if rgb is not None:
        return rgb
    everywhere = len(present) == len(tiles) and _covers(src_transform, src.shape, bounds)
    return _gdal_warp(plan, src, src_transform, dst_transform, (h, w), everywhere)


def _compiled_bilinear(plan: _Plan, src: np.ndarray, src_transform: Affine, dst_transform: Affine,
                       shape: tuple[int, int], coordinates: tuple | None = None) -> np.ndarray | None:
    """``src`` (RGBA) warped by the compiled bilinear kernel of :mod:`._warp_compiled` (2.5x
    cheaper than GDAL's warp of premultiplied bands, within 1 DN of it), or None where that
    kernel does not apply: numba missing, resampling not bilinear, alpha other than 0/255,
    output pixels over ~5 % larger than the source's (GDAL's wider kernel is used then)."""
    if not (COMPILED_WARP and plan.resampling == Resampling.bilinear and _binary_alpha(src[3])):
        return None
    from . import _warp_compiled  # numba is imported here, on first use (it takes a while)

    if not _warp_compiled.AVAILABLE:
        return None
    if coordinates is None:
        coordinates = source_coordinate_grid(dst_transform, plan.grid.crs, plan.service.tms.crs, shape)
    rows, cols, x, y = coordinates
    sx, sy = source_pixels(src_transform, x, y)
    if not _warp_compiled.four_sample_bilinear_applies(sx, sy, rows, cols):
        return None
    return _warp_compiled.warp_binary_alpha(src, rows, cols, sx, sy, shape)


def _binary_alpha(alpha: np.ndarray) -> bool:
    """Whether every value of the uint8 ``alpha`` is 0 or 255 (1..254 wrap to 0..253 below)."""
    return not bool(((alpha - np.uint8(1)) < 254).any())


def _gdal_warp(plan: _Plan, src: np.ndarray, src_transform: Affine, dst_transform: Affine,
               shape: tuple[int, int], everywhere: bool) -> np.ndarray:
    """``src`` (RGBA) warped by GDAL (``rasterio.warp.reproject``) with the plan's resampling.
    ``everywhere``: every tile is present and ``src`` covers the block (then opaque sources skip
    the alpha bookkeeping)."""
    h, w = shape
    warp = dict(src_transform=src_transform, src_crs=_crs(plan.service.tms.crs), dst_crs=_crs(plan.grid.crs),
                dst_transform=dst_transform, resampling=plan.resampling)
    if everywhere and src[3].all():  # imagery everywhere: no alpha bookkeeping (a quarter less work)
        rgb = np.zeros((3, h, w), np.uint8)
        reproject(src[:3], rgb, **warp)
        return np.maximum(rgb, 1, out=rgb)
    out = np.zeros((4, h, w), np.uint8)
    # bilinear: GDAL's fast kernel on premultiplied colours; average, nearest (as fast) and partial
    # alpha (GDAL composites those): GDAL's alpha kernel
    premultiplied = plan.resampling == Resampling.bilinear and _premultiply_binary_alpha(src)
    if premultiplied:
        reproject(src, out, **warp)
    else:
        reproject(src, out, src_alpha=4, dst_alpha=4, **warp)
    return _rgb_where_valid(out, premultiplied)


def _pixel_offset(plan: _Plan, src: Affine, dst: Affine) -> tuple[int, int] | None:
    """(row, col) of the output block's top-left pixel in the tile mosaic when the output grid is
    the tile grid itself (same CRS, same pixel size, whole-pixel offset), else None."""
    if plan.grid.crs != plan.service.tms.crs and _crs(plan.grid.crs) != _crs(plan.service.tms.crs):
        return None
    col, row = (dst.c - src.c) / src.a, (dst.f - src.f) / src.e
    same_size = math.isclose(dst.a, src.a, rel_tol=1e-9) and math.isclose(dst.e, src.e, rel_tol=1e-9)
    if not (same_size and dst.b == src.b == dst.d == src.d == 0 and abs(col - round(col)) < 1e-6
            and abs(row - round(row)) < 1e-6):
        return None
    return round(row), round(col)


def _cut(src: np.ndarray, offset: tuple[int, int], h: int, w: int) -> np.ndarray:
    """The (bands, h, w) window of ``src`` at ``offset`` (row, col); 0 where it leaves ``src``."""
    out = np.zeros((src.shape[0], h, w), src.dtype)
    r, c = offset
    r0, c0, r1, c1 = max(r, 0), max(c, 0), min(r + h, src.shape[1]), min(c + w, src.shape[2])
    if r1 > r0 and c1 > c0:
        out[:, r0 - r:r1 - r, c0 - c:c1 - c] = src[:, r0:r1, c0:c1]
    return out


def _premultiply_binary_alpha(rgba: np.ndarray) -> bool:
    """Set to 0, in place, the colours of the pixels of ``rgba`` (4, rows, cols) uint8 whose alpha
    is 0, when every alpha is 0 or 255 (True); leave it unchanged otherwise (False).

    The four bands can then be warped as plain bands (GDAL's fast kernel) instead of with
    ``src_alpha`` (its general kernel, 2.4x slower): bilinear gives sum(w * a * v) and sum(w * a)
    for alpha a in {0, 1}, whose ratio, taken by :func:`_rgb_where_valid`, is the alpha-weighted
    colour that GDAL's alpha warp computes. Against that warp (Kampala tiles, and the synthetic
    images of the tests): colours within 2 DN (double rounding where alpha < 255), and the valid
    mask (alpha >= 128) differs on < 0.1 % of the pixels, all on edges of holes."""
    rows, cols = np.nonzero(rgba[3] != 255)
    if rows.size and rgba[3, rows, cols].any():
        return False
    rgba[:3, rows, cols] = 0
    return True


def _rgb_where_valid(rgba: np.ndarray, premultiplied: bool) -> np.ndarray:
    """(3, rows, cols) RGB of a warped ``rgba`` where its alpha is >= 128 (stored >= 1, 0 being
    nodata), 0 elsewhere; ``premultiplied`` colours are divided by alpha first."""
    rgb, alpha = rgba[:3], rgba[3]
    rows, cols = np.nonzero((alpha >= 128) & (alpha < 255)) if premultiplied else ((), ())
    if len(rows):
        a = alpha[rows, cols].astype(np.uint32)
        rgb[:, rows, cols] = np.minimum((rgb[:, rows, cols].astype(np.uint32) * 255 + a // 2) // a, 255)
    valid = alpha >= 128
    np.maximum(rgb, 1, out=rgb, where=valid)
    rgb *= valid
    return rgb


def _covers(transform, shape: tuple[int, ...], bounds: tuple[float, float, float, float]) -> bool:
    """Whether an array of ``shape`` (bands, rows, cols) on ``transform`` covers ``bounds``."""
    x0, y1 = transform.c, transform.f
    x1, y0 = x0 + transform.a * shape[2], y1 + transform.e * shape[1]
    return x0 <= bounds[0] and y0 <= bounds[1] and x1 >= bounds[2] and y1 >= bounds[3]


def _tile_mosaic(level: TileMatrix, tiles: dict,
                 bounds: tuple[float, float, float, float]) -> tuple[np.ndarray, Affine]:
    """The parts of the tiles within ``bounds`` (tile set's CRS) pasted into one (4, rows, cols)
    RGBA array, and its transform: only what the block reads is copied (a 512-pixel block
    overlaps 3 x 3 tiles of 256, 2.2x the pixels it needs)."""
    (row0, row1), (col0, col1) = _level_window(level, tiles, bounds)
    th, tw = level.tile_height, level.tile_width
    mosaic = np.zeros((4, max(row1 - row0, 0), max(col1 - col0, 0)), np.uint8)
    for (c, r), tile in tiles.items():
        top, left = r * th, c * tw  # the tile's first pixel in the level
        r0, r1, c0, c1 = max(row0, top), min(row1, top + th), max(col0, left), min(col1, left + tw)
        if r1 > r0 and c1 > c0:
            mosaic[:, r0 - row0:r1 - row0, c0 - col0:c1 - col0] = tile[:, r0 - top:r1 - top, c0 - left:c1 - left]
    x0, y1 = level.top_left
    return mosaic, Affine(level.resolution, 0, x0 + col0 * level.resolution, 0, -level.resolution,
                          y1 - row0 * level.resolution)


def _level_window(level: TileMatrix, tiles: dict, bounds) -> tuple[tuple[int, int], tuple[int, int]]:
    """((row0, row1), (col0, col1)), end-exclusive, in pixels of the whole level, of ``bounds``
    within the span of ``tiles``."""
    x0, y1 = level.top_left
    res, th, tw = level.resolution, level.tile_height, level.tile_width
    cols, rows = [k[0] for k in tiles], [k[1] for k in tiles]
    col0 = max(math.floor((bounds[0] - x0) / res), min(cols) * tw)
    col1 = min(math.ceil((bounds[2] - x0) / res), (max(cols) + 1) * tw)
    row0 = max(math.floor((y1 - bounds[3]) / res), min(rows) * th)
    row1 = min(math.ceil((y1 - bounds[1]) / res), (max(rows) + 1) * th)
    return (row0, row1), (col0, col1)


# -- output ---------------------------------------------------------------------------------
def _metadata(source: ImagerySource, plan: _Plan) -> dict:
    """GeoTIFF metadata: where the imagery comes from (URL template with placeholders, never keys)."""
    url = redact(source.public_url(), source.secrets.values())
    tags = {"EDIFICE_SOURCE_TYPE": source.kind, "EDIFICE_SOURCE_URL": url,
            "EDIFICE_LEVEL": plan.level.identifier, "EDIFICE_LEVEL_GSD_M": f"{plan.level_gsd_m:.4f}",
            "EDIFICE_RESAMPLING": plan.resampling.name}
    if source.layer:
        tags["EDIFICE_SOURCE_LAYER"] = source.layer
    if plan.service.attribution:
        tags["EDIFICE_ATTRIBUTION"] = plan.service.attribution
        tags["TIFFTAG_COPYRIGHT"] = plan.service.attribution
    return tags


def _summary(output, plan: _Plan, fetcher: TileFetcher, store: BlockStore, block_size: int, valid: float) -> dict:
    g = plan.grid
    return {"output": str(output), "crs": _pyproj_crs(g.crs).to_string(), "width": g.width,
            "height": g.height, "pixel_size": g.res[0], "level": plan.level.identifier,
            "level_gsd_m": round(plan.level_gsd_m, 4), "tiles_requested": fetcher.requested,
            "tiles_missing": fetcher.missing, "blocks": g.block_count(block_size), "blocks_resumed": store.resumed,
            "valid_fraction": round(valid, 6)}
