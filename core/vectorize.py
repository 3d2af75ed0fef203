"""Building polygons from a footprint mask raster, block by block, merged across block
seams, with per-building use attributes from the probability raster.

Each block of the mask is labelled into 4-connected components (``scipy.ndimage.label``)
and vectorised with ``rasterio.features.shapes`` in *pixel* coordinates (integers, so
parts cut by a block seam meet exactly). A component that touches an inner block edge is
kept aside with its pixel count and probability sums; at the end those parts are dissolved
(``shapely.union_all``), split again into connected polygons, and their sums added up.
Everything else is written as soon as its block is done, so memory is bounded by one block
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
from scipy import ndimage

from .outputs import refuse_input_as_output
from .errors import InputError
from .grid import Grid
from .progress import Progress, ensure
from .raster_io import atomic_output, open_raster, read_masked
from .vector_io import GPKG_CREATION

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

    from .sliding_window import DiskFullError

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


def polygonize_buildings(mask_path: str, probs_path: str, output_path: str, pixel_area_m2: float,
                         block_size: int = 2048, progress: Progress | None = None) -> dict:
    """Vectorise the building pixels (value 1) of ``mask_path`` into a GeoPackage layer
    ``buildings`` with :data:`FIELDS`, mean probabilities read from ``probs_path`` (3 bands
    R, C, I on the same grid). Returns {'buildings': n, 'merged_across_blocks': m}."""
    refuse_input_as_output({"POLYGONS": output_path}, {"FOOTPRINT_MASK": mask_path, "USE_PROBABILITIES": probs_path})
    progress = ensure(progress)
    mds = open_raster(mask_path, "FOOTPRINT_MASK")
    pds = open_raster(probs_path, "USE_PROBABILITIES")
    try:
        grid = Grid.from_dataset(mds)
        crs = mds.crs.to_wkt() if mds.crs else None
        t = grid.transform
        seam_geoms, seam_sums, seam_np, seam_counts = [], [], [], []
        total = 0
        started = False
        blocks = list(grid.blocks(block_size))
        merged = 0
        with _clear_write_errors(output_path), atomic_output(output_path) as tmp:
            for n, blk in enumerate(blocks):
                progress.check_cancelled()
                w = blk.window
                m = mds.read(1, window=w) == 1
                if not m.any():
                    progress.set_fraction(0.9 * (n + 1) / len(blocks))
                    continue
                p, pv = read_masked(pds, w, "USE_PROBABILITIES")
                lab, k = ndimage.label(m, structure=_FOUR)
                counts = np.bincount(lab.ravel(), minlength=k + 1).astype(np.float64)
                pvalid = pv.ravel()
                cnt_p = np.bincount(lab.ravel()[pvalid], minlength=k + 1).astype(np.float64)
                sums = np.stack([np.bincount(lab.ravel()[pvalid], weights=p[c].ravel()[pvalid].astype(np.float64),
                                             minlength=k + 1) for c in range(3)], axis=1)
                edge = set()
                r0, c0 = int(w.row_off), int(w.col_off)
                if r0 > 0:
                    edge.update(np.unique(lab[0]))
                if c0 > 0:
                    edge.update(np.unique(lab[:, 0]))
                if r0 + int(w.height) < grid.height:
                    edge.update(np.unique(lab[-1]))
                if c0 + int(w.width) < grid.width:
                    edge.update(np.unique(lab[:, -1]))
                edge.discard(0)
                geoms, ids = [], []
                for geom, val in features.shapes(lab.astype(np.int32), mask=lab > 0, connectivity=4,
                                                 transform=Affine.translation(c0, r0)):
                    geoms.append(shapely.geometry.shape(geom))
                    ids.append(int(val))
                ids = np.asarray(ids, dtype=np.int64)
                geoms = np.asarray(geoms, dtype=object)
                on_seam = np.isin(ids, list(edge))
                if on_seam.any():
                    seam_geoms.extend(geoms[on_seam])
                    seam_sums.append(sums[ids[on_seam]])
                    seam_np.append(cnt_p[ids[on_seam]])
                    seam_counts.append(counts[ids[on_seam]])
                keep = ~on_seam
                if keep.any():
                    _write(tmp, geoms[keep], attributes(sums[ids[keep]], cnt_p[ids[keep]], counts[ids[keep]],
                                                            pixel_area_m2),
                           t, crs, append=started)
                    started = True
                    total += int(keep.sum())
                progress.set_fraction(0.9 * (n + 1) / len(blocks))
            if seam_geoms:
                parts = np.asarray(seam_geoms, dtype=object)
                psums = np.concatenate(seam_sums)
                pcounts = np.concatenate(seam_counts)
                union = shapely.get_parts(shapely.union_all(parts))
                tree = shapely.STRtree(union)
                pts = shapely.point_on_surface(parts)
                part_idx, poly_idx = tree.query(pts, predicate="within")
                if len(np.unique(part_idx)) != len(parts):
                    raise RuntimeError("seam merge lost parts")  # pragma: no cover - a bug
                pnp = np.concatenate(seam_np)
                msums = np.zeros((len(union), 3))
                mcounts = np.zeros(len(union))
                mnp = np.zeros(len(union))
                np.add.at(msums, poly_idx, psums[part_idx])
                np.add.at(mcounts, poly_idx, pcounts[part_idx])
                np.add.at(mnp, poly_idx, pnp[part_idx])
                _write(tmp, union, attributes(msums, mnp, mcounts, pixel_area_m2), t, crs, append=started)
                started = True
                total += len(union)
                merged = len(parts) - len(union)
            if not started:
                _write_empty(tmp, crs)
            progress.check_cancelled()
    finally:
        mds.close()
        pds.close()
    progress.set_fraction(1.0)
    return {"buildings": total, "merged_across_blocks": merged}


def _write_empty(path, crs) -> None:
    import pyogrio.raw

    data = [np.zeros(0, np.int32), np.zeros(0, object), *[np.zeros(0)] * 5, np.zeros(0, np.int64)]
    pyogrio.raw.write(str(path), np.zeros(0, object), data, list(FIELDS), driver="GPKG", layer="buildings",
                      geometry_type="Polygon", crs=crs, dataset_options=GPKG_CREATION)


__all__ = ["polygonize_buildings", "attributes", "FIELDS", "USE_NAMES"]
