"""Reading an OGC WMTS 1.0.0 GetCapabilities document: one layer's tile matrix set,
its formats and styles, and how tiles are requested (KVP GetTile or a RESTful template)."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from pyproj import CRS

from ..errors import EdificeError, InputError
from .tiles import OGC_PIXEL_M, TileMatrix, TileMatrixSet

NS = {"wmts": "http://www.opengis.net/wmts/1.0", "ows": "http://www.opengis.net/ows/1.1"}


@dataclass(frozen=True)
class WmtsLayer:
    """What a download needs of one WMTS layer. ``kvp_url`` is the GetTile base URL (or None),
    ``rest_template`` a ResourceURL template with {TileMatrix}/{TileRow}/{TileCol} (or None)."""

    identifier: str
    tms: TileMatrixSet
    formats: tuple[str, ...]
    styles: tuple[str, ...]
    kvp_url: str | None
    rest_template: str | None
    attribution: str = ""


def parse_capabilities(xml: bytes, layer: str | None, tile_matrix_set: str | None = None) -> WmtsLayer:
    """The layer ``layer`` (the only one when None) of a capabilities document and the tile
    matrix set ``tile_matrix_set`` (else the first linked one whose CRS is EPSG:3857, else the first)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise EdificeError(f"The WMTS capabilities document is not valid XML ({exc}).") from exc
    lyr = _find_layer(root, layer)
    ident = _text(lyr, "ows:Identifier")
    links = [_text(link, "wmts:TileMatrixSet") for link in lyr.findall("wmts:TileMatrixSetLink", NS)]
    sets = {_text(s, "ows:Identifier"): s for s in root.findall("wmts:Contents/wmts:TileMatrixSet", NS)}
    tms = _tile_matrix_set(sets, links, tile_matrix_set, ident)
    formats = tuple(f.text.strip() for f in lyr.findall("wmts:Format", NS) if f.text)
    styles = tuple(_text(s, "ows:Identifier") for s in lyr.findall("wmts:Style", NS))
    rest = next((r.get("template") for r in lyr.findall("wmts:ResourceURL", NS) if r.get("resourceType") == "tile"),
                None)
    return WmtsLayer(ident, tms, formats, styles or ("default",), _kvp_get_tile_url(root), rest,
                     _attribution(root))


def _find_layer(root, layer: str | None):
    layers = root.findall("wmts:Contents/wmts:Layer", NS)
    names = [_text(x, "ows:Identifier") for x in layers]
    if not layers:
        raise EdificeError("The WMTS capabilities document lists no layer.")
    if layer is None:
        if len(layers) > 1:
            raise InputError("LAYER", f"the WMTS service has {len(layers)} layers.",
                             f"name one of: {', '.join(names)}.")
        return layers[0]
    if layer not in names:
        raise InputError("LAYER", f"'{layer}' is not a layer of the WMTS service.", f"use one of: {', '.join(names)}.")
    return layers[names.index(layer)]


def _tile_matrix_set(sets: dict, links: list[str], wanted: str | None, layer: str) -> TileMatrixSet:
    if wanted is not None:
        if wanted not in links or wanted not in sets:
            raise InputError("TILE_MATRIX_SET", f"'{wanted}' is not a tile matrix set of layer '{layer}'.",
                             f"use one of: {', '.join(links)}.")
        return _read_set(sets[wanted])
    usable = [_read_set(sets[n]) for n in links if n in sets]
    if not usable:
        raise EdificeError(f"WMTS layer '{layer}' links no tile matrix set that the document defines.")
    mercator = [s for s in usable if _is_epsg(s.crs, 3857)]
    return (mercator or usable)[0]


def _read_set(elem) -> TileMatrixSet:
    crs_text = _text(elem, "ows:SupportedCRS")
    crs = _crs_from_urn(crs_text)
    units_m = _metres_per_unit(crs)
    levels = []
    for m in elem.findall("wmts:TileMatrix", NS):
        x, y = (float(v) for v in _text(m, "wmts:TopLeftCorner").split())
        if _axis_is_northing_first(crs):
            x, y = y, x
        res = float(_text(m, "wmts:ScaleDenominator")) * OGC_PIXEL_M / units_m
        levels.append(TileMatrix(_text(m, "ows:Identifier"), res, (x, y), int(_text(m, "wmts:TileWidth")),
                                 int(_text(m, "wmts:TileHeight")), int(_text(m, "wmts:MatrixWidth")),
                                 int(_text(m, "wmts:MatrixHeight"))))
    levels.sort(key=lambda lv: -lv.resolution)
    return TileMatrixSet(crs, tuple(levels), _text(elem, "ows:Identifier"))


def _crs_from_urn(text: str) -> str:
    """'urn:ogc:def:crs:EPSG::3857' (or 'EPSG:3857', or an OGC http URI) -> 'EPSG:3857'."""
    t = text.strip()
    if t.startswith("urn:ogc:def:crs:"):
        parts = t.split(":")
        auth, code = parts[4], parts[-1]
        t = f"{auth}:{code}"
    elif "opengis.net/def/crs/" in t:
        parts = t.rstrip("/").split("/")
        t = f"{parts[-3]}:{parts[-1]}"
    if t.upper() in ("EPSG:900913", "EPSG:3785", "EPSG:102100", "ESRI:102100"):
        t = "EPSG:3857"
    try:
        CRS.from_user_input(t)
    except Exception as exc:  # noqa: BLE001 - pyproj raises CRSError for unknown codes
        raise EdificeError(f"The WMTS tile matrix set's CRS '{text}' is not known ({exc}).") from exc
    return t


def _is_epsg(crs: str, code: int) -> bool:
    return CRS.from_user_input(crs).to_epsg() == code


def _metres_per_unit(crs: str) -> float:
    c = CRS.from_user_input(crs)
    if c.is_geographic:  # OGC's convention: scale denominators of degree CRSs use 111319.49 m per degree
        return 2 * 3.141592653589793 * 6378137.0 / 360.0
    factor = c.axis_info[0].unit_conversion_factor if c.axis_info else 1.0
    return factor or 1.0


def _axis_is_northing_first(crs: str) -> bool:
    c = CRS.from_user_input(crs)
    return bool(c.axis_info) and c.axis_info[0].direction.lower() in ("north", "south")


def _kvp_get_tile_url(root) -> str | None:
    for op in root.findall("ows:OperationsMetadata/ows:Operation", NS):
        if op.get("name") != "GetTile":
            continue
        for get in op.findall("ows:DCP/ows:HTTP/ows:Get", NS):
            encodings = [v.text for v in get.findall(".//ows:Value", NS)]
            if not encodings or "KVP" in encodings:
                return get.get("{http://www.w3.org/1999/xlink}href")
    return None


def _attribution(root) -> str:
    """The service provider's name (WMTS has no attribution element of its own)."""
    provider = root.find("ows:ServiceProvider/ows:ProviderName", NS)
    return provider.text.strip() if provider is not None and provider.text else ""


def _text(elem, path: str) -> str:
    found = elem.find(path, NS)
    if found is None or found.text is None:
        raise EdificeError(f"The WMTS capabilities document lacks <{path}> in <{elem.tag.split('}')[-1]}>.")
    return found.text.strip()
