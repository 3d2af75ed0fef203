"""Semivariograms of image bands: the empirical semivariogram of cloud-free pixels
and its fit by a bounded model (spherical, exponential, Gaussian) with a nugget.

Distances are in pixels (the x pixel size; rows are scaled by y/x pixel size, so
a grid with non-square pixels is measured in x-pixel units). Semivariances are
in the band's units squared.

Model conventions (``range`` is the *practical* range, as in PyKrige 1.7):

* spherical   ``g(h) = nugget + psill * (1.5 h/a - 0.5 (h/a)^3)`` for h < a, ``nugget + psill`` beyond;
* exponential ``g(h) = nugget + psill * (1 - exp(-3 h / a))``;
* gaussian    ``g(h) = nugget + psill * (1 - exp(-(h / (4 a / 7))^2))``;

with ``g(0) = 0`` and ``psill = sill - nugget``. PyKrige's ``OrdinaryKriging`` takes
exactly these as ``variogram_parameters={"psill": psill, "range": a, "nugget": nugget}``
(its exponential model divides the range by 3 and its Gaussian by 7/4, as here).
GSTools uses a length scale ``len_scale``: ``a`` (spherical), ``a / 3`` (exponential)
and ``(4 a / 7) * sqrt(pi) / 2`` (Gaussian, whose GSTools form is ``exp(-(pi/4) (h/len_scale)^2)``).

The fit is weighted least squares with weights ``N_j / h_j^2`` (pairs per lag over
the squared lag, gstat's default ``fit.method = 7``): short lags, which decide the
kriging weights of near neighbours, count most. The nugget is kept at or above
:data:`MIN_NUGGET` times the largest empirical semivariance: without any nugget a
Gaussian model makes the kriging systems so ill-conditioned (condition numbers of
1e10 and more on a pixel grid) that round-off alone changes predictions in the 5th digit.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import least_squares

MODELS = ("spherical", "exponential", "gaussian")
#: Smallest nugget, as a fraction of the largest empirical semivariance (numerical stability).
MIN_NUGGET = 1e-6


def _shape(model: str, h: np.ndarray, range_: float) -> np.ndarray:
    """The model's normalised shape (0 at h = 0, 1 at the sill) at distances ``h`` (pixels)."""
    a = max(float(range_), 1e-12)
    if model == "spherical":
        r = np.minimum(h * (1.0 / a), 1.0)
        return r * (1.5 - 0.5 * r * r)
    if model == "exponential":
        return -np.expm1(h * (-3.0 / a))
    if model == "gaussian":
        s = h * (7.0 / (4.0 * a))
        return -np.expm1(-(s * s))
    raise ValueError(f"unknown variogram model '{model}'")


def model_values(model: str, h: np.ndarray, nugget: float, psill: float, range_: float) -> np.ndarray:
    """Semivariance of ``model`` at distances ``h`` (pixels); 0 at h == 0."""
    h = np.asarray(h, dtype=np.float64)
    return np.where(h > 0, nugget + psill * _shape(model, h, range_), 0.0)


@dataclass(frozen=True)
class Variogram:
    """A fitted variogram model. ``range_px`` in pixels, ``nugget``/``sill`` in
    value units squared (``sill`` = nugget + partial sill); ``fit_rmse`` is the
    weighted RMS of (empirical - model) in value units squared."""

    model: str
    nugget: float
    sill: float
    range_px: float
    fit_rmse: float = 0.0

    @property
    def psill(self) -> float:
        return self.sill - self.nugget

    def __call__(self, h: np.ndarray) -> np.ndarray:
        return model_values(self.model, h, self.nugget, self.psill, self.range_px)

    def at_positive(self, h: np.ndarray) -> np.ndarray:
        """Semivariance at distances known to be > 0 (the nugget included), without the
        test for h == 0: the hot path of the kriging systems."""
        g = _shape(self.model, h, self.range_px)
        g *= self.psill
        g += self.nugget
        return g

    def pykrige_parameters(self) -> dict:
        """The same model for ``pykrige.ok.OrdinaryKriging(variogram_model=self.model,
        variogram_parameters=...)``."""
        return {"psill": self.psill, "range": self.range_px, "nugget": self.nugget}

    def as_dict(self) -> dict:
        d = asdict(self)
        d["psill"] = self.psill
        return d


@dataclass(frozen=True)
class EmpiricalVariogram:
    """Semivariance ``gamma`` (value units squared) at mean lag ``lag`` (pixels)
    from ``pairs`` pixel pairs per lag class."""

    lag: np.ndarray
    gamma: np.ndarray
    pairs: np.ndarray

    def as_dict(self) -> dict:
        return {"lag_px": self.lag.tolist(), "gamma": self.gamma.tolist(), "pairs": self.pairs.tolist()}


def lag_classes(max_lag: int, n_classes: int = 20) -> np.ndarray:
    """Integer lag distances 1..max_lag (pixels), about log-spaced, unique."""
    return np.unique(np.round(np.geomspace(1, max(int(max_lag), 1), n_classes)).astype(int))


def lag_vectors(max_lag: int, n_classes: int = 20) -> list[tuple[int, int, int]]:
    """(class index, drow, dcol) lag vectors in four directions (E, S, SE, SW) per lag class."""
    out = []
    for i, k in enumerate(lag_classes(max_lag, n_classes)):
        j = max(1, int(round(k / math.sqrt(2))))
        out += [(i, 0, int(k)), (i, int(k), 0), (i, j, j), (i, j, -j)]
    return out


def _overlap(a: np.ndarray, dr: int, dc: int) -> tuple[np.ndarray, np.ndarray]:
    """The parts of ``a`` (rows, cols) paired by the lag (dr >= 0, dc any): a[p] and a[p + (dr, dc)]."""
    h, w = a.shape
    c0, c1 = max(0, -dc), w - max(0, dc)
    return a[:h - dr, c0:c1], a[dr:, c0 + dc:c1 + dc]


class VariogramAccumulator:
    """Sums of squared differences and pair counts per lag vector over any number
    of windows (so the sample can come block by block)."""

    def __init__(self, max_lag: int, aspect: float = 1.0, n_classes: int = 20):
        self.vectors = lag_vectors(max_lag, n_classes)
        self.aspect = aspect
        self.sq = np.zeros(len(self.vectors))
        self.n = np.zeros(len(self.vectors), dtype=np.int64)

    def add(self, values: np.ndarray, known: np.ndarray) -> None:
        """Add the pairs of a window: ``values`` (rows, cols) of one band, ``known``
        True where the pixel is cloud-free and valid."""
        v = np.where(known, values.astype(np.float64), 0.0)
        kf = known.astype(np.float64)  # products instead of boolean indexing: ~1.5x faster
        for m, (_, dr, dc) in enumerate(self.vectors):
            if dr >= v.shape[0] or abs(dc) >= v.shape[1]:
                continue
            a, b = _overlap(v, dr, dc)
            ka, kb = _overlap(kf, dr, dc)
            both = ka * kb
            d = (a - b) * both
            self.sq[m] += float(np.vdot(d, d))
            self.n[m] += int(both.sum())

    def result(self) -> EmpiricalVariogram:
        """Semivariance per lag class (classes without pairs are dropped)."""
        k = max(i for i, _, _ in self.vectors) + 1
        sq, n, hsum = np.zeros(k), np.zeros(k, dtype=np.int64), np.zeros(k)
        for m, (i, dr, dc) in enumerate(self.vectors):
            dist = math.hypot(dc, dr * self.aspect)
            sq[i] += self.sq[m]
            n[i] += self.n[m]
            hsum[i] += dist * self.n[m]
        keep = n > 0
        return EmpiricalVariogram(hsum[keep] / n[keep], sq[keep] / (2.0 * n[keep]), n[keep])


def _weights(emp: EmpiricalVariogram) -> np.ndarray:
    w = emp.pairs / emp.lag ** 2
    return w / w.sum()


def _fit_one(model: str, emp: EmpiricalVariogram, w: np.ndarray) -> tuple[Variogram, float]:
    """Best WLS fit of one model from a few starting ranges: (variogram, weighted SSE)."""
    scale = float(emp.gamma.max())
    g = emp.gamma / scale
    sw = np.sqrt(w)
    hmax = float(emp.lag.max())

    def resid(p):
        return sw * (model_values(model, emp.lag, p[0], p[1], p[2]) - g)

    lo, hi = [MIN_NUGGET, 0.0, 1e-3], [1.0, 4.0, 4.0 * hmax]
    best = None
    for a0 in (0.1 * hmax, 0.4 * hmax, hmax):
        x0 = [min(max(0.5 * g[0], 2 * MIN_NUGGET), 0.99), max(1.0 - 0.5 * g[0], 1e-3), a0]
        r = least_squares(resid, x0, bounds=(lo, hi), x_scale=[1.0, 1.0, hmax])
        if best is None or r.cost < best.cost:
            best = r
    nugget, psill, a = best.x
    rmse = float(np.sqrt(2.0 * best.cost)) * scale  # sum(w) == 1
    return Variogram(model, nugget * scale, (nugget + psill) * scale, float(a), rmse), 2.0 * best.cost


def fit_variogram(emp: EmpiricalVariogram, model: str = "auto") -> tuple[Variogram, dict[str, float]]:
    """Fit ``model`` (or, for ``"auto"``, each of :data:`MODELS` and keep the smallest
    weighted error) to an empirical variogram with a non-zero semivariance.
    Returns the variogram and {model: weighted RMS error} of the models tried."""
    if emp.lag.size == 0 or not (emp.gamma.max() > 0):
        raise ValueError("empirical variogram is zero or empty")
    w = _weights(emp)
    tried = {}
    best = None
    for m in (MODELS if model == "auto" else (model,)):
        v, sse = _fit_one(m, emp, w)
        tried[m] = v.fit_rmse
        if best is None or sse < best[1]:
            best = (v, sse)
    return best[0], tried
