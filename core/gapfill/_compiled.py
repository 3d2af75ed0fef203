"""Compiled (numba) ordinary-kriging kernel: one target at a time, no temporaries.

Optional: :data:`AVAILABLE` is False when numba is not installed, and
:mod:`.kriging` then solves the stacked systems with numpy. From the same distances as
PyKrige's ``OrdinaryKriging`` the kernel solves the equivalent covariance form
``C w = c0 + mu 1`` (``C = sill - gamma``, symmetric positive definite for the models
here) by Cholesky, ~3x cheaper than LU of PyKrige's semivariance form; where ``C`` is not
numerically positive definite it falls back to that LU with partial pivoting. The
results agree with the numpy engine and PyKrige to round-off (~1e-13 relative). It
solves only the ``m <= n`` neighbours a target has within the radius (the numpy path
pads to ``n`` with identity rows, which gives the same weights). Compiled code is cached
on disk (numba ``cache=True``): the first run in a new environment spends a few seconds
compiling.
"""
from __future__ import annotations

import math
import threading

import numpy as np

try:  # pragma: no cover - exercised when numba is installed
    import numba
except ImportError:  # pragma: no cover
    numba = None

AVAILABLE = numba is not None
prange = numba.prange if AVAILABLE else range
#: One kernel call at a time per process: numba's "workqueue" threading layer (used where
#: neither OpenMP nor TBB is found) aborts on concurrent parallel calls, e.g. two QGIS
#: Processing tasks; each call already uses all of numba's threads.
_LOCK = threading.Lock()
#: Model codes of the kernel (order of :data:`.variogram.MODELS`).
MODEL_CODES = {"spherical": 0, "exponential": 1, "gaussian": 2}


def variogram_table(variograms) -> np.ndarray:
    """(bands, 4) rows of model code, nugget, partial sill, range (pixels) for :func:`krige_targets`."""
    return np.array([[MODEL_CODES[v.model], v.nugget, v.psill, max(float(v.range_px), 1e-12)]
                     for v in variograms], dtype=np.float64)


def _gamma(code, h, nugget, psill, a):
    """Semivariance at distance ``h > 0`` (as :meth:`.variogram.Variogram.at_positive`)."""
    if code == 0:
        r = min(h * (1.0 / a), 1.0)
        s = r * (1.5 - 0.5 * r * r)
    elif code == 1:
        s = -math.expm1(h * (-3.0 / a))
    else:
        q = h * (7.0 / (4.0 * a))
        s = -math.expm1(-(q * q))
    return s * psill + nugget


def _lu_solve(a, b, size):
    """Solve ``a[:size, :size] x = b[:size]`` in place (``b`` becomes x) by LU with partial pivoting."""
    for k in range(size):
        p = k
        big = abs(a[k, k])
        for i in range(k + 1, size):
            if abs(a[i, k]) > big:
                big = abs(a[i, k])
                p = i
        if p != k:
            for j in range(size):
                a[k, j], a[p, j] = a[p, j], a[k, j]
            b[k], b[p] = b[p], b[k]
        inv = 1.0 / a[k, k]
        for i in range(k + 1, size):
            f = a[i, k] * inv
            if f != 0.0:
                for j in range(k + 1, size):
                    a[i, j] -= f * a[k, j]
                b[i] -= f * b[k]
    for k in range(size - 1, -1, -1):
        s = b[k]
        for j in range(k + 1, size):
            s -= a[k, j] * b[j]
        b[k] = s / a[k, k]


def _cholesky_solve2(c, x, size):
    """Cholesky factor ``c[:size, :size]`` (lower triangle, in place) and solve for the two
    right-hand sides ``x[0, :size]``, ``x[1, :size]`` in place; False when ``c`` is not
    numerically positive definite (then ``c`` and ``x`` are spoilt)."""
    for j in range(size):
        d = c[j, j]
        for k in range(j):
            d -= c[j, k] * c[j, k]
        if not d > 0.0:
            return False
        d = math.sqrt(d)
        c[j, j] = d
        inv = 1.0 / d
        for i in range(j + 1, size):
            s = c[i, j]
            for k in range(j):
                s -= c[i, k] * c[j, k]
            c[i, j] = s * inv
    for i in range(size):  # forward: L y = x (rows of L, contiguous)
        inv = 1.0 / c[i, i]
        s0, s1 = x[0, i], x[1, i]
        for k in range(i):
            s0 -= c[i, k] * x[0, k]
            s1 -= c[i, k] * x[1, k]
        x[0, i] = s0 * inv
        x[1, i] = s1 * inv
    for i in range(size - 1, -1, -1):  # backward: L' x = y, column-oriented (rows of L again)
        inv = 1.0 / c[i, i]
        x0, x1 = x[0, i] * inv, x[1, i] * inv
        x[0, i], x[1, i] = x0, x1
        for k in range(i):
            x[0, k] -= c[i, k] * x0
            x[1, k] -= c[i, k] * x1
    return True


def _weights_covariance_form(dist, m, code, nugget, psill, rng, c, x, g0):
    """OK weights (into ``x[0, :m]``) and Lagrange multiplier (returned) from the covariance
    form ``C w = c0 + mu 1`` (``C = sill - gamma``, positive definite for these models),
    solved by Cholesky for ``c0`` and ``1`` then ``mu = (1 - 1'C^-1 c0) / 1'C^-1 1``;
    NaN when ``C`` is not numerically positive definite."""
    sill = nugget + psill
    for i in range(m):
        c[i, i] = sill
        for j in range(i + 1, m):
            c[j, i] = sill - _gamma(code, dist[i, j], nugget, psill, rng)
        g0[i] = _gamma(code, dist[i, m], nugget, psill, rng)
        x[0, i] = sill - g0[i]
        x[1, i] = 1.0
    if not _cholesky_solve2(c, x, m):
        return math.nan
    s0, s1 = 0.0, 0.0
    for i in range(m):
        s0 += x[0, i]
        s1 += x[1, i]
    mu = (1.0 - s0) / s1
    for i in range(m):
        x[0, i] += mu * x[1, i]
    return mu


def _weights_semivariance_form(dist, m, code, nugget, psill, rng, a, x, g0):
    """OK weights (into ``x[0, :m]``) and Lagrange multiplier (returned) from PyKrige's
    semivariance form, solved by LU with partial pivoting."""
    rhs = x[0]
    for i in range(m):
        a[i, i] = 0.0
        for j in range(i + 1, m):
            g = _gamma(code, dist[i, j], nugget, psill, rng)
            a[i, j] = g
            a[j, i] = g
        a[i, m] = 1.0
        a[m, i] = 1.0
        g0[i] = _gamma(code, dist[i, m], nugget, psill, rng)
        rhs[i] = g0[i]
    a[m, m] = 0.0
    rhs[m] = 1.0
    _lu_solve(a, rhs, m + 1)
    return rhs[m]


def _krige_one(known_xy, values, tx, ty, nbr, m, params, dist, a, x, g0, pred, var, t):
    """Krige target ``t`` at (tx, ty) from its ``m`` neighbours ``nbr[:m]``, every band."""
    for i in range(m):
        xi, yi = known_xy[nbr[i], 0], known_xy[nbr[i], 1]
        dx, dy = xi - tx, yi - ty
        dist[i, m] = math.sqrt(dx * dx + dy * dy)
        for j in range(i + 1, m):
            dx, dy = xi - known_xy[nbr[j], 0], yi - known_xy[nbr[j], 1]
            dist[i, j] = math.sqrt(dx * dx + dy * dy)
    for band in range(params.shape[0]):
        code, nugget, psill, rng = int(params[band, 0]), params[band, 1], params[band, 2], params[band, 3]
        mu = _weights_covariance_form(dist, m, code, nugget, psill, rng, a, x, g0)
        if math.isnan(mu):
            mu = _weights_semivariance_form(dist, m, code, nugget, psill, rng, a, x, g0)
        p, v = 0.0, mu
        for i in range(m):
            p += x[0, i] * values[band, nbr[i]]
            v += x[0, i] * g0[i]
        pred[band, t] = p
        var[band, t] = v


#: Targets per parallel work item of :func:`_krige_targets` (each has its own scratch arrays).
CHUNK = 64


def _krige_targets(known_xy, values, targets, index, params, pred, var):
    """Fill ``pred``/``var`` (bands, t) for every target with at least one neighbour;
    ``index`` (t, n): neighbour indices into ``known_xy``, ``>= len(known_xy)`` where missing.
    Chunks of :data:`CHUNK` targets run on numba's threads (``NUMBA_NUM_THREADS``)."""
    k = known_xy.shape[0]
    n = index.shape[1]
    nt = targets.shape[0]
    for chunk in prange((nt + CHUNK - 1) // CHUNK):
        dist = np.empty((n, n + 1))
        a = np.empty((n + 1, n + 1))
        x = np.empty((2, n + 1))
        g0 = np.empty(n)
        for t in range(chunk * CHUNK, min(nt, (chunk + 1) * CHUNK)):
            nbr = index[t]
            m = 0
            while m < n and nbr[m] < k:
                m += 1
            if m > 0:
                _krige_one(known_xy, values, targets[t, 0], targets[t, 1], nbr, m, params, dist, a, x, g0,
                           pred, var, t)


def _insert_nearest(dist, idx, count, n, d, k):
    """Insert candidate ``k`` at distance ``d`` into the ascending ``dist[:count]``/``idx[:count]``
    (at most ``n`` kept, the farthest dropped); the new count."""
    if count == n and d >= dist[n - 1]:
        return count
    pos = min(count, n - 1)
    while pos > 0 and dist[pos - 1] > d:
        dist[pos], idx[pos] = dist[pos - 1], idx[pos - 1]
        pos -= 1
    dist[pos], idx[pos] = d, k
    return min(count + 1, n)


def _grid_search_one(known_index, known_xy, row, col, tx, ty, start, off_row, off_col, off_d, bound, tol,
                     dist, idx):
    """The ``n = dist.size`` nearest known pixels of the target pixel (row, col) at (tx, ty), visiting
    pixel offsets in ascending nominal distance from ``off_d[start]`` on, until ``tol`` beyond the
    n-th found; true (tie-broken) distances below ``bound``. Returns how many were found."""
    n = dist.shape[0]
    h, w = known_index.shape
    k_missing = known_xy.shape[0]
    count, found, limit = 0, 0, math.inf
    for o in range(start, off_d.shape[0]):
        if off_d[o] > limit:
            break
        r, c = row + off_row[o], col + off_col[o]
        if r < 0 or c < 0 or r >= h or c >= w:
            continue
        k = known_index[r, c]
        if k < 0:
            continue
        dx, dy = known_xy[k, 0] - tx, known_xy[k, 1] - ty
        d = math.sqrt(dx * dx + dy * dy)
        if d < bound:
            count = _insert_nearest(dist, idx, count, n, d, k)
            found += 1
            if found == n:
                limit = off_d[o] + tol
    for i in range(count, n):
        dist[i], idx[i] = math.inf, k_missing
    return count


def _grid_search(known_index, known_xy, rows, cols, targets, starts, off_row, off_col, off_d, bound, tol,
                 dist, idx):
    """:func:`_grid_search_one` for every target, on numba's threads, into ``dist``/``idx`` (t, n)."""
    for t in prange(rows.shape[0]):
        _grid_search_one(known_index, known_xy, rows[t], cols[t], targets[t, 0], targets[t, 1], starts[t],
                         off_row, off_col, off_d, bound, tol, dist[t], idx[t])


def threads() -> int:
    """Threads the compiled kernel uses (numba's setting; 1 without numba)."""
    return numba.get_num_threads() if AVAILABLE else 1


if AVAILABLE:  # pragma: no branch
    _gamma = numba.njit(cache=True, inline="always")(_gamma)
    _lu_solve = numba.njit(cache=True)(_lu_solve)
    # reassociation lets the dot products vectorise (round-off only; NaN/inf checks kept)
    _cholesky_solve2 = numba.njit(cache=True, fastmath={"reassoc", "contract", "nsz", "arcp"})(_cholesky_solve2)
    _weights_covariance_form = numba.njit(cache=True)(_weights_covariance_form)
    _weights_semivariance_form = numba.njit(cache=True)(_weights_semivariance_form)
    _krige_one = numba.njit(cache=True)(_krige_one)
    _krige_targets = numba.njit(cache=True, nogil=True, parallel=True)(_krige_targets)
    _insert_nearest = numba.njit(cache=True, inline="always")(_insert_nearest)
    _grid_search_one = numba.njit(cache=True)(_grid_search_one)
    _grid_search = numba.njit(cache=True, nogil=True, parallel=True)(_grid_search)


def krige_targets(known_xy: np.ndarray, values: np.ndarray, targets: np.ndarray, index: np.ndarray,
                  params: np.ndarray, pred: np.ndarray, var: np.ndarray) -> None:
    """Ordinary kriging of ``targets`` (t, 2) into ``pred``/``var`` (bands, t), in place (see
    :func:`_krige_targets`); coordinates in pixels, ``params`` from :func:`variogram_table`."""
    with _LOCK, numba.parallel_chunksize(1):  # chunks handed out dynamically: no thread waits on a busy core
        _krige_targets(np.ascontiguousarray(known_xy, dtype=np.float64), np.ascontiguousarray(values, np.float64),
                       np.ascontiguousarray(targets, np.float64), np.ascontiguousarray(index, np.int64),
                       params, pred, var)


def grid_search(known_index: np.ndarray, known_xy: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                targets: np.ndarray, starts: np.ndarray, offsets: tuple, bound: float, tol: float,
                n: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances (t, n) and indices (t, n) of each target pixel's ``n`` nearest known pixels (see
    :func:`_grid_search`; inf / ``len(known_xy)`` where missing), ascending as ``cKDTree.query``."""
    t = rows.shape[0]
    dist, idx = np.empty((t, n)), np.empty((t, n), np.int64)
    with _LOCK:
        _grid_search(known_index, np.ascontiguousarray(known_xy, np.float64), rows, cols,
                     np.ascontiguousarray(targets, np.float64), starts, *offsets, bound, tol, dist, idx)
    return dist, idx
