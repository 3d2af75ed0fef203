"""Imagery services as tile pyramids: an XYZ/TMS template, a WMTS layer, or a WMS layer
(cut into virtual tiles of a fixed grid so that it is fetched, cached and resumed like tiles).

Keys and tokens live only in :attr:`ImagerySource.secrets`; URLs carry ``{name}``
placeholders for them, which are filled at request time and never written anywhere.
"""
from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pyproj import CRS

from ..errors import EdificeError, InputError
from .http import SECRET_PARAM_NAMES
from .tiles import TileMatrix, TileMatrixSet, ground_metres_per_unit, quadkey, web_mercator_set
from .wmts import WmtsLayer, parse_capabilities

KINDS = ("xyz", "wmts", "wms")
XYZ_FIELDS = {"z", "x", "y", "-y", "q"}
#: Pixels on a side of the virtual tiles of a WMS.
WMS_TILE = 512


@dataclass(frozen=True)
class ImagerySource:
    """An imagery service. ``kind``: 'xyz' (``url`` a template with {z} {x} {y} or {-y} for TMS,
    or {q} for a quadkey), 'wmts' (``url`` the GetCapabilities URL) or 'wms' (``url`` the service
    URL; ``crs`` the CRS requested, ``version`` 1.1.1 or 1.3.0). ``secrets`` maps placeholder
    names in ``url`` (e.g. ``{key}``) to their values; they never appear in outputs or messages."""

    kind: str
    url: str
    layer: str | None = None
    style: str = ""
    image_format: str = "image/png"
    tile_matrix_set: str | None = None
    crs: str = "EPSG:3857"
    version: str = "1.3.0"
    min_zoom: int = 0
    max_zoom: int = 19
    tile_size: int = 256
    attribution: str = ""
    secrets: Mapping[str, str] = field(default_factory=dict)

    def public_url(self) -> str:
        """The URL with placeholders in place of secrets: safe to log and to write into metadata."""
        return self.url


def secrets_from_url(url: str) -> tuple[str, dict[str, str]]:
    """Move credential-like query values of ``url`` (``apikey=...``, ``access_token=...``, see
    :data:`~edifice.core.acquire.http.SECRET_PARAM_NAMES`) into placeholders: returns
    (url with ``{name}`` placeholders, secrets)."""
    parts = urlsplit(url)
    secrets: dict[str, str] = {}
    query = []
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k.lower() in SECRET_PARAM_NAMES and v and not re.fullmatch(r"\{[^}]*\}", v):
            name = re.sub(r"\W", "_", k.lower())
            secrets[name] = v
            v = "{" + name + "}"
        query.append((k, v))
    if not secrets:
        return url, {}
    text = urlencode(query, safe="{}/:,")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, text, parts.fragment)), secrets


def with_secret_param(url: str, param: str) -> str:
    """``url`` with the query parameter ``param={param}`` added (a placeholder for its secret)."""
    sep = "&" if urlsplit(url).query else ("" if url.endswith("?") else "?")
    return f"{url}{sep}{param}={{{param}}}"


def fill_secrets(url: str, secrets: Mapping[str, str]) -> str:
    """``url`` with each ``{name}`` of ``secrets`` replaced by its value."""
    for name, value in secrets.items():
        url = url.replace("{" + name + "}", value)
    return url


def check_source(source: ImagerySource) -> None:
    """Raise :class:`InputError` for a source that cannot work (kind, URL, placeholders, secrets)."""
    if source.kind not in KINDS:
        raise InputError("SOURCE_TYPE", f"'{source.kind}' is not a known service type.",
                         f"use one of {', '.join(KINDS)}.")
    if not re.match(r"^https?://", source.url or ""):
        raise InputError("URL", f"'{source.public_url()}' is not an http(s) URL.",
                         "give the service's http(s) address.")
    names = {f for _, f, _, _ in string.Formatter().parse(source.url) if f is not None}
    missing = sorted(n for n in names - set(source.secrets) - XYZ_FIELDS if n)
    if missing:
        raise InputError("URL", f"the URL has placeholders with no value: {', '.join('{' + n + '}' for n in missing)}.",
                         "give the key (QGIS: an authentication configuration; CLI: --key-env or --key-file).")
    empty = sorted(n for n, v in source.secrets.items() if not v)
    if empty:
        raise InputError("KEY", f"the credential for {{{empty[0]}}} is empty.", "check the environment variable, file "
                         "or authentication configuration that holds it.")
    if source.kind == "xyz" and not ({"x", "q"} & names and ({"y", "-y", "q"} & names)):
        raise InputError("URL", "an XYZ template needs {z}, {x} and {y} (or {-y} for TMS, or {q}).",
                         "write e.g. https://tiles.example.org/{z}/{x}/{y}.png")


class TileService:
    """A source seen as a pyramid of tiles: ``tms`` and the URL (placeholders unfilled) of each tile."""

    tms: TileMatrixSet
    attribution: str = ""

    def tile_url(self, level: TileMatrix, col: int, row: int) -> str:
        raise NotImplementedError


class XyzService(TileService):
    def __init__(self, source: ImagerySource):
        self.source = source
        self.tms = web_mercator_set(source.min_zoom, source.max_zoom, source.tile_size)
        self.attribution = source.attribution

    def tile_url(self, level: TileMatrix, col: int, row: int) -> str:
        z = int(level.identifier)
        values = {"z": z, "x": col, "y": row, "-y": level.matrix_height - 1 - row, "q": quadkey(col, row, z)}
        return re.sub(r"\{(-?[a-z])\}", lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0),
                      self.source.url)


class WmtsService(TileService):
    """A WMTS layer, from its capabilities document (fetched once by the caller)."""

    def __init__(self, source: ImagerySource, capabilities: bytes):
        self.source = source
        self.layer: WmtsLayer = parse_capabilities(capabilities, source.layer, source.tile_matrix_set)
        self.tms = self.layer.tms
        self.attribution = source.attribution or self.layer.attribution
        self.style = source.style or self.layer.styles[0]
        if self.layer.formats and source.image_format not in self.layer.formats:
            self.format = next((f for f in self.layer.formats if f.startswith("image/")), self.layer.formats[0])
        else:
            self.format = source.image_format
        if self.layer.kvp_url is None and self.layer.rest_template is None:
            raise EdificeError(f"WMTS layer '{self.layer.identifier}' offers neither KVP GetTile nor a tile "
                               "ResourceURL.")

    def tile_url(self, level: TileMatrix, col: int, row: int) -> str:
        if self.layer.kvp_url is None:
            values = {"TileMatrixSet": self.tms.identifier, "TileMatrix": level.identifier, "TileRow": str(row),
                      "TileCol": str(col), "Style": self.style}
            return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), self.layer.rest_template)
        params = {"SERVICE": "WMTS", "REQUEST": "GetTile", "VERSION": "1.0.0", "LAYER": self.layer.identifier,
                  "STYLE": self.style, "FORMAT": self.format, "TILEMATRIXSET": self.tms.identifier,
                  "TILEMATRIX": level.identifier, "TILEROW": row, "TILECOL": col}
        return _add_query(self._base(), params)

    def _base(self) -> str:
        """The GetTile base URL, keeping the placeholders of the source URL's query (its keys)."""
        kvp = self.layer.kvp_url
        secret_query = [(k, v) for k, v in parse_qsl(urlsplit(self.source.url).query) if "{" in v]
        have = {k for k, _ in parse_qsl(urlsplit(kvp).query)}
        extra = [(k, v) for k, v in secret_query if k not in have]
        return _add_query(kvp, dict(extra)) if extra else kvp


class WmsService(TileService):
    """A WMS layer requested as virtual tiles of :data:`WMS_TILE` pixels on a grid of pixel size
    ``resolution`` (the service CRS's units) anchored at multiples of the tile span."""

    def __init__(self, source: ImagerySource, resolution: float, bounds: tuple[float, float, float, float]):
        if not source.layer:
            raise InputError("LAYER", "a WMS source needs a layer name.", "give the layer (LAYERS=...) to request.")
        if source.version not in ("1.1.1", "1.3.0"):
            raise InputError("WMS_VERSION", f"'{source.version}' is not supported.", "use 1.1.1 or 1.3.0.")
        self.source = source
        self.attribution = source.attribution
        span = WMS_TILE * resolution
        x0, y0 = math.floor(bounds[0] / span) * span, math.ceil(bounds[3] / span) * span
        cols = max(int(math.ceil((bounds[2] - x0) / span)), 1)
        rows = max(int(math.ceil((y0 - bounds[1]) / span)), 1)
        level = TileMatrix(f"{resolution:.12g}", resolution, (x0, y0), WMS_TILE, WMS_TILE, cols, rows)
        self.tms = TileMatrixSet(source.crs, (level,), "wms")
        self._swap = source.version == "1.3.0" and _northing_first(source.crs)

    def tile_url(self, level: TileMatrix, col: int, row: int) -> str:
        xmin, ymin, xmax, ymax = level.tile_bounds(col, row)
        bbox = (ymin, xmin, ymax, xmax) if self._swap else (xmin, ymin, xmax, ymax)
        crs_key = "CRS" if self.source.version == "1.3.0" else "SRS"
        params = {"SERVICE": "WMS", "REQUEST": "GetMap", "VERSION": self.source.version, "LAYERS": self.source.layer,
                  "STYLES": self.source.style, crs_key: self.source.crs, "BBOX": ",".join(f"{v:.10g}" for v in bbox),
                  "WIDTH": level.tile_width, "HEIGHT": level.tile_height, "FORMAT": self.source.image_format}
        if self.source.image_format == "image/png":
            params["TRANSPARENT"] = "TRUE"
        return _add_query(self.source.url, params)


def wms_resolution(crs: str, gsd_m: float, lon: float, lat: float) -> float:
    """Pixel size in ``crs`` units that is ``gsd_m`` metres on the ground at (lon, lat)."""
    return gsd_m / ground_metres_per_unit(crs, lon, lat)


def _northing_first(crs: str) -> bool:
    c = CRS.from_user_input(crs)
    return bool(c.axis_info) and c.axis_info[0].direction.lower() in ("north", "south")


def _add_query(url: str, params: Mapping[str, object]) -> str:
    """``url`` with ``params`` appended to its query (existing ones kept; placeholders not escaped)."""
    parts = urlsplit(url)
    query = urlencode([(k, str(v)) for k, v in params.items()], safe="{}/:,")
    joined = f"{parts.query}&{query}" if parts.query else query
    return urlunsplit((parts.scheme, parts.netloc, parts.path, joined, parts.fragment))
