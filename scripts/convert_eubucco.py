"""Convert the EUBUCCO GeoParquet samples to GeoPackages bundled in samples/eubucco/.

Run once, with pyarrow available only for this script (the product never needs it):

    pip install --no-deps --target /tmp/pa "pyarrow<18"   # pyarrow>=18 needs NumPy 2
    PYTHONPATH=/tmp/pa python scripts/convert_eubucco.py ../shared/data/eubucco samples/eubucco

Reads each ``buildings_*.parquet`` with pyarrow, decodes the WKB geometry with
shapely and writes ``buildings_*.gpkg`` (EPSG:3035, same columns) with pyogrio.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pyogrio.raw
import shapely

SIMPLIFY_M = 0.05  # metres (EPSG:3035)


def convert(src: Path, dst: Path) -> None:
    table = pq.read_table(src)
    geo = json.loads(table.schema.metadata[b"geo"])
    col = geo.get("primary_column", "geometry")
    crs = geo["columns"][col].get("crs")
    crs_text = "EPSG:3035" if crs is None or "3035" in json.dumps(crs) else json.dumps(crs)
    geoms = shapely.from_wkb(table.column(col).to_pylist())
    # The OSM footprints are densified (median 70 vertices); dropping vertices that move
    # the outline by less than 5 cm keeps the bundled files small (< 3 MB); footprint areas
    # change by at most ~2.4 % (the smallest polygons), mostly far less.
    simple = shapely.simplify(geoms, SIMPLIFY_M, preserve_topology=True)
    geoms = np.where(shapely.is_valid(simple) & ~shapely.is_empty(simple), simple, geoms)
    names = [n for n in table.column_names if n != col and not n.startswith("__")]
    data = []
    for n in names:
        values = table.column(n).to_pylist()
        if all(v is None or isinstance(v, (int, float)) for v in values):
            data.append(np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64))
        else:
            data.append(np.array([None if v is None else str(v) for v in values], dtype=object))
    kinds = set(shapely.get_type_id(geoms).tolist())
    gtype = "MultiPolygon" if 6 in kinds else "Polygon"
    if gtype == "MultiPolygon":
        geoms = np.array([shapely.MultiPolygon([g]) if g.geom_type == "Polygon" else g for g in geoms], dtype=object)
    dst.unlink(missing_ok=True)
    pyogrio.raw.write(str(dst), shapely.to_wkb(geoms), data, fields=names, crs=crs_text,
                      geometry_type=gtype, driver="GPKG", layer=dst.stem)
    print(f"{src.name}: {len(geoms)} features, {names} -> {dst} ({dst.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    src_dir, dst_dir = Path(sys.argv[1]), Path(sys.argv[2])
    dst_dir.mkdir(parents=True, exist_ok=True)
    for p in sorted(src_dir.glob("buildings_*.parquet")):
        convert(p, dst_dir / (p.stem + ".gpkg"))
