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
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
import shapely
from pyproj import CRS
from rasterio.vrt import WarpedVRT
from rasterio.enums import Resampling
from rasterio.windows import Window

from .errors import InputError
from .geodesy import approx_pixel_metres, to_lonlat
from .grid import Grid
from .labels import (CLASS_COLOURS, IGNORE, USE_CLASSES, USE_CODES, Buildings, load_building_mapping,
                     rasterize_masks, read_buildings)
from .progress import Progress, ensure
from .raster_io import open_raster, read_masked, require_crs

FORMAT = "edifice-training-dataset"
VERSION = 1
SUBSETS = ("train", "val", "test")
MANIFEST = "manifest.json"
#: The held-back labelled buildings (test subset, known use), for evaluating a model trained on the dataset.
TEST_BUILDINGS = "test_buildings.gpkg"


# ---------------------------------------------------------------- split
def spatial_split(tile_of_building: np.ndarray, ratios: Sequence[float] = (0.6, 0.2, 0.2),
                  seed: int = 0) -> dict[tuple, int]:
    """Assign whole tiles to subsets 0 (train), 1 (val), 2 (test) so that the
    building counts approach ``ratios``. ``tile_of_building``: (n, 2) tile index
    per building. Tiles are visited from the most to the fewest buildings (ties in a
    seeded random order) and each goes to the subset furthest below its target
    (relative deficit): big tiles placed first, small ones even the counts out.
    Returns {tile: subset}."""
    r = np.asarray(ratios, float)
    if r.shape != (3,) or np.any(r <= 0):
        raise InputError("SPLIT_RATIOS", f"needs three positive numbers, got {list(ratios)}.", "write e.g. 6,2,2.")
    r = r / r.sum()
    tiles, counts = np.unique(np.asarray(tile_of_building).reshape(-1, 2), axis=0, return_counts=True)
    n = counts.sum()
    if n < 5 or len(tiles) < 3:
        raise InputError("BUILDINGS", f"{n} building(s) in {len(tiles)} split tile(s) are too few for a "
                         f"train/val/test split ({':'.join(f'{x:g}' for x in ratios)}); each subset needs "
                         "at least one tile of buildings.",
                         "give more labelled buildings, or a smaller split tile size.")
    shuffled = np.random.default_rng(seed).permutation(len(tiles))
    order = shuffled[np.argsort(-counts[shuffled], kind="stable")]
    target = r * n
    have = np.zeros(3)
    out = {}
    for i in order:
        s = int(np.argmax((target - have) / target))
        out[tuple(int(v) for v in tiles[i])] = s
        have[s] += counts[i]
    return out


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
                            progress: Progress | None = None) -> dict:
    """Build a training dataset folder at ``output_dir``; returns the manifest (dict).

    ``imagery_path``: RGB (or other) raster in a projected or geographic CRS.
    POI bands come from ``poi_raster_path`` (3 bands R,C,I, resampled bilinearly to
    the imagery grid if needed) or are computed from ``poi_points_path`` with
    :func:`core.poi_probability.poi_probability` on the imagery grid (distances in
    metres, ``poi_max_distances`` R,C,I). Without either, chips hold imagery only
    (enough for the ``imagery_single`` variant).
    ``use_field`` / ``use_preset`` (``osm_building``, ``eubucco_type``, ``csv`` +
    ``mapping_file``) give each building's class; ``use_field=None`` makes a
    footprint-only dataset (mask B all ignore on buildings). ``chip_size`` in pixels;
    ``split_tile_m``: edge of a split tile in metres (rounded to whole chips;
    default 4 chips).
    """
    progress = ensure(progress)
    if chip_size < 16:
        raise InputError("CHIP_SIZE", f"must be at least 16 pixels, got {chip_size}.")
    final = Path(output_dir)
    if final.exists() and not overwrite and any(final.iterdir()):
        raise InputError("OUTPUT", f"folder '{final}' exists and is not empty.",
                         "choose a new folder or allow overwriting.")
    mapping = load_building_mapping(use_preset, mapping_file)
    if poi_raster_path and poi_points_path:
        raise InputError("POI", "both a POI raster and POI points were given.", "give one of them.")

    ds = open_raster(imagery_path, "IMAGERY")
    try:
        crs = require_crs(ds, "IMAGERY")
        grid = Grid.from_dataset(ds)
        gsd = _gsd_m(grid)
        scaling = _band_scaling(ds)
        names = _band_names(ds)
        progress.info(f"Imagery: {grid.width} x {grid.height} px, {ds.count} band(s), {gsd:.3g} m pixels.")

        buildings = read_buildings(buildings_path, use_field, mapping, crs, buildings_layer)
        progress.info(f"Buildings: {buildings.stats['kept']} of {buildings.stats['read']} kept "
                      f"({buildings.stats.get('repaired', 0)} repaired), classes {buildings.class_counts()}.")
        gxmin, gymin, gxmax, gymax = grid.bounds
        inside = shapely.intersects(buildings.geoms, shapely.box(gxmin, gymin, gxmax, gymax))
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

        # split tiles of whole chips; building -> tile of its representative point
        tile_chips = 4 if split_tile_m is None else max(1, int(round(split_tile_m / (chip_size * gsd))))
        tile_px = tile_chips * chip_size
        rp = shapely.get_coordinates(shapely.point_on_surface(buildings.geoms))
        cols, rows = _to_pixel(grid.transform, rp[:, 0], rp[:, 1])
        tile_of = np.column_stack([np.floor(np.asarray(rows) / tile_px), np.floor(np.asarray(cols) / tile_px)]).astype(int)
        tile_subset = spatial_split(tile_of, split_ratios, seed)
        b_subset = np.array([tile_subset[(int(r), int(c))] for r, c in tile_of])

        # chips touched by buildings
        bounds = shapely.bounds(buildings.geoms)
        c0, r0 = _to_pixel(grid.transform, bounds[:, 0], bounds[:, 3])
        c1, r1 = _to_pixel(grid.transform, bounds[:, 2], bounds[:, 1])
        rlo, rhi = np.minimum(r0, r1), np.maximum(r0, r1)
        clo, chi = np.minimum(c0, c1), np.maximum(c0, c1)
        nci, ncj = -(-grid.height // chip_size), -(-grid.width // chip_size)
        chips = set()
        for a, b_, c, d in zip(rlo, rhi, clo, chi):
            i0, i1 = max(int(a // chip_size), 0), min(int(b_ // chip_size), nci - 1)
            j0, j1 = max(int(c // chip_size), 0), min(int(d // chip_size), ncj - 1)
            for i in range(i0, i1 + 1):
                for j in range(j0, j1 + 1):
                    chips.add((i, j))
        chips = sorted(chips)
        tree = shapely.STRtree(buildings.geoms)

        parent = final.parent if str(final.parent) else Path(".")
        parent.mkdir(parents=True, exist_ok=True)
        tmp = parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            poi_ds, poi_info = None, None
            if poi_points_path:
                poi_ds, poi_info = _poi_from_points(poi_points_path, poi_layer, poi_category_field, poi_preset,
                                                    poi_mapping_file, poi_max_distances, grid, imagery_path,
                                                    tmp / "poi_probability.tif", progress.span(0.0, 0.3))
            elif poi_raster_path:
                poi_ds, poi_info = _poi_from_raster(poi_raster_path, grid)
            try:
                manifest_chips, pix = _write_chips(ds, grid, chips, chip_size, tile_px, tile_subset, buildings,
                                                   b_subset, tree, poi_ds, min_building_pixels, tmp,
                                                   progress.span(0.3 if poi_points_path else 0.0, 1.0))
            finally:
                if poi_ds is not None:
                    poi_ds.close()
            if not manifest_chips:
                raise InputError("BUILDINGS", f"no chip holds {min_building_pixels} or more building pixels.",
                                 "check the buildings overlap valid imagery, or lower the minimum.")
            per_subset = {}
            for s, sub in enumerate(SUBSETS):
                idx = np.flatnonzero(b_subset == s)
                per_subset[sub] = {"buildings": int(len(idx)), **buildings.class_counts(idx),
                                   "tiles": int(sum(1 for v in tile_subset.values() if v == s)),
                                   "chips": int(sum(1 for c in manifest_chips if c["subset"] == sub)),
                                   "pixels": pix[sub]}
            _write_test_buildings(tmp / TEST_BUILDINGS, buildings, b_subset == SUBSETS.index("test"), crs)
            ratio_note = _check_split_ratios(b_subset, split_ratios, tile_px * gsd, chip_size * gsd,
                                             len(tile_subset), progress)
            bands = [{"name": n, "scale": s, "offset": o, "source": "imagery"} for n, (s, o) in zip(names, scaling)]
            if poi_ds is not None or poi_info is not None:
                bands += [{"name": f"p_{c}", "scale": 1.0, "offset": 0.0, "source": "poi"} for c in USE_CLASSES]
            manifest = {
                "format": FORMAT, "version": VERSION,
                "sources": {"imagery": str(imagery_path), "buildings": str(buildings_path),
                            "buildings_layer": buildings_layer, "use_field": use_field, "use_preset": use_preset,
                            "mapping_file": mapping_file, "poi": poi_info},
                "crs": crs, "grid": {"transform": list(grid.transform)[:6], "width": grid.width, "height": grid.height},
                "gsd_m": gsd, "chip_size": chip_size, "bands": bands, "imagery_dtype": ds.dtypes[0],
                "classes": [{"index": 0, "name": "background", "color": CLASS_COLOURS["background"]}]
                + [{"index": USE_CODES[c], "name": c, "color": CLASS_COLOURS[c]} for c in USE_CLASSES],
                "mask_values": {"footprint": {"0": "background", "1": "building", "255": "ignore"},
                                "use": {"0": "background", "1": "residential", "2": "commercial",
                                        "3": "industrial", "255": "ignore (unknown use or other subset)"}},
                "split": {"ratios": list(split_ratios), "seed": seed, "tile_size_px": tile_px,
                          "tile_size_m": tile_px * gsd, "subsets": per_subset, **ratio_note},
                "buildings": {**buildings.stats, "in_imagery": int(len(buildings)), **buildings.class_counts()},
                "test_buildings": TEST_BUILDINGS,
                "chips": manifest_chips,
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


def _poi_from_points(path, layer, field, preset, mapping_file, max_distances, grid, imagery_path, out, progress):
    from .poi_probability import DEFAULT_MAX_DISTANCES, poi_probability
    from .poi_sources import classify_pois, load_poi_mapping, read_point_file

    if not field:
        raise InputError("POI_CATEGORY_FIELD", "is required with POI points.", "name the field holding the POI category.")
    xs, ys, recs, crs = read_point_file(path, layer, field)
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


def _write_chips(ds, grid, chips, cs, tile_px, tile_subset, buildings, b_subset, tree, poi_ds, min_pixels,
                 tmp, progress):
    for sub in SUBSETS:
        (tmp / sub).mkdir()
    pix = {sub: {"building": 0, "background": 0, **{c: 0 for c in USE_CLASSES}, "unknown_use": 0} for sub in SUBSETS}
    out = []
    for n, (i, j) in enumerate(chips):
        progress.check_cancelled()
        progress.set_fraction(n / max(len(chips), 1))
        r, c = i * cs, j * cs
        tile = ((r // tile_px), (c // tile_px))
        if tile not in tile_subset:
            continue
        s = tile_subset[tile]
        win = Window(c, r, min(cs, grid.width - c), min(cs, grid.height - r))
        h, w = int(win.height), int(win.width)
        t = grid.window_transform(win)
        xmin, ymax = t.c, t.f
        xmax, ymin = t.c + t.a * w, t.f + t.e * h
        near = tree.query(shapely.box(min(xmin, xmax), min(ymin, ymax), max(xmin, xmax), max(ymin, ymax)))
        own = near[b_subset[near] == s]
        other = near[b_subset[near] != s]
        a, b = rasterize_masks(buildings, t, (h, w), own, other)
        img, valid = read_masked(ds, win, "IMAGERY")
        a[~valid] = IGNORE
        b[~valid] = IGNORE
        if int((a == 1).sum()) < min_pixels:
            continue
        arrays = {}
        pad = ((0, cs - h), (0, cs - w))
        img = np.where(valid[None], img, 0).astype(img.dtype)
        arrays["image"] = np.pad(img, ((0, 0),) + pad)
        if poi_ds is not None:
            p = poi_ds.read(window=win).astype(np.float32)
            p = np.where(np.isfinite(p) & (p >= 0), p, 0.0)
            arrays["poi"] = np.pad(p, ((0, 0),) + pad)
        arrays["footprint"] = np.pad(a, pad, constant_values=IGNORE)
        arrays["use"] = np.pad(b, pad, constant_values=IGNORE)
        sub = SUBSETS[s]
        rel = f"{sub}/chip_{r}_{c}.npz"
        np.savez_compressed(tmp / rel, **arrays)
        counts = {"building": int((a == 1).sum()), "background": int((a == 0).sum()),
                  **{cl: int((b == USE_CODES[cl]).sum()) for cl in USE_CLASSES},
                  "unknown_use": int(((a == 1) & (b == IGNORE)).sum())}
        for k, v in counts.items():
            pix[sub][k] += v
        out.append({"file": rel, "subset": sub, "row": r, "col": c, "height": h, "width": w,
                    "tile": [int(tile[0]), int(tile[1])], "pixels": counts})
    progress.set_fraction(1.0)
    return out, pix


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
