"""Annual Sentinel-1/2 and DEM composites on SHAFTS's grids, shared by the Earth Engine and STAC sources.

What the height tool (``edifice:heightfootprint``) reads, and so what every source writes
(``shared/docs/shafts-compat.md``): three GeoTIFFs on EPSG:4326,

- S-1: band 1 ``VV_p50``, band 2 ``VH_p50`` (annual median backscatter, dB), float32, 10 m,
- S-2: ``B4_p50``, ``B3_p50``, ``B2_p50``, ``B8_p50`` (R, G, B, NIR annual median reflectance x 1e4), float32, 10 m,
- DEM: ``elevation`` (metres), int16, 30 m,

where "10 m" is Earth Engine's 10 m in EPSG:4326: 10 / (2 pi 6378137 / 360) degrees. Grids are snapped
to multiples of the pixel size (as an Earth Engine export with ``crs`` + ``scale`` is) and cover the
extent plus the padding the height model of the chosen resolution needs.

A source only has to fetch one chunk (a window of the grid) as a (bands, rows, cols) array;
:func:`download_composite` plans the chunks, fetches several at a time, halves a chunk the service
refuses as too large, keeps finished chunks on disk (so a cancelled or killed run resumes where it
stopped) and mosaics them block by block into a tiled, compressed GeoTIFF written under a temporary
name and moved into place only when complete.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from ..errors import EdificeError, InputError
from ..grid import Grid
from ..progress import Progress, ensure
from ..outputs import check_output_folder, refuse_input_as_output
from ..raster_io import GDAL_CACHE_BYTES, atomic_raster

#: Degrees per metre at the equator of the WGS 84 sphere Earth Engine uses for ``scale`` in EPSG:4326.
DEG_PER_M = 360.0 / (2 * math.pi * 6378137.0)

#: Value a source returns for pixels with no data (masked in Earth Engine, no valid scene in STAC).
NODATA_SENTINEL = -32768

#: Target model resolutions (m) of the height tool, and the patch size (px) each one cuts.
PATCH_SIZE = {100: 20, 250: 40, 500: 80, 1000: 160}
#: Resolution (degrees) of each target model's output grid (shafts-compat.md, inference step 7).
TARGET_RES_DEG = {100: 0.0009, 250: 0.00225, 500: 0.0045, 1000: 0.009}
#: The height tool's default padding (degrees) around the extent.
DEFAULT_PADDING_DEG = 0.03


@dataclass(frozen=True)
class Product:
    """One composite: its key, pixel size (m), band descriptions (in the height tool's order), the
    output dtype and nodata."""

    key: str
    pixel_m: float
    bands: tuple[str, ...]
    dtype: str
    nodata: float

    @property
    def pixel_deg(self) -> float:
        return self.pixel_m * DEG_PER_M

    @property
    def bytes_per_pixel(self) -> int:
        """Bytes of one pixel over all bands as a source sends it (float32 or int16 values)."""
        return len(self.bands) * np.dtype(self.dtype).itemsize


S1 = Product("S1", 10.0, ("VV_p50", "VH_p50"), "float32", float("nan"))
S2 = Product("S2", 10.0, ("B4_p50", "B3_p50", "B2_p50", "B8_p50"), "float32", float("nan"))
DEM = Product("DEM", 30.0, ("elevation",), "int16", NODATA_SENTINEL)
PRODUCTS = {p.key: p for p in (S1, S2, DEM)}


def required_padding(resolution_m: int) -> float:
    """Padding (degrees) around the extent that the height model of ``resolution_m`` needs: the
    height tool's default, or more where a DEM patch (``patch`` DEM pixels) plus one output pixel
    (the output grid extends past the extent) is wider."""
    if resolution_m not in PATCH_SIZE:
        raise InputError("RESOLUTION", f"{resolution_m} m is not a SHAFTS model resolution.",
                         f"use one of {', '.join(map(str, PATCH_SIZE))}.")
    need = PATCH_SIZE[resolution_m] * DEM.pixel_deg + TARGET_RES_DEG[resolution_m]
    return max(DEFAULT_PADDING_DEG, math.ceil(need * 1000) / 1000)


def check_extent(extent: tuple[float, float, float, float]) -> None:
    """Refuse an extent that is not (xmin, ymin, xmax, ymax) in degrees of longitude/latitude."""
    xmin, ymin, xmax, ymax = extent
    if not (xmax > xmin and ymax > ymin):
        raise InputError("EXTENT", f"is empty ({xmin}, {ymin}, {xmax}, {ymax}).",
                         "give xmin < xmax and ymin < ymax in degrees (EPSG:4326).")
    if xmin < -180 or xmax > 180 or ymin < -90 or ymax > 90:
        raise InputError("EXTENT", f"({xmin}, {ymin}, {xmax}, {ymax}) is not in degrees of longitude/latitude.",
                         "give the extent in EPSG:4326 (QGIS reprojects a map extent for you).")


def composite_grid(extent: tuple[float, float, float, float], product: Product, padding: float) -> Grid:
    """EPSG:4326 grid of ``product`` covering ``extent`` (degrees) plus ``padding`` (degrees) on each
    side, its edges snapped outwards to multiples of the product's pixel size."""
    check_extent(extent)
    px = product.pixel_deg
    xmin, ymin, xmax, ymax = extent
    c0 = math.floor(round((xmin - padding) / px, 6))
    c1 = math.ceil(round((xmax + padding) / px, 6))
    r0 = math.floor(round((ymin - padding) / px, 6))
    r1 = math.ceil(round((ymax + padding) / px, 6))
    return Grid(Affine(px, 0.0, c0 * px, 0.0, -px, r1 * px), c1 - c0, r1 - r0, CRS.from_epsg(4326).to_wkt())


class RequestTooLarge(EdificeError):
    """The service refused a chunk as too large; the chunk is split and fetched in parts."""


#: fetch(product, grid, window) -> (bands, rows, cols) array of the window, NODATA_SENTINEL where empty
Fetcher = Callable[[Product, Grid, Window], np.ndarray]


def chunk_side(product: Product, max_request_bytes: int, tile: int = 256) -> int:
    """Side (px) of the square chunks to request first: the largest multiple of ``tile`` whose
    uncompressed size stays within ``max_request_bytes`` (at least ``tile``)."""
    side = int(math.sqrt(max_request_bytes / product.bytes_per_pixel))
    return max(tile, side // tile * tile)


def split_window(w: Window, tile: int = 256) -> list[Window]:
    """Halve a window along its longer side(s), cutting at a multiple of ``tile`` where the side is
    longer than ``tile`` (so the parts stay tile-aligned in the output). A 1 x 1 window cannot be split."""
    def cuts(off: int, size: int) -> list[tuple[int, int]]:
        if size <= 1:
            return [(off, size)]
        half = size // 2
        if size > tile:
            half = max(tile, (half + tile // 2) // tile * tile)
        return [(off, half), (off + half, size - half)]
    c, r, w_, h = int(w.col_off), int(w.row_off), int(w.width), int(w.height)
    parts = [Window(cc, rr, ww, hh) for rr, hh in cuts(r, h) for cc, ww in cuts(c, w_)]
    if len(parts) == 1:
        raise RequestTooLarge(f"a single pixel is refused as too large ({w}).")
    return parts


def _key(w: Window) -> str:
    return f"r{int(w.row_off)}_c{int(w.col_off)}_{int(w.height)}x{int(w.width)}"


class ChunkStore:
    """Finished chunks of one composite on disk: ``<key>.npy`` files (each written under a temporary
    name, then moved) and ``manifest.jsonl``, an append-only log of finished and split windows; a
    truncated last line (a kill while writing) is ignored. ``spec`` identifies the request: a folder
    made for another request (other source, year, extent or grid) is cleared rather than reused."""

    def __init__(self, folder: str | os.PathLike, spec: dict):
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self.spec_hash = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        spec_file = self.folder / "spec.json"
        if self.folder.exists() and self._read_spec_hash(spec_file) != self.spec_hash:
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if not spec_file.exists():
            spec_file.write_text(json.dumps({"sha256": self.spec_hash, "spec": spec}, sort_keys=True))
        self.done: set[str] = set()
        self.split: set[str] = set()
        self._load()

    @staticmethod
    def _read_spec_hash(spec_file: Path) -> str | None:
        try:
            return json.loads(spec_file.read_text())["sha256"]
        except (OSError, ValueError, KeyError):
            return None

    def _load(self) -> None:
        log = self.folder / "manifest.jsonl"
        if not log.exists():
            return
        for line in log.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue               # a line cut short by a kill
            if entry.get("done") and (self.folder / f"{entry['done']}.npy").exists():
                self.done.add(entry["done"])
            elif entry.get("split"):
                self.split.add(entry["split"])

    def _log(self, entry: dict) -> None:
        with self._lock, open(self.folder / "manifest.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def save(self, window: Window, data: np.ndarray) -> None:
        key = _key(window)
        tmp = self.folder / f".{key}.{threading.get_ident()}.partial.npy"
        np.save(tmp, data)
        os.replace(tmp, self.folder / f"{key}.npy")
        self._log({"done": key})
        with self._lock:
            self.done.add(key)

    def mark_split(self, window: Window) -> None:
        self._log({"split": _key(window)})
        with self._lock:
            self.split.add(_key(window))

    def load(self, window: Window) -> np.ndarray:
        return np.load(self.folder / f"{_key(window)}.npy")

    def leaves(self, windows: Iterable[Window]) -> list[Window]:
        """The windows that hold data for ``windows``: each one, or the parts it was split into."""
        out = []
        for w in windows:
            out.extend(self.leaves(split_window(w)) if _key(w) in self.split else [w])
        return out

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class DownloadOptions:
    """How chunks are fetched: ``workers`` requests at a time, first chunks of at most
    ``max_request_bytes`` (uncompressed), finished chunks kept in ``chunk_dir`` (default: a hidden
    folder next to the output) and removed after a complete mosaic unless ``keep_chunks``."""

    workers: int = 4
    max_request_bytes: int = 32 * 2**20
    chunk_dir: str | os.PathLike | None = None
    keep_chunks: bool = False


def chunk_folder(output: str | os.PathLike, options: DownloadOptions) -> Path:
    out = Path(output)
    base = Path(options.chunk_dir) if options.chunk_dir else out.parent
    return base / f".{out.stem}.chunks"


def download_composite(fetch: Fetcher, product: Product, grid: Grid, output: str | os.PathLike,
                       spec: dict, options: DownloadOptions | None = None,
                       progress: Progress | None = None, chunk_shape: tuple[int, int] | None = None) -> dict:
    """Fetch ``product`` on ``grid`` chunk by chunk with ``fetch`` and write it to ``output`` (tiled,
    compressed GeoTIFF, band descriptions set, nodata set). ``spec`` (JSON-able) names the request;
    chunks finished by an earlier run with the same ``spec`` and output are not fetched again.
    ``chunk_shape``: (rows, cols) of the chunks; default squares of ``options.max_request_bytes``."""
    options = options or DownloadOptions()
    progress = ensure(progress)
    store = ChunkStore(chunk_folder(output, options), {"spec": spec, "grid": list(grid.transform)[:6],
                                                      "size": [grid.width, grid.height], "product": product.key})
    rows, cols = chunk_shape or (chunk_side(product, options.max_request_bytes),) * 2
    planned = list(b.window for b in grid.blocks(rows, block_cols=cols))
    resumed = len(store.done)
    requests = _fetch_all(fetch, product, grid, store, planned, options.workers, progress.span(0.0, 0.9))
    leaves = sorted(store.leaves(planned), key=lambda w: (int(w.row_off), int(w.col_off)))
    mosaic_chunks(store, product, grid, leaves, output, progress.span(0.9, 1.0))
    if not options.keep_chunks:
        store.remove()
    return {"path": str(output), "chunks": len(leaves), "chunks_resumed": resumed, "requests": requests,
            "width": grid.width, "height": grid.height}


def _fetch_all(fetch: Fetcher, product: Product, grid: Grid, store: ChunkStore, planned: list[Window],
               workers: int, progress: Progress) -> int:
    """Fetch every window of ``planned`` not yet in ``store``, ``workers`` at a time, splitting the ones
    refused as too large; returns the number of requests made."""
    total = grid.width * grid.height
    todo = [w for w in store.leaves(planned) if _key(w) not in store.done]
    done_px = total - sum(int(w.width * w.height) for w in todo)
    requests = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending = {}
        try:
            while todo or pending:
                while todo and len(pending) < max(1, workers):
                    w = todo.pop(0)
                    pending[pool.submit(fetch, product, grid, w)] = w
                    requests += 1
                finished, _ = wait(list(pending), timeout=0.2, return_when=FIRST_COMPLETED)
                progress.check_cancelled()
                for fut in finished:
                    w = pending.pop(fut)
                    done_px += _finish_chunk(fut, w, product, store, todo, progress)
                progress.set_fraction(done_px / total)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
    return requests


def _finish_chunk(fut, window: Window, product: Product, store: ChunkStore, todo: list[Window],
                  progress: Progress) -> int:
    """Store a fetched chunk (returns its pixel count) or queue its parts when it was too large."""
    try:
        data = fut.result()
    except RequestTooLarge:
        parts = split_window(window)
        store.mark_split(window)
        progress.info(f"{product.key}: chunk of {int(window.width)} x {int(window.height)} px refused as too "
                      f"large; fetching it in {len(parts)} parts.")
        todo[:0] = parts
        return 0
    expected = (len(product.bands), int(window.height), int(window.width))
    if data.shape != expected:
        raise EdificeError(f"{product.key}: the service sent a chunk of shape {data.shape}, expected {expected}.")
    store.save(window, data)
    return int(window.width * window.height)


def to_output_values(data: np.ndarray, product: Product) -> np.ndarray:
    """A chunk as the output stores it: the no-data sentinel becomes the product's nodata."""
    empty = data == NODATA_SENTINEL
    out = data.astype(product.dtype)
    out[empty] = product.nodata
    return out


def mosaic_chunks(store: ChunkStore, product: Product, grid: Grid, windows: list[Window],
                  output: str | os.PathLike, progress: Progress | None = None) -> None:
    """Write the stored chunks of ``windows`` into ``output`` one at a time (memory: one chunk)."""
    progress = ensure(progress)
    largest = max(int(w.width * w.height) for w in windows) * len(product.bands) * np.dtype(product.dtype).itemsize
    # chunks are tile-aligned, so GDAL's cache need only hold the tiles of about two chunks
    cache = int(min(GDAL_CACHE_BYTES, max(8 * 2**20, 2 * largest)))
    with rasterio.Env(GDAL_CACHEMAX=cache), atomic_raster(output, grid, len(product.bands), product.dtype,
                                                          nodata=product.nodata, descriptions=product.bands,
                                                          name=f"OUTPUT_{product.key}") as dst:
        for i, w in enumerate(windows):
            progress.check_cancelled()
            dst.write(to_output_values(store.load(w), product), window=w)
            progress.set_fraction((i + 1) / len(windows))


def make_composites(source, extent: tuple[float, float, float, float], outputs: dict[str, str],
                    resolution_m: int = 100, padding: float | None = None,
                    options: DownloadOptions | None = None, progress: Progress | None = None) -> dict:
    """Write the composites named in ``outputs`` (``{"S1": path, "S2": path, "DEM": path}``, any subset)
    for ``extent`` (xmin, ymin, xmax, ymax in degrees, EPSG:4326) from ``source`` (an object with
    ``fetch`` (a :data:`Fetcher`), ``spec()`` and ``name``). ``padding`` (degrees) defaults to what
    the height model of ``resolution_m`` needs (:func:`required_padding`)."""
    progress = ensure(progress)
    unknown = sorted(set(outputs) - set(PRODUCTS))
    if unknown or not outputs:
        raise InputError("OUTPUTS", f"unknown composites {unknown}." if unknown else "no composite requested.",
                         f"ask for some of {', '.join(PRODUCTS)}.")
    pad = required_padding(resolution_m) if padding is None else float(padding)
    if not pad >= 0:
        raise InputError("PADDING", f"must be >= 0 degrees, got {pad}.")
    check_extent(extent)
    options = options or DownloadOptions()
    if hasattr(source, "plan_workers"):          # a source that parallelises within a chunk
        options = replace(options, workers=source.plan_workers(options.workers))
    result = {"source": source.name, "padding_deg": pad, "extent": list(extent)}
    keys = [k for k in PRODUCTS if k in outputs]
    grids = {k: composite_grid(extent, PRODUCTS[k], pad) for k in keys}
    refuse_input_as_output({f"OUTPUT_{k}": outputs[k] for k in keys}, {})
    for k in keys:   # the chunks are kept uncompressed until the mosaic: room for them and the output
        check_output_folder(f"OUTPUT_{k}", outputs[k], 2 * grids[k].width * grids[k].height
                            * PRODUCTS[k].bytes_per_pixel)
    for i, key in enumerate(keys):
        product, grid = PRODUCTS[key], grids[key]
        if hasattr(source, "prepare"):      # e.g. a catalogue search: fails early, before any chunk is kept
            source.prepare(product, grid)
        progress.info(f"{key}: {grid.width} x {grid.height} px of {product.pixel_m:g} m from {source.name}")
        spec = {**source.spec(), "extent": list(extent), "padding": pad}
        shape = source.chunk_shape(product, grid) if hasattr(source, "chunk_shape") else None
        try:
            result[key] = download_composite(source.fetch, product, grid, outputs[key], spec, options,
                                             progress.span(i / len(keys), (i + 1) / len(keys)), shape)
        finally:
            if hasattr(source, "release"):      # e.g. rasters kept open between chunks
                source.release()
    return result


#: Names of the composite sources (``open_source``).
SOURCES = ("earthengine", "stac")


def open_source(name: str, year: int, *, key: str | None = None, project: str | None = None,
                url: str | None = None, max_retries: int = 5, catalogue: str = "earth-search",
                token_url: str | None = None, progress: Progress | None = None):
    """The composite source ``name`` for ``year``: "earthengine" (``key``: service-account key JSON or
    file path, None for stored credentials; ``project``: Earth Engine project; ``url``: endpoint) or
    "stac" (``catalogue``: a preset of ``stac.PRESETS``; ``url``: another STAC API with the preset's
    layout; ``token_url``: its SAS token endpoint, if it signs asset URLs)."""
    if not 2015 <= int(year) <= 2100:
        raise InputError("YEAR", f"{year} is outside the Sentinel era.", "give a year from 2015 (Sentinel-1/2).")
    if name == "earthengine":
        from .earthengine import EarthEngineSource
        return EarthEngineSource(year, key=key, project=project, url=url, max_retries=max_retries, progress=progress)
    if name == "stac":
        from .stac import StacSource
        return StacSource(year, catalogue, url=url, token_url=token_url, progress=progress)
    raise InputError("SOURCE", f"'{name}' is not a composite source.", f"use one of {', '.join(SOURCES)}.")
