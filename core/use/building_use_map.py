"""``edifice:mapbuildinguse`` and ``edifice:assignbuildinguse``: a building-use checkpoint
run over imagery (+ POI maps) with the sliding-window engine (seed 000 §2.1, §2.3.4).

Inputs follow the model card: band count and order, scaling ``(value - offset) * scale``,
GSD (imagery at another resolution is resampled bilinearly to the card's GSD, with a
warning; the outputs are then on that grid) and window size (default ``WINDOW``). POI maps
are a 3-band raster (R, C, I; warped onto the imagery grid when needed) or computed on the
fly from a POI point layer.

Outputs (each optional): footprint probability (1 band), footprint mask (uint8 0/1,
nodata 255), use class (uint8 0 non-building, 1 R, 2 C, 3 I, nodata 255, colour table
from the card), per-class probabilities (3 bands), building polygons (GeoPackage, with
use_class, use_name, p_residential, p_commercial, p_industrial, confidence, area_m2).
The probability rasters are scaled integers (``probability_type``, default uint8: p = DN x 0.004) or float32
(see :mod:`.probability_type`); masks, classes and polygons come from the float values whatever it is.
A pixel is a building where the footprint probability is > ``threshold`` (models without
a footprint head: where the largest use probability is > ``threshold``); its class is the
argmax of the use probabilities.
"""
from __future__ import annotations

import contextlib
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
import numpy as np
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from ..outputs import refuse_input_as_output
from ..errors import InputError
from ..grid import Grid
from ..progress import Progress, ensure
from ..raster_io import GDAL_CACHE_BYTES, bounded_gdal_cache, open_raster, read_masked, require_crs
from ..styles import write_gpkg_style, write_use_map_styles
from .probability_type import (DEFAULT_PROBABILITY_TYPE, PROBABILITY_TYPES, check_probability_type, is_scaled,
                               probability_encoding, quantise, read_probabilities)
from ..sliding_window import (Predictor, RasterOutput, WindowLayout, compression_options, file_fingerprint,
                             resolve_device, run_sliding_window)

USE_NAMES = ("residential", "commercial", "industrial")
DEFAULT_COLOURS = {0: "#000000", 1: "#e8c547", 2: "#d7263d", 3: "#6a4c93"}
PROB_NODATA = -1.0
CLASS_NODATA = 255
#: raster data types whose every value float32 holds exactly (read straight into the model's buffers)
_EXACT_IN_FLOAT32 = tuple(np.dtype(t) for t in ("uint8", "int8", "uint16", "int16", "float32"))
#: relative GSD difference tolerated before resampling
GSD_TOLERANCE = 0.05
#: edge (px) of the blocks read, in order, by the checks that look for one valid pixel: small, so that a
#: raster valid near its top-left corner costs one small read (4096 px blocks of imagery + POI maps: 1.2 CPU-s)
CHECK_BLOCK = 1024


def _hex_rgba(text: str) -> tuple[int, int, int, int]:
    t = text.lstrip("#")
    return int(t[0:2], 16), int(t[2:4], 16), int(t[4:6], 16), 255


def class_colormap(card: dict) -> dict[int, tuple[int, int, int, int]]:
    """Colour table of the use-class raster from the card's classes (defaults for gaps)."""
    cmap = {k: _hex_rgba(v) for k, v in DEFAULT_COLOURS.items()}
    for c in card.get("classes") or []:
        try:
            idx = int(c["index"])
            if 0 <= idx <= 3:
                cmap[idx] = _hex_rgba(c.get("color") or DEFAULT_COLOURS[idx])
        except (KeyError, ValueError, TypeError):
            continue
    cmap[0] = cmap[0][:3] + (0,)  # non-building: transparent, whatever its colour
    cmap[CLASS_NODATA] = (0, 0, 0, 0)
    return cmap


def grid_gsd_m(grid: Grid) -> float:
    from .training_dataset import _gsd_m

    return _gsd_m(grid)


def load_use_model(checkpoint: str):
    """(model, card, variant, n_imagery_bands, has_footprint) or a clear InputError."""
    from ...models.checkpoint import CheckpointError
    from ...models.unet import VARIANTS, load_model, poi_band_count

    try:
        model, card = load_model(checkpoint)
    except CheckpointError as exc:
        raise InputError("CHECKPOINT", str(exc), "choose an Edifice building-use checkpoint "
                         "(made by edifice:trainbuildinguse).") from exc
    if card.get("task") != "building_use":
        raise InputError("CHECKPOINT", f"is a '{card.get('task')}' model, not a building-use model.",
                         "choose a building-use checkpoint.")
    variant = card["architecture"]["params"].get("variant", "imagery_poi_multitask")
    npoi = poi_band_count(variant)
    return model, card, variant, len(card["bands"]) - npoi, VARIANTS[variant][1]


class _Reader:
    """Imagery (+ POI maps) scaled as the card says, and the optional mask, on ``grid``."""

    def __init__(self, imagery: str, grid: Grid, scales, offsets, poi_path: str | None, mask_path: str | None):
        self._stack = contextlib.ExitStack()
        self.img = self._on_grid(imagery, grid, Resampling.bilinear, "IMAGERY")
        self.poi = self._on_grid(poi_path, grid, Resampling.bilinear, "POI_MAPS") if poi_path else None
        self.mask = self._on_grid(mask_path, grid, Resampling.nearest, "MASK") if mask_path else None
        self.scales = np.asarray(scales, np.float32)[:, None, None]
        self.offsets = np.asarray(offsets, np.float32)[:, None, None]
        # bands whose scaling is not the identity (offset 0 and scale 1 leave every float32 value as it is)
        self._scaled = [(k, self.offsets[k], self.scales[k]) for k in range(len(self.scales))
                        if self.offsets[k, 0, 0] != 0 or self.scales[k, 0, 0] != 1]

    def _on_grid(self, path, grid, resampling, name):
        ds = self._stack.enter_context(open_raster(path, name))
        if _same_grid(ds, grid):
            return ds
        if ds.crs is None:
            raise InputError(name, f"'{path}' has no CRS, so it cannot be aligned with the imagery.",
                             "assign its CRS first.")
        return self._stack.enter_context(WarpedVRT(ds, crs=grid.crs, transform=grid.transform, width=grid.width,
                                                   height=grid.height, resampling=resampling))

    def read(self, window):
        data, valid = read_masked(self.img, window, "IMAGERY")
        if self.poi is not None:
            p, pv = read_masked(self.poi, window, "POI_MAPS")
            data = np.concatenate([data.astype(np.float32), p.astype(np.float32)])
            valid &= pv
        return (data.astype(np.float32) - self.offsets) * self.scales, valid

    @property
    def bands(self) -> int:
        return self.img.count + (self.poi.count if self.poi is not None else 0)

    def read_into(self, window, out: np.ndarray):
        """What :meth:`read` gives, written into ``out`` ((bands, h, w) float32, rows contiguous); returns
        the validity, or None (nothing promised about ``out``) for data types that float32 does not
        hold exactly (:meth:`read` then)."""
        sources = [(self.img, "IMAGERY")] + ([(self.poi, "POI_MAPS")] if self.poi is not None else [])
        if any(np.dtype(ds.dtypes[0]) not in _EXACT_IN_FLOAT32 or len(set(ds.dtypes)) > 1 for ds, _ in sources):
            return None
        valid = np.ones(out.shape[1:], bool)
        b = 0
        for ds, name in sources:
            read_masked(ds, window, name, out=out[b:b + ds.count], valid=valid)
            b += ds.count
        for k, offset, scale in self._scaled:  # band by band: the same float32 operations as (out - offsets) * scales
            if offset != 0:  # x - 0 is x, bit for bit
                out[k] -= offset
            if scale != 1:
                out[k] *= scale
        return valid

    def read_mask(self, window):
        if self.mask is None:
            return None
        return self.mask.read(1, window=window) == 1

    def close(self):
        self._stack.close()


def _same_grid(ds, grid: Grid) -> bool:
    return (ds.width == grid.width and ds.height == grid.height and ds.crs is not None and grid.crs is not None
            and CRS.from_user_input(ds.crs.to_wkt()) == CRS.from_user_input(grid.crs)
            and ds.transform.almost_equals(grid.transform, precision=1e-9 * max(grid.res)))


def imagery_grid(imagery: str, card: dict, progress: Progress) -> tuple[Grid, bool]:
    """The inference grid: the imagery's own, or (GSD off by > 5 %) the imagery's extent at
    the card's GSD. Returns (grid, resampled)."""
    with open_raster(imagery, "IMAGERY") as ds:
        crs = require_crs(ds, "IMAGERY")
        grid = Grid.from_dataset(ds)
    if CRS.from_user_input(crs).is_geographic:
        raise InputError("IMAGERY", "is in a geographic CRS (degrees); the model works on metric pixels of "
                         f"{card['gsd_m']:g} m.", "reproject it to a projected CRS such as the local UTM zone "
                         "(Raster > Projections > Warp).")
    gsd, want = grid_gsd_m(grid), float(card["gsd_m"])
    if abs(gsd - want) <= GSD_TOLERANCE * want:
        return grid, False
    factor = want / gsd
    if factor > 8 or factor < 1 / 8:
        raise InputError("IMAGERY", f"has {gsd:.3g} m pixels but the model was trained at {want:g} m "
                         f"({gsd / want:.3g}x its pixel size); resampling that far would not give meaningful "
                         "results.",
                         f"use imagery near {want:g} m resolution.")
    px = grid.res[0] * factor
    xmin, ymin, xmax, ymax = grid.bounds
    new = Grid.from_extent(xmin, ymin, xmax, ymax, px, grid.crs)
    progress.warning(f"IMAGERY has {gsd:.3g} m pixels, the model expects {want:g} m: it is resampled "
                     f"(bilinear) to {want:g} m, and the outputs are on that grid ({new.width} x {new.height} px).")
    return new, True


#: band descriptions that say nothing about the band ("Band 1", "band_2", "band3", "3", "Layer 1")
_GENERIC_BAND = re.compile(r"^\s*(band|layer)?[\s_-]*\d+\s*$", re.IGNORECASE)


def _informative(name) -> bool:
    return bool(name and str(name).strip()) and not _GENERIC_BAND.match(str(name))


def band_order_warning(descriptions, card_names) -> str | None:
    """A warning when the imagery's band descriptions are all set (none empty or generic like
    "Band 1") and differ from the model card's imagery band names (compared without case or
    surrounding spaces), else None. Only band count is enforced: many rasters have no or
    generic descriptions, and a card may hold generic names too (then nothing is said)."""
    descriptions, card_names = list(descriptions or []), list(card_names)
    if len(descriptions) != len(card_names) or not descriptions:
        return None
    if not all(_informative(d) for d in descriptions) or not all(_informative(n) for n in card_names):
        return None
    if [str(d).strip().lower() for d in descriptions] == [str(n).strip().lower() for n in card_names]:
        return None
    return (f"IMAGERY band descriptions ({', '.join(map(str, descriptions))}) differ from the bands the model "
            f"was trained on ({', '.join(map(str, card_names))}): check the band order (the imagery is used "
            "as it is, band by band).")


def _check_imagery(imagery: str, card: dict, n_img: int, progress: Progress | None = None) -> None:
    with open_raster(imagery, "IMAGERY") as ds:
        names = ", ".join(b["name"] for b in card["bands"][:n_img])
        if ds.count != n_img:
            raise InputError("IMAGERY", f"has {ds.count} band(s); the model takes {n_img} imagery band(s) "
                             f"({names}).", "give imagery with those bands in that order.")
        text = band_order_warning(ds.descriptions, [b["name"] for b in card["bands"][:n_img]])
        if text:
            ensure(progress).warning(text)
        dt = ds.dtypes[0]
        want = card.get("imagery_dtype")
        if want and want != dt:
            raise InputError("IMAGERY", f"is {dt}; the model was trained on {want} imagery and scales it so.",
                             f"give {want} imagery (or retrain on {dt}).")
        scales = [float(b["scale"]) for b in card["bands"][:n_img]]
        if not want and all(abs(s - 1 / 255) < 1e-9 for s in scales) and dt != "uint8":
            raise InputError("IMAGERY", f"is {dt}, but the model scales its bands by 1/255 as for 8-bit "
                             "imagery.", "convert the imagery to 8-bit (Raster > Conversion > Translate, "
                             "scale to 0-255) or use a model trained on this kind of imagery.")
        _require_valid_pixels(ds, "IMAGERY")


def _require_valid_pixels(ds, name: str, block: int = CHECK_BLOCK) -> None:
    """:class:`InputError` when every pixel of ``ds`` is nodata (stops at the first valid block, so a
    normal raster costs one block read)."""
    grid = Grid.from_dataset(ds)
    for blk in grid.blocks(block):
        if read_masked(ds, blk.window, name)[1].any():
            return
    raise InputError(name, f"'{Path(ds.name).name}' has no valid pixels: every pixel is nodata, so nothing "
                           "would be mapped.", "check the raster's nodata value, or give imagery of the area.")


def _check_on_grid(path: str, grid: Grid, name: str, progress: Progress, imagery: str | None = None) -> None:
    """Say so when the ``name`` raster is not on the inference grid (it is then warped onto
    it: nearest for the MASK, bilinear for POI_MAPS), and refuse it when it covers none of
    the grid: MASK with no pixel 1 there, POI_MAPS with no valid pixel where ``imagery`` is
    valid."""
    resampling = Resampling.nearest if name == "MASK" else Resampling.bilinear
    r = _Reader.__new__(_Reader)
    r._stack = contextlib.ExitStack()
    try:
        with open_raster(path, name) as raw:
            same = _same_grid(raw, grid)
            if not same:
                crs = raw.crs.to_string() if raw.crs else "no CRS"
                res = f"{abs(raw.transform.a):.3g} x {abs(raw.transform.e):.3g}"
                progress.warning(f"{name} ('{Path(path).name}': {crs}, {raw.width} x {raw.height} px of {res}) is not "
                                 f"on the grid of the imagery ({grid.width} x {grid.height} px): it is reprojected/"
                                 f"resampled onto it ({resampling.name}).")
        ds = r._on_grid(path, grid, resampling, name)
        img = r._on_grid(imagery, grid, Resampling.bilinear, "IMAGERY") if imagery else None
        for blk in grid.blocks(CHECK_BLOCK):
            if name == "MASK":
                if (ds.read(1, window=blk.window) == 1).any():
                    return
            else:
                _, ok = read_masked(ds, blk.window, name)
                if img is not None:
                    ok &= read_masked(img, blk.window, "IMAGERY")[1]
                if ok.any():
                    return
    finally:
        r._stack.close()
    if name == "MASK":
        raise InputError("MASK", "covers none of the imagery (no pixel is 1 there): nothing would be mapped.",
                         "check the mask is the built-up mask of this area (edifice:builtupmask), or leave it out.")
    raise InputError(name, f"'{Path(path).name}' covers none of the imagery's valid pixels (it lies elsewhere, "
                     "or is nodata there): nothing would be mapped.",
                     "give POI probability maps of this area (edifice:poiprobability on the imagery grid).")


def _check_mask(mask_path: str, grid: Grid, progress: Progress | None = None) -> None:
    _check_on_grid(mask_path, grid, "MASK", ensure(progress))


def _window_choice(window: int | None, card: dict) -> tuple[int, str]:
    """(window in px, why): the one asked for, else the card's default mapping window (cards
    written since the seed's window became the default say why), else the seed's 1024 px."""
    if window:
        return int(window), "as asked (WINDOW)"
    if card.get("window"):
        chip = card.get("training_chip_size")
        why = card.get("window_reason") or ("the model card's window" + (f" (trained on {chip} px chips)"
                                                                          if chip else ""))
        return int(card["window"]), why
    return 1024, "the seed's 1024 px (the model card names no window)"


def _hidden(path: Path, tag: str) -> str:
    return str(path.with_name(f".{path.stem}.{tag}.tif"))


def map_building_use(imagery: str, checkpoint: str, **kwargs) -> dict:
    """Map building use over ``imagery`` with ``checkpoint`` (see :func:`_map_building_use`
    for the keyword arguments), with GDAL's block cache bounded so that peak memory does
    not grow with the raster."""
    with bounded_gdal_cache():
        return _map_building_use(imagery, checkpoint, **kwargs)


#: the engine's outputs, in the order they are written: (name, keyword of the path); ``poly_probs``: float32 use
#: probabilities the polygons are made from, hidden, when the asked-for ones are scaled integers
PRODUCTS = (("fp_prob", "footprint_probability"), ("fp_mask", "footprint_mask"), ("use_class", "use_class"),
            ("use_probs", "use_probabilities"), ("poly_probs", None))
_MASK_COLOURS = {0: (0, 0, 0, 0), 1: (220, 60, 40, 255), CLASS_NODATA: (0, 0, 0, 0)}


def product_output(name: str, path: str, colormap: dict,
                   probability_type: str = DEFAULT_PROBABILITY_TYPE) -> RasterOutput:
    """The :class:`RasterOutput` of engine product ``name`` (see :data:`PRODUCTS`) written to ``path``; the
    probabilities as ``probability_type`` (:mod:`.probability_type`)."""
    dtype, nodata, scale = probability_encoding(probability_type)
    if name == "fp_prob":
        return RasterOutput(path, 1, dtype, nodata, ["p_building"], scale=scale)
    if name == "fp_mask":
        return RasterOutput(path, 1, "uint8", CLASS_NODATA, ["building"], colormap=dict(_MASK_COLOURS))
    if name == "use_class":
        return RasterOutput(path, 1, "uint8", CLASS_NODATA, ["use_class"], colormap=dict(colormap))
    if name == "use_probs":
        return RasterOutput(path, 3, dtype, nodata, [f"p_{c}" for c in USE_NAMES], scale=scale,
                            band_interleaved=True)
    if name == "poly_probs":
        return RasterOutput(path, 3, "float32", PROB_NODATA, [f"p_{c}" for c in USE_NAMES])
    raise ValueError(f"unknown product '{name}'")


def argmax_of_three(use: np.ndarray) -> np.ndarray:
    """``np.argmax(use, axis=0)`` (uint8) of a (3, h, w) array, by two comparisons (a quarter of argmax's time
    along the first axis); the first of equal values wins, as in argmax. With a NaN, argmax itself."""
    if np.isnan(use).any():
        return np.argmax(use, axis=0).astype(np.uint8)
    idx = (use[1] > use[0]).view(np.uint8)
    two = (use[2] > np.maximum(use[0], use[1])).view(np.uint8)
    two <<= 1
    return np.maximum(idx, two, out=idx)  # 2 where the third wins (arithmetic: a masked store is 10x slower)


def use_classes(use: np.ndarray, building: np.ndarray) -> np.ndarray:
    """(h, w) uint8 use class: 0 where not ``building``, else 1 + :func:`argmax_of_three` of ``use``."""
    cls = argmax_of_three(use)
    cls += 1
    return np.multiply(cls, building, out=cls)


#: the most GDAL block cache (bytes) a building-use run takes for its inputs (:meth:`UseJob.read_cache_bytes`): rasters
#: up to about 8000 px wide with 6 bands (3 uint8, 3 float32) read each input block once with 1024 px windows
READ_CACHE_MAX_BYTES = 256 * 2**20


@functools.lru_cache(maxsize=1)
def _compiled_finalize():
    """:mod:`._finalize_compiled` where numba is installed (imported on first use: numba takes a while), else None."""
    try:
        from . import _finalize_compiled
    except ImportError:  # pragma: no cover
        return None
    return _finalize_compiled if _finalize_compiled.AVAILABLE else None


@dataclass(frozen=True)
class UseJob:
    """Everything a sliding-window run of a building-use model needs except the model itself.
    Picklable, so that a Dask worker runs a region of the same job (``core.cluster``)."""

    imagery: str
    grid: Grid
    layout: WindowLayout
    scales: tuple
    offsets: tuple
    poi_maps: str | None
    mask: str | None
    has_footprint: bool
    threshold: float
    colormap: dict
    batch_size: int = 4
    workers: int = 1
    compression: str | None = None
    probability_type: str = DEFAULT_PROBABILITY_TYPE

    def open_reader(self) -> "_Reader":
        return _Reader(self.imagery, self.grid, self.scales, self.offsets, self.poi_maps, self.mask)

    def finalize(self, names: list[str], vals: np.ndarray, valid: np.ndarray) -> list[np.ndarray]:
        """Per-pixel products ``names`` of one merged tile: ``vals`` (3 use + [footprint]
        probabilities, h, w); masks and classes from these float values, the probability products
        quantised to ``probability_type``."""
        use = vals[:3]
        pb = vals[3] if self.has_footprint else use.max(axis=0)
        if vals.dtype == np.float32 and _compiled_finalize() is not None:
            return self._finalize_compiled(names, use, pb)
        building = pb > self.threshold
        res = {"fp_prob": lambda: quantise(pb[None], self.probability_type),
               "fp_mask": lambda: building[None].view(np.uint8),
               "use_class": lambda: use_classes(use, building)[None],
               "use_probs": lambda: quantise(use, self.probability_type), "poly_probs": lambda: use}
        return [res[n]() for n in names]

    def _finalize_compiled(self, names: list[str], use: np.ndarray, pb: np.ndarray) -> list[np.ndarray]:
        """:meth:`finalize` in one compiled pass (:mod:`._finalize_compiled`, the same values)."""
        dtype, steps, nodata = PROBABILITY_TYPES[self.probability_type]
        mask, cls, qpb, quse = _compiled_finalize().finalize_tile(use, pb, self.threshold, steps, nodata, dtype)
        res = {"fp_prob": pb[None] if qpb is None else qpb[None], "fp_mask": mask[None], "use_class": cls[None],
               "use_probs": use if quse is None else quse, "poly_probs": use}
        return [res[n] for n in names]

    def run(self, predictor, paths: dict[str, str], fingerprint: dict, region=None, resume: bool = True,
            progress: Progress | None = None) -> dict:
        """Run the engine (over the tiles of ``region``, or all) writing ``paths`` {product: path}."""
        names = [n for n, _ in PRODUCTS if n in paths]
        outputs = [product_output(n, paths[n], self.colormap, self.probability_type) for n in names]
        with bounded_gdal_cache(self.read_cache_bytes()):
            return run_sliding_window(self.grid, self.layout, self.open_reader, predictor, outputs,
                                      functools.partial(self.finalize, names), batch_size=self.batch_size,
                                      workers=self.workers, fingerprint=fingerprint, resume=resume, region=region,
                                      compression=self.compression, progress=progress)

    def read_cache_bytes(self) -> int:
        """GDAL block cache (bytes) for the run: twice the decoded input blocks of one row of windows, so that the
        rows the next row of windows shares with it are still decoded when it reads them (with less, the overlap
        of the windows is decoded twice), within [:data:`GDAL_CACHE_BYTES`, :data:`READ_CACHE_MAX_BYTES`]."""
        per_px = 0
        for path in (self.imagery, self.poi_maps):
            if path:
                with open_raster(path) as ds:
                    per_px += sum(np.dtype(d).itemsize for d in ds.dtypes)
        need = 2 * self.layout.window * self.grid.width * per_px
        return int(min(max(need, GDAL_CACHE_BYTES), READ_CACHE_MAX_BYTES))


@dataclass
class UsePlan:
    """A checked building-use run: the job, the model, engine output paths {product: path}
    (hidden ones where the polygons need what was not asked for), files to delete at the end."""

    job: UseJob
    model: object
    card: dict
    wanted: dict
    paths: dict
    fingerprint: dict
    resampled: bool
    created: list
    polygons: str | None
    fp_mask_path: str | None
    probs_path: str | None

    @property
    def pixel_area_m2(self) -> float:
        return grid_gsd_m(self.job.grid) ** 2

    def cleanup(self) -> None:
        """Delete the hidden intermediates, with the style sidecars their writers left."""
        for p in self.created:
            for q in (p, Path(p).with_suffix(".qml")):
                with contextlib.suppress(OSError):
                    os.unlink(q)


def _check_options(wanted: dict, threshold: float, inputs: dict) -> None:
    """At least one output, none of them an input (``inputs``: parameter -> path), a sane threshold."""
    if not wanted:
        raise InputError("OUTPUT", "no output was asked for.", "give at least one output path.")
    refuse_input_as_output({k.upper(): v for k, v in wanted.items()}, inputs)
    if not (0 < threshold < 1):
        raise InputError("THRESHOLD", f"must be between 0 and 1, got {threshold}.")


def _check_poi_input(variant: str, npoi: int, poi_maps, poi_points, progress: Progress):
    """(poi_maps, poi_points) to use: refused when the model needs POIs and none are given,
    dropped (with a warning) when it does not use them."""
    if npoi and not (poi_maps or poi_points):
        raise InputError("POI_MAPS", f"the model ({variant}) takes POI probability maps as input.",
                         "give a POI probability raster or a POI point layer with its category field.")
    if not npoi and (poi_maps or poi_points):
        progress.warning(f"the model ({variant}) does not use POIs; the POI input is ignored.")
        return None, None
    if poi_maps:
        with open_raster(poi_maps, "POI_MAPS") as ds:
            if ds.count != 3:
                raise InputError("POI_MAPS", f"has {ds.count} band(s); POI probability maps have 3 (R, C, I).",
                                 "give the output of edifice:poiprobability.")
    return poi_maps, poi_points


def _refuse_magic_layout(window: int | None, overlap: int | None) -> None:
    """Automatic is None (the CLI: option left out; Processing: not set), never 0 or a negative number."""
    if window is not None and window <= 0:
        raise InputError("WINDOW", f"{window} px is not a window size.",
                         "leave the window out (not set) for the model card's window, or give a size in pixels.")
    if overlap is not None and overlap < 0:
        raise InputError("OVERLAP", f"{overlap} px is not a margin.",
                         "leave the overlap out (not set) for window / 8, or give 0 or more pixels.")


def _layout_for(card: dict, window: int | None, overlap: int | None, blend: bool,
                progress: Progress) -> WindowLayout:
    """The sliding-window layout of a run (window from :func:`_window_choice`, margin window / 8
    unless given), said in the log."""
    _refuse_magic_layout(window, overlap)
    win, why = _window_choice(window, card)
    if overlap is None:
        overlap = win // 8
    if win < 32 or win % 32:
        raise InputError("WINDOW", f"must be a multiple of 32 pixels (the network's stride), got {win}.")
    progress.info(f"Window {win} px: {why}.")
    return WindowLayout(win, int(overlap), bool(blend))


def _poi_maps_from_points(anchor: Path, grid: Grid, imagery: str | None, poi_points, poi_layer, poi_category_field,
                          poi_preset, poi_mapping_file, poi_max_distances, poi_columns: dict | None,
                          progress: Progress) -> str:
    """POI probability maps computed from a point layer on ``grid`` into a hidden file beside ``anchor``."""
    from .poi_probability import poi_probability
    from .poi_sources import classify_pois, load_poi_mapping, read_point_file

    if not poi_category_field:
        raise InputError("CATEGORY_FIELD", "is required with a POI point layer.",
                         "name the field holding the POI category (e.g. other_tags for OSM).")
    xs, ys, recs, crs = read_point_file(poi_points, poi_layer, poi_category_field, **(poi_columns or {}))
    classified = classify_pois(xs, ys, recs, poi_category_field, load_poi_mapping(poi_preset, poi_mapping_file), crs)
    progress.info(classified.summary())
    path = _hidden(anchor, "poi")
    kwargs = {} if poi_max_distances is None else {"max_distances": poi_max_distances}
    poi_probability(classified.pois, grid, path, reference_path=imagery, progress=progress, **kwargs)
    return path


def _engine_paths(wanted: dict, polygons: str | None, probability_type: str
                  ) -> tuple[dict, list, str | None, str | None]:
    """({product: path} for the engine, hidden paths made for the polygons, mask path, probabilities path). The
    polygons are made from float32 probabilities: the asked-for ones when float32, else hidden ones."""
    paths = {name: wanted.get(key) for name, key in PRODUCTS if key}
    hidden: list = []
    if not polygons:
        return {k: v for k, v in paths.items() if v}, hidden, None, None
    probs = "use_probs" if probability_type == "float32" else "poly_probs"
    for name, tag in (("fp_mask", "footprint"), (probs, "useprob")):
        if not paths.get(name):
            paths[name] = _hidden(Path(polygons), tag)
            hidden.append(paths[name])
    return {k: v for k, v in paths.items() if v}, hidden, paths["fp_mask"], paths[probs]


def polygon_probs_product(paths) -> str:
    """The engine product (a key of ``paths``) that building polygons take their probabilities from."""
    return "poly_probs" if "poly_probs" in paths else "use_probs"


def plan_building_use(imagery: str, checkpoint: str, *, poi_maps: str | None = None,
                      poi_points: str | None = None, poi_layer: str | None = None,
                      poi_category_field: str | None = None, poi_preset: str = "osm",
                      poi_mapping_file: str | None = None, poi_max_distances=None,
                      poi_columns: dict | None = None, mask: str | None = None,
                      footprint_probability: str | None = None, footprint_mask: str | None = None,
                      use_class: str | None = None, use_probabilities: str | None = None,
                      polygons: str | None = None, device: str = "auto", batch_size: int = 4,
                      window: int | None = None, overlap: int | None = None, blend: bool = False,
                      threshold: float = 0.5, workers: int = 1, precision: str = "auto",
                      compression: str | None = None, probability_type: str | None = None,
                      progress: Progress | None = None) -> UsePlan:
    """Check the inputs of a building-use run and plan it (POI maps from points are computed
    here, into a hidden file removed by :meth:`UsePlan.cleanup`). ``overlap`` is the margin
    discarded on each side of a window (seed: 128 of 1024); ``None`` means window / 8
    (a negative margin is refused). ``poi_columns``: coordinate columns and CRS of a POI table (keywords of
    :func:`core.use.poi_sources.read_point_file`). ``compression`` of the raster outputs: ``method[:level]``
    (:func:`core.sliding_window.compression_options`; default zstd:1). ``probability_type`` of the probability
    rasters: uint8 (default), uint16 or float32 (:mod:`core.use.probability_type`). The model is loaded (on the
    CPU) to check its card."""
    progress = ensure(progress)
    compression_options(compression)
    probability_type = check_probability_type(probability_type)
    wanted = {k: v for k, v in {"footprint_probability": footprint_probability, "footprint_mask": footprint_mask,
                                "use_class": use_class, "use_probabilities": use_probabilities,
                                "polygons": polygons}.items() if v}
    _check_options(wanted, threshold, {"IMAGERY": imagery, "CHECKPOINT": checkpoint, "POI_MAPS": poi_maps,
                                       "MASK": mask, "POI_LAYER": poi_points})
    model, card, variant, n_img, has_fp = load_use_model(checkpoint)
    _check_imagery(imagery, card, n_img, progress)
    npoi = len(card["bands"]) - n_img
    poi_maps, poi_points = _check_poi_input(variant, npoi, poi_maps, poi_points, progress)
    layout = _layout_for(card, window, overlap, blend, progress)
    grid, resampled = imagery_grid(imagery, card, progress)
    if mask:
        _check_mask(mask, grid, progress)
    if poi_maps:
        _check_on_grid(poi_maps, grid, "POI_MAPS", progress, imagery)
    created: list[str] = []
    if poi_points:
        poi_maps = _poi_maps_from_points(Path(next(iter(wanted.values()))), grid, None if resampled else imagery,
                                         poi_points, poi_layer, poi_category_field, poi_preset, poi_mapping_file,
                                         poi_max_distances, poi_columns, progress.span(0.0, 0.1))
        created.append(poi_maps)
    paths, hidden, fp_mask_path, probs_path = _engine_paths(wanted, polygons, probability_type)
    created += hidden
    bands = card["bands"]
    job = UseJob(imagery, grid, layout, tuple(float(b["scale"]) for b in bands),
                 tuple(float(b["offset"]) for b in bands), poi_maps, mask, has_fp, threshold, class_colormap(card),
                 batch_size, workers, compression, probability_type)
    fingerprint = {"imagery": file_fingerprint(imagery), "checkpoint": file_fingerprint(checkpoint),
                   "poi_maps": file_fingerprint(poi_maps) if not poi_points else None,
                   "poi_points": [file_fingerprint(poi_points), poi_layer, poi_category_field, poi_preset,
                                  file_fingerprint(poi_mapping_file), str(poi_max_distances), str(poi_columns)]
                   if poi_points else None,
                   "mask": file_fingerprint(mask), "threshold": threshold, "precision": precision,
                   "device": device, "probability_type": probability_type}
    return UsePlan(job, model, card, wanted, paths, fingerprint, resampled, created, polygons, fp_mask_path,
                   probs_path)


def _remove_rasters(wanted: dict) -> None:
    """Delete the raster outputs of ``wanted`` (all or nothing when the polygons fail)."""
    for key in ("footprint_probability", "footprint_mask", "use_class", "use_probabilities"):
        if key in wanted:
            for p in (wanted[key], wanted[key] + ".aux.xml", Path(wanted[key]).with_suffix(".qml")):
                with contextlib.suppress(OSError):
                    os.unlink(p)


def _map_building_use(imagery: str, checkpoint: str, *, device: str = "auto", precision: str = "auto",
                      resume: bool = True, progress: Progress | None = None, **options) -> dict:
    """Map building use over ``imagery`` with ``checkpoint`` on this machine; writes the
    outputs given (keyword arguments of :func:`plan_building_use`)."""
    progress = ensure(progress)
    plan = plan_building_use(imagery, checkpoint, device=device, precision=precision, progress=progress, **options)
    try:
        dev, desc = resolve_device(device)
        progress.info(f"Device: {desc}.")
        predictor = Predictor(plan.model, dev, precision=precision, progress=progress)
        # the resume fingerprint records what the engine resolved (as before the cluster runs)
        plan.fingerprint.update(precision=predictor.precision, device=dev.type)
        layout = plan.job.layout
        progress.info(f"Windows of {layout.window} px, {layout.margin} px margin (stride {layout.stride} px, "
                      f"{'blended' if layout.blend else 'central part kept'}); batch {plan.job.batch_size}.")
        summary = plan.job.run(predictor, plan.paths, plan.fingerprint, resume=resume,
                               progress=progress.span(0.1 if plan.job.poi_maps in plan.created else 0.0,
                                                      0.9 if plan.polygons else 1.0))
        summary.update(device=str(dev), device_description=desc, precision=predictor.precision,
                       grid={"width": plan.job.grid.width, "height": plan.job.grid.height,
                             "resampled": plan.resampled},
                       outputs=dict(plan.wanted),
                       default_colours=all(class_colormap(plan.card)[k][:3] == _hex_rgba(DEFAULT_COLOURS[k])[:3]
                                           for k in range(4)))
        write_use_map_styles({k: v for k, v in plan.wanted.items() if k != "polygons"}, class_colormap(plan.card),
                             USE_NAMES)
        if plan.polygons:
            from .vectorize import polygonize_buildings

            try:
                summary["polygons"] = polygonize_buildings(plan.fp_mask_path, plan.probs_path, plan.polygons,
                                                           plan.pixel_area_m2, progress=progress.span(0.9, 1.0))
                write_gpkg_style(plan.polygons, "buildings", "building_use_polygons.qml")
            except BaseException:
                _remove_rasters(plan.wanted)  # the rasters of this run were moved into place already
                raise
            _report_polygons(summary["polygons"]["buildings"], plan.polygons, progress)
        progress.info(f"{summary['tiles_run']} window(s) run, {summary['tiles_skipped']} skipped (nodata or "
                      f"outside the mask) in {summary['seconds']:.1f} s on {dev}.")
        return summary
    finally:
        plan.cleanup()


def _report_polygons(count: int, path: str, progress: Progress) -> None:
    """Say how many building polygons were written; warn when there are none."""
    if count:
        progress.info(f"{count} building polygon(s) written to {path}.")
    else:
        progress.warning(f"No building was found: {path} holds an empty layer. Check the threshold, the mask "
                         "and that the imagery matches the model (bands, resolution).")


# ---------------------------------------------------------------- assign to existing footprints
def _check_probability_raster(ds) -> None:
    """Use probabilities are 3 bands in [0, 1]: floats, or scaled integers with their band scale
    (edifice:mapbuildinguse's USE_PROBABILITIES at any PROBABILITY_TYPE)."""
    fix = "give the per-class probability output (USE_PROBABILITIES) of edifice:mapbuildinguse."
    if ds.count != 3:
        raise InputError("PROBABILITIES", f"has {ds.count} band(s); use probabilities have 3 (R, C, I).", fix)
    if np.dtype(ds.dtypes[0]).kind != "f" and not is_scaled(ds):
        raise InputError("PROBABILITIES", f"holds {ds.dtypes[0]} values, not probabilities (floats 0-1, or "
                                          "integers with a band scale): it looks like an image.", fix)
    sample, valid = read_probabilities(ds, Window(0, 0, min(ds.width, 512), min(ds.height, 512)))
    values = sample[:, valid]
    if values.size and (values.min() < -1e-6 or values.max() > 1 + 1e-6):
        raise InputError("PROBABILITIES", f"holds values from {values.min():g} to {values.max():g}, not "
                                          "probabilities in [0, 1].", fix)


def _require_overlap(geoms, grid: Grid) -> None:
    """:class:`InputError` when no building (in the raster's CRS) touches the raster's extent."""
    import shapely

    present = geoms[~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)]
    if not len(present):
        return
    xmin, ymin, xmax, ymax = shapely.total_bounds(present)
    gx0, gy0, gx1, gy1 = grid.bounds
    if xmax < gx0 or xmin > gx1 or ymax < gy0 or ymin > gy1:
        raise InputError("PROBABILITIES", "covers none of the buildings (the raster and the footprints are "
                                          "in different places).", "give the probabilities mapped over these "
                                                                   "buildings, or the buildings of that area.")


def _warn_missing_geometries(geoms, progress: Progress) -> None:
    import shapely

    missing = int(np.count_nonzero(shapely.is_missing(geoms) | shapely.is_empty(geoms)))
    if missing:
        progress.warning(f"INPUT: {missing} of {len(geoms)} features have no geometry; they get no use "
                         "(use_class is null).")


def assign_building_use(buildings: str, probabilities: str, output: str, layer: str | None = None,
                        progress: Progress | None = None) -> dict:
    """Give each polygon of ``buildings`` the mean use probabilities of the pixels whose
    centres it holds (the pixel under its representative point when it holds none) from the
    3-band ``probabilities`` raster; writes a GeoPackage with the layer's own fields plus
    use_class, use_name, p_residential, p_commercial, p_industrial, confidence, pixels."""
    from ..evaluation.tables import reproject_geoms
    from ..vector_io import read_vector
    from .vectorize import attributes
    from ..zonal import polygon_pixels, refuse_field_clash, write_with_fields

    refuse_input_as_output({"OUTPUT": output}, {"INPUT": buildings, "PROBABILITIES": probabilities})
    progress = ensure(progress)
    lyr = read_vector(buildings, "INPUT", layer, what="a GeoPackage, GeoJSON or Shapefile of building polygons",
                      kind="Polygon")
    _warn_missing_geometries(lyr.geoms, progress)
    new_names = ["use_class", "use_name", "p_residential", "p_commercial", "p_industrial", "confidence", "pixels"]
    refuse_field_clash(lyr.fields, new_names)
    with open_raster(probabilities, "PROBABILITIES") as ds:
        rcrs = require_crs(ds, "PROBABILITIES")
        _check_probability_raster(ds)
        grid = Grid.from_dataset(ds)
        g = reproject_geoms(lyr.geoms, lyr.crs_wkt, rcrs, "INPUT")
        _require_overlap(g, grid)
        n = len(g)
        sums, nprob, counts = np.zeros((n, 3)), np.zeros(n), np.zeros(n)
        for k in range(n):
            if k % 200 == 0:
                progress.check_cancelled()
                progress.set_fraction(0.9 * k / max(n, 1))
            got = polygon_pixels(g[k], grid)
            if got is None:
                continue
            w, inside = got
            p, pv = read_probabilities(ds, w)
            sel = inside & pv
            counts[k] = inside.sum()
            nprob[k] = sel.sum()
            if sel.any():
                sums[k] = p[:, sel].astype(np.float64).sum(axis=1)
    att = attributes(sums, nprob, counts, 1.0)
    progress.check_cancelled()
    write_with_fields(output, lyr, {f: att[f] for f in new_names}, style="building_use_polygons.qml")
    progress.set_fraction(1.0)
    counts_by = {USE_NAMES[c - 1]: int(np.sum(att["use_class"] == c)) for c in (1, 2, 3)}
    return {"output": output, "buildings": n, "without_probabilities": int(np.sum(nprob == 0)), **counts_by}


__all__ = ["map_building_use", "assign_building_use", "class_colormap", "load_use_model", "imagery_grid",
           "plan_building_use", "UseJob", "UsePlan", "PRODUCTS", "product_output"]
