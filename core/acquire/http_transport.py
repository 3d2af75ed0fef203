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

A GET with no proxy (a tile, nearly always) goes through :mod:`http.client` on a keep-alive
connection of the calling thread (:meth:`Transport._get_direct`): 0.16 ms of CPU for a 150 KB tile
from a local server against 0.46 ms through urllib3's pool manager (its pools, URL parsing, retry
and timeout objects, with the GIL held), with the same headers, redirects, decoding and errors.
"""
from __future__ import annotations

import http.client
import os
import select
import ssl
import threading
import zlib
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import urllib3
from urllib3.exceptions import DecodeError, HTTPError, MaxRetryError, ProtocolError, ResponseError

MAX_REDIRECTS = 30
#: Statuses whose ``Location`` is followed (urllib3's redirect statuses).
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Headers requests sent by default (besides its User-Agent, which the client sets).
DEFAULT_HEADERS = {"Accept-Encoding": "gzip, deflate", "Accept": "*/*"}
#: No retries of urllib3's own (the client's policy retries), redirects followed.
_RETRIES = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=MAX_REDIRECTS,
                         raise_on_redirect=True, raise_on_status=False)
_NO_PROXY = ""


class TransportError(Exception):
    """No complete answer. ``kind``: ``"connection"`` (refused, reset, timed out, TLS: worth a
    retry), ``"cut_off"`` (the body ended early), ``"decode"`` (a compressed body that does not
    decode), ``"untrusted"`` (the server's TLS certificate does not verify against the CA bundle) or
    ``"request"`` (the request cannot be made as it is: a bad URL, too many redirects).
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
        self._local = threading.local()  # each thread's direct connections, by (scheme, host:port)
        self._ssl: ssl.SSLContext | None = None

    def send(self, method: str, url: str, params: dict | None, body: bytes | None, headers: dict[str, str],
             timeout_s: float) -> tuple[int, dict[str, str], bytes]:
        """(status, headers with lower-case names, body) of one request; raises :class:`TransportError`."""
        url = with_params(url, params)
        _check_scheme(url)
        if method == "GET" and body is None and not self._proxy(url):
            return self._get_direct(url, {**DEFAULT_HEADERS, **headers}, timeout_s)
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

    def _proxy(self, url: str) -> str:
        """The environment's proxy for ``url``'s host ("" for none), looked up once per host."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        proxy = self._proxy_of.get(key)
        if proxy is None:
            proxy = self._proxy_of[key] = environment_proxy(url)
        return proxy

    def _manager(self, url: str) -> urllib3.PoolManager:
        """The pool manager for ``url``: direct, or through the environment's proxy for its host."""
        proxy = self._proxy(url)
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


    def _get_direct(self, url: str, headers: dict[str, str], timeout_s: float) -> tuple[int, dict[str, str], bytes]:
        """A GET without a proxy on this thread's connection to the host, redirects followed as
        urllib3 follows them (up to :data:`MAX_REDIRECTS`; ``Authorization`` dropped across hosts)."""
        for _ in range(MAX_REDIRECTS + 1):
            status, response_headers, content = self._get_once(url, headers, timeout_s)
            location = response_headers.get("location")
            if status not in REDIRECT_STATUSES or not location:
                return status, response_headers, content
            target = urljoin(url, location)
            _check_scheme(target)
            if urlsplit(target).netloc != urlsplit(url).netloc:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if self._proxy(target):
                return self.send("GET", target, None, None, headers, timeout_s)
            url = target
        raise TransportError("request", "TooManyRedirects", f"more than {MAX_REDIRECTS} redirects from {url}")

    def _get_once(self, url: str, headers: dict[str, str], timeout_s: float) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(url)
        conn = self._connection(parts.scheme.lower(), parts.netloc, timeout_s)
        try:
            conn.request("GET", urlunsplit(("", "", parts.path or "/", parts.query, "")), headers=headers)
            resp = conn.getresponse()
            content = resp.read()
        except http.client.IncompleteRead as exc:
            conn.close()
            raise TransportError("cut_off", type(exc).__name__, f"{url}: {exc!r}") from None
        except (http.client.HTTPException, OSError) as exc:  # refused, reset, dropped, timed out, TLS
            conn.close()
            raise _connection_error(exc, url) from None
        response_headers: dict[str, str] = {}
        for name, value in resp.getheaders():  # repeated headers joined, as urllib3 joins them
            key = name.lower()
            response_headers[key] = f"{response_headers[key]}, {value}" if key in response_headers else value
        return resp.status, response_headers, _decoded(content, response_headers.get("content-encoding", ""))

    def _connection(self, scheme: str, netloc: str, timeout_s: float) -> http.client.HTTPConnection:
        """This thread's connection to ``netloc``, connected (again if the server closed it)."""
        conns = self._local.__dict__.setdefault("conns", {})
        conn = conns.get((scheme, netloc))
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(netloc, context=self._ssl_context())
            else:
                conn = http.client.HTTPConnection(netloc)
            conns[(scheme, netloc)] = conn
        if conn.sock is not None and _closed_by_peer(conn.sock):
            conn.close()
        if conn.sock is None:
            conn.timeout = min(10.0, timeout_s)
            try:
                conn.connect()
            except (http.client.HTTPException, OSError) as exc:
                conn.close()
                raise _connection_error(exc, f"{scheme}://{netloc}") from None
        conn.sock.settimeout(timeout_s)
        return conn

    def _ssl_context(self) -> ssl.SSLContext:
        """TLS with the CA bundle requests would use (see :func:`_ca_bundle`)."""
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=self._tls.get("ca_certs"), capath=self._tls.get("ca_cert_dir"))
        return self._ssl


def _check_scheme(url: str) -> None:
    if urlsplit(url).scheme.lower() not in ("http", "https"):  # as requests: no guessing of a scheme
        raise TransportError("request", "InvalidURL", f"{url!r} is not an http:// or https:// URL")


def _connection_error(exc: Exception, where: str) -> TransportError:
    """A failure of the direct path: an untrusted certificate, else a connection failure."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TransportError("untrusted", type(exc).__name__, f"{where}: {exc.verify_message or exc}")
    return TransportError("connection", type(exc).__name__, f"{where}: {exc}")


def _closed_by_peer(sock) -> bool:
    """Whether an idle keep-alive connection was closed by the server (readable: its end of file),
    as urllib3 checks before it reuses one."""
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _decoded(content: bytes, encoding: str) -> bytes:
    """``content`` decoded of a gzip or deflate ``Content-Encoding`` (as urllib3 decodes it)."""
    encoding = encoding.strip().lower()
    try:
        if encoding in ("gzip", "x-gzip"):
            return zlib.decompress(content, 16 + zlib.MAX_WBITS)
        if encoding == "deflate":
            try:
                return zlib.decompress(content)
            except zlib.error:  # raw deflate, without the zlib header
                return zlib.decompress(content, -zlib.MAX_WBITS)
    except zlib.error as exc:
        raise TransportError("decode", "DecodeError", f"the {encoding} answer does not decode ({exc})") from None
    return content


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
        unverified = next((a for a in getattr(reason, "args", ()) if isinstance(a, ssl.SSLCertVerificationError)), None)
        if unverified is not None:
            return TransportError("untrusted", type(unverified).__name__, unverified.verify_message or str(unverified))
        if isinstance(reason, ResponseError):  # too many redirects
            return TransportError("request", "TooManyRedirects", str(exc))
        return TransportError("connection", type(reason).__name__ if reason else "MaxRetryError", str(exc))
    if isinstance(exc, (ProtocolError, urllib3.exceptions.TimeoutError, urllib3.exceptions.NewConnectionError)):
        return TransportError("connection", type(exc).__name__, str(exc))
    return TransportError("request", type(exc).__name__, str(exc))
