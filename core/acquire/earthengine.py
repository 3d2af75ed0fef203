"""Earth Engine source of the SHAFTS composites: the recipe of ``shared/docs/shafts-compat.md`` computed
server-side and downloaded chunk by chunk with ``ee.data.computePixels`` (NPY bodies) — no Drive round trip.

- Sentinel-1: ``COPERNICUS/S1_GRD`` scenes of the year with VV and VH, ``instrumentMode == IW``,
  percentile 50 of VV and VH (dB) -> ``VV_p50``, ``VH_p50``.
- Sentinel-2: ``COPERNICUS/S2_SR_HARMONIZED`` scenes of the year with ``CLOUDY_PIXEL_PERCENTAGE`` < 20,
  percentile 50 of B4, B3, B2, B8 -> ``B4_p50`` ... ``B8_p50``.
- DEM: ``USGS/SRTMGL1_003`` ``elevation`` (m).

Masked pixels are sent as :data:`~.composites.NODATA_SENTINEL`. The Earth Engine client's own retries
are turned off (``ee.data.setMaxRetries(0)``: its backoff neither honours ``Retry-After`` nor can be
cancelled); a ``computePixels`` request answered 429 or 5xx, or whose connection fails, is retried here by
the shared policy of ``http.py`` (:func:`~.http.with_retries`: ``Retry-After`` honoured, else exponential
backoff, every wait ended by a cancel). A chunk refused as too large is split (see ``composites``).

Credentials: a service-account key (JSON text or a key file path) or the user's stored Earth Engine
credentials (``earthengine authenticate``). Keys and tokens never reach messages: every error text is
passed through :func:`redact` with the key's private parts and the current access token.
"""
from __future__ import annotations

import io
import json
import os
import re
import warnings

import numpy as np
from rasterio.windows import Window

from ..errors import EdificeError, InputError
from ..grid import Grid
from ..progress import Progress, ensure
from .composites import DEM, NODATA_SENTINEL, S1, S2, Product, RequestTooLarge
from .http import RETRY_STATUSES, RetriesExhausted, Retry, RetryPolicy, redact, with_retries

#: Earth Engine collections of the recipe.
S1_COLLECTION = "COPERNICUS/S1_GRD"
S2_COLLECTION = "COPERNICUS/S2_SR_HARMONIZED"
DEM_IMAGE = "USGS/SRTMGL1_003"
#: Sentinel-2 scenes at or above this CLOUDY_PIXEL_PERCENTAGE are left out (SHAFTS: 20).
CLOUD_THRESHOLD = 20

REGISTER_URL = "https://code.earthengine.google.com/register"
_NOT_REGISTERED = re.compile(r"not registered|not signed up|has not been used in project|"
                             r"does not have required permission to use project|no project found", re.I)
#: errors after which a smaller chunk can succeed: the request size limit, and the per-request memory and
#: time limits of the server
#: an annual collection with no scene gives a composite without bands
_NO_BANDS = re.compile(r"did not match any bands|image with no bands", re.I)
_TOO_LARGE = re.compile(r"request size|too large|must be less than or equal to \d+ bytes|"
                        r"memory limit exceeded|computation timed out", re.I)


def _import_ee():
    try:
        with warnings.catch_warnings():   # google.api_core warns about future Python support on import
            warnings.simplefilter("ignore", FutureWarning)
            import ee
    except ImportError as exc:
        raise EdificeError("The Earth Engine source needs the earthengine-api package "
                           "(pip install earthengine-api).") from exc
    return ee


def load_key(key: str) -> dict:
    """A service-account key from JSON text or from the path of a key file (never echoed in errors)."""
    text = key
    if not key.lstrip().startswith("{"):
        if not os.path.isfile(key):
            raise InputError("KEY", "is neither a service-account key (JSON) nor the path of a key file.",
                             "give the path of the JSON key file downloaded from the Google Cloud console.")
        with open(key, encoding="utf-8") as f:
            text = f.read()
    try:
        info = json.loads(text)
    except ValueError:
        info = None
    if not isinstance(info, dict) or not {"client_email", "private_key", "token_uri"} <= set(info):
        raise InputError("KEY", "is not a service-account key (a JSON file with client_email, private_key "
                                "and token_uri).", "download a JSON key for the service account.")
    return info


def credentials_from(key: str | None):
    """(credentials, secrets to redact): from a service-account key (JSON text or file path), or the
    user's stored Earth Engine credentials when ``key`` is None."""
    ee = _import_ee()
    if key:
        info = load_key(key)
        from google.oauth2 import service_account
        creds = service_account.Credentials.from_service_account_info(info, scopes=ee.oauth.SCOPES)
        return creds, [info.get("private_key", ""), info.get("private_key_id", ""), key]
    try:
        creds = ee.data.get_persistent_credentials()
    except ee.EEException as exc:
        raise InputError("CREDENTIALS", "no stored Earth Engine credentials were found.",
                         "run 'earthengine authenticate' once, or give a service-account key.") from exc
    return creds, [getattr(creds, "refresh_token", None) or ""]


class EarthEngineSource:
    """Computes the composites of ``year`` server-side and fetches chunks of them.

    ``key``: service-account key (JSON or path) or None for stored credentials; ``project``: the
    Google Cloud project registered for Earth Engine (a service account's own project by default);
    ``url``: another Earth Engine endpoint (tests); ``max_retries``: retries of 429/5xx answers and failed
    connections, ``backoff_s``: the first backoff (s) when the server sets no ``Retry-After``;
    ``progress``: where retries are announced and whose cancel ends a wait."""

    name = "earthengine"

    def __init__(self, year: int, key: str | None = None, project: str | None = None, url: str | None = None,
                 max_retries: int = 5, backoff_s: float = 1.0, progress: Progress | None = None):
        self.ee = _import_ee()
        self.year = int(year)
        self.credentials, self._secrets = credentials_from(key)
        self.project = project or getattr(self.credentials, "project_id", None)
        if not self.project:
            raise InputError("PROJECT", "no Google Cloud project is set for Earth Engine.",
                             f"give the id of a project registered for Earth Engine ({REGISTER_URL}).")
        self._call(self.ee.Initialize, self.credentials, url=url, project=self.project)
        self.ee.data.setMaxRetries(0)         # retried by with_retries (see the module's docstring)
        self.policy = RetryPolicy(max_retries=int(max_retries), backoff_s=float(backoff_s))
        self.progress = ensure(progress)
        self._images: dict[str, object] = {}

    # -- errors ---------------------------------------------------------------
    def secrets(self) -> list[str]:
        return [*self._secrets, getattr(self.credentials, "token", None) or ""]

    def _call(self, fn, *args, **kwargs):
        """Call the Earth Engine client; its errors become Edifice errors with secrets redacted."""
        import google.auth.exceptions as gauth

        try:
            return fn(*args, **kwargs)
        except gauth.RefreshError as exc:
            raise InputError("KEY", "the credentials were refused by the token endpoint "
                                    f"({redact(str(exc), self.secrets())}).",
                             "check the service-account key is current (not deleted or disabled), or "
                             "run 'earthengine authenticate' again.") from None
        except self.ee.EEException as exc:
            raise self._translate(redact(str(exc), self.secrets())) from None

    def _translate(self, message: str) -> EdificeError:
        if _TOO_LARGE.search(message):
            return RequestTooLarge(message)
        if _NO_BANDS.search(message):
            return InputError("YEAR", f"Earth Engine found no scene of the recipe over the extent in {self.year} "
                                      f"(server: {message}).",
                              "check the extent and the year (Sentinel-1 GRD from 2014, Sentinel-2 SR from 2017).")
        if _NOT_REGISTERED.search(message):
            return InputError("PROJECT", f"the account or project '{self.project}' is not registered for "
                                         f"Earth Engine (server: {message}).",
                              f"register it at {REGISTER_URL}, or give a project that is.")
        return EdificeError(f"Earth Engine: {message}")

    # -- recipe ---------------------------------------------------------------
    def _dates(self) -> tuple[str, str]:
        return f"{self.year}-01-01", f"{self.year + 1}-01-01"

    def image(self, product: Product, region: Grid):
        """The server-side composite of ``product`` (an ``ee.Image``), masked pixels as the sentinel."""
        if product.key not in self._images:
            ee = self.ee
            xmin, ymin, xmax, ymax = region.bounds
            bounds = ee.Geometry.Rectangle([xmin, ymin, xmax, ymax], "EPSG:4326", False)
            build = {"S1": self._s1, "S2": self._s2, "DEM": self._dem}[product.key]
            img = build(bounds).unmask(NODATA_SENTINEL, False)
            self._images[product.key] = img.toInt16() if product.dtype == "int16" else img.toFloat()
        return self._images[product.key]

    def _s1(self, bounds):
        ee = self.ee
        col = (ee.ImageCollection(S1_COLLECTION).filterBounds(bounds).filterDate(*self._dates())
               .filter(ee.Filter.listContains("transmitterReceiverPolarisation", "VV"))
               .filter(ee.Filter.listContains("transmitterReceiverPolarisation", "VH"))
               .filter(ee.Filter.eq("instrumentMode", "IW")).select(["VV", "VH"]))
        return col.reduce(ee.Reducer.percentile([50])).select(list(S1.bands))

    def _s2(self, bounds):
        ee = self.ee
        col = (ee.ImageCollection(S2_COLLECTION).filterBounds(bounds).filterDate(*self._dates())
               .filter(ee.Filter.lt("CLOUDY_PIXEL_PERCENTAGE", CLOUD_THRESHOLD)).select(["B4", "B3", "B2", "B8"]))
        return col.reduce(ee.Reducer.percentile([50])).select(list(S2.bands))

    def _dem(self, bounds):
        return self.ee.Image(DEM_IMAGE).select(list(DEM.bands))

    # -- download -------------------------------------------------------------
    def fetch(self, product: Product, grid: Grid, window: Window) -> np.ndarray:
        """Pixels of ``window`` of ``grid`` as a (bands, rows, cols) array (``composites.Fetcher``)."""
        t = grid.window_transform(window)
        body = {"expression": self.image(product, grid), "fileFormat": "NPY", "bandIds": list(product.bands),
                "grid": {"dimensions": {"width": int(window.width), "height": int(window.height)},
                         "affineTransform": {"scaleX": t.a, "shearX": t.b, "translateX": t.c,
                                             "shearY": t.d, "scaleY": t.e, "translateY": t.f},
                         "crsCode": "EPSG:4326"}}
        return npy_to_bands(self._call(self._compute_pixels, body), product)

    def _compute_pixels(self, body: dict) -> bytes:
        """``ee.data.computePixels(body)``, retried by the shared policy on 429/5xx and failed connections."""
        try:
            return with_retries(lambda: self._compute_pixels_once(body), self.policy, self.progress,
                                "Earth Engine", " to computePixels")
        except RetriesExhausted as exc:
            raise EdificeError(f"Earth Engine: no answer to computePixels after {exc.attempts} attempts "
                               f"(last: {exc.last}). Try again later.") from None

    def _compute_pixels_once(self, body: dict) -> bytes:
        try:
            return self.ee.data.computePixels(body)
        except self.ee.EEException as exc:
            status, retry_after = _http_status(exc)
            if status in RETRY_STATUSES:
                raise Retry(f"HTTP {status}", self.policy.retry_after(retry_after)) from None
            raise
        except (ConnectionError, TimeoutError) as exc:
            raise Retry(f"connection failed ({type(exc).__name__})") from None

    def spec(self) -> dict:
        """What identifies this source's composites (for resuming)."""
        return {"source": self.name, "year": self.year, "recipe": [S1_COLLECTION, S2_COLLECTION, DEM_IMAGE,
                                                                  CLOUD_THRESHOLD]}


def _http_status(exc: Exception) -> tuple[int | None, str | None]:
    """(HTTP status, Retry-After header) of the answer behind an Earth Engine client error: the client
    raises its EEException while handling googleapiclient's HttpError, which it leaves as the context."""
    cause = exc.__cause__ or exc.__context__
    resp = getattr(cause, "resp", None)
    if resp is None:
        return None, None
    try:
        return int(resp.status), resp.get("retry-after")
    except (TypeError, ValueError, AttributeError):
        return None, None


def npy_to_bands(raw: bytes, product: Product) -> np.ndarray:
    """An NPY body (a structured array with one field per band, as computePixels sends) as a
    (bands, rows, cols) array in the product's band order."""
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise EdificeError(f"Earth Engine sent pixels that are not an NPY array ({exc}).") from None
    names = arr.dtype.names or ()
    missing = [b for b in product.bands if b not in names]
    if missing:
        raise EdificeError(f"Earth Engine sent bands {list(names)}; {missing} are missing.")
    return np.stack([arr[b] for b in product.bands])
