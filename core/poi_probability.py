"""POI probability maps (seed 000 §2.5, Eq. 1-3).

For each class k (residential, commercial, industrial) and each pixel centre
i: ``d = geodesic distance to the nearest POI of class k`` (metres, WGS84),
``p = 1 - min(d / d_max_k, 1)``. Output: three float32 bands in [0, 1], nodata
outside the grid's valid area.

Nearest POIs are found with a k-d tree on ECEF coordinates (O(pixels log
POIs)); pixel-centre ECEF coordinates are interpolated bilinearly from an
exact lattice whose spacing keeps the interpolation error below 0.1 mm.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.spatial import cKDTree

from .errors import InputError
from .geodesy import (approx_pixel_metres, arc_to_chord, chord_to_arc, lonlat_to_ecef,
                      to_lonlat)
from .grid import Grid
from .progress import Progress, ensure
from .outputs import refuse_input_as_output
from .raster_io import atomic_raster, bounded_gdal_cache, open_raster, read_masked, require_crs

CLASSES = ("residential", "commercial", "industrial")
#: Default influence radii d_max in metres (R, C, I): industrial sites reach farthest.
DEFAULT_MAX_DISTANCES = (500.0, 500.0, 1500.0)
NODATA = -1.0
#: Largest lattice spacing (m) for which bilinear ECEF interpolation errs < 0.1 mm.
_LATTICE_METRES = 70.0


@dataclass
class PoiSet:
    """POIs as coordinates in ``crs_wkt`` with a class index per point
    (0 R, 1 C, 2 I; -1 for unmapped or ignored points, which are skipped)."""

    x: np.ndarray
    y: np.ndarray
    class_index: np.ndarray
    crs_wkt: str

    def __post_init__(self):
        self.x = np.asarray(self.x, dtype=np.float64)
        self.y = np.asarray(self.y, dtype=np.float64)
        self.class_index = np.asarray(self.class_index, dtype=np.int64)
        if not (len(self.x) == len(self.y) == len(self.class_index)):
            raise ValueError("x, y and class_index must have the same length")


def parse_max_distances(text: str | Sequence[float] | None) -> tuple[float, float, float]:
    """``"R,C,I"`` metres (or a sequence) -> three positive floats."""
    if text is None or text == "":
        return DEFAULT_MAX_DISTANCES
    try:
        vals = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except ValueError as exc:
        raise InputError("MAX_DISTANCES", f"'{text}' is not three numbers.", "write e.g. 500,500,1500 (metres).") from exc
    if len(vals) != 3 or any(not (v > 0) for v in vals):
        raise InputError("MAX_DISTANCES", f"needs three positive distances in metres (R,C,I), got '{text}'.",
                         "write e.g. 500,500,1500.")
    return tuple(vals)  # type: ignore[return-value]


class _EcefLattice:
    """Pixel-centre ECEF coordinates of a grid, interpolated from exact values on a lattice."""

    def __init__(self, grid: Grid):
        if not grid.crs:
            raise InputError("REFERENCE", "the target grid has no CRS.", "give the raster a CRS or pick one.")
        self.grid = grid
        self.to_ll = to_lonlat(grid.crs)
        xmin, ymin, xmax, ymax = grid.bounds
        _, lat = self.to_ll.transform((xmin + xmax) / 2, (ymin + ymax) / 2)
        px = approx_pixel_metres(grid.crs, max(grid.res), lat if np.isfinite(lat) else 0.0)
        self.step = max(1, int(_LATTICE_METRES // max(px, 1e-9)))

    def _exact(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        t = self.grid.transform
        xs = t.c + t.a * (cols + 0.5)
        ys = t.f + t.e * (rows + 0.5)
        X, Y = np.meshgrid(xs, ys)
        lon, lat = self.to_ll.transform(X, Y)
        if not (np.all(np.isfinite(lon)) and np.all(np.isfinite(lat))):
            raise InputError("REFERENCE", "part of the grid cannot be transformed to longitude/latitude.",
                             "use a grid inside the CRS's area of use.")
        return lonlat_to_ecef(lon, lat)

    def block(self, window) -> np.ndarray:
        """(rows, cols, 3) ECEF metres of the pixel centres of ``window``."""
        r0, c0 = int(window.row_off), int(window.col_off)
        h, w = int(window.height), int(window.width)
        s = self.step
        if s == 1:
            return self._exact(np.arange(r0, r0 + h, dtype=float), np.arange(c0, c0 + w, dtype=float))
        lr = np.arange(r0, r0 + h - 1 + s, s, dtype=float)
        lc = np.arange(c0, c0 + w - 1 + s, s, dtype=float)
        lat = self._exact(lr, lc)  # (len(lr), len(lc), 3)
        u = (np.arange(h, dtype=float)) / s
        v = (np.arange(w, dtype=float)) / s
        i0 = np.minimum(u.astype(int), len(lr) - 2) if len(lr) > 1 else np.zeros(h, int)
        j0 = np.minimum(v.astype(int), len(lc) - 2) if len(lc) > 1 else np.zeros(w, int)
        tu = (u - i0)[:, None, None]
        tv = (v - j0)[None, :, None]
        i1 = np.minimum(i0 + 1, len(lr) - 1)
        j1 = np.minimum(j0 + 1, len(lc) - 1)
        top = lat[i0][:, j0] * (1 - tv) + lat[i0][:, j1] * tv
        bot = lat[i1][:, j0] * (1 - tv) + lat[i1][:, j1] * tv
        return top * (1 - tu) + bot * tu


def reference_grid(path: str, name: str = "REFERENCE") -> Grid:
    """The grid of the reference raster at ``path``; :class:`InputError` naming
    ``name`` when it cannot be read or has no CRS."""
    with open_raster(path, name) as ds:
        require_crs(ds, name)
        return Grid.from_dataset(ds)


def _open_reference(path: str, grid: Grid):
    """Open the reference raster and check it is on ``grid`` and has a CRS."""
    ref = open_raster(path, "REFERENCE")
    try:
        require_crs(ref, "REFERENCE")
        if (ref.width, ref.height) != (grid.width, grid.height) or not ref.transform.almost_equals(grid.transform):
            raise InputError("REFERENCE", f"'{path}' ({ref.width} x {ref.height} px) is not on the target grid "
                             f"({grid.width} x {grid.height} px).", "use the reference raster's own grid.")
    except BaseException:
        ref.close()
        raise
    return ref


def _grid_ecef_bounds(lattice: _EcefLattice) -> tuple[np.ndarray, np.ndarray]:
    """ECEF bounding box of the grid (its outline plus the surface's bulge)."""
    g = lattice.grid
    n = 64
    rows = np.unique(np.linspace(0, g.height - 1, n).round())
    cols = np.unique(np.linspace(0, g.width - 1, n).round())
    pts = lattice._exact(rows, cols).reshape(-1, 3)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    diag = float(np.linalg.norm(hi - lo))
    pad = diag * diag / (8 * 6.3e6) + 1.0
    return lo - pad, hi + pad


def poi_probability(pois: PoiSet, grid: Grid, output_path: str,
                    max_distances: Sequence[float] = DEFAULT_MAX_DISTANCES,
                    reference_path: str | None = None, block_size: int = 512,
                    progress: Progress | None = None) -> dict:
    """Write the three POI probability bands (R, C, I) on ``grid`` to ``output_path``.

    ``reference_path``: when given, pixels that are nodata in that raster are
    nodata in the output; it must be on ``grid``, have a CRS and at least one
    valid pixel (else :class:`InputError` naming REFERENCE, and no output).
    POIs outside the grid still count. Returns a summary with the POI count per
    class used.
    """
    refuse_input_as_output({"OUTPUT": output_path}, {"REFERENCE": reference_path})
    progress = ensure(progress)
    dmax = parse_max_distances(max_distances)
    if not pois.crs_wkt:
        raise InputError("INPUT", "the POI layer has no CRS.", "assign the layer's CRS first.")
    if len(pois.x) == 0:
        raise InputError("INPUT", "the POI layer has no point.", "give a layer with POI points.")
    lattice = _EcefLattice(grid)
    if reference_path:
        _open_reference(reference_path, grid).close()  # fail before any work
    lon, lat = to_lonlat(pois.crs_wkt).transform(pois.x, pois.y)
    ok = np.isfinite(lon) & np.isfinite(lat)
    if not ok.any():
        raise InputError("INPUT", "no POI could be transformed to longitude/latitude.",
                         "check the layer's CRS.")
    xyz = lonlat_to_ecef(lon[ok], lat[ok])
    cls = pois.class_index[ok]
    lo, hi = _grid_ecef_bounds(lattice)
    trees: list[cKDTree | None] = []
    counts = {}
    for k, name in enumerate(CLASSES):
        reach = arc_to_chord(dmax[k])
        near = np.all((xyz >= lo - reach) & (xyz <= hi + reach), axis=1)
        sel = xyz[(cls == k) & near]
        counts[name] = int(np.sum(cls == k))
        if len(sel) == 0:
            trees.append(None)
            progress.warning(f"no {name} POI within {dmax[k]:g} m of the grid: its band is all zero.")
        else:
            trees.append(cKDTree(sel))
    chords = [arc_to_chord(d) for d in dmax]

    ref = _open_reference(reference_path, grid) if reference_path else None
    any_valid = False
    try:
        blocks = list(grid.blocks(block_size))
        with bounded_gdal_cache(), atomic_raster(output_path, grid, 3, np.float32, nodata=NODATA,
                           descriptions=[f"p_{c}" for c in CLASSES], style="poi_probability.qml") as dst:
            for i, block in enumerate(blocks):
                progress.check_cancelled()
                w = block.window
                out = np.zeros((3, int(w.height), int(w.width)), np.float32)
                valid = read_masked(ref, w, "REFERENCE")[1] if ref is not None else None
                any_valid = any_valid or valid is None or bool(valid.any())
                if valid is None or valid.any():
                    pts = lattice.block(w).reshape(-1, 3)
                    if valid is not None:
                        pts = pts[valid.ravel()]
                    for k, tree in enumerate(trees):
                        if tree is None:
                            continue
                        c, _ = tree.query(pts, k=1, distance_upper_bound=chords[k] * (1 + 1e-9), workers=-1)
                        d = chord_to_arc(np.where(np.isfinite(c), c, chords[k]))
                        p = (1.0 - np.minimum(d / dmax[k], 1.0)).astype(np.float32)
                        if valid is None:
                            out[k] = p.reshape(out.shape[1:])
                        else:
                            out[k][valid] = p
                if valid is not None:
                    out[:, ~valid] = NODATA
                dst.write(out, window=w)
                progress.set_fraction((i + 1) / len(blocks))
            if not any_valid:  # inside atomic_raster: nothing is written
                raise InputError("REFERENCE", f"'{reference_path}' holds no valid pixel (all nodata).",
                                 "check the raster and its nodata value, or give no reference "
                                 "(extent, pixel size and CRS) to map every pixel.")
    finally:
        if ref is not None:
            ref.close()
    return {"output": output_path, "poi_counts": counts, "max_distances_m": list(dmax),
            "width": grid.width, "height": grid.height, "lattice_step": lattice.step}
