"""POI probability maps (seed 000 §2.5, Eq. 1-3).

For each class k (residential, commercial, industrial) and each pixel centre
i: ``d = geodesic distance to the nearest POI of class k`` (metres, WGS84),
``p = 1 - min(d / d_max_k, 1)``. Output: three float32 bands in [0, 1], nodata
outside the grid's valid area.

The cost follows the area near POIs, not pixels x POIs: the grid is cut into cells of
about 32 m (:class:`_CellFrames`); a k-d tree on ECEF coordinates gives each cell centre its
nearest POI, cells farther than d_max plus their own reach are zero without more work, and
the other cells keep the few POIs that can be nearest to one of their pixels (triangle
inequality on 3-D chords). Within a cell the pixel centres' ECEF coordinates are affine in
the pixel offsets (< 0.1 mm from the exact ones), so the squared chord to each candidate is
a sum of a row term and a column term: a few vectorised operations per pixel and candidate.
The chord stands for the surface distance up to d_max of 10 km (shorter by < 1 mm), the
arc on the mean-radius sphere beyond. Against exact WGS84 geodesics the distances err
< 1e-5 relative (tested on brute-force pixels); stored values are rounded to 2^-16.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.spatial import cKDTree

from ..errors import InputError
from ..geodesy import (approx_pixel_metres, arc_to_chord, chord_to_arc, lonlat_to_ecef,
                      to_lonlat)
from ..grid import Grid
from ..progress import Progress, ensure
from ..outputs import refuse_input_as_output
from ..raster_io import atomic_raster, bounded_gdal_cache, open_raster, read_masked, require_crs

CLASSES = ("residential", "commercial", "industrial")
#: Default influence radii d_max in metres (R, C, I): industrial sites reach farthest.
DEFAULT_MAX_DISTANCES = (500.0, 500.0, 1500.0)
NODATA = -1.0
#: Probabilities are stored rounded to multiples of 1/QUANTUM_STEPS (2^-16: a distance step of
#: d_max / 65536, 7.6 mm at 500 m): the low mantissa bits are then zero and ZSTD with the
#: floating-point predictor packs them ~2.5x smaller than the unrounded values, in less time.
QUANTUM_STEPS = 65536
#: GeoTIFF creation options of the output (values are plain float32: every reader gets p).
OUTPUT_PROFILE = {"compress": "zstd", "zstd_level": 1, "predictor": 3}
#: Target side (m) of the cells whose pixels share candidate POIs; ECEF positions are affine
#: in the pixel offsets within a cell (error < 0.1 mm at 32 m).
_CELL_METRES = 32.0
_MAX_CELL_PIXELS = 64
#: Slack (m) on a cell's reach for the affine model's error.
_REACH_SLACK = 1e-3
#: Cells with more candidate POIs than this query the k-d tree per pixel instead.
_MAX_CANDIDATES = 24
#: Pixel values (float64) of the per-pixel k-d tree step held at once.
_PAIR_BUDGET = 2**20
#: Up to this d_max (m) the chord stands for the arc (shorter by < 1 mm).
_CHORD_IS_ARC_METRES = 10_000.0


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


class _CellFrames:
    """Pixel-centre ECEF coordinates of a grid, cell by cell.

    A cell is ``n`` x ``n`` pixels (``n`` a power of two, about :data:`_CELL_METRES` on a
    side). Its pixel centres are ``P(u, v) = centre + u * row_step + v * col_step`` (ECEF
    metres; ``u``, ``v`` the pixel offsets from the cell centre, :attr:`offsets`), with the
    centre and steps from exact ECEF coordinates of the cell's four corners. Over a cell of
    32 m the surface and the projection bend the true positions away from this plane by
    < 0.1 mm."""

    def __init__(self, grid: Grid):
        if not grid.crs:
            raise InputError("REFERENCE", "the target grid has no CRS.", "give the raster a CRS or pick one.")
        self.grid = grid
        self.to_ll = to_lonlat(grid.crs)
        xmin, ymin, xmax, ymax = grid.bounds
        _, lat = self.to_ll.transform((xmin + xmax) / 2, (ymin + ymax) / 2)
        px = approx_pixel_metres(grid.crs, max(grid.res), lat if np.isfinite(lat) else 0.0)
        n = 1
        while n < _MAX_CELL_PIXELS and 2 * n * px <= _CELL_METRES:
            n *= 2
        self.n = n
        self.offsets = np.arange(n, dtype=np.float64) + 0.5 - n / 2

    def exact(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(len(rows), len(cols), 3) ECEF metres at fractional pixel coordinates (0 = top/left edge)."""
        t = self.grid.transform
        X, Y = np.meshgrid(t.c + t.a * cols, t.f + t.e * rows)
        lon, lat = self.to_ll.transform(X, Y)
        if not (np.all(np.isfinite(lon)) and np.all(np.isfinite(lat))):
            raise InputError("REFERENCE", "part of the grid cannot be transformed to longitude/latitude.",
                             "use a grid inside the CRS's area of use.")
        return lonlat_to_ecef(lon, lat)

    def frames(self, window) -> "_Frames":
        """The cells covering ``window`` (its size rounded up to whole cells), row by row."""
        n = self.n
        nr, nc = -(-int(window.height) // n), -(-int(window.width) // n)
        corners = self.exact(int(window.row_off) + n * np.arange(nr + 1, dtype=float),
                             int(window.col_off) + n * np.arange(nc + 1, dtype=float))
        tl, tr, bl, br = corners[:-1, :-1], corners[:-1, 1:], corners[1:, :-1], corners[1:, 1:]
        row_step = ((bl - tl) + (br - tr)).reshape(-1, 3) / (2 * n)
        col_step = ((tr - tl) + (br - bl)).reshape(-1, 3) / (2 * n)
        centre = ((tl + tr) + (bl + br)).reshape(-1, 3) / 4
        h = (n - 1) / 2
        reach = h * np.maximum(np.linalg.norm(row_step + col_step, axis=1),
                               np.linalg.norm(row_step - col_step, axis=1)) + _REACH_SLACK
        return _Frames(centre, row_step, col_step, reach, nr, nc)


@dataclass
class _Frames:
    """Cells of a block: ECEF centre, steps per pixel row and column (all (cells, 3) metres),
    reach (chord metres from the centre to the farthest pixel centre), cells down and across."""

    centre: np.ndarray
    row_step: np.ndarray
    col_step: np.ndarray
    reach: np.ndarray
    rows: int
    cols: int


def _candidates(tree: cKDTree, f: _Frames, limit: float):
    """Cells with a POI within chord ``limit`` of some pixel centre, and per such cell the POIs
    that can be nearest to one of its pixels: (cells, counts, flat POI indices grouped by cell).

    Every pixel is within ``reach`` of its cell centre, so a pixel's nearest POI lies within
    ``c0 + 2 reach`` of the centre (``c0`` the centre's nearest POI) and, if it matters, within
    ``limit + reach``."""
    c0, _ = tree.query(f.centre, distance_upper_bound=limit + float(f.reach.max()) + 1.0)
    cells = np.flatnonzero(c0 <= limit + f.reach)
    if not len(cells):
        return cells, np.zeros(0, np.int64), np.zeros(0, np.int64)
    radius = np.minimum(c0[cells] + 2 * f.reach[cells], limit + f.reach[cells]) + _REACH_SLACK
    lists = tree.query_ball_point(f.centre[cells], radius, return_sorted=False)
    counts = np.fromiter((len(x) for x in lists), np.int64, len(lists))
    return cells, counts, np.fromiter(itertools.chain.from_iterable(lists), np.int64, int(counts.sum()))


def _pair_terms(points: np.ndarray, f: _Frames, cells: np.ndarray, poi: np.ndarray, u: np.ndarray):
    """Squared chord (m^2) from pixel ``(u, v)`` of each cell to its POI is
    ``rows[:, u] + cols[:, v] (+ twist * u * v)``: the expansion of ``|centre + u r + v c - Q|^2``
    with ``D = centre - Q`` and ``r``, ``c`` the row and column steps."""
    d = f.centre[cells] - points[poi]
    r, c = f.row_step[cells], f.col_step[cells]
    dot = lambda a, b: np.einsum("ij,ij->i", a, b)[:, None]  # noqa: E731
    rows = dot(d, d) + (2 * u) * dot(d, r) + (u * u) * dot(r, r)
    cols = (2 * u) * dot(d, c) + (u * u) * dot(c, c)
    return rows, cols, 2 * dot(r, c)[:, :, None]


def _add_pair(out: np.ndarray, first: bool, points, f: _Frames, cells, poi, u, twisted: bool) -> None:
    """Squared chords from the pixels of ``cells`` to ``poi`` (one per cell) into ``out``:
    written when ``first``, else the element-wise minimum."""
    rows, cols, twist = _pair_terms(points, f, cells, poi, u)
    sq = np.add(rows[:, :, None], cols[:, None, :], out=out if first else None)
    if twisted:  # grids whose row and column directions are not perpendicular on the ground
        sq += twist * np.multiply.outer(u, u)
    if not first:
        np.minimum(out, sq, out=out)


def _pixel_chords(tree: cKDTree, f: _Frames, cells: np.ndarray, u: np.ndarray, limit: float) -> np.ndarray:
    """(cells, n, n) squared chord (m^2, inf beyond ``limit``) from each pixel centre of
    ``cells`` to its nearest POI, by a k-d tree query per pixel (cells crowded with POIs)."""
    n = len(u)
    pts = (f.centre[cells, None, None, :] + f.row_step[cells, None, None, :] * u[None, :, None, None]
           + f.col_step[cells, None, None, :] * u[None, None, :, None])
    c, _ = tree.query(pts.reshape(-1, 3), distance_upper_bound=limit * (1 + 1e-9))
    return (c * c).reshape(len(cells), n, n)


def _is_twisted(f: _Frames, u: np.ndarray) -> bool:
    """True when the ``u v`` term of the squared chord can reach 1e-8 m^2 in this block."""
    return float(np.abs(np.einsum("ij,ij->i", f.row_step, f.col_step)).max()) * 2 * float(u[-1]) ** 2 > 1e-8


def _nearest_sq_chords(c: "_ClassPois", f: _Frames, u: np.ndarray):
    """(cells, squared chords (cells, n, n)) for the cells of ``f`` with a POI of class ``c``
    within its d_max chord of a pixel centre; other cells have none within it.

    Cells are ordered by candidate count, most first: candidate ``j`` of every cell that has
    one is then a prefix of the cells, so each rank is one vectorised step on a slice.
    Cells with more than :data:`_MAX_CANDIDATES` candidates query the k-d tree per pixel."""
    cells, counts, idx = _candidates(c.tree, f, c.limit)
    order = np.argsort(-counts, kind="stable")
    starts = (np.cumsum(counts) - counts)[order]
    cells, counts = cells[order], counts[order]
    n = len(u)
    out = np.empty((len(cells), n, n))
    crowded = int(np.sum(counts > _MAX_CANDIDATES))
    step = max(1, _PAIR_BUDGET // n ** 2)
    for s in range(0, crowded, step):
        out[s:min(s + step, crowded)] = _pixel_chords(c.tree, f, cells[s:min(s + step, crowded)], u, c.limit)
    twisted = _is_twisted(f, u)
    for j in range(int(counts[crowded]) if crowded < len(cells) else 0):
        m = crowded + int(np.sum(counts[crowded:] > j))
        _add_pair(out[crowded:m], j == 0, c.points, f, cells[crowded:m], idx[starts[crowded:m] + j], u, twisted)
    return cells, out


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


def _grid_ecef_bounds(cells: _CellFrames, window=None) -> tuple[np.ndarray, np.ndarray]:
    """ECEF bounding box of the grid, or of ``window`` of it (its outline plus the surface's bulge)."""
    g = cells.grid
    r0, c0, h, w = (0, 0, g.height, g.width) if window is None else (
        int(window.row_off), int(window.col_off), int(window.height), int(window.width))
    rows = np.unique(np.linspace(r0, r0 + h, 64))
    cols = np.unique(np.linspace(c0, c0 + w, 64))
    pts = cells.exact(rows, cols).reshape(-1, 3)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    diag = float(np.linalg.norm(hi - lo))
    pad = diag * diag / (8 * 6.3e6) + 1.0
    return lo - pad, hi + pad


@dataclass
class _ClassPois:
    """The POIs of one class that can reach the grid: ECEF points, their k-d tree, d_max (m)
    and the chord of d_max (m)."""

    points: np.ndarray
    tree: cKDTree
    dmax: float
    limit: float


def _class_pois(pois: PoiSet, cells: _CellFrames, dmax, progress: Progress):
    """Per class, the POIs within d_max of the grid (None where there is none: warned), and
    the POI count per class name."""
    lon, lat = to_lonlat(pois.crs_wkt).transform(pois.x, pois.y)
    ok = np.isfinite(lon) & np.isfinite(lat)
    if not ok.any():
        raise InputError("INPUT", "no POI could be transformed to longitude/latitude.",
                         "check the layer's CRS.")
    xyz = lonlat_to_ecef(lon[ok], lat[ok])
    cls = pois.class_index[ok]
    lo, hi = _grid_ecef_bounds(cells)
    out: list[_ClassPois | None] = []
    counts = {}
    for k, name in enumerate(CLASSES):
        reach = arc_to_chord(dmax[k])
        near = np.all((xyz >= lo - reach) & (xyz <= hi + reach), axis=1)
        sel = xyz[(cls == k) & near]
        counts[name] = int(np.sum(cls == k))
        if len(sel) == 0:
            out.append(None)
            progress.warning(f"no {name} POI within {dmax[k]:g} m of the grid: its band is all zero.")
        else:
            out.append(_ClassPois(sel, cKDTree(sel), dmax[k], reach))
    return out, counts


def _block_probabilities(classes, cells: _CellFrames, window) -> np.ndarray:
    """(3, rows, cols) float32 probabilities of the pixels of ``window`` (all valid)."""
    n, h, w = cells.n, int(window.height), int(window.width)
    f = cells.frames(window)
    out = np.zeros((3, f.rows * n, f.cols * n), np.float32)
    for k, c in enumerate(classes):
        if c is None:
            continue
        idx, sq = _nearest_sq_chords(c, f, cells.offsets)
        by_cell = out[k].reshape(f.rows, n, f.cols, n).swapaxes(1, 2)  # a view: (cell row, cell col, n, n)
        by_cell[idx // f.cols, idx % f.cols] = _probability(sq, c.dmax)
    return out[:, :h, :w]


def _probability(sq_chord: np.ndarray, dmax: float) -> np.ndarray:
    """float32 ``p = 1 - min(d / d_max, 1)`` from squared chords (m^2), rounded to a multiple of
    ``1 / QUANTUM_STEPS``; ``d`` is the chord up to d_max of 10 km (it is shorter than the arc
    by ``c^3 / 24R^2``, < 1 mm there), else the arc."""
    d = np.sqrt(np.maximum(sq_chord, 0.0, out=sq_chord), out=sq_chord)
    if dmax > _CHORD_IS_ARC_METRES:
        d = chord_to_arc(d)
    p = d.astype(np.float32)
    p *= np.float32(-QUANTUM_STEPS / dmax)
    p += np.float32(QUANTUM_STEPS)
    np.maximum(np.rint(p, out=p), np.float32(0.0), out=p)
    p *= np.float32(1.0 / QUANTUM_STEPS)
    return p


def check_poi_inputs(pois, max_distances) -> tuple:
    """d_max per class (m) from ``max_distances``, after checking that ``pois`` has a CRS and points."""
    dmax = parse_max_distances(max_distances)
    if not pois.crs_wkt:
        raise InputError("INPUT", "the POI layer has no CRS.", "assign the layer's CRS first.")
    if len(pois.x) == 0:
        raise InputError("INPUT", "the POI layer has no point.", "give a layer with POI points.")
    return dmax


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
    dmax = check_poi_inputs(pois, max_distances)
    cells = _CellFrames(grid)
    if reference_path:
        _open_reference(reference_path, grid).close()  # fail before any work
    classes, counts = _class_pois(pois, cells, dmax, progress)
    ref = _open_reference(reference_path, grid) if reference_path else None
    any_valid = False
    try:
        blocks = list(grid.blocks(block_size))
        with bounded_gdal_cache(), atomic_raster(output_path, grid, 3, np.float32, nodata=NODATA,
                                                 descriptions=[f"p_{c}" for c in CLASSES],
                                                 style="poi_probability.qml", **OUTPUT_PROFILE) as dst:
            dst.update_tags(POI_MAX_DISTANCES_M=",".join(f"{d:g}" for d in dmax),
                            POI_QUANTUM=f"1/{QUANTUM_STEPS}")
            for i, block in enumerate(blocks):
                progress.check_cancelled()
                w = block.window
                valid = read_masked(ref, w, "REFERENCE")[1] if ref is not None else None
                any_valid = any_valid or valid is None or bool(valid.any())
                if valid is None or valid.any():
                    out = _block_probabilities(classes, cells, w)
                else:
                    out = np.zeros((3, int(w.height), int(w.width)), np.float32)
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
            "width": grid.width, "height": grid.height, "cell_pixels": cells.n}
