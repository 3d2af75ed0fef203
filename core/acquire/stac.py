"""STAC source of the SHAFTS composites, for users without Earth Engine: items found with
``pystac-client``, Cloud-Optimized GeoTIFFs read over HTTP by GDAL (``/vsicurl/``, range requests: only
the blocks a chunk needs are fetched), the per-pixel annual median computed chunk by chunk.

- Sentinel-2 L2A: scenes of the year with ``eo:cloud_cover`` < 20 (SHAFTS's scene filter), each pixel
  kept only where the scene classification (SCL) says vegetation, bare soil, water, unclassified or snow
  (not no-data, saturated, dark, cloud shadow, cloud or cirrus); processing baseline >= 04.00 scenes are
  harmonised (the +1000 offset removed), as Earth Engine's ``S2_SR_HARMONIZED``; median of B4, B3, B2, B8.
- Sentinel-1: radiometrically terrain-corrected backscatter (``sentinel-1-rtc``, linear gamma0, IW, both
  VV and VH) converted to dB, then the median. (Earth Engine's S1_GRD is not terrain-flattened: values
  differ on slopes; SHAFTS models were trained on GRD.)
- DEM: Copernicus DEM GLO-30 (``cop-dem-glo-30``), first valid tile per pixel. (SHAFTS used SRTM; the
  Copernicus DEM is a surface model referenced to EGM2008: expect metres of difference in cities.)

The chunking, resume and mosaic are ``composites.download_composite``'s. One chunk is computed at a time:
the windows of every scene that covers it are read ``workers`` at a time into one preallocated
(rows, cols, scenes) float32 buffer per band, and the next band is read into a second buffer while the
median of the current one is computed (I/O overlapped with compute). Memory is therefore bounded by two
such buffers plus the SCL masks of the chunk, whatever the extent: chunks are strips of 512 rows whose
two buffers stay within :data:`BUFFER_BYTES` and a tenth of the whole stack
(:meth:`StacSource.chunk_shape`). A cancel is noticed before each scene read. Where a scene's grid
shares the output's CRS and its pixel edges fall between the output's pixel centres (Sentinel tiles on
their native grid), its window is read directly and indexed; otherwise it is warped (nearest
neighbour) onto the chunk.
"""
from __future__ import annotations

import contextlib
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from ..errors import EdificeError, InputError
from ..grid import Grid
from .composites import NODATA_SENTINEL, Product
from .http import HttpClient, redact

#: SCL classes kept: 4 vegetation, 5 not vegetated, 6 water, 7 unclassified, 11 snow/ice.
SCL_CLEAR = (4, 5, 6, 7, 11)
#: Scenes at or above this eo:cloud_cover (%) are left out (SHAFTS: 20).
CLOUD_THRESHOLD = 20
#: Digital-number offset of Sentinel-2 L2A from processing baseline 04.00 (25 January 2022).
S2_BOA_OFFSET = 1000

#: GDAL settings for reading COGs over HTTP: no directory listing, merged range requests, retries.
GDAL_HTTP_OPTIONS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "GDAL_HTTP_VERSION": "2",
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_TIMEOUT": "60",
    "CPL_VSIL_CURL_CACHE_SIZE": str(16 * 2**20),
    "GDAL_CACHEMAX": 16 * 2**20,      # each scene block is read once per chunk: a large cache buys nothing
}


#: Rows of a chunk (a multiple of the 256/512/1024 px tiles of Sentinel COGs).
CHUNK_ROWS = 512
#: Most bytes the two (rows, cols, scenes) float32 band buffers of a chunk may take.
BUFFER_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Collection:
    """A STAC collection and the asset keys of the bands a product needs, in the product's order."""

    id: str
    assets: tuple[str, ...]
    mask_asset: str | None = None


@dataclass(frozen=True)
class Catalogue:
    """A STAC API and where each product lives in it. ``missing`` says, per product the catalogue
    cannot serve, why and what to use instead. ``token_url``: a SAS token endpoint
    (``{collection}`` filled in) whose token is appended to asset URLs (Planetary Computer)."""

    name: str
    url: str
    collections: dict = field(default_factory=dict)
    missing: dict = field(default_factory=dict)
    token_url: str | None = None


PRESETS = {
    "earth-search": Catalogue(
        "Earth Search", "https://earth-search.aws.element84.com/v1",
        {"S2": Collection("sentinel-2-l2a", ("red", "green", "blue", "nir"), "scl"),
         "DEM": Collection("cop-dem-glo-30", ("data",))},
        {"S1": "Earth Search has no Sentinel-1 collection readable over HTTP (its sentinel-1-grd sits in a "
               "requester-pays bucket). Use the planetary-computer preset (sentinel-1-rtc) or Earth Engine."}),
    "planetary-computer": Catalogue(
        "Planetary Computer", "https://planetarycomputer.microsoft.com/api/stac/v1",
        {"S2": Collection("sentinel-2-l2a", ("B04", "B03", "B02", "B08"), "SCL"),
         "S1": Collection("sentinel-1-rtc", ("vv", "vh")),
         "DEM": Collection("cop-dem-glo-30", ("data",))},
        token_url="https://planetarycomputer.microsoft.com/api/sas/v1/token/{collection}"),
}


@dataclass
class Scene:
    """One item of a product: its bounding box (degrees), collection, band hrefs and mask href (as the
    catalogue gives them: signed when read), DN offset."""

    id: str
    bbox: tuple[float, float, float, float]
    collection: str
    hrefs: tuple[str, ...]
    mask_href: str | None
    offset: float = 0.0


class _Signer:
    """Appends a Planetary-Computer-style SAS token (one per collection, renewed before it expires)."""

    def __init__(self, token_url: str | None, http: HttpClient):
        self.token_url, self.http = token_url, http
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def token(self, collection: str) -> str | None:
        if not self.token_url:
            return None
        with self._lock:
            token, expires = self._tokens.get(collection, (None, 0.0))
            if token is None or time.monotonic() > expires:
                body = self.http.get(self.token_url.format(collection=collection), use_cache=False).json()
                token = body["token"]
                self._tokens[collection] = (token, time.monotonic() + 30 * 60)   # tokens live >= 45 min
                self.http.secrets = (*self.http.secrets, token)
            return token

    def sign(self, href: str, collection: str) -> str:
        token = self.token(collection)
        if not token:
            return href
        return href + ("&" if "?" in href else "?") + token


class StacSource:
    """Annual composites from a STAC API. ``catalogue``: a preset name (``earth-search``,
    ``planetary-computer``) or a :class:`Catalogue`; ``url`` replaces the preset's API (then asset URLs
    are signed only when ``token_url`` is given)."""

    name = "stac"

    def __init__(self, year: int, catalogue: str | Catalogue = "earth-search", url: str | None = None,
                 token_url: str | None = None, cloud_threshold: float = CLOUD_THRESHOLD, progress=None):
        if isinstance(catalogue, str):
            if catalogue not in PRESETS:
                raise InputError("CATALOGUE", f"'{catalogue}' is not a STAC preset.",
                                 f"use one of {', '.join(PRESETS)}.")
            catalogue = PRESETS[catalogue]
        self.catalogue = catalogue
        self.url = url or catalogue.url
        self.year = int(year)
        self.cloud_threshold = float(cloud_threshold)
        self.http = HttpClient(f"STAC {catalogue.name}", progress=progress)
        own = url in (None, catalogue.url)      # the preset's token endpoint signs only the preset's own API
        self.signer = _Signer(token_url or (catalogue.token_url if own else None), self.http)
        self._scenes: dict[str, list[Scene]] = {}
        self._lock = threading.Lock()
        self._client = None
        self.read_workers = 4
        self.rasters = OpenRasters()

    def chunk_shape(self, product: Product, grid: Grid) -> tuple[int, int]:
        """(rows, cols) of the chunks of ``product`` on ``grid``: strips of CHUNK_ROWS rows whose two band
        buffers (2 x rows x cols x scenes x 4 bytes) stay within BUFFER_BYTES and within a tenth of the
        whole stack (scenes x bands x grid pixels x 4 bytes; never below CHUNK_ROWS^2 px, which would
        read tiles several times), cut into equal widths (multiples of 256 px). Wide strips mean fewer,
        longer range requests per scene. With so many scenes that a CHUNK_ROWS^2 chunk exceeds
        BUFFER_BYTES, square chunks of a multiple of 256 px (at least 256) instead."""
        n = max(1, len(self.scenes(product, grid)))
        tenth = len(product.bands) * grid.width * grid.height // 20
        pixels = min(BUFFER_BYTES // (2 * n * 4), max(tenth, CHUNK_ROWS ** 2))
        if pixels >= CHUNK_ROWS ** 2:
            rows, widest = CHUNK_ROWS, pixels // CHUNK_ROWS
        else:
            rows = widest = max(256, math.isqrt(pixels) // 256 * 256)
        cols = math.ceil(grid.width / math.ceil(grid.width / widest))
        up = math.ceil(cols / 256) * 256
        cols = up if up <= widest else max(256, cols // 256 * 256)
        return rows, min(cols, grid.width)

    def plan_workers(self, workers: int) -> int:
        """Chunks to compute at a time when ``workers`` requests may run at once: one chunk, whose scene
        windows are read ``workers`` at a time (one chunk's buffers in memory, not ``workers``)."""
        self.read_workers = max(1, int(workers))
        return 1

    def spec(self) -> dict:
        return {"source": self.name, "url": self.url, "year": self.year, "cloud": self.cloud_threshold,
                "collections": {k: [c.id, *c.assets, c.mask_asset] for k, c in self.catalogue.collections.items()}}

    # -- search ---------------------------------------------------------------
    def collection(self, key: str) -> Collection:
        if key not in self.catalogue.collections:
            why = self.catalogue.missing.get(key, f"{self.catalogue.name} has no {key} collection configured.")
            raise InputError("SOURCE", why, "choose another catalogue or the Earth Engine source.")
        return self.catalogue.collections[key]

    def _open(self):
        if self._client is None:
            try:
                from pystac_client import Client
                from pystac_client.exceptions import APIError
            except ImportError as exc:
                raise EdificeError("The STAC source needs the pystac-client package (pip install pystac-client)."
                                   ) from exc
            try:
                self._client = Client.open(self.url, headers={"User-Agent": self.http.headers["User-Agent"]})
            except (APIError, OSError, ValueError) as exc:
                raise EdificeError(f"STAC API {self.url} could not be opened ({redact(str(exc))}).") from None
        return self._client

    def prepare(self, product: Product, grid: Grid) -> None:
        """Search the scenes of ``product`` before any chunk is fetched (errors come before any work)."""
        self.scenes(product, grid)

    def scenes(self, product: Product, grid: Grid) -> list[Scene]:
        """Items of ``product``'s collection over ``grid`` in the year (and under the cloud threshold for
        Sentinel-2), found once per product."""
        with self._lock:
            if product.key not in self._scenes:
                self._scenes[product.key] = self._search(product, grid)
            return self._scenes[product.key]

    def _search(self, product: Product, grid: Grid) -> list[Scene]:
        from pystac_client.exceptions import APIError

        col = self.collection(product.key)
        client = self._open()
        kw = {"collections": [col.id], "bbox": list(grid.bounds), "limit": 100}
        if product.key != "DEM":
            kw["datetime"] = f"{self.year}-01-01T00:00:00Z/{self.year}-12-31T23:59:59Z"
        if product.key == "S2":
            kw["query"] = {"eo:cloud_cover": {"lt": self.cloud_threshold}}
        try:
            items = list(client.search(**kw).items())
        except (APIError, OSError) as exc:
            raise EdificeError(f"STAC search of {col.id} at {self.url} failed ({redact(str(exc))}).") from None
        scenes = [s for s in (self._scene(it, col, product) for it in items) if s is not None]
        if not scenes:
            raise InputError("EXTENT", f"{self.catalogue.name} has no {col.id} item over the extent"
                                       f"{'' if product.key == 'DEM' else f' in {self.year}'}.",
                             "check the extent and year, or use the Earth Engine source.")
        return scenes

    def _scene(self, item, col: Collection, product: Product) -> Scene | None:
        p = item.properties
        if product.key == "S2" and float(p.get("eo:cloud_cover", 0.0)) >= self.cloud_threshold:
            return None
        if product.key == "S1" and (p.get("sar:instrument_mode", "IW") != "IW"
                                    or not {"VV", "VH"} <= set(p.get("sar:polarizations", ["VV", "VH"]))):
            return None
        missing = [a for a in (*col.assets, col.mask_asset) if a and a not in item.assets]
        if missing:
            raise InputError("SOURCE", f"item {item.id} of {col.id} has no asset(s) {missing}.",
                             "check the catalogue preset matches the API.")
        hrefs = tuple(item.assets[a].href for a in col.assets)
        mask = item.assets[col.mask_asset].href if col.mask_asset else None
        return Scene(item.id, tuple(item.bbox), col.id, hrefs, mask, _s2_offset(p) if product.key == "S2" else 0.0)

    # -- pixels ---------------------------------------------------------------
    def fetch(self, product: Product, grid: Grid, window: Window) -> np.ndarray:
        """The median (S-1, S-2) or mosaic (DEM) of ``window`` as (bands, rows, cols), sentinel where no
        scene has a valid pixel (``composites.Fetcher``)."""
        target = Grid(grid.window_transform(window), int(window.width), int(window.height), grid.crs)
        scenes = [s for s in self.scenes(product, grid) if _overlaps(s.bbox, target.bounds)]
        try:
            with rasterio.Env(**GDAL_HTTP_OPTIONS):
                if product.key == "DEM":
                    return self._first_valid(scenes, target)
                return self._medians(scenes, target, product)
        except RasterioError as exc:
            raise EdificeError(f"{product.key}: a scene could not be read ({self.http.redact(str(exc))}).") from None

    def _read(self, scene: Scene, href: str, target: Grid) -> np.ndarray:
        self.http.progress.check_cancelled()
        with rasterio.Env(**GDAL_HTTP_OPTIONS), self.rasters.use(self.signer.sign(href, scene.collection)) as src:
            return _read_on(src, target)

    def release(self) -> None:
        """Close the scenes kept open (after a composite)."""
        self.rasters.close()

    def _clear(self, scene: Scene, target: Grid) -> np.ndarray:
        return np.isin(self._read(scene, scene.mask_href, target), SCL_CLEAR)

    def _medians(self, scenes: list[Scene], target: Grid, product: Product) -> np.ndarray:
        """Per-pixel median of every band over ``scenes`` on ``target``: band b+1 is read (``read_workers``
        scene windows at a time) into one of two reused buffers while band b's median is computed."""
        out = np.empty((len(product.bands), target.height, target.width), np.float32)
        with ThreadPoolExecutor(max_workers=self.read_workers) as pool:
            clear = None
            if product.key == "S2":
                clear = list(pool.map(lambda s: self._clear(s, target), scenes))
            buffers = [np.empty((target.height, target.width, len(scenes)), np.float32) for _ in range(2)]
            reads = self._read_band(pool, scenes, 0, target, clear, product.key, buffers[0])
            for b in range(len(product.bands)):
                for fut in reads:
                    fut.result()
                if b + 1 < len(product.bands):
                    reads = self._read_band(pool, scenes, b + 1, target, clear, product.key, buffers[(b + 1) % 2])
                med = nanmedian_last_axis(buffers[b % 2])
                out[b] = np.where(np.isfinite(med), med, NODATA_SENTINEL)
        return out

    def _read_band(self, pool, scenes: list[Scene], band: int, target: Grid, clear: list[np.ndarray] | None,
                   key: str, buffer: np.ndarray) -> list:
        """Start reading band ``band`` of every scene into ``buffer[:, :, scene]``; returns the futures."""
        def fill(i: int) -> None:
            buffer[:, :, i] = self._band_values(scenes[i], band, target, None if clear is None else clear[i], key)
        return [pool.submit(fill, i) for i in range(len(scenes))]

    def _band_values(self, scene: Scene, band: int, target: Grid, clear: np.ndarray | None, key: str) -> np.ndarray:
        """Band ``band`` of ``scene`` on ``target``: S-1 in dB; S-2 harmonised and SCL-masked; NaN where empty."""
        v = self._read(scene, scene.hrefs[band], target)
        if key == "S1":
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(v > 0, 10.0 * np.log10(v), np.nan)
        return np.where(clear & (v > 0), v - scene.offset, np.nan)

    def _first_valid(self, scenes: list[Scene], target: Grid) -> np.ndarray:
        """DEM tiles mosaicked: each pixel from the first tile that has it, rounded to whole metres."""
        out = np.full(target.shape, np.nan)
        for s in scenes:
            empty = np.isnan(out)
            if not empty.any():
                break
            v = self._read(s, s.hrefs[0], target)
            out[empty] = v[empty]
        return np.where(np.isfinite(out), np.round(out), NODATA_SENTINEL).astype(np.int16)[None]


def _s2_offset(props: dict) -> float:
    """The DN offset to subtract from a Sentinel-2 L2A scene (harmonisation, as S2_SR_HARMONIZED)."""
    if props.get("earthsearch:boa_offset_applied"):
        return 0.0
    baseline = str(props.get("s2:processing_baseline", "00.00"))
    try:
        return float(S2_BOA_OFFSET) if float(baseline) >= 4.0 else 0.0
    except ValueError:
        return 0.0


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


class OpenRasters:
    """Rasters kept open between chunks (each scene's header is read once, not once per chunk: half the
    HTTP requests), at most one thread using a raster at a time. About 0.12 MiB per open raster."""

    def __init__(self):
        self._lock = threading.Lock()
        self._open: dict[str, list] = {}      # href -> [dataset or None, its lock]

    @contextlib.contextmanager
    def use(self, href: str):
        """The raster at ``href`` (an URL through /vsicurl/), held by this thread until the block ends."""
        with self._lock:
            entry = self._open.get(href)
            if entry is None:
                entry = self._open[href] = [None, threading.Lock()]
        with entry[1]:
            if entry[0] is None:
                entry[0] = rasterio.open(href if "://" not in href else "/vsicurl/" + href)
            yield entry[0]

    def close(self) -> None:
        with self._lock:
            entries, self._open = list(self._open.values()), {}
        for ds, _ in entries:
            if ds is not None:
                ds.close()


def _read_on(src, target: Grid, resampling=Resampling.nearest) -> np.ndarray:
    """Band 1 of the open raster ``src`` on ``target`` (nearest neighbour), as float64 with NaN where the
    raster has no data or does not reach. Only the blocks that ``target`` needs are read."""
    nodata = src.nodata
    if nodata is None:       # pixels beyond the raster need a value no real pixel has
        dt = np.dtype(src.dtypes[0])
        nodata = float("nan") if dt.kind == "f" else (np.iinfo(dt).min if dt.kind == "i" else np.iinfo(dt).max)
    if resampling == Resampling.nearest:
        index = _nearest_index(src, target)
        if index is not None:
            return _read_indexed(src, target, *index)
    with WarpedVRT(src, crs=target.crs, transform=target.transform, width=target.width,
                   height=target.height, resampling=resampling, src_nodata=nodata, nodata=nodata,
                   warp_mem_limit=16) as vrt:
        data = vrt.read(1, masked=True)
    return data.astype(np.float64).filled(np.nan)


def _nearest_index(src, target: Grid) -> tuple[np.ndarray, np.ndarray] | None:
    """(row of ``src`` for each row of ``target``, column for each column): the ``src`` pixel holding
    each target pixel centre, when both grids are north-up in the same CRS and no centre lies on a pixel
    edge of ``src`` (so nearest neighbour is that pixel without ambiguity); None otherwise."""
    st, tt = src.transform, target.transform
    if st.b or st.d or tt.b or tt.d or src.crs is None or target.crs is None:
        return None
    if src.crs != CRS.from_user_input(target.crs):
        return None
    cols = (tt.c + tt.a * (np.arange(target.width) + 0.5) - st.c) / st.a
    rows = (tt.f + tt.e * (np.arange(target.height) + 0.5) - st.f) / st.e
    for x in (cols, rows):
        frac = x - np.floor(x)
        if np.min(np.minimum(frac, 1.0 - frac)) < 1e-6:
            return None
    return np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)


def _read_indexed(src, target: Grid, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Band 1 of ``src`` at pixels ``rows`` x ``cols`` as float64, NaN for nodata and beyond the raster;
    only the window spanning those pixels is read."""
    out = np.full((target.height, target.width), np.nan)
    in_r = (rows >= 0) & (rows < src.height)
    in_c = (cols >= 0) & (cols < src.width)
    if not in_r.any() or not in_c.any():
        return out
    r0, c0 = int(rows[in_r].min()), int(cols[in_c].min())
    window = Window(c0, r0, int(cols[in_c].max()) + 1 - c0, int(rows[in_r].max()) + 1 - r0)
    data = src.read(1, window=window, masked=True).astype(np.float64).filled(np.nan)
    out[np.ix_(in_r, in_c)] = data[np.ix_(rows[in_r] - r0, cols[in_c] - c0)]
    return out


def nanmedian_last_axis(stack: np.ndarray) -> np.ndarray:
    """``np.nanmedian(stack, axis=-1)`` (NaN where a pixel has no value), by one sort along the last
    axis (NaNs sort last; short contiguous lanes sort fast) and the middle one or two valid values: the
    same numbers, without numpy's slow path for NaN-holding stacks. Sorts ``stack`` in place."""
    if stack.shape[-1] == 0:
        return np.full(stack.shape[:-1], np.nan, dtype=stack.dtype)
    stack.sort(axis=-1)
    n = np.count_nonzero(~np.isnan(stack), axis=-1)
    lo = np.take_along_axis(stack, np.maximum((n - 1) // 2, 0)[..., None], axis=-1)[..., 0]
    hi = np.take_along_axis(stack, np.maximum(n // 2 - (n == 0), 0)[..., None], axis=-1)[..., 0]
    with np.errstate(invalid="ignore"):
        med = (lo + hi) / stack.dtype.type(2)
    med[n == 0] = np.nan
    return med
