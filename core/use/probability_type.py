"""``PROBABILITY_TYPE`` of the building-use probability rasters (footprint probability, use probabilities).

``uint8`` (the default), ``uint16``: scaled integers, an eighth / a quarter of the bytes of float32 to compress and
write, with the scale written as GDAL band scale/offset metadata (GDAL, rasterio's ``ds.scales``, QGIS read
probabilities); ``float32``: the probabilities as the model gives them, nodata -1::

    uint8:  DN = round(p x 250),    p = DN x 0.004,    nodata 255
    uint16: DN = round(p x 50000),  p = DN x 0.00002,  nodata 65535

``round`` is computed in float32, ties up: ``DN = floor(float32(p x scale) + 0.5)`` with p clipped to [0, 1] (NaN:
nodata), so
the error of a read-back probability is at most half a step (0.002 for uint8, 0.00001 for uint16; plus float32
round-off, < 1e-7). The scales are decimal (1/250 = 0.004 exactly in decimal) so that a value read in a GIS shows
as a short decimal, and they leave the top of each type free for nodata. Class and mask rasters and building
polygons never use the quantised values.

Why uint8 is the default (issue 17): the pipeline's own work with float32 outputs is 0.46-0.75 CPU-s per km² at
0.5 m, above the goal of 0.4, most of it compressing float32 values (noise in the low mantissa bits); uint8 writes a
seventh of the size at a third of the compression time and meets the goal, and a probability within 0.002 is as
good as the model's own for every use made of it (masks, classes and polygons are the same either way).
``float32`` stays one setting away (``--probability-type float32``, the PROBABILITY_TYPE advanced parameter).
"""
from __future__ import annotations

from ..errors import InputError

#: PROBABILITY_TYPE -> (data type, DN per unit probability (None: the probability itself), nodata)
PROBABILITY_TYPES = {"float32": ("float32", None, -1.0), "uint16": ("uint16", 50000, 65535),
                     "uint8": ("uint8", 250, 255)}
DEFAULT_PROBABILITY_TYPE = "uint8"


def check_probability_type(value: str | None) -> str:
    """The PROBABILITY_TYPE ``value`` (None: the default), or an :class:`InputError`."""
    v = (value or DEFAULT_PROBABILITY_TYPE).strip().lower()
    if v not in PROBABILITY_TYPES:
        raise InputError("PROBABILITY_TYPE", f"'{value}' is not one of {', '.join(PROBABILITY_TYPES)}.",
                         "use uint8 (p to 0.002, the default), uint16 (p to 0.00001) or float32 (exact).")
    return v


def probability_encoding(ptype: str) -> tuple[str, float, float | None]:
    """(data type, nodata, GDAL band scale or None) of PROBABILITY_TYPE ``ptype``."""
    dtype, steps, nodata = PROBABILITY_TYPES[check_probability_type(ptype)]
    return dtype, nodata, (None if steps is None else 1.0 / steps)


def quantise(p, ptype: str):
    """Probabilities ``p`` (float32) as PROBABILITY_TYPE ``ptype`` stores them (``p`` itself for float32)."""
    import numpy as np  # here and below: this module's names are imported where numpy may be missing

    dtype, steps, nodata = PROBABILITY_TYPES[ptype]
    if steps is None:
        return p
    q = np.multiply(p, np.float32(steps), dtype=np.float32)
    q += np.float32(0.5)
    np.minimum(q, np.float32(steps + 0.5), out=q)  # p above 1 never reaches nodata (np.clip: 3x the time)
    if not q.min() >= 0.5:  # p below 0 becomes 0, NaN nodata
        nan = np.isnan(q)
        np.maximum(q, np.float32(0), out=q)
        q[nan] = nodata
    return q.astype(dtype)


def read_probabilities(ds, window, name: str = "PROBABILITIES", dtype=None) -> tuple:
    """(bands, h, w) probabilities of ``window`` of ``ds`` as ``dtype`` and their validity: the band scale/offset
    applied where the raster has them (scaled integer probabilities), float rasters as they are."""
    import numpy as np

    from ..raster_io import read_masked

    dtype = dtype or np.float32
    data, valid = read_masked(ds, window, name)
    scales, offsets = ds.scales, ds.offsets
    if np.dtype(ds.dtypes[0]).kind == "f" and all(s == 1 for s in scales) and not any(offsets):
        return data.astype(dtype, copy=False), valid
    p = data.astype(dtype)
    for b in range(p.shape[0]):
        p[b] *= dtype(scales[b])
        p[b] += dtype(offsets[b])
    return p, valid


def is_scaled(ds) -> bool:
    """True when ``ds`` holds scaled integer values (an integer type with a band scale other than 1)."""
    import numpy as np

    return np.dtype(ds.dtypes[0]).kind in "ui" and any(s != 1 for s in ds.scales)


__all__ = ["PROBABILITY_TYPES", "DEFAULT_PROBABILITY_TYPE", "check_probability_type", "probability_encoding",
           "quantise", "read_probabilities", "is_scaled"]
