"""``edifice:trainingdataset``: imagery + POI maps + labelled building polygons ->
a folder of training chips with a manifest (seed 000 §2.3.3, §2.4.3, §2.6).

Layout of the dataset folder::

    manifest.json              sources, CRS, grid, bands with scaling, split, counts, chip list
    poi_probability.tif        (only when POIs were given as points: the R,C,I map computed here)
    train/ val/ test/          chip_<row>_<col>.npz with arrays
        image      (bands, S, S) imagery in its own dtype (0 outside the raster)
        poi        (3, S, S) float32 P_R, P_C, P_I in [0, 1] (only with POI input)
        footprint  (S, S) uint8 mask A: 0 background, 1 building, 255 ignore
        use        (S, S) uint8 mask B: 0 background, 1 R, 2 C, 3 I, 255 ignore

Split: 6:2:2 (configurable) at building level with spatial grouping. The grid
is cut into square split tiles of whole chips; each building belongs to the
tile holding its representative point, and all buildings of a tile go to one
subset (deterministic for a given ``seed``). A chip belongs to the subset of
its tile; pixels of buildings of another subset are 255 in both masks, so no
labelled pixel leaks between subsets. The dataset is written into a temporary
folder and renamed into place when complete.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
import shapely
from pyproj import CRS
from rasterio.vrt import WarpedVRT
from rasterio.enums import Resampling
from rasterio.windows import Window

from ..errors import InputError
from ..geodesy import approx_pixel_metres, to_lonlat
from ..grid import Grid
from .labels import (CLASS_COLOURS, IGNORE, USE_CLASSES, USE_CODES, Buildings, load_building_mapping,
                     rasterize_masks, read_buildings)
from ..progress import Progress, ensure
from ..raster_io import open_raster, read_masked, require_crs

FORMAT = "edifice-training-dataset"
VERSION = 1
SUBSETS = ("train", "val", "test")
MANIFEST = "manifest.json"
#: The held-back labelled buildings (test subset, known use), for evaluating a model trained on the dataset.
TEST_BUILDINGS = "test_buildings.gpkg"
#: Building-free chips added per chip with buildings (issue 16: negatives the model must see).
DEFAULT_BACKGROUND_RATIO = 0.5


# ---------------------------------------------------------------- split
def spatial_split(tile_of_building: np.ndarray, ratios: Sequence[float] = (0.6, 0.2, 0.2),
                  seed: int = 0, classes: np.ndarray | None = None) -> dict[tuple, int]:
    """Assign whole tiles to subsets 0 (train), 1 (val), 2 (test) so that the
    building counts of every class approach ``ratios`` (stratified spatial split).
    ``tile_of_building``: (n, 2) tile index per building; ``classes``: (n,) class code
    per building (None: one class). Tiles are visited from the most to the fewest
    buildings (ties in a seeded random order) and each goes to the subset whose
    targets its buildings fill best: the sum over the tile's classes of count x
    relative deficit of that class in that subset. So tiles holding a rare class go
    where that class is missing, and each subset gets at least one tile (the last
    tiles go to subsets that have none). Returns {tile: subset}."""
    r = _ratios(ratios)
    tob = np.asarray(tile_of_building).reshape(-1, 2)
    tiles, inv, counts = np.unique(tob, axis=0, return_inverse=True, return_counts=True)
    n = counts.sum()
    if n < 5 or len(tiles) < int((r > 0).sum()):
        raise InputError("BUILDINGS", f"{n} usable building(s) in {len(tiles)} split tile(s) are too few for a "
                         f"train/val/test split ({':'.join(f'{x:g}' for x in ratios)}); each subset needs "
                         "at least one tile of buildings.",
                         "give more labelled buildings over valid imagery, or a smaller split tile size.")
    cls = np.zeros(len(tob), int) if classes is None else np.unique(np.asarray(classes), return_inverse=True)[1]
    per_tile = np.zeros((len(tiles), int(cls.max()) + 1))
    np.add.at(per_tile, (inv.ravel(), cls), 1)
    target = r[:, None] * per_tile.sum(axis=0)[None, :]          # (subset, class)
    have = np.zeros_like(target)
    shuffled = np.random.default_rng(seed).permutation(len(tiles))
    order = shuffled[np.argsort(-counts[shuffled], kind="stable")]
    out, used = {}, np.zeros(3, int)
    for k, i in enumerate(order):
        score = ((target - have) / np.maximum(target, 1e-9) * per_tile[i][None, :]).sum(axis=1)
        empty = (used == 0) & (r > 0)
        if len(order) - k <= empty.sum():            # as many tiles left as subsets without one
            score = np.where(empty, score, -np.inf)
        score = np.where(r > 0, score, -np.inf)
        s = int(np.argmax(score))
        out[tuple(int(v) for v in tiles[i])] = s
        have[s] += per_tile[i]
        used[s] += 1
    return out


def _chip_stride(stride: int | None, chip_size: int) -> int:
    if stride is None or stride == 0:
        return int(chip_size)
    if not 1 <= stride <= chip_size:
        raise InputError("CHIP_STRIDE", f"must be between 1 and the chip size ({chip_size}), got {stride}.",
                         f"give e.g. {chip_size // 2} (half-overlapping chips) or 0 (no overlap).")
    return int(stride)


def _chip_count(n: int, chip_size: int, stride: int) -> int:
    """Chip origins 0, stride, ... along an axis of ``n`` pixels (the last chip may be partial)."""
    return 1 if n <= chip_size else -(-(n - chip_size) // stride) + 1


def _ratios(ratios) -> np.ndarray:
    """Train, val, test shares normalised: train and val > 0, test >= 0 (0: no test subset)."""
    r = np.asarray(ratios, float)
    if r.shape != (3,) or np.any(r[:2] <= 0) or r[2] < 0 or not np.all(np.isfinite(r)):
        raise InputError("SPLIT_RATIOS", f"needs three numbers (train and validation > 0, test >= 0), got "
                         f"{list(ratios)}.", "write e.g. 6,2,2 (or 8,2,0 to keep every building for training "
                         "and validation).")
    return r / r.sum()


def usable_buildings(ds, grid: Grid, points: np.ndarray, block: int = 2048) -> np.ndarray:
    """True for each (x, y) point (building representative points, grid CRS) on a valid imagery
    pixel (inside the grid, not nodata): only those count towards the split."""
    cols, rows = _to_pixel(grid.transform, points[:, 0], points[:, 1])
    r, c = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
    ok = (r >= 0) & (r < grid.height) & (c >= 0) & (c < grid.width)
    out = np.zeros(len(points), bool)
    keys = (r // block) * (grid.width // block + 1) + c // block
    for key in np.unique(keys[ok]):
        sel = np.flatnonzero(ok & (keys == key))
        r0, c0 = int(r[sel[0]] // block * block), int(c[sel[0]] // block * block)
        win = Window(c0, r0, min(block, grid.width - c0), min(block, grid.height - r0))
        _, valid = read_masked(ds, win, "IMAGERY")
        out[sel] = valid[r[sel] - r0, c[sel] - c0]
    return out


def _check_subsets_have_chips(per_subset: dict, tile_m: float, chip_m: float,
                              ratios: Sequence[float] = (0.6, 0.2, 0.2)) -> None:
    """Refuse a dataset whose train, val or test subset (one asked for: ratio > 0) got no chip
    (training would have nothing to validate on, or report NaN test metrics)."""
    empty = [s for s, r in zip(SUBSETS, ratios) if r > 0 and per_subset[s]["chips"] == 0]
    if not empty:
        return
    counts = ", ".join(f"{s}: {per_subset[s]['buildings']} buildings / {per_subset[s]['chips']} chips"
                       for s in SUBSETS)
    smaller = max(chip_m, tile_m / 2)
    raise InputError("BUILDINGS", f"the {' and '.join(empty)} subset(s) got no chip ({counts}).",
                     f"use a smaller split tile (SPLIT_TILE / --split-tile, now {tile_m:g} m; e.g. {smaller:g} m) "
                     "so that every subset gets tiles of buildings over valid imagery, or give more buildings.")


#: A subset's share of the buildings this far (fraction) from its target ratio is reported.
RATIO_TOLERANCE = 0.10


def _check_split_ratios(b_subset: np.ndarray, ratios: Sequence[float], tile_m: float, chip_m: float,
                        n_tiles: int, progress: Progress) -> dict:
    """Achieved building shares of train/val/test; a warning (also returned, for
    the manifest) when one is more than :data:`RATIO_TOLERANCE` off its target."""
    target = np.asarray(ratios, float) / float(np.sum(ratios))
    n = max(len(b_subset), 1)
    achieved = np.bincount(np.asarray(b_subset, int), minlength=3)[:3] / n
    out = {"achieved_ratios": [round(float(v), 4) for v in achieved]}
    worst = int(np.argmax(np.abs(achieved - target)))
    if abs(achieved[worst] - target[worst]) <= RATIO_TOLERANCE:
        return out
    shares = "/".join(f"{100 * v:.0f}" for v in achieved)
    wanted = "/".join(f"{100 * v:.0f}" for v in target)
    if tile_m > chip_m * 1.0001:
        smaller = max(chip_m, tile_m / 2)
        fix = (f"use a smaller split tile (SPLIT_TILE / --split-tile, now {tile_m:g} m; e.g. {smaller:g} m, at "
               f"least one chip = {chip_m:g} m) so that more tiles can be balanced, or give buildings over a "
               "larger area.")
    else:
        fix = "give buildings over a larger area (the split tile is already one chip)."
    text = (f"The train/val/test split holds {shares} % of the buildings, not the {wanted} % asked for "
            f"({SUBSETS[worst]} is {100 * abs(achieved[worst] - target[worst]):.0f} points off): whole split tiles "
            f"go to one subset and there are only {n_tiles}. Fix: {fix}")
    progress.warning(text)
    out["ratio_warning"] = text
    return out


# ---------------------------------------------------------------- helpers
def _band_names(ds) -> list[str]:
    names = []
    for i in range(ds.count):
        d = ds.descriptions[i] if ds.descriptions else None
        ci = ds.colorinterp[i].name if ds.colorinterp else ""
        names.append(d or (ci if ci in ("red", "green", "blue", "alpha", "nir") else f"band{i + 1}"))
    return names


def _band_scaling(ds, valid_only: bool = True) -> list[tuple[float, float]]:
    """(scale, offset) per band: uint8 -> (1/255, 0); otherwise 2nd-98th
    percentile of a decimated read mapped to [0, 1]."""
    if ds.dtypes[0] == "uint8":
        return [(1.0 / 255.0, 0.0)] * ds.count
    f = max(1, int(max(ds.width, ds.height) // 1024))
    data = ds.read(out_shape=(ds.count, max(1, ds.height // f), max(1, ds.width // f)), masked=True)
    out = []
    for b in range(ds.count):
        v = np.asarray(data[b].compressed(), float)
        v = v[np.isfinite(v)]
        if v.size == 0:
            out.append((1.0, 0.0))
            continue
        lo, hi = np.percentile(v, [2, 98])
        out.append((1.0 / float(hi - lo) if hi > lo else 1.0, float(lo)))
    return out


def _gsd_m(grid: Grid) -> float:
    xmin, ymin, xmax, ymax = grid.bounds
    lat = 0.0
    if CRS.from_user_input(grid.crs).is_geographic:
        lat = (ymin + ymax) / 2
    else:
        _, lat = to_lonlat(grid.crs).transform((xmin + xmax) / 2, (ymin + ymax) / 2)
    return float(approx_pixel_metres(grid.crs, grid.res[0], lat if np.isfinite(lat) else 0.0))


def _to_pixel(t, x, y):
    """(col, row) fractional pixel coordinates of CRS points on the north-up grid ``t``."""
    return (np.asarray(x) - t.c) / t.a, (np.asarray(y) - t.f) / t.e


def _same_grid(ds, grid: Grid) -> bool:
    return (ds.width == grid.width and ds.height == grid.height and ds.crs is not None
            and CRS.from_user_input(ds.crs.to_wkt()) == CRS.from_user_input(grid.crs)
            and ds.transform.almost_equals(grid.transform, precision=1e-9 * max(grid.res)))


def _finalise(tmp: Path, final: Path, overwrite: bool) -> None:
    if final.is_dir() and not any(final.iterdir()):
        final.rmdir()
    if final.exists():
        if not overwrite:
            raise InputError("OUTPUT", f"'{final}' exists.", "choose a new folder or allow overwriting.")
        trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)


# ---------------------------------------------------------------- entry point
def create_training_dataset(imagery_path: str, buildings_path: str, output_dir: str, use_field: str | None,
                            use_preset: str = "osm_building", mapping_file: str | None = None,
                            buildings_layer: str | None = None,
                            poi_raster_path: str | None = None,
                            poi_points_path: str | None = None, poi_layer: str | None = None,
                            poi_category_field: str | None = None, poi_preset: str = "osm",
                            poi_mapping_file: str | None = None,
                            poi_max_distances: Sequence[float] | str | None = None,
                            chip_size: int = 256, split_tile_m: float | None = None,
                            split_ratios: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0,
                            min_building_pixels: int = 16, overwrite: bool = False,
                            poi_columns: dict | None = None, background_ratio: float = DEFAULT_BACKGROUND_RATIO,
                            chip_stride: int | None = None, progress: Progress | None = None) -> dict:
    """Build a training dataset folder at ``output_dir``; returns the manifest (dict).

    ``imagery_path``: RGB (or other) raster in a projected or geographic CRS.
    POI bands come from ``poi_raster_path`` (3 bands R,C,I, resampled bilinearly to
    the imagery grid if needed) or are computed from ``poi_points_path`` with
    :func:`core.use.poi_probability.poi_probability` on the imagery grid (distances in
    metres, ``poi_max_distances`` R,C,I). Without either, chips hold imagery only
    (enough for the ``imagery_single`` variant).
    ``use_field`` / ``use_preset`` (``osm_building``, ``eubucco_type``, ``csv`` +
    ``mapping_file``) give each building's class; ``use_field=None`` makes a
    footprint-only dataset (mask B all ignore on buildings). ``poi_columns``: coordinate
    columns and CRS of a POI table (keywords of :func:`core.use.poi_sources.read_point_file`).
    ``chip_stride``: pixels between chip origins (None = ``chip_size``, no overlap; e.g. half the
    chip size doubles the views of each building on small datasets; a chip belongs to the split
    tile of its origin and other subsets' buildings stay ignored in it).
    ``background_ratio``: building-free chips added per chip with buildings (negatives: ground,
    trees, roads, clearings; 0 = none). ``split_ratios``: train, val, test shares (test may be 0).
    ``chip_size`` in pixels;
    ``split_tile_m``: edge of a split tile in metres (rounded to whole chips;
    default 4 chips).
    """
    progress = ensure(progress)
    final = Path(output_dir)
    _check_request(chip_size, final, overwrite, poi_raster_path, poi_points_path)
    mapping = load_building_mapping(use_preset, mapping_file)
    ds = open_raster(imagery_path, "IMAGERY")
    try:
        crs = require_crs(ds, "IMAGERY")
        grid = Grid.from_dataset(ds)
        gsd = _gsd_m(grid)
        progress.info(f"Imagery: {grid.width} x {grid.height} px, {ds.count} band(s), {gsd:.3g} m pixels.")
        buildings = _buildings_on_imagery(buildings_path, buildings_layer, use_field, use_preset, mapping, crs,
                                          grid, progress)
        tile_px = (4 if split_tile_m is None else max(1, int(round(split_tile_m / (chip_size * gsd))))) * chip_size
        tile_subset, b_subset, usable = _split_buildings(ds, grid, buildings, tile_px, split_ratios, seed, progress)
        stride = _chip_stride(chip_stride, chip_size)
        tmp = _partial_folder(final)
        try:
            poi = _PoiSource(poi_raster_path, poi_points_path, poi_layer, poi_category_field, poi_preset,
                             poi_mapping_file, poi_max_distances, poi_columns)
            chips, pix, poi_info = _chips_with_poi(ds, grid, buildings, tile_subset, b_subset, tile_px, chip_size, stride, poi,
                                                   imagery_path, min_building_pixels, background_ratio,
                                                   split_ratios, seed, tmp, progress)
            per_subset = _subset_counts(buildings, b_subset, tile_subset, chips, pix)
            _write_test_buildings(tmp / TEST_BUILDINGS, buildings, b_subset == SUBSETS.index("test"), crs)
            _check_subsets_have_chips(per_subset, tile_px * gsd, chip_size * gsd, split_ratios)
            ratio_note = _check_split_ratios(b_subset[b_subset >= 0], split_ratios, tile_px * gsd, chip_size * gsd,
                                             len(tile_subset), progress)
            manifest = {
                "format": FORMAT, "version": VERSION,
                "sources": {"imagery": str(imagery_path), "buildings": str(buildings_path),
                            "buildings_layer": buildings_layer, "use_field": use_field, "use_preset": use_preset,
                            "mapping_file": mapping_file, "poi": poi_info},
                "crs": crs, "grid": {"transform": list(grid.transform)[:6], "width": grid.width, "height": grid.height},
                "gsd_m": gsd, "chip_size": chip_size, "chip_stride": stride,
                "bands": _manifest_bands(ds, with_poi=poi_info is not None), "imagery_dtype": ds.dtypes[0],
                **_CLASS_ENTRIES, "background_ratio": background_ratio,
                "split": {"ratios": list(split_ratios), "seed": seed, "tile_size_px": tile_px,
                          "tile_size_m": tile_px * gsd, "subsets": per_subset, **ratio_note},
                "buildings": {**buildings.stats, "in_imagery": int(len(buildings)),
                              "over_nodata": int((~usable).sum()), **buildings.class_counts()},
                "test_buildings": TEST_BUILDINGS,
                "chips": chips,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
            progress.check_cancelled()
            _finalise(tmp, final, overwrite)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        ds.close()
    counts = ", ".join(f"{s}: {manifest['split']['subsets'][s]['buildings']} buildings / "
                       f"{manifest['split']['subsets'][s]['chips']} chips" for s in SUBSETS)
    progress.info(f"Training dataset written to {final} ({counts}).")
    progress.set_fraction(1.0)
    return manifest


#: The manifest's class list and mask values (names, codes and colours of the use taxonomy).
_CLASS_ENTRIES = {
    "classes": [{"index": 0, "name": "background", "color": CLASS_COLOURS["background"]}]
    + [{"index": USE_CODES[c], "name": c, "color": CLASS_COLOURS[c]} for c in USE_CLASSES],
    "mask_values": {"footprint": {"0": "background", "1": "building", "255": "ignore"},
                    "use": {"0": "background", "1": "residential", "2": "commercial",
                            "3": "industrial", "255": "ignore (unknown use or other subset)"}},
}


def _check_request(chip_size: int, final: Path, overwrite: bool, poi_raster_path, poi_points_path) -> None:
    """Refuse a too small chip, a non-empty output folder (unless overwriting) and two POI sources."""
    if chip_size < 16:
        raise InputError("CHIP_SIZE", f"must be at least 16 pixels, got {chip_size}.")
    if final.exists() and not overwrite and any(final.iterdir()):
        raise InputError("OUTPUT", f"folder '{final}' exists and is not empty.",
                         "choose a new folder or allow overwriting.")
    if poi_raster_path and poi_points_path:
        raise InputError("POI", "both a POI raster and POI points were given.", "give one of them.")


def _buildings_on_imagery(path, layer, use_field, use_preset, mapping, crs: str, grid: Grid,
                          progress: Progress) -> Buildings:
    """The labelled buildings (imagery CRS) that overlap the imagery; refused when none does or
    when no value of the use field maps to a use class."""
    buildings = read_buildings(path, use_field, mapping, crs, layer)
    progress.info(f"Buildings: {buildings.stats['kept']} of {buildings.stats['read']} kept "
                  f"({buildings.stats.get('repaired', 0)} repaired), classes {buildings.class_counts()}.")
    inside = shapely.intersects(buildings.geoms, shapely.box(*grid.bounds))
    if not inside.any():
        raise InputError("BUILDINGS", "no building overlaps the imagery.",
                         "check that the buildings and the imagery cover the same area and that both CRSs are right.")
    buildings = Buildings(buildings.geoms[inside], buildings.codes[inside], crs,
                          {**buildings.stats, "outside_imagery": int((~inside).sum())})
    if use_field is not None and not np.isin(buildings.codes, list(USE_CODES.values())).any():
        ex = ", ".join(f"{v} ({n})" for v, n in buildings.stats.get("unmapped_examples", []))
        raise InputError("USE_FIELD", f"no value of '{use_field}' maps to residential, commercial or "
                         f"industrial with preset '{use_preset}'" + (f" (values seen: {ex})." if ex else "."),
                         "pick the field holding building use, another preset, or a CSV mapping.")
    return buildings


def _partial_folder(final: Path) -> Path:
    """A new hidden sibling of ``final`` that the dataset is written into before the rename."""
    parent = final.parent if str(final.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


@dataclass
class _PoiSource:
    """Where the POI bands come from: a 3-band R,C,I raster, or points to map here (or neither)."""
    raster_path: str | None
    points_path: str | None
    layer: str | None
    category_field: str | None
    preset: str
    mapping_file: str | None
    max_distances: Sequence[float] | str | None
    columns: dict | None


def _chips_with_poi(ds, grid: Grid, buildings: Buildings, tile_subset: dict, b_subset: np.ndarray, tile_px: int, chip_size: int, stride: int,
                    poi: _PoiSource, imagery_path, min_pixels: int, background_ratio: float, ratios, seed: int,
                    tmp: Path, progress: Progress) -> tuple[list[dict], dict, dict | None]:
    """Open (or compute, on the imagery grid) the POI bands, then write the chips into ``tmp``;
    returns the manifest's chip list, pixel counts per subset and the POI source description."""
    poi_ds, poi_info = None, None
    if poi.points_path:
        poi_ds, poi_info = _poi_from_points(poi.points_path, poi.layer, poi.category_field, poi.preset,
                                            poi.mapping_file, poi.max_distances, grid, imagery_path,
                                            tmp / "poi_probability.tif", progress.span(0.0, 0.3), poi.columns)
    elif poi.raster_path:
        poi_ds, poi_info = _poi_from_raster(poi.raster_path, grid)
    try:
        chips, pix = _write_chips(ds, grid, _building_chips(buildings, grid, chip_size, stride), chip_size, tile_px,
                                  tile_subset, buildings, b_subset, shapely.STRtree(buildings.geoms), poi_ds,
                                  min_pixels, tmp, progress.span(0.3 if poi.points_path else 0.0, 1.0),
                                  background_ratio, ratios, seed, stride)
    finally:
        if poi_ds is not None:
            poi_ds.close()
    if not chips:
        raise InputError("BUILDINGS", f"no chip holds {min_pixels} or more building pixels.",
                         "check the buildings overlap valid imagery, or lower the minimum.")
    return chips, pix, poi_info


def _manifest_bands(ds, with_poi: bool) -> list[dict]:
    """The chips' bands with their scaling: the imagery's, then P_R, P_C, P_I when POIs are used."""
    bands = [{"name": n, "scale": s, "offset": o, "source": "imagery"}
             for n, (s, o) in zip(_band_names(ds), _band_scaling(ds))]
    if with_poi:
        bands += [{"name": f"p_{c}", "scale": 1.0, "offset": 0.0, "source": "poi"} for c in USE_CLASSES]
    return bands


def _write_test_buildings(path: Path, buildings: Buildings, in_test: np.ndarray, crs: str) -> None:
    """The test subset's buildings of known use as polygons (imagery CRS) with ``use`` (class name)
    and ``use_code`` (mask B value)."""
    import pyogrio.raw

    keep = in_test & np.isin(buildings.codes, list(USE_CODES.values()))
    names = {code: name for name, code in USE_CODES.items()}
    codes = buildings.codes[keep]
    wkb = shapely.to_wkb(buildings.geoms[keep], output_dimension=2) if keep.any() else np.zeros(0, object)
    pyogrio.raw.write(str(path), wkb, [np.asarray([names[c] for c in codes], dtype=object), codes.astype(np.int32)],
                      ["use", "use_code"], driver="GPKG", layer="test_buildings", geometry_type="MultiPolygon",
                      crs=crs, promote_to_multi=True)


def _poi_from_points(path, layer, field, preset, mapping_file, max_distances, grid, imagery_path, out, progress,
                     columns=None):
    from .poi_probability import DEFAULT_MAX_DISTANCES, poi_probability
    from .poi_sources import classify_pois, load_poi_mapping, read_point_file

    if not field:
        raise InputError("POI_CATEGORY_FIELD", "is required with POI points.", "name the field holding the POI category.")
    xs, ys, recs, crs = read_point_file(path, layer, field, **(columns or {}))
    classified = classify_pois(xs, ys, recs, field, load_poi_mapping(preset, mapping_file), crs)
    progress.info(classified.summary())
    summary = poi_probability(classified.pois, grid, str(out), max_distances or DEFAULT_MAX_DISTANCES,
                              reference_path=imagery_path, progress=progress)
    info = {"points": str(path), "layer": layer, "category_field": field, "preset": preset,
            "mapping_file": mapping_file, "max_distances_m": summary["max_distances_m"],
            "poi_counts": summary["poi_counts"], "raster": out.name}
    return rasterio.open(out), info


def _poi_from_raster(path, grid):
    ds = open_raster(path, "POI_RASTER")
    if ds.count != 3:
        n = ds.count
        ds.close()
        raise InputError("POI_RASTER", f"has {n} band(s); a POI probability map has 3 (R, C, I).",
                         "give the output of the POI probability tool.")
    if _same_grid(ds, grid):
        return ds, {"raster": str(path), "resampled": False}
    if ds.crs is None:
        ds.close()
        raise InputError("POI_RASTER", "has no CRS.", "assign one first.")
    vrt = WarpedVRT(ds, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                    resampling=Resampling.bilinear)
    return vrt, {"raster": str(path), "resampled": True}


def _subset_counts(buildings: Buildings, b_subset, tile_subset: dict, chips: list[dict], pix: dict) -> dict:
    """Buildings (by class), tiles, chips (background ones too) and pixels of each subset."""
    out = {}
    for s, sub in enumerate(SUBSETS):
        idx = np.flatnonzero(b_subset == s)
        mine = [c for c in chips if c["subset"] == sub]
        out[sub] = {"buildings": int(len(idx)), **buildings.class_counts(idx),
                    "tiles": int(sum(1 for v in tile_subset.values() if v == s)), "chips": len(mine),
                    "background_chips": sum(1 for c in mine if c["kind"] == "background"), "pixels": pix[sub]}
    return out


def _split_buildings(ds, grid: Grid, buildings: Buildings, tile_px: int, ratios, seed: int, progress: Progress):
    """(tile -> subset, subset per building, usable per building): each building belongs to the split
    tile (``tile_px`` pixels) of its representative point; only buildings over valid imagery count
    (the others get subset -1: their pixels are ignored everywhere)."""
    rp = shapely.get_coordinates(shapely.point_on_surface(buildings.geoms))
    cols, rows = _to_pixel(grid.transform, rp[:, 0], rp[:, 1])
    tile_of = np.column_stack([np.floor(np.asarray(rows) / tile_px), np.floor(np.asarray(cols) / tile_px)]).astype(int)
    usable = usable_buildings(ds, grid, rp)
    if not usable.any():
        raise InputError("BUILDINGS", "no building lies on valid imagery (all are over nodata).",
                         "check that the buildings and the imagery cover the same area.")
    if not usable.all():
        progress.info(f"{int((~usable).sum())} building(s) over imagery nodata are left out of the split "
                      "(their pixels are ignored).")
    tile_subset = spatial_split(tile_of[usable], ratios, seed, buildings.codes[usable])
    b_subset = np.array([tile_subset.get((int(r), int(c)), -1) if u else -1 for (r, c), u in zip(tile_of, usable)])
    return tile_subset, b_subset, usable


def _building_chips(buildings: Buildings, grid: Grid, chip_size: int, stride: int) -> list[tuple[int, int]]:
    """(row, column) indices of the chips (origins every ``stride`` px) that buildings' bounds touch."""
    bounds = shapely.bounds(buildings.geoms)
    c0, r0 = _to_pixel(grid.transform, bounds[:, 0], bounds[:, 3])
    c1, r1 = _to_pixel(grid.transform, bounds[:, 2], bounds[:, 1])
    rlo, rhi = np.minimum(r0, r1), np.maximum(r0, r1)
    clo, chi = np.minimum(c0, c1), np.maximum(c0, c1)
    nci, ncj = _chip_count(grid.height, chip_size, stride), _chip_count(grid.width, chip_size, stride)
    chips = set()
    for a, b, c, d in zip(rlo, rhi, clo, chi):
        i0, i1 = max(int((a - chip_size) // stride) + 1, 0), min(int(b // stride), nci - 1)
        j0, j1 = max(int((c - chip_size) // stride) + 1, 0), min(int(d // stride), ncj - 1)
        chips.update((i, j) for i in range(i0, i1 + 1) for j in range(j0, j1 + 1))
    return sorted(chips)


class _ChipWriter:
    """Writes chips of a dataset (one subset folder each) and sums their pixel counts."""

    def __init__(self, ds, grid, cs, buildings, b_subset, tree, poi_ds, tmp, stride=None):
        self.ds, self.grid, self.cs, self.buildings, self.b_subset = ds, grid, cs, buildings, b_subset
        self.stride = stride or cs
        self.tree, self.poi_ds, self.tmp = tree, poi_ds, tmp
        for sub in SUBSETS:
            (tmp / sub).mkdir()
        self.pix = {sub: {"building": 0, "background": 0, **{c: 0 for c in USE_CLASSES}, "unknown_use": 0}
                    for sub in SUBSETS}
        self.chips: list[dict] = []

    def masks(self, i: int, j: int, s: int):
        """(window, image, valid, footprint mask A, use mask B) of chip (i, j) for subset ``s``."""
        cs, grid = self.cs, self.grid
        r, c = i * self.stride, j * self.stride
        win = Window(c, r, min(cs, grid.width - c), min(cs, grid.height - r))
        h, w = int(win.height), int(win.width)
        t = grid.window_transform(win)
        xmin, ymax = t.c, t.f
        xmax, ymin = t.c + t.a * w, t.f + t.e * h
        near = self.tree.query(shapely.box(min(xmin, xmax), min(ymin, ymax), max(xmin, xmax), max(ymin, ymax)))
        own = near[self.b_subset[near] == s]
        other = near[self.b_subset[near] != s]
        a, b = rasterize_masks(self.buildings, t, (h, w), own, other)
        img, valid = read_masked(self.ds, win, "IMAGERY")
        a[~valid] = IGNORE
        b[~valid] = IGNORE
        return win, img, valid, a, b

    def write(self, win, img, valid, a, b, s: int, tile, kind: str) -> None:
        cs = self.cs
        h, w, r, c = int(win.height), int(win.width), int(win.row_off), int(win.col_off)
        pad = ((0, cs - h), (0, cs - w))
        arrays = {"image": np.pad(np.where(valid[None], img, 0).astype(img.dtype), ((0, 0),) + pad)}
        if self.poi_ds is not None:
            p = self.poi_ds.read(window=win).astype(np.float32)
            p = np.where(np.isfinite(p) & (p >= 0), p, 0.0)
            arrays["poi"] = np.pad(p, ((0, 0),) + pad)
        arrays["footprint"] = np.pad(a, pad, constant_values=IGNORE)
        arrays["use"] = np.pad(b, pad, constant_values=IGNORE)
        sub = SUBSETS[s]
        rel = f"{sub}/chip_{r}_{c}.npz"
        np.savez_compressed(self.tmp / rel, **arrays)
        counts = {"building": int((a == 1).sum()), "background": int((a == 0).sum()),
                  **{cl: int((b == USE_CODES[cl]).sum()) for cl in USE_CLASSES},
                  "unknown_use": int(((a == 1) & (b == IGNORE)).sum())}
        for k, v in counts.items():
            self.pix[sub][k] += v
        self.chips.append({"file": rel, "subset": sub, "row": r, "col": c, "height": h, "width": w,
                           "tile": [int(tile[0]), int(tile[1])], "kind": kind, "pixels": counts})


#: A background chip needs at least this share of valid imagery pixels.
BACKGROUND_MIN_VALID = 0.5


def _write_chips(ds, grid, chips, cs, tile_px, tile_subset, buildings, b_subset, tree, poi_ds, min_pixels,
                 tmp, progress, background_ratio: float = 0.0, ratios=(0.6, 0.2, 0.2), seed: int = 0,
                 stride: int | None = None):
    """Chips holding ``min_pixels`` building pixels or more, then (nearly) building-free
    ("background", fewer than ``min_pixels`` building pixels) chips: ``background_ratio`` of them per building chip, sampled at random (``seed``) among the
    other chips with mostly valid imagery, so that ground without buildings (fields, trees, roads,
    clearings) is shown as a negative. A background chip in a tile without buildings goes to a
    subset drawn by ``ratios`` for its tile."""
    writer = _ChipWriter(ds, grid, cs, buildings, b_subset, tree, poi_ds, tmp, stride)
    writer.min_pixels = min_pixels
    for n, (i, j) in enumerate(chips):
        progress.check_cancelled()
        progress.set_fraction(0.8 * n / max(len(chips), 1))
        tile = ((i * writer.stride // tile_px), (j * writer.stride // tile_px))
        if tile not in tile_subset:
            continue
        win, img, valid, a, b = writer.masks(i, j, tile_subset[tile])
        if int((a == 1).sum()) >= min_pixels:
            writer.write(win, img, valid, a, b, tile_subset[tile], tile, "buildings")
    want = int(round(background_ratio * len(writer.chips)))
    if want:
        _write_background(writer, want, tile_px, tile_subset, ratios, seed, progress.span(0.8, 1.0))
    progress.set_fraction(1.0)
    return writer.chips, writer.pix


def _write_background(writer: _ChipWriter, want: int, tile_px: int, tile_subset: dict, ratios, seed: int,
                      progress: Progress) -> None:
    grid, cs, st = writer.grid, writer.cs, writer.stride
    done = {(c["row"] // st, c["col"] // st) for c in writer.chips}
    cand = [(i, j) for i in range(_chip_count(grid.height, cs, st)) for j in range(_chip_count(grid.width, cs, st))
            if (i, j) not in done]
    rng = np.random.default_rng(seed + 7)
    r = np.asarray(ratios, float) / float(np.sum(ratios))
    drawn: dict = {}
    got = 0
    for k in rng.permutation(len(cand)):
        if got >= want:
            break
        progress.check_cancelled()
        i, j = cand[k]
        tile = ((i * st // tile_px), (j * st // tile_px))
        s = tile_subset.get(tile)
        if s is None:
            s = drawn.setdefault(tile, int(np.random.default_rng([seed, *tile]).choice(3, p=r)))
        win, img, valid, a, b = writer.masks(i, j, s)
        if valid.mean() < BACKGROUND_MIN_VALID or (a == 1).sum() >= writer.min_pixels:
            continue
        writer.write(win, img, valid, a, b, s, tile, "background")
        got += 1
        progress.set_fraction(got / want)


def load_manifest(dataset_dir: str) -> dict:
    """The manifest of a dataset folder, with a clear error if it is not one."""
    p = Path(dataset_dir) / MANIFEST
    if not p.is_file():
        raise InputError("DATASET", f"'{dataset_dir}' holds no {MANIFEST}.",
                         "give a folder written by the training-dataset tool.")
    try:
        m = json.loads(p.read_text())
    except OSError as exc:
        raise InputError("DATASET", f"'{p}' could not be read ({exc.strerror}).") from exc
    except ValueError as exc:
        raise InputError("DATASET", f"'{p}' is truncated or damaged (not complete JSON).",
                         "write the dataset again with the training-dataset tool.") from exc
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise InputError("DATASET", f"'{p}' is not an Edifice training-dataset manifest.")
    return m


__all__ = ["create_training_dataset", "spatial_split", "load_manifest", "SUBSETS", "FORMAT"]
