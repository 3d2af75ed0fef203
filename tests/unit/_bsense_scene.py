"""A small synthetic street scene for the BuildingSense tests (imported by file path):
an RGB raster with a known pattern, buildings along two streets with a reference function
(``use``, from the buildingsense_template taxonomy), heights and years, street lines (with a
sidewalk), POIs, and a street-view folder with one PNG per building."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio.raw
import rasterio
import shapely
from rasterio.transform import from_origin

UTM = "EPSG:32633"
X0, Y0, PX = 500000.0, 5540400.0, 0.5  # raster origin (top left, m) and pixel size (m)
FUNCTIONS = ["residential", "office mix", "warehouse and factory", "garage", "sport", "public service",
             "entertainment", "residential"]


def pattern(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Raster values: band 1 = col % 251, band 2 = row % 251, band 3 = (row + col) % 7 + 1."""
    return np.stack([cols % 251, rows % 251, (rows + cols) % 7 + 1]).astype(np.uint8)


def write_pattern_raster(path: Path, size: int = 800, dtype: str = "uint8") -> str:
    rows, cols = np.mgrid[0:size, 0:size]
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype=dtype, crs=UTM,
                       transform=from_origin(X0, Y0, PX, PX)) as ds:
        ds.write(pattern(rows, cols).astype(dtype))
    return str(path)


def make_scene(folder: Path, n: int = 8, notes: dict | None = None) -> dict:
    """Write the scene into ``folder``; ``notes`` maps building index -> text of its ``note`` field
    (e.g. ``malformed-once`` for the stand-in server). Returns the paths and the buildings' ids."""
    from edifice.core.buildingsense.chips import encode

    folder.mkdir(parents=True, exist_ok=True)
    notes = notes or {}
    street_y = Y0 - 200
    ids, geoms, uses, heights, years, note = [], [], [], [], [], []
    for i in range(n):
        x = X0 + 30 + 35 * (i % 10)
        y = street_y + (25 if i % 2 == 0 else -40) - 80 * (i // 10)
        ids.append(f"b{i:03d}")
        geoms.append(shapely.box(x, y, x + 15, y + 12))
        uses.append(FUNCTIONS[i % len(FUNCTIONS)])
        heights.append(6.0 + 3 * (i % 5))
        years.append(1900 + 7 * i)
        note.append(notes.get(i, ""))
    b = folder / "buildings.gpkg"
    pyogrio.raw.write(str(b), shapely.to_wkb(geoms),
                      [np.array(ids, object), np.array(uses, object), np.array(heights), np.array(years, np.int64),
                       np.array(note, object)], ["bid", "use", "height", "year", "note"], driver="GPKG",
                      geometry_type="Polygon", crs=UTM)
    roads = folder / "roads.gpkg"
    lines = [shapely.LineString([(X0, street_y - 80 * k), (X0 + 400, street_y - 80 * k)]) for k in range(1 + (n - 1) // 10)]
    lines.append(shapely.LineString([(X0, street_y + 3), (X0 + 400, street_y + 3)]))  # a sidewalk
    pyogrio.raw.write(str(roads), shapely.to_wkb(lines),
                      [np.array(["residential"] * (len(lines) - 1) + ["footway"], object),
                       np.array([None] * (len(lines) - 1) + ['"footway"=>"sidewalk"'], object)],
                      ["highway", "other_tags"], driver="GPKG", geometry_type="LineString", crs=UTM)
    pois = folder / "pois.gpkg"
    centres = shapely.centroid(shapely.from_wkb(shapely.to_wkb(geoms)))
    pyogrio.raw.write(str(pois), shapely.to_wkb(centres),
                      [np.array([f"Place {i}" for i in ids], object),
                       np.array(['"shop"=>"bakery"' if k % 3 == 0 else '"amenity"=>"cafe"' for k in range(n)], object)],
                      ["name", "other_tags"], driver="GPKG", geometry_type="Point", crs=UTM)
    sv = folder / "street_view"
    sv.mkdir(exist_ok=True)
    for k, i in enumerate(ids):
        (sv / f"{i}.png").write_bytes(encode(np.full((3, 8, 8), 40 + k, np.uint8)))
    return {"buildings": str(b), "roads": str(roads), "pois": str(pois), "street_view": str(sv),
            "imagery": write_pattern_raster(folder / "imagery.tif"), "ids": ids, "uses": uses}
