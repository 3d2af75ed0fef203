"""The shared HTTP client (core/acquire/http.py) against a real stand-in process on 127.0.0.1:
retries with Retry-After, dropped connections, truncated bodies, wrong content types, the cache,
cancel during a wait, bounded concurrency, and secrets never shown."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from edifice.core.acquire.credentials import secret_from_env_or_file
from edifice.core.acquire.http import (USER_AGENT, HttpClient, HttpError, ResponseCache, redact,
                                       run_bounded)
from edifice.core.errors import Cancelled, InputError
from edifice.core.progress import Progress

ECHO = Path(__file__).resolve().parents[1] / "servers" / "echo_service.py"
PATTERN_1000 = bytes(i % 256 for i in range(1000))


class Recorder(Progress):
    def __init__(self, cancel_after_s: float | None = None):
        self.lines: list[str] = []
        self._t0 = time.monotonic()
        self._cancel_after = cancel_after_s

    def info(self, message):
        self.lines.append(message)

    warning = info

    def is_cancelled(self):
        return self._cancel_after is not None and time.monotonic() - self._t0 > self._cancel_after


@pytest.fixture
def echo(standin):
    return standin(ECHO)


def client(**kw) -> HttpClient:
    kw.setdefault("backoff_s", 0.05)
    return HttpClient("Echo", **kw)


def test_plain_get_sends_user_agent_and_returns_body(echo):
    r = client().post(echo.url + "/echo", data=b"hello")
    assert r.status == 200 and r.content == b"hello"
    assert r.headers["x-seen-user-agent"] == USER_AGENT and "Edifice" in USER_AGENT
    assert client().get(echo.url + "/json", params={"a": "1"}).json() == {"ok": True, "query": {"a": "1"}}


@pytest.mark.parametrize("fault", [
    {"kind": "status", "status": 429, "retry_after": 1},
    {"kind": "status", "status": 504, "retry_after": 1},
    {"kind": "status", "status": 500},
    {"kind": "drop"},
    {"kind": "truncate"},
])
def test_transient_failures_are_retried_to_the_right_bytes(echo, fault):
    echo.set_faults([{**fault, "match": "/bytes/1000", "times": 2}])
    progress = Recorder()
    r = client(progress=progress).get(echo.url + "/bytes/1000")
    assert r.content == PATTERN_1000
    served = [q["fault"] for q in echo.requests()]
    assert served == [fault["kind"], fault["kind"], None]
    assert len(progress.lines) == 2 and all("retrying" in line for line in progress.lines)


def test_retry_after_is_honoured(echo):
    echo.set_faults([{"kind": "status", "status": 429, "retry_after": 2, "match": "/json"}])
    t0 = time.monotonic()
    client(backoff_s=0.0).get(echo.url + "/json")
    assert time.monotonic() - t0 >= 1.9  # waited what the server asked, not the 0 s backoff


def test_gives_up_with_a_clear_error_after_max_retries(echo):
    echo.set_faults([{"kind": "status", "status": 503, "match": "/json", "times": 10}])
    with pytest.raises(HttpError, match=r"Echo: no valid answer .* after 3 attempts \(last: HTTP 503\)"):
        client(max_retries=2).get(echo.url + "/json")
    assert len(echo.requests()) == 3


def test_client_errors_are_not_retried_and_secrets_are_redacted(echo):
    key = "s3cr3t-KEY-123"
    with pytest.raises(HttpError) as err:
        client(secrets=[key]).get(echo.url + "/status/403", params={"key": key})
    text = str(err.value)
    assert "HTTP 403" in text and key not in text and "***" in text
    assert len(echo.requests()) == 1


def test_wrong_content_type_is_refused(echo):
    echo.set_faults([{"kind": "content_type", "value": "text/html", "match": "/bytes"}])
    with pytest.raises(HttpError, match="answered 'text/html', expected image/"):
        client().get(echo.url + "/bytes/10", accept=("image/",))


def test_cache_answers_reruns_without_requests(echo, tmp_path):
    cache = ResponseCache(tmp_path / "cache")
    a = client(cache=cache).get(echo.url + "/bytes/1000", params={"key": "k1"}, )
    b = client(cache=cache).get(echo.url + "/bytes/1000", params={"key": "k1"})
    assert a.content == b.content == PATTERN_1000 and not a.from_cache and b.from_cache
    assert len(echo.requests()) == 1
    # the secret is part of neither the cache's file names nor its contents
    for f in (tmp_path / "cache").rglob("*"):
        assert "k1" not in f.name
        if f.is_file() and f.suffix == ".json":
            assert "key=k1" not in f.read_text()


def test_failed_answers_are_not_cached(echo, tmp_path):
    cache = ResponseCache(tmp_path / "cache")
    with pytest.raises(HttpError):
        client(cache=cache).get(echo.url + "/status/404")
    assert not [f for f in (tmp_path / "cache").rglob("*") if f.is_file()]


def test_cancel_interrupts_a_long_wait(echo):
    echo.set_faults([{"kind": "status", "status": 429, "retry_after": 60, "match": "/json"}])
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        client(progress=Recorder(cancel_after_s=0.5)).get(echo.url + "/json")
    assert time.monotonic() - t0 < 30


def test_run_bounded_limits_concurrency_and_returns_every_result(echo):
    lock, active, peak = threading.Lock(), [0], [0]
    http = client()

    def fetch(n):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            return http.get(echo.url + f"/bytes/{n}").content
        finally:
            with lock:
                active[0] -= 1

    echo.set_faults([{"kind": "delay", "seconds": 0.2, "match": "/bytes", "times": 100}])
    results = dict(run_bounded(fetch, range(1, 13), max_workers=3))
    assert sorted(results) == list(range(1, 13))
    assert all(results[n] == bytes(i % 256 for i in range(n)) for n in results)
    assert peak[0] <= 3


def test_run_bounded_starts_the_next_item_before_the_caller_handles_a_result():
    """The caller's handling of a result (the imagery writer compressing a block) overlaps the
    next item's work: with one worker, item 2 is running while the caller still holds item 1."""
    started = {n: threading.Event() for n in (1, 2)}

    def work(n):
        started[n].set()
        return n

    seen = []
    for n, result in run_bounded(work, [1, 2], max_workers=1):
        if n == 1:
            assert started[2].wait(10), "item 2 was not submitted before item 1's result was handed over"
        seen.append(result)
    assert seen == [1, 2]


def test_run_bounded_queued_items_start_without_the_caller():
    """With ``queued``, a worker that ends an item starts the next one by itself: while the caller
    still holds item 1's result, item 2 runs and then item 3 starts (one worker, one queued); with
    nothing queued item 3 would be submitted only once the caller asks for the next result."""
    started = {n: threading.Event() for n in (1, 2, 3)}

    def work(n):
        started[n].set()
        return n

    runs = run_bounded(work, [1, 2, 3], max_workers=1, queued=1)
    first = next(runs)
    assert started[3].wait(10), "item 3 waited for the caller"
    assert sorted([first] + list(runs)) == [(1, 1), (2, 2), (3, 3)]


def test_run_bounded_raises_the_first_error(echo):
    http = client(max_retries=0)
    with pytest.raises(HttpError, match="HTTP 404"):
        list(run_bounded(lambda p: http.get(echo.url + p), ["/json", "/missing", "/json"], max_workers=2))


def test_redact_removes_keys_tokens_and_signatures():
    text = ("https://x/tiles/1/2/3.png?api_key=abc&x=1 Authorization: Bearer eyJ.abc.def "
            "https://b.blob.core.windows.net/c?se=2026&sig=zzz my-secret")
    out = redact(text, ["my-secret"])
    for leaked in ("abc&", "eyJ.abc.def", "zzz", "my-secret"):
        assert leaked not in out
    assert "x=1" in out


def test_secret_from_env_or_file(tmp_path, monkeypatch):
    monkeypatch.setenv("EDIFICE_TEST_KEY", " k-env ")
    assert secret_from_env_or_file("EDIFICE_TEST_KEY") == "k-env"
    f = tmp_path / "key.txt"
    f.write_text("k-file\nsecond line\n")
    assert secret_from_env_or_file("EDIFICE_TEST_KEY", f) == "k-file"
    monkeypatch.delenv("EDIFICE_TEST_KEY")
    assert secret_from_env_or_file("EDIFICE_TEST_KEY") is None
    with pytest.raises(InputError, match="cannot be read"):
        secret_from_env_or_file("EDIFICE_TEST_KEY", tmp_path / "absent.txt")


def test_environment_proxies_are_honoured_and_looked_up_once_per_host(echo, monkeypatch):
    """The client looks the environment up once per host (not per request, ~0.6 ms of CPU each):
    an HTTP_PROXY still routes every request, NO_PROXY still exempts its hosts."""
    import requests.utils

    calls = []
    real = requests.utils.get_environ_proxies
    monkeypatch.setattr(requests.utils, "get_environ_proxies", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    monkeypatch.setenv("HTTP_PROXY", echo.url)
    monkeypatch.setenv("NO_PROXY", "no-such-host.invalid")
    client = HttpClient("proxied", max_retries=0)
    for _ in range(4):  # a host that does not resolve: only the proxy (the stand-in) can answer
        assert client.get("http://edifice-proxied.invalid/bytes/1000").content == PATTERN_1000
    assert len(calls) == 1
    with pytest.raises(HttpError):  # exempted from the proxy: tried directly, and it does not resolve
        client.get("http://no-such-host.invalid/bytes/10")
    assert len(calls) == 2


def test_plain_gets_go_direct_on_one_kept_alive_connection_per_thread(echo, monkeypatch):
    """A GET without a proxy goes through http.client (not urllib3: a third of its CPU per tile) on
    a connection that the thread keeps for its next requests; a POST still goes through urllib3."""
    import urllib3

    sent = []
    real = urllib3.PoolManager.request
    monkeypatch.setattr(urllib3.PoolManager, "request", lambda self, *a, **k: sent.append(a[0]) or real(self, *a, **k))
    http = client(max_retries=0)
    for _ in range(3):
        assert http.get(echo.url + "/bytes/1000").content == PATTERN_1000
    assert http.post(echo.url + "/echo", data=b"x").content == b"x"
    assert sent == ["POST"]
    gets = [q for q in echo.requests() if q["method"] == "GET"]
    assert len(gets) == 3 and len({q["client_port"] for q in gets}) == 1
    assert all(q["headers"]["user-agent"] == USER_AGENT and "gzip" in q["headers"]["accept-encoding"] for q in gets)


def test_https_gets_and_posts_trust_only_the_ca_bundle(standin, self_signed_tls, monkeypatch):
    """Over HTTPS, the direct GET path and urllib3's POST path both verify the server against the CA
    bundle requests would use (``REQUESTS_CA_BUNDLE``): trusted, they get the bytes; with the default
    bundle, which does not hold the self-signed certificate, both fail at once (no retries) with an
    error that says so and what to do."""
    server = standin(ECHO, tls_dir=self_signed_tls)
    assert server.url.startswith("https://")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(self_signed_tls / "cert.pem"))
    trusted = client(max_retries=0)
    assert trusted.get(server.url + "/bytes/1000").content == PATTERN_1000
    assert trusted.get(server.url + "/gzip/1000").content == PATTERN_1000
    assert trusted.post(server.url + "/echo", data=b"over tls").content == b"over tls"
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    untrusted = client(max_retries=3)
    calls = (lambda: untrusted.get(server.url + "/bytes/1000"),
             lambda: untrusted.post(server.url + "/echo", data=b"x"))
    for call in calls:
        with pytest.raises(HttpError, match="TLS certificate is not trusted .*self.signed.*REQUESTS_CA_BUNDLE"):
            call()
    assert [q["method"] for q in server.requests()] == ["GET", "GET", "POST"]


def test_a_kept_alive_connection_that_the_server_closed_is_not_reused():
    import socket

    from edifice.core.acquire.http_transport import _closed_by_peer

    ours, theirs = socket.socketpair()
    try:
        assert not _closed_by_peer(ours)  # idle and open
        theirs.close()
        assert _closed_by_peer(ours)  # its end of file is readable
    finally:
        ours.close()


def test_after_a_cut_off_answer_the_next_request_gets_a_new_connection(echo):
    echo.set_faults([{"kind": "truncate", "match": "/bytes/1000", "times": 1}])
    http = client(max_retries=0)
    with pytest.raises(HttpError, match="cut off"):
        http.get(echo.url + "/bytes/1000")
    assert http.get(echo.url + "/bytes/1000").content == PATTERN_1000
    ports = [q["client_port"] for q in echo.requests()]
    assert len(ports) == 2 and ports[0] != ports[1]


def test_redirects_are_followed_and_compressed_answers_decoded(echo):
    """What requests did for the client, the transport does (urllib3 directly): redirects, gzip."""
    http = client(max_retries=0)
    assert http.get(echo.url + "/redirect/1000").content == PATTERN_1000
    r = http.get(echo.url + "/gzip/1000")
    assert r.content == PATTERN_1000 and r.headers["content-encoding"] == "gzip"
    assert [q["path"] for q in echo.requests()] == ["/redirect/1000", "/bytes/1000", "/gzip/1000"]
    assert all("gzip" in q["headers"].get("accept-encoding", "") for q in echo.requests())
    with pytest.raises(HttpError, match="request to .*/loop failed"):  # too many redirects: not retried
        http.get(echo.url + "/loop")
    assert len(echo.requests()) == 3 + 31


@pytest.mark.parametrize("url, params", [
    ("http://h/p", {"a": "1", "b": "x y&z"}),
    ("http://h/p?k=v", {"a": 2, "skip": None}),
    ("http://h/p", {"bbox": "1,2,3,4", "layers": ["a", "b"]}),
    ("http://h/p?SERVICE=WMS", {}),
])
def test_query_parameters_are_encoded_as_requests_encodes_them(url, params):
    import requests

    from edifice.core.acquire.http_transport import with_params

    assert with_params(url, params) == requests.Request("GET", url, params=params).prepare().url


def test_proxy_credentials_are_sent_to_the_proxy_and_never_shown(echo, monkeypatch):
    import base64

    host = echo.url.split("//", 1)[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://edifice-user:pr0xy-pw@{host}")
    progress = Recorder()
    http = HttpClient("proxied", max_retries=1, backoff_s=0.01, progress=progress)
    assert http.get("http://edifice-proxied.invalid/bytes/10").content == PATTERN_1000[:10]
    seen = echo.requests()[-1]["headers"]
    assert seen["proxy-authorization"] == "Basic " + base64.b64encode(b"edifice-user:pr0xy-pw").decode()
    echo.set_faults([{"kind": "status", "status": 403, "match": "/bytes", "times": 1}])
    with pytest.raises(HttpError) as err:
        http.get("http://edifice-proxied.invalid/bytes/10")
    assert "pr0xy-pw" not in str(err.value) and not any("pr0xy-pw" in line for line in progress.lines)


@pytest.mark.parametrize("url", ["127.0.0.1/json", "ftp://127.0.0.1/x", "file:///etc/passwd"])
def test_urls_without_an_http_scheme_are_refused_not_guessed(url):
    with pytest.raises(HttpError, match=r"request to .* failed: .*not an http:// or https:// URL"):
        client(max_retries=3).get(url)


@pytest.mark.parametrize("proxy", ["socks5://edifice-user:pr0xy-pw@127.0.0.1:9",
                                   "http://edifice-user:pr0xy-pw@127.0.0.1:9"])
def test_a_proxy_that_cannot_be_used_is_named_without_its_password(proxy, monkeypatch):
    # an unsupported proxy scheme, and a proxy that refuses connections (port 9: discard, not served)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    progress = Recorder()
    http = HttpClient("proxied", max_retries=1, backoff_s=0.01, progress=progress)
    with pytest.raises(HttpError) as err:
        http.get("http://edifice-proxied.invalid/bytes/10")
    shown = [str(err.value), *progress.lines]
    assert not any("pr0xy-pw" in line for line in shown), shown


def test_redact_hides_the_password_of_a_url_but_keeps_the_rest():
    from edifice.core.acquire.http import redact

    text = "proxy 'http://me:s3cr%40t@proxy.example:3128' and https://tiles.example/{z}/{x}/{y}.png"
    assert redact(text) == "proxy 'http://me:***@proxy.example:3128' and https://tiles.example/{z}/{x}/{y}.png"
