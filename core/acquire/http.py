"""HTTP for every service Edifice talks to (Overpass, tile servers, Earth Engine, STAC, LLM endpoints).

One client with the manners of a good citizen: a User-Agent that names Edifice, a timeout, retries with
exponential backoff on 429/5xx, dropped connections and truncated bodies, ``Retry-After`` honoured, waits
that a cancel interrupts, an optional persistent response cache, and messages from which every secret
(API keys, tokens, signed-URL signatures) is removed. Thread-safe: one :class:`HttpClient` can serve a
``ThreadPoolExecutor`` (see :func:`run_bounded`); its threads share its connection pools
(:mod:`.http_transport`: urllib3, without requests' layers)."""
from __future__ import annotations

import email.utils
import hashlib
import json as jsonlib
import os
import random
import re
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

from ... import __version__
from ..errors import Cancelled, EdificeError
from ..progress import Progress
from .http_transport import Transport, TransportError, with_params

USER_AGENT = f"Edifice/{__version__} (QGIS plugin and CLI for building use and height mapping)"
#: statuses that mean "try again later"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: query parameters whose values are secrets wherever they appear
SECRET_PARAM_NAMES = ("key", "apikey", "api_key", "api-key", "token", "access_token", "accesstoken",
                      "sig", "signature", "se", "password", "secret", "client_secret", "subscription-key",
                      "x-goog-api-key", "code")
_SECRET_PARAM_RE = re.compile(r"(?i)([?&;](?:" + "|".join(re.escape(n) for n in SECRET_PARAM_NAMES)
                              + r")=)[^&#\s'\"]+")
_BEARER_RE = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
#: the password of a URL's user information (``scheme://user:password@host``, e.g. a proxy URL)
_URL_PASSWORD_RE = re.compile(r"(//[^/@\s:'\"]+:)[^/@\s'\"]+(@)")
REDACTED = "***"

T = TypeVar("T")
R = TypeVar("R")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with each of ``secrets``, secret-named query parameters, URL passwords and bearer tokens
    replaced by ***."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _SECRET_PARAM_RE.sub(r"\1" + REDACTED, text)
    text = _URL_PASSWORD_RE.sub(r"\1" + REDACTED + r"\2", text)
    return _BEARER_RE.sub(r"\1" + REDACTED, text)


def default_cache_dir() -> Path:
    """``$EDIFICE_CACHE_DIR``, else ``$XDG_CACHE_HOME/edifice`` or ``~/.cache/edifice``."""
    if os.environ.get("EDIFICE_CACHE_DIR"):
        return Path(os.environ["EDIFICE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edifice"


class HttpError(EdificeError):
    """A service answered with an error, the wrong kind of content, or not at all (after retries)."""

    def __init__(self, service: str, message: str, status: int | None = None):
        self.service = service
        self.status = status
        super().__init__(f"{service}: {message}")


@dataclass
class HttpResponse:
    """A complete response. ``headers`` has lower-case keys; ``url`` is redacted of secrets."""

    status: int
    headers: dict[str, str]
    content: bytes
    url: str
    from_cache: bool = False
    service: str = field(default="HTTP", repr=False)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def text(self) -> str:
        match = re.search(r"charset=([\w-]+)", self.headers.get("content-type", ""))
        return self.content.decode(match.group(1) if match else "utf-8", errors="replace")

    def json(self):
        """The body parsed as JSON; a body that is not JSON raises :class:`HttpError`."""
        try:
            return jsonlib.loads(self.content)
        except ValueError:
            snippet = self.text[:120].replace("\n", " ")
            raise HttpError(self.service, f"the answer from {self.url} is not valid JSON "
                                          f"({len(self.content)} bytes, starts '{snippet}').") from None


class ResponseCache:
    """Successful responses on disk, keyed by method, URL, parameters and body (secrets excluded, so
    entries survive a key change and nothing in the cache derives from a key). Writes are atomic."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    @staticmethod
    def key(method: str, url: str, params: dict | None, body: bytes | None) -> str:
        items = sorted((str(k), str(v)) for k, v in (params or {}).items())
        text = jsonlib.dumps([method.upper(), url, items, hashlib.sha256(body or b"").hexdigest()])
        return hashlib.sha256(text.encode()).hexdigest()

    def _paths(self, key: str) -> tuple[Path, Path]:
        sub = self.folder / key[:2]
        return sub / f"{key}.body", sub / f"{key}.json"

    def get(self, key: str) -> HttpResponse | None:
        body_path, meta_path = self._paths(key)
        try:
            meta = jsonlib.loads(meta_path.read_text(encoding="utf-8"))
            content = body_path.read_bytes()
        except (OSError, ValueError):
            return None
        if len(content) != meta.get("length"):
            return None
        return HttpResponse(meta["status"], meta["headers"], content, meta["url"], from_cache=True)

    def put(self, key: str, response: HttpResponse) -> None:
        body_path, meta_path = self._paths(key)
        body_path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"status": response.status, "headers": response.headers, "url": response.url,
                "length": len(response.content)}
        _atomic_write(body_path, response.content)
        _atomic_write(meta_path, jsonlib.dumps(meta).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Retry(Exception):
    """Raised by one attempt of :func:`with_retries` that failed in a way worth retrying; ``delay_s``: how
    long the service asked to wait (``Retry-After``), None for the exponential backoff."""

    def __init__(self, reason: str, delay_s: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.delay_s = delay_s


class RetriesExhausted(EdificeError):
    """Every attempt of :func:`with_retries` failed; ``last`` is the reason of the last one."""

    def __init__(self, attempts: int, last: str):
        self.attempts, self.last = attempts, last
        super().__init__(f"no success after {attempts} attempts (last: {last})")


@dataclass(frozen=True)
class RetryPolicy:
    """The shared retry policy: up to ``max_retries`` retries, waiting what ``Retry-After`` asks or else
    ``backoff_s * 2**attempt`` (+ up to 25 % jitter), never more than ``max_backoff_s`` seconds."""

    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 120.0

    def backoff(self, attempt: int) -> float:
        return min(self.backoff_s * 2 ** attempt, self.max_backoff_s) * (1.0 + 0.25 * random.random())

    def retry_after(self, value: str | None) -> float | None:
        """Seconds a ``Retry-After`` header value (seconds or an HTTP date) asks for, capped; None if absent."""
        value = (value or "").strip()
        if not value:
            return None
        if value.isdigit():
            seconds = float(value)
        else:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            seconds = when.timestamp() - time.time()
        return min(max(seconds, 0.0), self.max_backoff_s)


def cancellable_sleep(seconds: float, progress: Progress) -> None:
    """Sleep ``seconds``, checking for a cancel every 0.1 s (a cancel raises :class:`Cancelled` at once)."""
    end = time.monotonic() + seconds
    while True:
        progress.check_cancelled()
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.1))


def with_retries(attempt: Callable[[], T], policy: RetryPolicy, progress: Progress, service: str,
                 where: str = "") -> T:
    """``attempt()``, retried by ``policy`` while it raises :class:`Retry`; each wait is announced through
    ``progress.info`` ("<service>: <reason><where>; retrying in ...") and ends early on a cancel.
    Raises :class:`RetriesExhausted` when no attempt succeeded."""
    last = ""
    for n in range(policy.max_retries + 1):
        progress.check_cancelled()
        try:
            return attempt()
        except Retry as retry:
            last = retry.reason
            if n == policy.max_retries:
                break
            delay = retry.delay_s if retry.delay_s is not None else policy.backoff(n)
            progress.info(f"{service}: {retry.reason}{where}; retrying in {delay:.1f} s "
                          f"(attempt {n + 2} of {policy.max_retries + 1}).")
            cancellable_sleep(delay, progress)
    raise RetriesExhausted(policy.max_retries + 1, last)


class HttpClient:
    """A polite, retrying, cancellable HTTP client for one service (``service`` names it in messages)."""

    def __init__(self, service: str, *, timeout_s: float = 60.0, max_retries: int = 5, backoff_s: float = 1.0,
                 max_backoff_s: float = 120.0, cache: ResponseCache | None = None,
                 progress: Progress | None = None, secrets: Iterable[str] = (), user_agent: str | None = None,
                 headers: dict[str, str] | None = None, pool_size: int = 16):
        self.service = service
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.cache = cache
        self.progress = progress or Progress()
        self.secrets = tuple(s for s in secrets if s)
        self.headers = {"User-Agent": user_agent or USER_AGENT, **(headers or {})}
        self.pool_size = pool_size
        self._wire: Transport | None = None
        self._wire_lock = threading.Lock()

    # -- public API -------------------------------------------------------------------------------------
    def get(self, url: str, **kw) -> HttpResponse:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw) -> HttpResponse:
        return self.request("POST", url, **kw)

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    def request(self, method: str, url: str, *, params: dict | None = None, data: bytes | str | dict | None = None,
                json=None, headers: dict[str, str] | None = None, use_cache: bool = True,
                accept: tuple[str, ...] | None = None, timeout_s: float | None = None,
                validate: Callable[[HttpResponse], object] | None = None) -> HttpResponse:
        """One request, retried on transient failures; a cached answer when there is one.

        ``accept``: content-type prefixes (e.g. ``("image/",)``) a non-empty success must have
        (an empty body passes: e.g. a tile server's "nothing here"); ``validate``: called with a fresh
        answer before it is cached (an answer it raises on is never cached)."""
        body = _encode_body(data, json)
        key = self._cache_key(method, url, params, body) if self.cache is not None and use_cache else None
        if key is not None:
            cached = self.cache.get(key)
            if cached is not None:
                cached.service = self.service
                return cached
        response = self._request_with_retries(method, url, params, body, json is not None, headers, accept,
                                              timeout_s or self.timeout_s)
        if validate is not None:
            validate(response)
        if key is not None:
            self.cache.put(key, response)
        return response

    # -- internals --------------------------------------------------------------------------------------
    def _cache_key(self, method, url, params, body) -> str:
        clean = {k: (REDACTED if str(v) in self.secrets else v) for k, v in (params or {}).items()}
        return ResponseCache.key(method, self.redact(url), clean, body)

    @property
    def _transport(self) -> Transport:
        """The client's connection pools (made on first use; shared by its threads)."""
        transport = self._wire
        if transport is None:
            with self._wire_lock:
                transport = self._wire = self._wire or Transport(self.pool_size)
        return transport

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_retries, self.backoff_s, self.max_backoff_s)

    def _request_with_retries(self, method, url, params, body, is_json, headers, accept, timeout_s):
        shown = self.redact(url)
        try:
            return with_retries(lambda: self._attempt(method, url, params, body, is_json, headers, accept, timeout_s,
                                                      shown), self.policy, self.progress, self.service, f" from {shown}")
        except RetriesExhausted as exc:
            raise HttpError(self.service, f"no valid answer from {shown} after {exc.attempts} attempts "
                                          f"(last: {exc.last}). Try again later, or check the service URL.") from None

    def _attempt(self, method, url, params, body, is_json, headers, accept, timeout_s, shown) -> HttpResponse:
        all_headers = dict(self.headers)
        if is_json:
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        try:
            status, response_headers, content = self._transport.send(method, url, params, body, all_headers,
                                                                       timeout_s)
        except TransportError as exc:
            raise _failure(exc, self.service, shown, self.redact) from None
        response = HttpResponse(status, response_headers, content, self.redact(with_params(url, params)),
                                service=self.service)
        self._check(response, accept, shown)
        return response

    def _check(self, response: HttpResponse, accept, shown) -> None:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and "content-encoding" not in response.headers \
                and int(declared) != len(response.content):
            raise Retry(f"the answer was cut off ({len(response.content)} of {declared} bytes)")
        if response.status in RETRY_STATUSES:
            raise Retry(f"HTTP {response.status}", self._retry_after(response))
        if response.status >= 400:
            snippet = self.redact(response.text[:200].replace("\n", " ").strip())
            raise HttpError(self.service, f"HTTP {response.status} from {shown}: {snippet or 'no message'}",
                            status=response.status)
        if accept and response.content and not response.content_type.startswith(tuple(accept)):
            raise HttpError(self.service, f"{shown} answered '{response.content_type or 'no content type'}', "
                                          f"expected {' or '.join(accept)}. Check the service URL and "
                                          f"its parameters.", status=response.status)

    def _retry_after(self, response: HttpResponse) -> float | None:
        return self.policy.retry_after(response.headers.get("retry-after"))


def _failure(exc: TransportError, service: str, shown: str, redact_text: Callable[[str], str]) -> Exception:
    """What a transport failure is to the client: a :class:`Retry` (connection failures, cut-off
    or undecodable answers) or an :class:`HttpError` (a request that cannot be made, a server
    certificate that does not verify: retrying would not help)."""
    if exc.kind == "connection":
        return Retry(f"connection failed ({exc.name})")
    if exc.kind == "cut_off":
        return Retry("the answer was cut off")
    if exc.kind == "decode":
        return Retry("the answer could not be decoded")
    if exc.kind == "untrusted":
        return HttpError(service, f"{shown}: the server's TLS certificate is not trusted ({redact_text(exc.name)}: "
                                  f"{redact_text(str(exc))}). If your organisation signs it, point the "
                                  f"REQUESTS_CA_BUNDLE environment variable at a CA bundle that holds its CA.")
    return HttpError(service, f"request to {shown} failed: {redact_text(str(exc))}")


def _encode_body(data, json) -> bytes | None:
    if json is not None:
        return jsonlib.dumps(json).encode()
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, dict):
        from urllib.parse import urlencode
        return urlencode(data).encode()
    return data


def run_bounded(fn: Callable[[T], R], items: Iterable[T], max_workers: int,
                progress: Progress | None = None, queued: int = 0) -> Iterator[tuple[T, R]]:
    """Apply ``fn`` to ``items`` with at most ``max_workers`` running at once; yield ``(item, result)``
    as each completes (not in order). Items are submitted lazily, so memory stays bounded. ``queued``:
    items submitted beyond ``max_workers`` that wait in the pool, so that a worker that ends one
    starts the next at once instead of when this thread takes the result (which waits for this
    thread to be scheduled, and for the GIL). On a cancel or an error nothing more is submitted,
    the running calls finish, the queued ones are dropped, and the error is raised."""
    progress = progress or Progress()
    it = iter(items)
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        running = {}
        try:
            for item in it:
                running[pool.submit(fn, item)] = item
                if len(running) >= max(1, max_workers) + max(0, queued):
                    break
            while running:
                done, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
                progress.check_cancelled()
                for fut in done:
                    item = running.pop(fut)
                    result = fut.result()
                    nxt = next(it, _END)  # the next one runs while the caller handles this result
                    if nxt is not _END:
                        running[pool.submit(fn, nxt)] = nxt
                    yield item, result
        except BaseException:
            for fut in running:
                fut.cancel()
            raise


_END = object()

__all__ = ["HttpClient", "HttpError", "HttpResponse", "ResponseCache", "USER_AGENT", "Cancelled", "Retry",
           "RetriesExhausted", "RetryPolicy", "cancellable_sleep", "default_cache_dir", "redact", "run_bounded",
           "with_retries"]
