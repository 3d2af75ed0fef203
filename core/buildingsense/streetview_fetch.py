"""Street-view images fetched from a configured street-view API, one per sampling point of
:mod:`.streetview` (the seed fetched Google's, §3.1.2), through the shared HttpClient:
retries with backoff, ``Retry-After``, a persistent cache (a rerun downloads nothing), the key
as a query parameter that is redacted from every message and left out of the cache key.

The URL is a template with ``{lat}``, ``{lon}``, ``{heading}``, ``{pitch}``, ``{fov}`` and
``{size}``, e.g. Google's Street View Static API
``https://maps.googleapis.com/maps/api/streetview?size={size}&location={lat},{lon}&heading={heading}&pitch={pitch}&fov={fov}``
(the key is added as the ``key_param`` query parameter)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..acquire.http import HttpClient, HttpError, ResponseCache, default_cache_dir, run_bounded
from ..errors import InputError
from ..progress import Progress

#: Environment variable holding the street-view API key on the CLI (and in QGIS without an AUTHCFG).
STREET_VIEW_KEY_ENV = "EDIFICE_STREETVIEW_API_KEY"
EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}
PLACEHOLDERS = ("lat", "lon", "heading", "pitch", "fov", "size")


@dataclass
class StreetViewApi:
    """``url``: the request URL template (see the module docstring); ``key`` and ``key_param``: the
    API key and the query parameter that carries it; ``size`` (e.g. ``640x640``) and ``fov`` (°);
    ``concurrency``: downloads at a time; ``cache_dir``: default ``<edifice cache>/streetview``."""

    url: str
    key: str | None = None
    key_param: str = "key"
    size: str = "640x640"
    fov: float = 90.0
    concurrency: int = 4
    cache_dir: str | None = None

    def request_url(self, point: dict) -> str:
        """The URL of one sampling point (``lat``, ``lon``, ``heading``, ``pitch``), without the key."""
        try:
            return self.url.format(lat=point["lat"], lon=point["lon"], heading=point["heading"],
                                   pitch=point["pitch"], fov=f"{self.fov:g}", size=self.size)
        except (KeyError, IndexError, ValueError) as exc:
            raise InputError("STREET_VIEW_URL", f"the URL template has an unknown placeholder ({exc}).",
                             f"use only {{{'}, {'.join(PLACEHOLDERS)}}}.") from None


def fetch_street_views(api: StreetViewApi, points: dict[str, dict], targets: dict[str, Path],
                       progress: Progress) -> dict[str, Path]:
    """Download the image of each building id in ``targets`` that has a point in ``points`` to
    ``targets[id]`` + the extension of its content type; returns id -> file written. A building
    whose request fails (after the client's retries) gets no image and a warning."""
    if not api.url.startswith(("http://", "https://")):
        raise InputError("STREET_VIEW_URL", f"'{api.url}' is not an http(s) URL template.",
                         "give e.g. https://maps.googleapis.com/maps/api/streetview?size={size}&location={lat},{lon}"
                         "&heading={heading}&pitch={pitch}&fov={fov}")
    cache = ResponseCache(Path(api.cache_dir) if api.cache_dir else default_cache_dir() / "streetview")
    client = HttpClient("Street-view API", cache=cache, progress=progress, secrets=(api.key,) if api.key else ())
    params = {api.key_param: api.key} if api.key else None
    todo = [i for i in targets if i in points]
    failed: list[str] = []

    def fetch(bid: str) -> Path | None:
        try:
            r = client.get(api.request_url(points[bid]), params=params, accept=("image/",))
        except HttpError as exc:
            if exc.status in (401, 403):
                raise
            failed.append(f"{bid} ({exc})")
            return None
        path = targets[bid].with_suffix(EXTENSIONS.get(r.content_type, ".jpg"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(r.content)
        return path

    out: dict[str, Path] = {}
    for n, (bid, path) in enumerate(run_bounded(fetch, todo, api.concurrency, progress), start=1):
        if path is not None:
            out[bid] = path
        progress.set_fraction(n / max(len(todo), 1))
    progress.info(f"Street-view API: {len(out)} images for {len(todo)} sampling points.")
    if failed:
        progress.warning(f"{len(failed)} street-view image(s) could not be fetched: {'; '.join(failed[:5])}")
    return out
