"""Small file writers shared by the evaluation unit tests (EPSG:3035 by default)."""
import numpy as np
import pyogrio.raw
import rasterio
import shapely


def write_polys(path, geoms, fields: dict, crs="EPSG:3035"):
    """Polygons with the given fields as a GeoPackage; returns the path as str."""
    names = list(fields)
    data = [np.asarray(fields[n], dtype=object) for n in names]
    pyogrio.raw.write(str(path), shapely.to_wkb(np.asarray(geoms, dtype=object)), data, fields=names,
                      crs=crs, geometry_type="Polygon", driver="GPKG")
    return str(path)


def write_raster(path, arr, transform, crs="EPSG:3035", nodata=None):
    """A one-band GeoTIFF; returns the path as str."""
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1,
                       dtype=arr.dtype, crs=crs, transform=transform, nodata=nodata) as ds:
        ds.write(arr, 1)
    return str(path)
