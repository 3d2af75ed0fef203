"""VRT mosaics: of the blocks a cluster run wrote (the result), and of image tiles (the input).

Both are written as GDAL VRT XML by :func:`write_vrt`; every source lies on the mosaic's
pixel grid (whole-pixel offsets, same pixel size), so the VRT only places files side by
side (no resampling). :func:`write_cog` turns a VRT into one Cloud-Optimised GeoTIFF.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from pyproj import CRS
from rasterio.windows import Window

from ..errors import InputError
from ..grid import Grid
from ..raster_io import atomic_output, open_raster

_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
               "int32": "Int32", "float32": "Float32", "float64": "Float64"}
#: image file name endings taken from a folder of tiles
TILE_SUFFIXES = (".tif", ".tiff", ".jp2", ".img", ".vrt")


@dataclass(frozen=True)
class VrtBands:
    """What every band of a mosaic is: ``count`` bands of ``dtype``, ``nodata``, optional
    band descriptions, colour table (band 1) and scale/offset of scaled integer values (None: none)."""

    count: int
    dtype: str
    nodata: float | int | None
    descriptions: tuple | None = None
    colormap: dict | None = None
    scale: float | None = None
    offset: float = 0.0


def _band_xml(b: int, bands: VrtBands, sources, vrt_dir: Path | None) -> list[str]:
    out = [f'  <VRTRasterBand dataType="{_GDAL_TYPES[np.dtype(bands.dtype).name]}" band="{b}">']
    if bands.nodata is not None:
        out.append(f"    <NoDataValue>{bands.nodata!r}</NoDataValue>")
    if bands.descriptions:
        out.append(f"    <Description>{escape(str(bands.descriptions[b - 1]))}</Description>")
    if bands.scale is not None:
        out.append(f"    <Offset>{bands.offset!r}</Offset>\n    <Scale>{bands.scale!r}</Scale>")
    if bands.colormap and b == 1:
        out.append("    <ColorInterp>Palette</ColorInterp>\n    <ColorTable>")
        for k in range(max(bands.colormap) + 1):
            c = tuple(bands.colormap.get(k, (0, 0, 0, 0))) + (255,) * 4
            out.append(f'      <Entry c1="{c[0]}" c2="{c[1]}" c3="{c[2]}" c4="{c[3]}"/>')
        out.append("    </ColorTable>")
    for path, dst, (sw, sh) in sources:
        rel, name = _source_name(path, vrt_dir)
        out.append(f'    <SimpleSource>\n      <SourceFilename relativeToVRT="{rel}">{escape(name)}</SourceFilename>'
                   f"\n      <SourceBand>{b}</SourceBand>"
                   f'\n      <SrcRect xOff="0" yOff="0" xSize="{sw}" ySize="{sh}"/>'
                   f'\n      <DstRect xOff="{int(dst.col_off)}" yOff="{int(dst.row_off)}" xSize="{int(dst.width)}" '
                   f'ySize="{int(dst.height)}"/>\n    </SimpleSource>')
    out.append("  </VRTRasterBand>")
    return out


def _source_name(path, vrt_dir: Path | None) -> tuple[int, str]:
    p = Path(path).resolve()
    if vrt_dir is not None:
        try:
            return 1, p.relative_to(vrt_dir.resolve()).as_posix()
        except ValueError:
            pass
    return 0, str(p)


def vrt_xml(grid: Grid, bands: VrtBands, sources, vrt_dir: Path | None = None) -> str:
    """VRT XML of ``grid`` made of ``sources`` [(file, window on the grid, (file width, height))];
    files under ``vrt_dir`` are referenced relative to the VRT."""
    t = grid.transform
    lines = [f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">']
    if grid.crs:
        lines.append(f"  <SRS>{escape(grid.crs)}</SRS>")
    lines.append(f"  <GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>")
    for b in range(1, bands.count + 1):
        lines += _band_xml(b, bands, sources, vrt_dir)
    lines.append("</VRTDataset>")
    return "\n".join(lines) + "\n"


def write_vrt(path: str | os.PathLike, grid: Grid, bands: VrtBands, sources, relative: bool = True) -> bool:
    """Write the VRT (temporary file, then rename). Leaves an identical existing file as it
    is (so its modification time, part of resume fingerprints, does not change); returns
    whether it wrote."""
    path = Path(path)
    text = vrt_xml(grid, bands, sources, path.parent if relative else None)
    if path.exists() and path.read_text() == text:
        return False
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text)
    return True


def write_cog(vrt_path: str, cog_path: str) -> str:
    """One Cloud-Optimised GeoTIFF (deflate, 512 px tiles, overviews) of ``vrt_path``."""
    import rasterio.shutil

    with atomic_output(cog_path) as tmp:
        rasterio.shutil.copy(vrt_path, tmp, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=512, BIGTIFF="IF_SAFER",
                             NUM_THREADS=1)
    return cog_path


# ---------------------------------------------------------------- input tiles
def tile_paths(imagery) -> list[str] | None:
    """The image files of a folder or a list of paths (several files or a comma-separated
    string), sorted; None when ``imagery`` is one file."""
    if isinstance(imagery, (list, tuple)):
        items = [str(p) for p in imagery]
    elif os.path.isdir(str(imagery)):
        items = sorted(str(p) for p in Path(imagery).iterdir() if p.suffix.lower() in TILE_SUFFIXES)
        if not items:
            raise InputError("IMAGERY", f"the folder '{imagery}' holds no image tiles ({', '.join(TILE_SUFFIXES)}).",
                             "give a folder of GeoTIFF tiles, a VRT or one raster.")
    elif "," in str(imagery) and not os.path.exists(str(imagery)):
        items = [s.strip() for s in str(imagery).split(",") if s.strip()]
    else:
        return None
    return items if len(items) > 1 else None


def _tile_info(path: str) -> dict:
    with open_raster(path, "IMAGERY") as ds:
        if ds.crs is None:
            raise InputError("IMAGERY", f"tile '{path}' has no CRS.", "assign the tiles their CRS first.")
        return {"path": path, "crs": ds.crs.to_wkt(), "transform": ds.transform, "width": ds.width,
                "height": ds.height, "count": ds.count, "dtype": ds.dtypes[0], "nodata": ds.nodata,
                "descriptions": ds.descriptions}


def _check_same(infos: list[dict]) -> None:
    first = infos[0]
    crs0 = CRS.from_wkt(first["crs"])
    for t in infos[1:]:
        if CRS.from_wkt(t["crs"]) != crs0:
            raise InputError("IMAGERY", f"the tiles are in different CRSs: '{Path(first['path']).name}' in "
                             f"{crs0.name}, '{Path(t['path']).name}' in {CRS.from_wkt(t['crs']).name}.",
                             f"reproject the tiles to one CRS first (gdalwarp -t_srs EPSG:{crs0.to_epsg() or '...'}"
                             " tile.tif tile_reprojected.tif, or Raster > Projections > Warp), then run again.")
        for key in ("count", "dtype"):
            if t[key] != first[key]:
                raise InputError("IMAGERY", f"the tiles differ in {key}: '{Path(first['path']).name}' has "
                                 f"{first[key]}, '{Path(t['path']).name}' has {t[key]}.",
                                 "give tiles of one product (same bands and data type).")


def _offset(value: float, origin: float, res: float, path: str) -> int:
    k = (value - origin) / res
    if abs(k - round(k)) > 1e-6:
        raise InputError("IMAGERY", f"tile '{Path(path).name}' is not on the pixel grid of the others (offset of "
                         f"{k:.3f} pixels).", "resample the tiles onto one grid (gdalwarp -tap -tr ...) first.")
    return int(round(k))


def mosaic_grid(infos: list[dict]) -> tuple[Grid, list]:
    """The grid covering all tiles and each tile's (path, window, (width, height)) on it."""
    t0 = infos[0]["transform"]
    rx, ry = t0.a, t0.e
    for t in infos:
        tr = t["transform"]
        if not (math.isclose(tr.a, rx, rel_tol=1e-9) and math.isclose(tr.e, ry, rel_tol=1e-9)) or tr.b or tr.d:
            raise InputError("IMAGERY", f"tile '{Path(t['path']).name}' has pixels of {tr.a:g} x {-tr.e:g}, the "
                             f"first tile {rx:g} x {-ry:g}.", "resample the tiles to one pixel size first.")
    xmin = min(t["transform"].c for t in infos)
    ymax = max(t["transform"].f for t in infos)
    placed = []
    for t in infos:
        col = _offset(t["transform"].c, xmin, rx, t["path"])
        row = _offset(t["transform"].f, ymax, ry, t["path"])
        placed.append((t["path"], Window(col, row, t["width"], t["height"]), (t["width"], t["height"])))
    width = max(int(w.col_off + w.width) for _, w, _ in placed)
    height = max(int(w.row_off + w.height) for _, w, _ in placed)
    from affine import Affine

    return Grid(Affine(rx, 0, xmin, 0, ry, ymax), width, height, infos[0]["crs"]), placed


def mosaic_tiles(tiles: list[str], vrt_path: str | os.PathLike) -> str:
    """Write a VRT of image ``tiles`` (one CRS, one pixel grid) to ``vrt_path``; refuses tiles
    in different CRSs, of other pixel sizes or off the grid, with the fix."""
    infos = [_tile_info(p) for p in tiles]
    _check_same(infos)
    grid, placed = mosaic_grid(infos)
    first = infos[0]
    write_vrt(vrt_path, grid, VrtBands(first["count"], first["dtype"], first["nodata"], first["descriptions"]
                                       if all(first["descriptions"]) else None), placed, relative=False)
    return str(vrt_path)
