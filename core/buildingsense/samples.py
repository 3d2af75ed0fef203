"""Per-building multimodal samples (seed buildingsense-essd-2026 §3.1, §4): a rooftop chip and a
60.96 m buffer chip from an imagery raster, street-view images (from a folder named by building
id), the POIs within and near the footprint with names and categories, and the building's
attributes (height, year, address ...) with its location -> a folder of samples plus
``manifest.json``, the form :mod:`.classify` reads.

Street-view images can also be fetched from a configured API (:mod:`.streetview_fetch`).
Folder layout: ``<output>/manifest.json`` and ``<output>/<building id>/{rooftop,buffer}.png``,
``street_view_1.jpg`` ... The folder is built under a temporary name and moved into place when
complete, so a failed or cancelled run leaves nothing half-written.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..evaluation.category_mapping import parse_osm_tags
from ..errors import InputError
from ..progress import Progress, ensure
from ._geo import (building_ids, centre_lonlat, metric_crs, safe_name, transform_geoms, transformer,
                   unit_metres)
from .chips import FORMATS, open_imagery
from .streetview_fetch import StreetViewApi, fetch_street_views

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "edifice-buildingsense-samples"
#: OSM keys whose values name what a POI is (used when the category field holds OSM ``other_tags``).
POI_KEYS = ("amenity", "shop", "office", "tourism", "leisure", "craft", "healthcare", "industrial", "sport",
            "religion", "cuisine", "public_transport", "building")
STREET_VIEW_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


@dataclass
class SampleSettings:
    """``buffer_m``: buffer zone around the footprint (m; the seed's 60.96 m = 200 ft);
    ``chip_max_px``: longest side of a chip (px; larger crops are decimated);
    ``image_format``: ``png`` or ``jpeg``; ``poi_near_m``: POIs within this distance of the
    footprint (m) are listed as near; ``max_pois``: at most this many near POIs (nearest first)."""

    buffer_m: float = 60.96
    chip_max_px: int = 512
    image_format: str = "png"
    poi_near_m: float = 30.0
    max_pois: int = 20


@dataclass
class PoiSource:
    """A POI point layer: file, layer, the field with the name and the one with the category
    (a plain value, or OSM ``other_tags``)."""

    path: str
    layer: str | None = None
    name_field: str = "name"
    category_field: str = "other_tags"


def poi_category(value) -> str:
    """A POI's category as text: an OSM ``other_tags`` value becomes ``key=value`` pairs of the
    keys that say what a place is (``amenity=cafe; cuisine=coffee_shop``); other values as they are."""
    if value is None:
        return ""
    if isinstance(value, str) and "=>" in value:
        return "; ".join(f"{k}={v}" for k, v in parse_osm_tags(value) if k in POI_KEYS)
    return str(value).strip()


def read_pois(src: PoiSource, crs_wkt: str) -> tuple[np.ndarray, list[str], list[str]]:
    """(points in ``crs_wkt``, names, categories) of the POIs that have a name or a category."""
    import shapely

    from ..vector_io import read_vector

    lyr = read_vector(src.path, "POIS", src.layer, columns=[src.name_field, src.category_field], kind="Point",
                      what="a point layer of POIs (e.g. the 'points' layer of an .osm.pbf)",
                      fields_name="POI_NAME_FIELD / POI_CATEGORY_FIELD")
    names = ["" if v is None else str(v).strip() for v in lyr.fields[src.name_field]]
    cats = [poi_category(v) for v in lyr.fields[src.category_field]]
    keep = np.array([bool(n or c) for n, c in zip(names, cats)]) & ~shapely.is_missing(lyr.geoms)
    idx = np.flatnonzero(keep)
    pts = transform_geoms(lyr.geoms[idx], transformer(lyr.crs_wkt, crs_wkt))
    return pts, [names[i] for i in idx], [cats[i] for i in idx]


def pois_per_building(footprints_m: np.ndarray, pois_m: np.ndarray, names: list[str], cats: list[str],
                      near_m: float, max_near: int, unit: float = 1.0) -> list[dict]:
    """For each footprint (metric CRS, ``unit`` metres per unit), ``{"within": [...], "near": [...]}``
    with ``{"name", "category", "distance_m"}`` per POI; near ones sorted nearest first."""
    import shapely

    out = [{"within": [], "near": []} for _ in range(len(footprints_m))]
    if len(pois_m) == 0:
        return out
    b, p = shapely.STRtree(pois_m).query(footprints_m, predicate="dwithin", distance=near_m / unit)
    dist = shapely.distance(footprints_m[b], pois_m[p]) * unit
    for i in np.lexsort((dist, b)):
        entry = {"name": names[p[i]], "category": cats[p[i]], "distance_m": round(float(dist[i]), 2)}
        target = out[b[i]]["within" if dist[i] == 0 else "near"]
        if dist[i] == 0 or len(target) < max_near:
            target.append(entry)
    return out


def index_street_view_folder(folder: str | None) -> dict[str, list[Path]]:
    """Images of a street-view folder by building id: ``<id>.jpg``, ``<id>_<n>.jpg`` or ``<id>/*.jpg``
    (also .jpeg/.png/.webp), sorted by name."""
    if not folder:
        return {}
    root = Path(folder)
    if not root.is_dir():
        raise InputError("STREET_VIEW_FOLDER", f"'{root}' is not a folder.",
                         "give a folder of street-view images named by building id (e.g. 1234.jpg).")
    found: dict[str, list[Path]] = {}
    for p in sorted(root.iterdir()):
        if p.is_dir():
            imgs = sorted(q for q in p.iterdir() if q.suffix.lower() in STREET_VIEW_EXTENSIONS)
            if imgs:
                found.setdefault(p.name, []).extend(imgs)
        elif p.suffix.lower() in STREET_VIEW_EXTENSIONS:
            found.setdefault(p.stem, []).append(p)
            stem, _, tail = p.stem.rpartition("_")
            if stem and tail.isdigit():
                found.setdefault(stem, []).append(p)
    return found


def read_street_view_points(path: str | None, layer: str | None = None) -> dict[str, dict]:
    """Heading, pitch and distance per building id from ``edifice:streetviewpoints``'s output."""
    if not path:
        return {}
    from ..vector_io import read_vector

    lyr = read_vector(path, "STREET_VIEW_POINTS", layer, columns=["building_id", "heading", "pitch", "distance_m"],
                      kind="Point", what="the output of edifice:streetviewpoints")
    to_ll = transformer(lyr.crs_wkt, "EPSG:4326")
    import shapely

    xs, ys = shapely.get_x(lyr.geoms), shapely.get_y(lyr.geoms)
    lon, lat = (xs, ys) if to_ll is None else to_ll.transform(xs, ys)
    f = lyr.fields
    return {str(f["building_id"][i]): {"heading": round(float(f["heading"][i]), 2),
                                       "pitch": round(float(f["pitch"][i]), 2),
                                       "distance_m": round(float(f["distance_m"][i]), 2),
                                       "lon": round(float(lon[i]), 7), "lat": round(float(lat[i]), 7)}
            for i in range(len(lyr.geoms))}


def attribute_text(fields: dict, names: list[str], i: int) -> dict[str, str]:
    """The non-empty values of the fields ``names`` of feature ``i``, as text."""
    out = {}
    for n in names:
        v = fields[n][i]
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            continue
        s = str(v).strip()
        if s.endswith(".0") and s[:-2].lstrip("-").isdigit():
            s = s[:-2]
        if s:
            out[n] = s
    return out


# ----------------------------------------------------------------------------- the tool
def building_samples(buildings: str, output_folder: str, *, buildings_layer: str | None = None,
                     id_field: str | None = None, imagery: str | None = None,
                     street_view_folder: str | None = None, street_view_points: str | None = None,
                     pois: PoiSource | None = None, attribute_fields: list[str] | tuple = (),
                     street_view_api: StreetViewApi | None = None,
                     settings: SampleSettings | None = None, progress: Progress | None = None) -> dict:
    """Build the samples folder (see the module docstring) for every building of ``buildings``
    (polygons; ``id_field`` names the folders, else the feature number). ``street_view_api``
    fetches an image for each building that has a point in ``street_view_points`` and no image in
    ``street_view_folder``. Returns counts."""
    import shapely

    from ..vector_io import read_vector

    s = settings or SampleSettings()
    progress = ensure(progress)
    _check_settings(s)
    attribute_fields = [a.strip() for a in attribute_fields if a and a.strip()]
    wanted = list(dict.fromkeys([f for f in (id_field,) if f] + attribute_fields))
    lyr = read_vector(buildings, "BUILDINGS", buildings_layer, columns=wanted, kind="Polygon",
                      what="a polygon layer of building footprints", fields_name="ID_FIELD / ATTRIBUTES")
    ids = building_ids(lyr.fields, id_field, len(lyr.geoms))
    folders = _unique_folders(ids)
    valid = ~(shapely.is_missing(lyr.geoms) | shapely.is_empty(lyr.geoms))
    geoms = lyr.geoms.copy()
    geoms[~valid] = shapely.Point(0, 0)  # placeholder; such buildings get no sample
    lon0, lat0 = centre_lonlat(geoms[valid], lyr.crs_wkt)
    work = metric_crs(lyr.crs_wkt, lon0, lat0)
    unit = unit_metres(work)  # metres per unit of the working CRS (1 unless e.g. US feet)
    geoms_m = transform_geoms(geoms, transformer(lyr.crs_wkt, work))
    buffers_m = shapely.buffer(geoms_m, s.buffer_m / unit)
    cent = shapely.centroid(geoms)
    to_ll = transformer(lyr.crs_wkt, "EPSG:4326")
    cx, cy = shapely.get_x(cent), shapely.get_y(cent)
    lon, lat = (cx, cy) if to_ll is None else to_ll.transform(cx, cy)
    poi_lists = _pois(pois, geoms_m, work, s, unit)
    sv_images = index_street_view_folder(street_view_folder)
    sv_points = read_street_view_points(street_view_points)
    if street_view_api is not None and not sv_points:
        raise InputError("STREET_VIEW_POINTS", "fetching street-view images needs the sampling points.",
                         "give the output of edifice:streetviewpoints.")
    progress.set_fraction(0.05)
    ctx = _BuildContext(lyr, ids, folders, geoms, geoms_m, buffers_m, work, lon, lat, poi_lists, sv_images,
                        sv_points, attribute_fields)
    with open_imagery(imagery, s.chip_max_px, s.image_format) as reader, _atomic_folder(output_folder) as tmp:
        img_geoms = _imagery_geoms(reader, geoms, buffers_m, lyr.crs_wkt, work)
        if street_view_api is not None:
            ctx.fetched = _fetch(ctx, street_view_api, tmp, valid, progress.span(0.05, 0.3))
        start = 0.3 if street_view_api is not None else 0.05
        samples = []
        for k in np.flatnonzero(valid):
            if k % 50 == 0:
                progress.check_cancelled()
                progress.set_fraction(start + (0.95 - start) * k / max(len(ids), 1))
            samples.append(_one_sample(ctx, int(k), reader, img_geoms, tmp, s))
        _write_manifest(tmp, samples, lyr.crs_wkt, s, imagery)
    result = _summary(samples, len(ids), int((~valid).sum()), output_folder)
    _log(progress, result)
    return result


@dataclass
class _BuildContext:
    lyr: object
    ids: list
    folders: list
    geoms: np.ndarray
    geoms_m: np.ndarray
    buffers_m: np.ndarray
    work: object
    lon: np.ndarray
    lat: np.ndarray
    pois: list
    sv_images: dict
    sv_points: dict
    attribute_fields: list
    fetched: dict = field(default_factory=dict)


def _fetch(ctx: _BuildContext, api: StreetViewApi, tmp: Path, valid: np.ndarray, progress: Progress) -> dict:
    """Fetch the street-view image of every valid building without one in the folder (id -> file in ``tmp``)."""
    targets = {ctx.ids[k]: tmp / ctx.folders[k] / "street_view_1" for k in np.flatnonzero(valid)
               if not (ctx.sv_images.get(ctx.ids[k]) or ctx.sv_images.get(ctx.folders[k]))}
    return fetch_street_views(api, ctx.sv_points, targets, progress)


def _check_settings(s: SampleSettings) -> None:
    if s.image_format not in FORMATS:
        raise InputError("IMAGE_FORMAT", f"'{s.image_format}' is not a chip format.", "use png or jpeg.")
    if not s.buffer_m > 0:
        raise InputError("BUFFER", f"{s.buffer_m} m is not a positive distance.", "give e.g. 60.96.")
    if s.chip_max_px < 16:
        raise InputError("CHIP_MAX_PX", f"{s.chip_max_px} px is too small.", "give at least 16 (e.g. 512).")


def _unique_folders(ids: list[str]) -> list[str]:
    """File-name-safe folder names, made unique (``a/b`` and ``a_b`` both exist: ``a_b``, ``a_b-2``)."""
    seen: dict[str, int] = {}
    out = []
    for i in ids:
        name = safe_name(i)
        n = seen.get(name.lower(), 0) + 1
        seen[name.lower()] = n
        out.append(name if n == 1 else f"{name}-{n}")
    return out


def _pois(pois: PoiSource | None, geoms_m, work, s: SampleSettings, unit: float) -> list[dict] | None:
    if pois is None:
        return None
    pts, names, cats = read_pois(pois, work.to_wkt())
    return pois_per_building(geoms_m, pts, names, cats, s.poi_near_m, s.max_pois, unit)


def _imagery_geoms(reader, geoms, buffers_m, crs_wkt, work):
    """Footprints and buffer zones in the imagery's CRS (None without imagery)."""
    if reader is None:
        return None
    img_crs = reader.ds.crs.to_wkt()
    return (transform_geoms(geoms, transformer(crs_wkt, img_crs)),
            transform_geoms(buffers_m, transformer(work, img_crs)))


def _one_sample(ctx: _BuildContext, k: int, reader, img_geoms, tmp: Path, s: SampleSettings) -> dict:
    """Write building ``k``'s files under ``tmp`` and return its manifest entry."""
    folder = ctx.folders[k]
    bid = ctx.ids[k]
    images: dict = {"rooftop": None, "buffer": None, "street_view": []}
    if reader is not None:
        for name, geom in (("rooftop", img_geoms[0][k]), ("buffer", img_geoms[1][k])):
            data = reader.chip(geom)
            if data is not None:
                images[name] = _write_file(tmp, folder, f"{name}.{reader.ext}", data)
    for n, src in enumerate(ctx.sv_images.get(bid, []) or ctx.sv_images.get(folder, []), start=1):
        images["street_view"].append(_copy_file(tmp, folder, f"street_view_{n}{src.suffix.lower()}", src))
    if bid in ctx.fetched:
        images["street_view"].append(f"{folder}/{ctx.fetched[bid].name}")
    return {"id": bid, "folder": folder, "geometry": ctx.geoms[k].wkt,
            "lon": round(float(ctx.lon[k]), 7), "lat": round(float(ctx.lat[k]), 7),
            "area_m2": round(float(ctx.geoms_m[k].area) * unit_metres(ctx.work) ** 2, 1), "images": images,
            "street_view_point": ctx.sv_points.get(bid),
            "pois": None if ctx.pois is None else ctx.pois[k],
            "attributes": attribute_text(ctx.lyr.fields, ctx.attribute_fields, k)}


def _write_file(tmp: Path, folder: str, name: str, data: bytes) -> str:
    d = tmp / folder
    d.mkdir(exist_ok=True)
    (d / name).write_bytes(data)
    return f"{folder}/{name}"


def _copy_file(tmp: Path, folder: str, name: str, src: Path) -> str:
    d = tmp / folder
    d.mkdir(exist_ok=True)
    shutil.copyfile(src, d / name)
    return f"{folder}/{name}"


def _write_manifest(tmp: Path, samples: list[dict], crs_wkt: str, s: SampleSettings, imagery) -> None:
    doc = {"format": MANIFEST_FORMAT, "version": 1, "crs": crs_wkt, "buffer_m": s.buffer_m,
           "poi_near_m": s.poi_near_m, "imagery": str(imagery) if imagery else None, "samples": samples}
    (tmp / MANIFEST).write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")


@contextlib.contextmanager
def _atomic_folder(output_folder: str):
    """Yield a temporary sibling folder; on success it replaces ``output_folder`` (which must be
    absent, empty, or an earlier samples folder), on any error it is removed."""
    final = Path(output_folder)
    if final.exists() and not (final.is_dir() and (not any(final.iterdir()) or (final / MANIFEST).is_file())):
        raise InputError("OUTPUT_FOLDER", f"'{final}' exists and is not an empty folder or a samples folder.",
                         "choose a new or empty folder.")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _summary(samples: list[dict], n: int, empty: int, output_folder: str) -> dict:
    img = [x["images"] for x in samples]
    return {"buildings": n, "samples": len(samples), "empty_geometry": empty,
            "rooftop": sum(1 for i in img if i["rooftop"]), "buffer": sum(1 for i in img if i["buffer"]),
            "street_view": sum(1 for i in img if i["street_view"]),
            "with_pois": sum(1 for x in samples if x["pois"] and (x["pois"]["within"] or x["pois"]["near"])),
            "output_folder": str(output_folder), "manifest": str(Path(output_folder) / MANIFEST)}


def _log(progress: Progress, r: dict) -> None:
    progress.info(f"{r['samples']} samples: {r['rooftop']} with a rooftop chip, {r['buffer']} with a buffer chip, "
                  f"{r['street_view']} with street-view images, {r['with_pois']} with POIs.")
    if r["empty_geometry"]:
        progress.warning(f"{r['empty_geometry']} building(s) have no geometry and got no sample.")


def load_manifest(folder_or_file: str) -> tuple[Path, dict]:
    """(samples folder, manifest) of a samples folder or its ``manifest.json``; clear errors otherwise."""
    p = Path(folder_or_file)
    path = p / MANIFEST if p.is_dir() else p
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError("SAMPLES", f"'{path}' is not a readable samples manifest ({exc}).",
                         "give the folder written by edifice:buildingsamples.") from None
    if doc.get("format") != MANIFEST_FORMAT or not isinstance(doc.get("samples"), list):
        raise InputError("SAMPLES", f"'{path}' is not a samples manifest of edifice:buildingsamples.",
                         "give the folder written by edifice:buildingsamples.")
    return path.parent, doc
