"""Local ordinary kriging, solved in batches of stacked systems (no loop per pixel).

Each target point is predicted from its ``n`` nearest known points within
``radius`` (pixels). Its ordinary-kriging system, in semivariance form, is

    [ G   1 ] [ w  ]   [ g0 ]
    [ 1'  0 ] [ mu ] = [ 1  ]

with ``G_ij = gamma(|x_i - x_j|)`` (zero on the diagonal), ``g0_i = gamma(|x_i - x0|)``;
the prediction is ``w . z`` and the kriging variance ``w . g0 + mu`` — the
formulation of PyKrige's ``OrdinaryKriging`` (its matrix is the negated one). A
point with fewer than ``n`` neighbours inside the radius gets a padded system whose
missing rows are the identity (their weights are exactly zero).

Grid pixels have many equidistant neighbours, so "the n nearest" is ambiguous at the
n-th distance. :func:`tie_break_xy` moves every known pixel by a deterministic
pseudo-random offset of at most 1e-7 pixel, derived from its position in the whole
raster: the n nearest are then unique, the same whichever block reads them, and the
change to any semivariance is below 1e-7 pixel of lag.

Two engines solve the systems (see :func:`krige`): the compiled kernel of
:mod:`._compiled` (numba, optional; Cholesky of the equivalent covariance form, threads)
and stacked ``np.linalg.solve`` of the form above (always available).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from .variogram import Variogram

#: Largest tie-breaking offset, pixels.
TIE_BREAK_PX = 1e-7


def single_threaded_blas():
    """Context with one BLAS thread: a batch of small systems solves ~20x faster than with
    OpenBLAS threads synchronising on every 33 x 33 matrix (no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 (wrapping arithmetic): well-mixed pseudo-random bits."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def pixel_xy(rows: np.ndarray, cols: np.ndarray, aspect: float = 1.0) -> np.ndarray:
    """(n, 2) coordinates in pixels of pixel centres at global ``rows``/``cols``;
    y is scaled by ``aspect`` (y pixel size / x pixel size)."""
    return np.column_stack([cols + 0.5, (rows + 0.5) * aspect]).astype(np.float64)


def tie_break_xy(rows: np.ndarray, cols: np.ndarray, width: int, aspect: float = 1.0) -> np.ndarray:
    """:func:`pixel_xy` of known pixels plus their deterministic tie-breaking offsets
    (|offset| < :data:`TIE_BREAK_PX`); ``width`` is the whole raster's width."""
    idx = rows.astype(np.uint64) * np.uint64(width) + cols.astype(np.uint64)
    bits = _splitmix64(idx)
    u = (bits >> np.uint64(11)).astype(np.float64) / 2.0 ** 53          # [0, 1)
    v = (_splitmix64(bits) >> np.uint64(11)).astype(np.float64) / 2.0 ** 53
    xy = pixel_xy(rows, cols, aspect)
    xy[:, 0] += (u - 0.5) * TIE_BREAK_PX
    xy[:, 1] += (v - 0.5) * TIE_BREAK_PX
    return xy


@dataclass
class Neighbours:
    """For each target: distances (t, n) to its neighbours (inf where missing) and
    their indices (t, n) into the known points (== number of known points where missing)."""

    dist: np.ndarray
    index: np.ndarray


def find_neighbours(tree: cKDTree, targets: np.ndarray, n: int, radius: float, workers: int = 1) -> Neighbours:
    """The ``n`` nearest known points (of ``tree``) within ``radius`` pixels of each target
    (a pixel exactly at ``radius`` counts as within, whatever its tie-breaking offset),
    searched with ``workers`` threads."""
    d, i = tree.query(targets, k=n, distance_upper_bound=radius + 2 * TIE_BREAK_PX, workers=workers)
    if n == 1:
        d, i = d[:, None], i[:, None]
    return Neighbours(d, i)


def _systems(known_xy: np.ndarray, nb: Neighbours) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairwise neighbour distances (t, n, n), presence mask (t, n) and clean indices."""
    present = np.isfinite(nb.dist)
    idx = np.where(present, nb.index, 0)
    p = known_xy[idx]                                        # (t, n, 2)
    dx = p[:, :, None, 0] - p[:, None, :, 0]
    dy = p[:, :, None, 1] - p[:, None, :, 1]
    return np.sqrt(dx * dx + dy * dy), present, idx


def _solve(variogram: Variogram, pair_d: np.ndarray, target_d: np.ndarray, present: np.ndarray,
           values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve the stacked OK systems of one band: (prediction, variance) per target."""
    t, n = present.shape
    a = np.empty((t, n + 1, n + 1))
    a[:, :n, :n] = variogram.at_positive(pair_d)
    diag = np.arange(n)
    a[:, diag, diag] = 0.0
    a[:, :n, n] = 1.0
    a[:, n, :n] = 1.0
    a[:, n, n] = 0.0
    b = np.empty((t, n + 1))
    b[:, :n] = variogram.at_positive(np.where(present, target_d, 1.0))
    b[:, n] = 1.0
    missing = ~present
    if missing.any():  # padded systems: a missing neighbour gets an identity row and weight 0
        both = present[:, :, None] & present[:, None, :]
        a[:, :n, :n] *= both
        a[:, diag, diag] = missing
        a[:, :n, n] = present
        a[:, n, :n] = present
        b[:, :n] *= present
    x = np.linalg.solve(a, b[:, :, None])[:, :, 0]
    w, mu = x[:, :n], x[:, n]
    return (w * values).sum(axis=1), (w * b[:, :n]).sum(axis=1) + mu


def krige(known_xy: np.ndarray, known_values: np.ndarray, targets: np.ndarray,
          variograms: list[Variogram], n: int = 32, radius: float = 256.0, batch: int = 2048,
          tree: cKDTree | None = None, check=None, engine: str = "auto",
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ordinary kriging of ``targets`` (t, 2) from ``known_xy`` (k, 2) with values
    ``known_values`` (bands, k), one variogram per band.

    Returns predictions (bands, t) and variances (bands, t) — NaN where a target has
    no known point within ``radius`` — and each target's distance to its nearest
    known point (t,), inf where none. ``check`` (optional) is called between batches
    (e.g. a cancellation check). ``engine``: ``"compiled"`` (the numba kernel of
    :mod:`._compiled`, ~10x faster), ``"numpy"`` (stacked ``np.linalg.solve``) or ``"auto"``
    (compiled when numba is installed); both give the same values to round-off."""
    bands, t = known_values.shape[0], targets.shape[0]
    pred = np.full((bands, t), np.nan)
    var = np.full((bands, t), np.nan)
    nearest = np.full(t, np.inf)
    if t == 0 or known_xy.shape[0] == 0:
        return pred, var, nearest
    tree = tree if tree is not None else cKDTree(known_xy)
    n = min(n, known_xy.shape[0])
    if _use_compiled(engine):
        _krige_compiled(tree, known_xy, known_values, targets, variograms, n, radius, batch, check,
                        pred, var, nearest)
        return pred, var, nearest
    with single_threaded_blas():
        _krige_batches(tree, known_xy, known_values, targets, variograms, n, radius, batch, check,
                       pred, var, nearest)
    return pred, var, nearest


def _use_compiled(engine: str) -> bool:
    """Whether ``engine`` means the compiled kernel (numba is imported here, on first use, not
    when QGIS loads the plugin)."""
    if engine not in ("auto", "compiled", "numpy"):
        raise ValueError(f"unknown kriging engine '{engine}'")
    if engine == "numpy":
        return False
    from . import _compiled

    if engine == "compiled" and not _compiled.AVAILABLE:
        raise RuntimeError("the compiled kriging engine needs numba (pip install numba)")
    return _compiled.AVAILABLE


def _krige_compiled(tree, known_xy, known_values, targets, variograms, n, radius, batch, check,
                    pred, var, nearest) -> None:
    """As :func:`_krige_batches`, each batch kriged by the compiled kernel."""
    from . import _compiled

    params = _compiled.variogram_table(variograms)
    known_xy = np.ascontiguousarray(known_xy, dtype=np.float64)
    values = np.ascontiguousarray(known_values, dtype=np.float64)
    bands, t = known_values.shape[0], targets.shape[0]
    for s in range(0, t, batch):
        if check is not None:
            check()
        e = min(s + batch, t)
        nb = find_neighbours(tree, targets[s:e], n, radius, _compiled.threads())
        nearest[s:e] = nb.dist[:, 0]
        p, v = np.full((bands, e - s), np.nan), np.full((bands, e - s), np.nan)
        _compiled.krige_targets(known_xy, values, targets[s:e], nb.index, params, p, v)
        pred[:, s:e], var[:, s:e] = p, v


def _krige_batches(tree, known_xy, known_values, targets, variograms, n, radius, batch, check,
                   pred, var, nearest) -> None:
    """Fill ``pred``, ``var`` and ``nearest`` batch by batch (see :func:`krige`)."""
    t = targets.shape[0]
    for s in range(0, t, batch):
        if check is not None:
            check()
        nb = find_neighbours(tree, targets[s:s + batch], n, radius)
        nearest[s:s + batch] = nb.dist[:, 0]
        ok = np.isfinite(nb.dist[:, 0])
        if not ok.any():
            continue
        nb = Neighbours(nb.dist[ok], nb.index[ok])
        pair_d, present, idx = _systems(known_xy, nb)
        rows = np.arange(s, min(s + batch, t))[ok]
        for b, vg in enumerate(variograms):
            pred[b, rows], var[b, rows] = _solve(vg, pair_d, nb.dist, present, known_values[b][idx])
