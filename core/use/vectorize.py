"""Building polygons from a footprint mask raster, block by block, merged across block
seams, with per-building use attributes from the probability raster.

Each block of the mask is labelled into 4-connected components (``scipy.ndimage.label``)
and vectorised with ``rasterio.features.shapes`` in *pixel* coordinates (integers, so
parts cut by a block seam meet exactly). A component that touches an inner block edge is
kept aside with its pixel count and probability sums; at the end those parts are dissolved
(``shapely.union_all``), split again into connected polygons, and their attributes read
again over their own pixels (in row-major order, as for any other building, so that a
building's attributes do not depend on where blocks cut it). Everything else is written as soon as its block is done, so memory is bounded by one block
plus the parts lying on seams.
"""
from __future__ import annotations

import contextlib
import errno
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from rasterio import features
from rasterio.windows import Window
from scipy import ndimage

from ..outputs import refuse_input_as_output
from ..errors import InputError
from ..grid import Grid
from ..progress import Progress, ensure
from ..raster_io import atomic_output, open_raster, read_masked
from ..vector_io import GPKG_CREATION
from .probability_type import read_probabilities

USE_NAMES = ("residential", "commercial", "industrial")
FIELDS = ("use_class", "use_name", "p_residential", "p_commercial", "p_industrial", "confidence",
          "area_m2", "pixels")
_FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])


def attributes(sums: np.ndarray, nprob: np.ndarray, counts: np.ndarray, pixel_area_m2: float
               ) -> dict[str, np.ndarray]:
    """Attributes of buildings from per-building probability sums (n, 3) over the ``nprob``
    pixels that have probabilities, and pixel counts (n,). ``use_class`` 1 R, 2 C, 3 I
    (argmax of the mean probabilities; 0 'unknown' without probabilities), ``confidence``
    the winning mean probability."""
    counts = np.asarray(counts, np.float64)
    nprob = np.asarray(nprob, np.float64)
    n = len(counts)
    mean = np.where(nprob[:, None] > 0, sums / np.maximum(nprob, 1)[:, None], np.nan) if n else np.zeros((0, 3))
    known = nprob > 0
    arg = np.argmax(np.where(np.isfinite(mean), mean, -1), axis=1) if n else np.zeros(0, int)
    cls = np.where(known, arg + 1, 0).astype(np.int32)
    names = np.array([USE_NAMES[c - 1] if c else "unknown" for c in cls], dtype=object)
    conf = np.where(known, mean[np.arange(n), arg] if n else 0.0, np.nan)
    return {"use_class": cls, "use_name": names,
            "p_residential": mean[:, 0].astype(np.float64), "p_commercial": mean[:, 1].astype(np.float64),
            "p_industrial": mean[:, 2].astype(np.float64), "confidence": conf.astype(np.float64),
            "area_m2": counts * pixel_area_m2, "pixels": counts.astype(np.int64)}


def _write(path, geoms_px, attrs, transform: Affine, crs, append: bool) -> None:
    import pyogrio.raw

    if len(geoms_px) == 0:
        return
    g = shapely.transform(np.asarray(geoms_px, dtype=object),
                          lambda xy: np.column_stack([transform.c + transform.a * xy[:, 0],
                                                      transform.f + transform.e * xy[:, 1]]))
    fields = list(FIELDS)
    data = [attrs[f] for f in fields]
    pyogrio.raw.write(str(path), shapely.to_wkb(g, output_dimension=2), data, fields, driver="GPKG", layer="buildings",
                      geometry_type="Polygon", crs=crs, append=append, promote_to_multi=False,
                      dataset_options=None if append else GPKG_CREATION)


@contextlib.contextmanager
def _clear_write_errors(output_path):
    """Turn a failure of the GeoPackage driver while writing ``output_path`` (e.g. pyogrio's
    'Failed to commit transaction' when the disk fills up) into a clear error."""
    from pyogrio.errors import DataSourceError, FieldError, GeometryError

    from ..sliding_window import DiskFullError

    folder = Path(output_path).parent
    try:
        yield
    except (DataSourceError, FieldError, GeometryError, OSError) as exc:
        text = str(exc)
        if isinstance(exc, OSError) and exc.errno not in (errno.ENOSPC, errno.EDQUOT) and \
                "No space left" not in text:
            raise
        if (isinstance(exc, OSError) or "commit" in text.lower() or "No space left" in text
                or "disk" in text.lower() or "write" in text.lower()):
            raise DiskFullError(f"POLYGONS: writing the building polygons to '{output_path}' failed ({text}); "
                                f"the disk is probably full. Nothing was written. Fix: free some space in "
                                f"'{folder}' or choose another folder.") from exc
        raise InputError("POLYGONS", f"the building polygons could not be written to '{output_path}' ({text}); "
                         "nothing was written.", "choose another GeoPackage file name or folder.") from exc


def _block_components(m: np.ndarray, p: np.ndarray, pv: np.ndarray):
    """4-connected components of the building pixels ``m`` of one block: (labels, pixel
    counts, counts of pixels with probabilities, probability sums (k+1, 3)). The sums are
    accumulated pixel by pixel in row-major order (``np.bincount``), so a building's sums do
    not depend on the block it is read in."""
    lab, k = ndimage.label(m, structure=_FOUR)
    counts = np.bincount(lab.ravel(), minlength=k + 1).astype(np.float64)
    pvalid = pv.ravel()
    cnt_p = np.bincount(lab.ravel()[pvalid], minlength=k + 1).astype(np.float64)
    sums = np.stack([np.bincount(lab.ravel()[pvalid], weights=p[c].ravel()[pvalid].astype(np.float64),
                                 minlength=k + 1) for c in range(3)], axis=1)
    return lab, counts, cnt_p, sums


def _seam_labels(lab: np.ndarray, seams: tuple[bool, bool, bool, bool]) -> set:
    """Labels of the components touching the block edges that are seams (top, left, bottom, right)."""
    edge = set()
    for is_seam, line in zip(seams, (lab[0], lab[:, 0], lab[-1], lab[:, -1])):
        if is_seam:
            edge.update(np.unique(line))
    edge.discard(0)
    return edge


def _shapes_px(lab: np.ndarray, row: int, col: int) -> tuple[np.ndarray, np.ndarray]:
    """(polygons in pixel coordinates of the whole grid, their labels) of a labelled block at (row, col)."""
    geoms, ids = [], []
    for geom, val in features.shapes(lab.astype(np.int32), mask=lab > 0, connectivity=4,
                                     transform=Affine.translation(col, row)):
        geoms.append(shapely.geometry.shape(geom))
        ids.append(int(val))
    return np.asarray(geoms, dtype=object), np.asarray(ids, dtype=np.int64)


def exact_attributes(pds, polys_px, origin: tuple[int, int], pixel_area_m2: float) -> dict[str, np.ndarray]:
    """Attributes of buildings given as polygons in pixel coordinates of the whole grid
    (each the exact outline of a 4-connected set of pixels), from the probabilities of
    ``pds`` (an open 3-band raster whose top-left pixel is ``origin`` (row, col) of the
    grid). Sums run over each building's pixels in row-major order, as in
    :func:`_block_components`, so the result is the same however the building was cut."""
    n = len(polys_px)
    sums, nprob, counts = np.zeros((n, 3)), np.zeros(n), np.zeros(n)
    r0, c0 = origin
    for k, poly in enumerate(polys_px):
        xmin, ymin, xmax, ymax = (int(round(v)) for v in shapely.bounds(poly))
        win = Window(xmin - c0, ymin - r0, xmax - xmin, ymax - ymin)
        inside = features.geometry_mask([poly], (ymax - ymin, xmax - xmin), Affine.translation(xmin, ymin),
                                        invert=True)
        p, pv = read_probabilities(pds, win, "USE_PROBABILITIES")
        sel = inside & pv
        counts[k], nprob[k] = inside.sum(), sel.sum()
        zeros = np.zeros(int(nprob[k]), np.int64)
        sums[k] = [np.bincount(zeros, weights=p[c][sel].astype(np.float64), minlength=1)[0] for c in range(3)]
    return attributes(sums, nprob, counts, pixel_area_m2)


def merge_parts(parts) -> np.ndarray:
    """Dissolve building parts cut by block seams (pixel coordinates) into whole buildings."""
    if len(parts) == 0:
        return np.zeros(0, dtype=object)
    union = shapely.get_parts(shapely.union_all(np.asarray(parts, dtype=object)))
    return np.asarray([shapely.normalize(g) for g in union], dtype=object)


def _touches_outer_seam(polys_px, bounds_px: tuple[int, int, int, int], outer: tuple[bool, bool, bool, bool]):
    """Which polygons touch an edge of the raster (row0, col0, row1, col1 in grid pixels)
    that is a seam with a neighbouring raster (``outer``: top, left, bottom, right)."""
    r0, c0, r1, c1 = bounds_px
    b = shapely.bounds(np.asarray(polys_px, dtype=object)) if len(polys_px) else np.zeros((0, 4))
    top, left, bottom, right = outer
    return ((top & (b[:, 1] <= r0)) | (left & (b[:, 0] <= c0)) | (bottom & (b[:, 3] >= r1)) |
            (right & (b[:, 2] >= c1)))


def polygonize_buildings(mask_path: str, probs_path: str, output_path: str, pixel_area_m2: float,
                         block_size: int = 2048, progress: Progress | None = None, *,
                         origin: tuple[int, int] = (0, 0), grid_shape: tuple[int, int] | None = None,
                         transform: Affine | None = None, seams_path: str | None = None) -> dict:
    """Vectorise the building pixels (value 1) of ``mask_path`` into a GeoPackage layer
    ``buildings`` with :data:`FIELDS`, mean probabilities read from ``probs_path`` (3 bands
    R, C, I on the same grid). Returns {'buildings': n, 'merged_across_blocks': m}.

    The rasters may be one block of a larger grid (a cluster run): ``origin`` (row, col) is
    their top-left pixel on that grid of ``grid_shape`` (rows, cols) and ``transform``.
    Buildings touching an edge shared with another block are then not written but kept, as
    polygons in pixel coordinates of the grid, in ``seams_path`` (JSON, see
    :func:`read_seam_parts`) for :func:`merged_seam_buildings`; returns also 'seam_parts'."""
    refuse_input_as_output({"POLYGONS": output_path}, {"FOOTPRINT_MASK": mask_path, "USE_PROBABILITIES": probs_path})
    progress = ensure(progress)
    mds = open_raster(mask_path, "FOOTPRINT_MASK")
    pds = open_raster(probs_path, "USE_PROBABILITIES")
    try:
        grid = Grid.from_dataset(mds)
        crs = mds.crs.to_wkt() if mds.crs else None
        t = transform or grid.transform
        R, C = origin
        H, W = grid_shape or (R + grid.height, C + grid.width)
        outer = (R > 0, C > 0, R + grid.height < H, C + grid.width < W)
        writer = LayerWriter(t, crs, pixel_area_m2)
        seam_parts = []
        blocks = list(grid.blocks(block_size))
        with _clear_write_errors(output_path), atomic_output(output_path) as tmp:
            writer.path = tmp
            for n, blk in enumerate(blocks):
                progress.check_cancelled()
                seam_parts.extend(_polygonize_block(mds, pds, blk.window, grid, outer, origin, writer))
                progress.set_fraction(0.9 * (n + 1) / len(blocks))
            merged = merge_parts(seam_parts)
            export = _touches_outer_seam(merged, (R, C, R + grid.height, C + grid.width), outer)
            writer.write(merged[~export], exact_attributes(pds, merged[~export], origin, pixel_area_m2))
            if seams_path:
                write_seam_parts(seams_path, merged[export])
            elif export.any():
                raise ValueError("buildings touch a seam with another block: give seams_path")
            writer.finish()
            progress.check_cancelled()
    finally:
        mds.close()
        pds.close()
    progress.set_fraction(1.0)
    return {"buildings": writer.total, "merged_across_blocks": len(seam_parts) - len(merged),
            "seam_parts": int(export.sum())}


class LayerWriter:
    """Appends buildings (pixel-coordinate polygons + attributes) to the ``buildings`` layer."""

    def __init__(self, transform: Affine, crs, pixel_area_m2: float, path=None):
        self.transform, self.crs, self.pixel_area_m2 = transform, crs, pixel_area_m2
        self.path, self.total = path, 0

    def write(self, geoms_px, attrs: dict) -> None:
        if len(geoms_px):
            _write(self.path, geoms_px, attrs, self.transform, self.crs, append=self.total > 0)
            self.total += len(geoms_px)

    def append_layer(self, path: str) -> None:
        """Append every building of the ``buildings`` layer of the GeoPackage ``path`` (same fields)."""
        import pyogrio.raw

        meta, _, wkb, data = pyogrio.raw.read(str(path), layer="buildings")
        if len(wkb):
            names = list(meta["fields"])
            pyogrio.raw.write(str(self.path), wkb, [data[names.index(f)] for f in FIELDS], list(FIELDS),
                              driver="GPKG", layer="buildings", geometry_type="Polygon", crs=self.crs,
                              append=self.total > 0, promote_to_multi=False)
            self.total += len(wkb)

    def finish(self) -> None:
        if self.total == 0:
            _write_empty(self.path, self.crs)


def _polygonize_block(mds, pds, w: Window, grid: Grid, outer, origin, writer: LayerWriter) -> list:
    """Write the buildings of block ``w`` that touch no seam; return the parts that do."""
    m = mds.read(1, window=w) == 1
    if not m.any():
        return []
    p, pv = read_probabilities(pds, w, "USE_PROBABILITIES")
    lab, counts, cnt_p, sums = _block_components(m, p, pv)
    r0, c0 = int(w.row_off), int(w.col_off)
    seams = (r0 > 0 or outer[0], c0 > 0 or outer[1], r0 + int(w.height) < grid.height or outer[2],
             c0 + int(w.width) < grid.width or outer[3])
    geoms, ids = _shapes_px(lab, origin[0] + r0, origin[1] + c0)
    on_seam = np.isin(ids, list(_seam_labels(lab, seams)))
    keep = ids[~on_seam]
    writer.write(geoms[~on_seam], attributes(sums[keep], cnt_p[keep], counts[keep], writer.pixel_area_m2))
    return list(geoms[on_seam])


def write_seam_parts(path: str, polys_px) -> None:
    """Save building parts (pixel coordinates of the whole grid) as JSON of WKB hex, atomically."""
    import json

    with atomic_output(path) as tmp:
        Path(tmp).write_text(json.dumps({"parts": [shapely.to_wkb(g, hex=True) for g in polys_px]}))


def read_seam_parts(path: str) -> list:
    import json

    return [shapely.from_wkb(h) for h in json.loads(Path(path).read_text())["parts"]]


def merged_seam_buildings(seam_files, probs_path: str, pixel_area_m2: float) -> tuple[np.ndarray, dict]:
    """Dissolve the building parts of ``seam_files`` (one per block) into whole buildings
    and give them attributes from ``probs_path`` (the whole grid, e.g. a VRT of the blocks):
    (polygons in pixel coordinates, attributes)."""
    merged = merge_parts([g for f in seam_files for g in read_seam_parts(f)])
    with open_raster(probs_path, "USE_PROBABILITIES") as pds:
        return merged, exact_attributes(pds, merged, (0, 0), pixel_area_m2)


def _write_empty(path, crs) -> None:
    import pyogrio.raw

    data = [np.zeros(0, np.int32), np.zeros(0, object), *[np.zeros(0)] * 5, np.zeros(0, np.int64)]
    pyogrio.raw.write(str(path), np.zeros(0, object), data, list(FIELDS), driver="GPKG", layer="buildings",
                      geometry_type="Polygon", crs=crs, dataset_options=GPKG_CREATION)


__all__ = ["polygonize_buildings", "attributes", "exact_attributes", "merge_parts", "merged_seam_buildings", "LayerWriter",
           "read_seam_parts", "write_seam_parts", "FIELDS", "USE_NAMES"]
