"""Stand-in HTTP services for the tests: real processes on 127.0.0.1, with injectable faults.

A service is a Python module with a function
``handle(method, path, query, headers, body) -> (status, headers_dict, body_bytes)``
(``query``: dict of first values; ``headers``: dict with lower-case keys) and optionally
``setup(args: list[str], state_dir: Path)`` called once at start. Run it from a test with
:func:`start_standin`; the returned :class:`StandIn` sets faults and lists the requests served
(each with its arrival ``time``, seconds since the epoch).

Faults (``StandIn.set_faults``) are rules tried in order on ``path?query``; a rule with ``times`` left applies:
- ``{"kind": "status", "status": 429, "retry_after": 1}``: that status (and ``Retry-After``) instead;
- ``{"kind": "drop"}``: close the connection without an answer;
- ``{"kind": "truncate"}``: the real answer's headers with half its body, then close;
- ``{"kind": "empty"}``: 200 with an empty body;
- ``{"kind": "content_type", "value": "text/html"}``: the real answer with another content type;
- ``{"kind": "delay", "seconds": 2}``: the real answer, late.
Every rule has ``"match"`` (a regex searched in ``path?query``, default any) and ``"times"`` (default 1).

Run as a script: ``python standin.py MODULE.py --state-dir DIR [-- ARGS...]``; it writes its port to
``DIR/port`` once it listens."""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ADMIN = "/__standin/"


# ---------------------------------------------------------------- server side (in the subprocess)
class _State:
    def __init__(self, module):
        self.module = module
        self.lock = threading.Lock()
        self.faults: list[dict] = []
        self.log: list[dict] = []

    def take_fault(self, target: str) -> dict | None:
        with self.lock:
            for rule in self.faults:
                if rule.get("times", 1) > 0 and re.search(rule.get("match", ""), target):
                    rule["times"] = rule.get("times", 1) - 1
                    return dict(rule)
        return None


def _make_handler(state: _State):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: without it each answer waits ~40 ms

        def log_message(self, fmt, *args):  # quiet
            pass

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _admin(self, path: str, body: bytes) -> None:
            if path.endswith("faults"):
                with state.lock:
                    state.faults = [dict(r) for r in json.loads(body or b"[]")]
                out = b"{}"
            else:
                with state.lock:
                    out = json.dumps(state.log).encode()
            self._send(200, {"Content-Type": "application/json"}, out)

        def _send(self, status, headers, body, declared=None, close=False):
            self.send_response(status)
            for k, v in headers.items():
                if k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(body) if declared is None else declared))
            if close:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()
            if close:
                self.close_connection = True

        def _serve(self):
            split = urlsplit(self.path)
            body = self._body()
            if split.path.startswith(ADMIN):
                return self._admin(split.path, body)
            target = split.path + ("?" + split.query if split.query else "")
            query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
            headers = {k.lower(): v for k, v in self.headers.items()}
            fault = state.take_fault(target)
            with state.lock:
                state.log.append({"time": time.time(), "method": self.command, "path": split.path, "query": query,
                                  "headers": headers, "body_sha256": hashlib.sha256(body).hexdigest(),
                                  "client_port": self.client_address[1],
                                  "body": body.decode("utf-8", "replace") if len(body) < 65536 else None,
                                  "fault": fault["kind"] if fault else None})
            self._answer(fault, split.path, query, headers, body)

        def _answer(self, fault, path, query, headers, body):
            kind = fault["kind"] if fault else None
            if kind == "status":
                extra = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else {}
                return self._send(fault["status"], {"Content-Type": "text/plain", **extra}, b"stand-in fault")
            if kind == "drop":
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if kind == "empty":
                return self._send(200, {}, b"")
            if kind == "delay":
                time.sleep(float(fault.get("seconds", 1)))
            status, out_headers, out = state.module.handle(self.command, path, query, headers, body)
            if kind == "content_type":
                out_headers = {k: v for k, v in out_headers.items() if k.lower() != "content-type"}
                out_headers["Content-Type"] = fault.get("value", "text/html")
            if kind == "truncate":
                return self._send(status, out_headers, out[: len(out) // 2], declared=len(out), close=True)
            self._send(status, out_headers, out)

        do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _serve

    return Handler


def _load_module(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def serve(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("module")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tls-dir", help="serve HTTPS with cert.pem and key.pem of this folder")
    own, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    a = p.parse_args(own)
    a.args = extra
    state_dir = Path(a.state_dir)
    module = _load_module(a.module)
    if hasattr(module, "setup"):
        module.setup(a.args, state_dir)
    server = ThreadingHTTPServer(("127.0.0.1", a.port), _make_handler(_State(module)))
    server.daemon_threads = True
    if a.tls_dir:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(Path(a.tls_dir) / "cert.pem", Path(a.tls_dir) / "key.pem")
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    tmp = state_dir / "port.part"
    tmp.write_text(str(server.server_address[1]))
    os.replace(tmp, state_dir / "port")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(0)))
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()


# ---------------------------------------------------------------- test side
class StandIn:
    """A running stand-in service (a subprocess)."""

    def __init__(self, proc: subprocess.Popen, port: int, state_dir: Path, tls_dir: Path | None = None):
        self.proc = proc
        self.port = port
        self.state_dir = state_dir
        self.url = f"{'https' if tls_dir else 'http'}://127.0.0.1:{port}"
        self._tls = ssl.create_default_context(cafile=tls_dir / "cert.pem") if tls_dir else None

    def _admin(self, what: str, payload=None):
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + ADMIN + what, data=data)
        with urllib.request.urlopen(request, timeout=10, context=self._tls) as r:
            return json.loads(r.read())

    def set_faults(self, rules: list[dict]) -> None:
        self._admin("faults", rules)

    def requests(self) -> list[dict]:
        """Every request served so far (faulted ones too, with their ``fault``), admin calls excluded."""
        return self._admin("requests")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def make_self_signed_certificate(folder: str | os.PathLike) -> Path:
    """``cert.pem`` and ``key.pem`` of a self-signed certificate for 127.0.0.1 in ``folder`` (made with
    the ``openssl`` command); returns ``folder``. The certificate is its own CA (a bundle to trust)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")],
                   check=True, capture_output=True)
    return folder


def start_standin(module_path: str | os.PathLike, state_dir: str | os.PathLike, args: list[str] = (),
                  env: dict | None = None, timeout_s: float = 60.0,
                  tls_dir: str | os.PathLike | None = None) -> StandIn:
    """Start ``module_path`` as a stand-in service on a free port of 127.0.0.1 and wait until it listens
    (HTTPS with the certificate in ``tls_dir``, see :func:`make_self_signed_certificate`)."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "port").unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), str(module_path), "--state-dir", str(state_dir),
           *(["--tls-dir", str(tls_dir)] if tls_dir else []), "--", *map(str, args)]
    log = open(state_dir / "standin.log", "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    log.close()
    end = time.monotonic() + timeout_s
    while not (state_dir / "port").exists():
        if proc.poll() is not None:
            raise RuntimeError(f"stand-in {module_path} exited: {(state_dir / 'standin.log').read_text()[-2000:]}")
        if time.monotonic() > end:
            proc.kill()
            raise RuntimeError(f"stand-in {module_path} did not start within {timeout_s} s")
        time.sleep(0.05)
    return StandIn(proc, int((state_dir / "port").read_text()), state_dir, Path(tls_dir) if tls_dir else None)


if __name__ == "__main__":
    serve(sys.argv[1:])
