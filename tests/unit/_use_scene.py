"""Synthetic scenes with known building use, for the building-use tests.

Scene: UTM zone 36N (EPSG:32636), 1 m pixels, uint8 RGB. Buildings sit on a
lattice (``spacing`` px) with jitter. Residential and commercial roofs are drawn
from the SAME colour distribution (imagery cannot tell them apart); industrial
roofs are larger, light grey and striped (corrugated sheet), so they are
learnable from texture. One POI of the building's class sits at the centre of
90 % of buildings, so R vs C is learnable from the POI maps.
"""
from __future__ import annotations

import numpy as np
import pyogrio.raw
import rasterio
import shapely
from affine import Affine
from pyproj import CRS, Transformer

CRS_UTM = CRS.from_epsg(32636).to_wkt()
CRS_LL = CRS.from_epsg(4326).to_wkt()
X0, Y0 = 450000.0, 40000.0
NAMES = {1: "residential", 2: "commercial", 3: "industrial"}
OSM_VALUE = {1: "house", 2: "retail", 3: "warehouse"}
POI_TAG = {1: ("building", "apartments"), 2: ("shop", "supermarket"), 3: ("man_made", "works")}


def write_raster(path, data, transform, crs=CRS_UTM, nodata=None):
    data = np.asarray(data)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(data)


def write_polygons(path, geoms, fields: dict, crs=CRS_UTM, layer="buildings"):
    names = list(fields)
    data = [np.asarray(fields[n], dtype=object) for n in names]
    pyogrio.raw.write(str(path), shapely.to_wkb(np.asarray(geoms, dtype=object)), data, names, layer=layer,
                      driver="GPKG", geometry_type="Unknown", crs=crs)


def write_points(path, xs, ys, fields: dict, crs=CRS_UTM):
    names = list(fields)
    data = [np.asarray(fields[n], dtype=object) for n in names]
    pyogrio.raw.write(str(path), shapely.to_wkb(shapely.points(xs, ys)), data, names, layer="pois",
                      driver="GPKG", geometry_type="Point", crs=crs)


def make_scene(folder, size=512, spacing=32, seed=0, probs=(0.45, 0.30, 0.25), poi_rate=0.9,
               polygons_crs=CRS_UTM):
    """Write imagery.tif, buildings.gpkg (field ``building`` with OSM values) and
    pois.gpkg (fields ``key``/``value`` OSM tags in ``category``) into ``folder``.
    Returns a dict of paths and the per-building truth."""
    rng = np.random.default_rng(seed)
    transform = Affine(1.0, 0, X0, 0, -1.0, Y0)
    img = np.empty((3, size, size), np.float32)
    img[:] = np.array([95, 115, 80], np.float32)[:, None, None]
    img += rng.normal(0, 14, img.shape)
    geoms, classes, pois = [], [], []
    palette = np.array([[150, 70, 60], [120, 120, 125], [170, 110, 80], [90, 90, 100]], np.float32)
    for cy in range(spacing // 2, size - spacing // 2 + 1, spacing):
        for cx in range(spacing // 2, size - spacing // 2 + 1, spacing):
            k = int(rng.choice([1, 2, 3], p=probs))
            half = rng.integers(5, 8) if k != 3 else rng.integers(9, 12)
            half_y = rng.integers(5, 8) if k != 3 else rng.integers(8, 11)
            jx, jy = rng.integers(-3, 4, size=2)
            x0, x1 = cx + jx - half, cx + jx + half
            y0, y1 = cy + jy - half_y, cy + jy + half_y
            x0, y0, x1, y1 = max(x0, 1), max(y0, 1), min(x1, size - 1), min(y1, size - 1)
            if k == 3:
                roof = np.array([200, 200, 205], np.float32)[:, None, None] + rng.normal(0, 6, (3, y1 - y0, x1 - x0))
                roof[:, :, ::3] -= 45  # corrugated stripes
            else:
                roof = palette[rng.integers(len(palette))][:, None, None] + rng.normal(0, 10, (3, y1 - y0, x1 - x0))
            img[:, y0:y1, x0:x1] = roof
            geoms.append(shapely.box(X0 + x0, Y0 - y1, X0 + x1, Y0 - y0))
            classes.append(k)
            if rng.random() < poi_rate:
                pois.append((X0 + cx + jx, Y0 - (cy + jy), k))
    img = np.clip(img, 0, 255).astype(np.uint8)
    write_raster(folder / "imagery.tif", img, transform)
    geoms = np.asarray(geoms, dtype=object)
    if polygons_crs != CRS_UTM:
        tr = Transformer.from_crs(CRS_UTM, polygons_crs, always_xy=True)
        geoms = shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    write_polygons(folder / "buildings.gpkg", geoms, {"building": [OSM_VALUE[k] for k in classes]}, polygons_crs)
    px, py, pk = map(np.asarray, zip(*pois))
    write_points(folder / "pois.gpkg", px, py,
                 {POI_TAG[1][0]: [POI_TAG[1][1] if k == 1 else None for k in pk],
                  POI_TAG[2][0]: [POI_TAG[2][1] if k == 2 else None for k in pk],
                  POI_TAG[3][0]: [POI_TAG[3][1] if k == 3 else None for k in pk]})
    return {"imagery": str(folder / "imagery.tif"), "buildings": str(folder / "buildings.gpkg"),
            "pois": str(folder / "pois.gpkg"), "classes": np.asarray(classes), "transform": transform}
