"""Fetching and decoding tiles concurrently (a bounded thread pool over one thread-safe
HTTP client; decoding in a second pool, so that a connection does not wait for a decode
before its next request), with a bounded in-memory store of decoded tiles so that blocks
that share tiles do not fetch them twice."""
from __future__ import annotations

import concurrent.futures as cf
import os
import threading
import warnings
from collections import Counter, OrderedDict
from typing import Callable

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import MemoryFile

from ..errors import EdificeError
from ..progress import Progress
from .http import HttpError

#: HTTP statuses that mean "no imagery here" (the tile becomes nodata).
NO_DATA_STATUS = (204, 404)
IMAGE_TYPES = ("image/",)

# a tile image has no georeferencing, by nature (catch_warnings is not thread-safe: filter once)
warnings.filterwarnings("ignore", "Dataset has no geotransform", NotGeoreferencedWarning)

#: (col, row) of a tile in its level.
TileKey = tuple[int, int]
#: Threads that decode tiles (GDAL releases the GIL while it decodes).
DECODE_WORKERS = max(1, min(4, os.cpu_count() or 1))


def decode_image(content: bytes, expect: tuple[int, int], where: str) -> np.ndarray:
    """(4, rows, cols) uint8 RGBA of a PNG/JPEG/GIF/WebP/TIFF image; grey, grey+alpha and paletted
    images are expanded. Raises :class:`EdificeError` naming ``where`` for an unreadable image or
    one whose size is not ``expect`` (rows, cols)."""
    try:
        with MemoryFile(content) as mem, mem.open(driver=_driver_of(content)) as ds:
            data = ds.read()
            cmap = ds.colormap(1) if ds.count == 1 and _has_palette(ds) else None
    except RasterioError as exc:
        raise EdificeError(f"The imagery service answered {where} with data that is not a readable image "
                           f"({len(content)} bytes).") from exc
    if data.shape[1:] != tuple(expect):
        raise EdificeError(f"The imagery service answered {where} with an image of {data.shape[2]} x {data.shape[1]} "
                           f"pixels; {expect[1]} x {expect[0]} were asked for. Check the tile size, or the service.")
    if data.dtype != np.uint8:
        raise EdificeError(f"The imagery service answered {where} with {data.dtype} pixels; only 8-bit images "
                           "are supported.")
    return _to_rgba(data, cmap)


def _driver_of(content: bytes) -> str | None:
    """GDAL's driver for a PNG or JPEG image by its signature (spares GDAL probing every driver:
    ~0.1 ms a tile); None (GDAL probes) for anything else."""
    if content.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if content.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    return None


def _has_palette(ds) -> bool:
    try:
        ds.colormap(1)
        return True
    except ValueError:
        return False


def _to_rgba(data: np.ndarray, cmap: dict | None) -> np.ndarray:
    if cmap is not None:
        lut = np.zeros((256, 4), np.uint8)
        for k, v in cmap.items():
            lut[k] = (tuple(v) + (255,))[:4]
        return np.ascontiguousarray(np.moveaxis(lut[data[0]], -1, 0))
    opaque = np.full(data.shape[1:], 255, np.uint8)
    n = data.shape[0]
    if n == 1:
        return np.stack([data[0], data[0], data[0], opaque])
    if n == 2:
        return np.stack([data[0], data[0], data[0], data[1]])
    if n == 3:
        return np.concatenate([data, opaque[None]])
    return data[:4]


def _enter_gdal_environment() -> None:
    """Give this (decoding) thread a rasterio/GDAL environment for the rest of its life: without
    one, rasterio makes and tears down a default environment around every call (~0.25 ms a tile,
    mostly with the GIL held). rasterio's environments are thread-local; this one ends with the thread."""
    rasterio.Env(GDAL_PAM_ENABLED="NO").__enter__()


class TileFetcher:
    """Tiles of one level, fetched by ``max_concurrency`` threads with ``client`` (an ``HttpClient``)
    and decoded by :data:`DECODE_WORKERS` others. ``url_of(col, row)`` gives a tile's URL with secrets filled, ``label_of`` a
    redacted name for messages. Besides the tiles that callers of :meth:`get` are waiting for or
    using, at most ``keep`` recently used tiles stay in memory. Thread-safe."""

    def __init__(self, client, url_of: Callable[[int, int], str], label_of: Callable[[int, int], str],
                 tile_shape: tuple[int, int], max_concurrency: int, keep: int, progress: Progress):
        self._client, self._url_of, self._label_of = client, url_of, label_of
        self._shape = tile_shape
        self._pool = cf.ThreadPoolExecutor(max(1, int(max_concurrency)), thread_name_prefix="edifice-tiles")
        self._decoders = cf.ThreadPoolExecutor(DECODE_WORKERS, thread_name_prefix="edifice-decode",
                                               initializer=_enter_gdal_environment)
        self._futures: OrderedDict[TileKey, cf.Future] = OrderedDict()
        self._pins: Counter[TileKey] = Counter()
        self._keep = keep
        self._progress = progress
        self._lock = threading.Lock()
        self.requested = 0
        self.missing = 0

    def get(self, keys: list[TileKey], reserved: bool = False) -> dict[TileKey, np.ndarray | None]:
        """The decoded tiles of ``keys``, fetched if needed (waiting is cancellable). ``reserved``:
        they were reserved with :meth:`reserve`, and are released here."""
        with self._lock:
            futures = [self._submit(k) for k in keys]
            self._pins.update(keys)
        try:
            pending = set(futures)
            while pending:
                self._progress.check_cancelled()
                _, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_EXCEPTION)
                failed = next((f for f in futures if f.done() and f.exception() is not None), None)
                if failed is not None:
                    raise failed.exception()
            return {k: f.result() for k, f in zip(keys, futures)}
        finally:
            with self._lock:
                self._pins.subtract(keys)
                if reserved:
                    self._pins.subtract(keys)
                self._evict()

    def reserve(self, keys: list[TileKey]) -> None:
        """Start fetching ``keys`` now for a later :meth:`get` with ``reserved=True``, which
        releases them (until then they stay in memory)."""
        with self._lock:
            for key in keys:
                self._submit(key)
            self._pins.update(keys)

    def release(self, keys: list[TileKey]) -> None:
        """Release a :meth:`reserve` of ``keys`` without a :meth:`get` (tiles held for a later
        block that has reserved them itself by now)."""
        with self._lock:
            self._pins.subtract(keys)
            self._evict()

    def close(self) -> None:
        """Stop: pending fetches are dropped, running ones end on their own."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._decoders.shutdown(wait=False, cancel_futures=True)

    def _submit(self, key: TileKey) -> cf.Future:
        """The future of ``key`` (started now if new), marked most recently used. Lock held."""
        fut = self._futures.get(key)
        if fut is None:
            fut = self._futures[key] = cf.Future()
            self._pool.submit(self._fetch, key, fut)
            self.requested += 1
        else:
            self._futures.move_to_end(key)
        return fut

    def _evict(self) -> None:
        """Forget the least recently used finished tiles that no caller holds, beyond ``keep``
        such tiles (prefetched ones included). Lock held."""
        unpinned = [k for k in self._futures if self._pins[k] <= 0]
        excess = len(unpinned) - self._keep
        for key in unpinned:
            if excess <= 0:
                break
            if self._futures[key].done():
                del self._futures[key]
                del self._pins[key]
                excess -= 1

    def _fetch(self, key: TileKey, fut: cf.Future) -> None:
        """Download ``key`` and hand it to a decoder, which completes ``fut`` (here: an error, or
        None for a tile without imagery)."""
        try:
            content = self._download(key)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            fut.set_exception(exc)
            return
        if content is None:
            fut.set_result(None)
        else:
            self._decoders.submit(self._decode, key, content, fut)

    def _download(self, key: TileKey) -> bytes | None:
        """The image bytes of ``key``; None where the service has no imagery."""
        try:
            resp = self._client.get(self._url_of(*key), accept=IMAGE_TYPES)
        except HttpError as exc:
            if exc.status not in NO_DATA_STATUS:
                raise
            resp = None
        if resp is None or resp.status in NO_DATA_STATUS or not resp.content:
            with self._lock:
                self.missing += 1
            return None
        return resp.content

    def _decode(self, key: TileKey, content: bytes, fut: cf.Future) -> None:
        try:
            fut.set_result(decode_image(content, self._shape, f"tile {self._label_of(*key)}"))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            fut.set_exception(exc)
