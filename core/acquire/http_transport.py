"""The wire under :class:`.http.HttpClient`: urllib3, called directly.

requests' layers over urllib3 (request preparation, hooks, cookies, adapters) cost ~0.5 ms of
CPU per request, with the GIL held: 1.6x urllib3's own cost, and an imagery download makes a
request per tile. What requests did for the client is done here, with requests' own helpers
where they exist, so that nothing changes for a user:

* the environment's proxies (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``), looked up
  once per scheme and host (:func:`requests.utils.get_environ_proxies`), with the credentials of a
  proxy URL sent as ``Proxy-Authorization``;
* the CA bundle requests would use: ``REQUESTS_CA_BUNDLE``, else ``CURL_CA_BUNDLE``, else certifi's;
* redirects (up to 30; a 303 becomes a GET; ``Authorization`` is dropped across hosts);
* gzip / deflate answers asked for and decoded; query parameters encoded as requests does.

No retries here (``HttpClient`` retries); failures are :class:`TransportError`.
"""
from __future__ import annotations

import os
import threading
from urllib.parse import urlencode, urlsplit, urlunsplit

import urllib3
from urllib3.exceptions import DecodeError, HTTPError, MaxRetryError, ProtocolError, ResponseError

MAX_REDIRECTS = 30
#: Headers requests sent by default (besides its User-Agent, which the client sets).
DEFAULT_HEADERS = {"Accept-Encoding": "gzip, deflate", "Accept": "*/*"}
#: No retries of urllib3's own (the client's policy retries), redirects followed.
_RETRIES = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=MAX_REDIRECTS,
                         raise_on_redirect=True, raise_on_status=False)
_NO_PROXY = ""


class TransportError(Exception):
    """No complete answer. ``kind``: ``"connection"`` (refused, reset, timed out, TLS: worth a
    retry), ``"cut_off"`` (the body ended early), ``"decode"`` (a compressed body that does not
    decode) or ``"request"`` (the request cannot be made as it is: a bad URL, too many redirects).
    ``name``: the underlying error's class; the message may hold the URL (redact it)."""

    def __init__(self, kind: str, name: str, message: str):
        super().__init__(message)
        self.kind, self.name = kind, name


class Transport:
    """Connection pools for one client, shared by its threads (urllib3's pools are thread-safe):
    ``pool_size`` connections kept per host."""

    def __init__(self, pool_size: int):
        self._pool_size = pool_size
        self._tls = _ca_bundle()
        self._managers: dict[str, urllib3.PoolManager] = {}
        self._proxy_of: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def send(self, method: str, url: str, params: dict | None, body: bytes | None, headers: dict[str, str],
             timeout_s: float) -> tuple[int, dict[str, str], bytes]:
        """(status, headers with lower-case names, body) of one request; raises :class:`TransportError`."""
        url = with_params(url, params)
        if urlsplit(url).scheme.lower() not in ("http", "https"):  # as requests: no guessing of a scheme
            raise TransportError("request", "InvalidURL", f"{url!r} is not an http:// or https:// URL")
        manager = self._manager(url)
        try:
            r = manager.request(method, url, body=body, headers={**DEFAULT_HEADERS, **headers},
                                timeout=urllib3.Timeout(connect=min(10.0, timeout_s), read=timeout_s),
                                retries=_RETRIES, preload_content=False, decode_content=True)
        except (HTTPError, ValueError) as exc:
            raise _request_error(exc) from None
        try:
            content = r.read()
        except DecodeError as exc:
            raise TransportError("decode", type(exc).__name__, str(exc)) from None
        except ProtocolError as exc:
            raise TransportError("cut_off", type(exc).__name__, str(exc)) from None
        except HTTPError as exc:  # a read timeout, a reset
            raise TransportError("connection", type(exc).__name__, str(exc)) from None
        finally:
            r.release_conn()
        return r.status, {k.lower(): r.headers[k] for k in r.headers}, content

    def _manager(self, url: str) -> urllib3.PoolManager:
        """The pool manager for ``url``: direct, or through the environment's proxy for its host."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        proxy = self._proxy_of.get(key)
        if proxy is None:
            proxy = self._proxy_of[key] = environment_proxy(url)
        manager = self._managers.get(proxy)
        if manager is None:
            with self._lock:
                manager = self._managers.get(proxy)
                if manager is None:
                    manager = self._managers[proxy] = self._new_manager(proxy)
        return manager

    def _new_manager(self, proxy: str) -> urllib3.PoolManager:
        common = dict(num_pools=8, maxsize=self._pool_size, cert_reqs="CERT_REQUIRED", **self._tls)
        if not proxy:
            return urllib3.PoolManager(**common)
        from requests.utils import get_auth_from_url

        user, password = get_auth_from_url(proxy)
        headers = urllib3.make_headers(proxy_basic_auth=f"{user}:{password}") if user else None
        try:
            return urllib3.ProxyManager(proxy, proxy_headers=headers, **common)
        except (HTTPError, ValueError) as exc:  # e.g. a socks:// proxy
            raise TransportError("request", type(exc).__name__, f"the proxy {proxy!r} cannot be used ({exc})") \
                from None


def environment_proxy(url: str) -> str:
    """The proxy URL that requests would use for ``url`` from the environment; "" for none."""
    from requests import utils

    proxies = utils.get_environ_proxies(url, no_proxy=None)
    return utils.select_proxy(url, proxies) or _NO_PROXY


def with_params(url: str, params: dict | None) -> str:
    """``url`` with ``params`` added to its query, encoded as requests does (lists repeat the
    key, None values are left out)."""
    if not params:
        return url
    pairs = [(k, v) for k, vs in params.items() for v in (vs if isinstance(vs, (list, tuple)) else [vs])
             if v is not None]
    if not pairs:
        return url
    parts = urlsplit(url)
    query = urlencode(pairs, doseq=True)
    return urlunsplit(parts._replace(query=f"{parts.query}&{query}" if parts.query else query))


def _ca_bundle() -> dict:
    """urllib3's TLS trust arguments for the CA bundle requests would use."""
    path = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if not path:
        import certifi

        path = certifi.where()
    return {"ca_cert_dir": path} if os.path.isdir(path) else {"ca_certs": path}


def _request_error(exc: Exception) -> TransportError:
    """A failure before an answer came: a connection failure (retried), else a bad request."""
    if isinstance(exc, MaxRetryError):
        reason = exc.reason
        if isinstance(reason, ResponseError):  # too many redirects
            return TransportError("request", "TooManyRedirects", str(exc))
        return TransportError("connection", type(reason).__name__ if reason else "MaxRetryError", str(exc))
    if isinstance(exc, (ProtocolError, urllib3.exceptions.TimeoutError, urllib3.exceptions.NewConnectionError)):
        return TransportError("connection", type(exc).__name__, str(exc))
    return TransportError("request", type(exc).__name__, str(exc))
