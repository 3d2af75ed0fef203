"""Real Dask processes on 127.0.0.1 for the cluster tests: `dask scheduler` and `dask worker`
started with subprocess (never threads in the test process), stopped by :meth:`DaskProcs.stop`."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def refused_port():
    """A port of 127.0.0.1 that refuses connections while the block runs: bound (so nothing else can take
    it) but not listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def cli_env(**extra) -> dict:
    """Environment of the processes: one math thread (as the reference run), no proxies."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


class DaskProcs:
    """A scheduler and workers; ``workers`` holds each worker's Popen by name."""

    def __init__(self, folder: Path, start_timeout_s: float = 120):
        self.folder = Path(folder)
        info = self.folder / "scheduler.json"
        # port 0: the scheduler binds a free port itself and writes its address to the scheduler file. (Picking
        # a free port here and passing it on raced: a worker's HTTP server once took that port first, the
        # scheduler failed to start, and the client's handshake with the HTTP server hung for an hour.)
        self.scheduler = self._spawn("scheduler", [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                                                   "--port", "0", "--no-dashboard", "--scheduler-file", str(info)],
                                     cli_env())
        self.address = self._wait_for_address(info, start_timeout_s)
        self.port = int(self.address.rsplit(":", 1)[1])
        self.workers: dict[str, subprocess.Popen] = {}

    def _wait_for_address(self, info: Path, timeout_s: float) -> str:
        """The address in the scheduler file, once the scheduler has written it (it listens by then)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.scheduler.poll() is not None:
                raise RuntimeError(f"dask scheduler exited ({self.scheduler.returncode}):\n{self.log('scheduler')[-3000:]}")
            try:
                return json.loads(info.read_text())["address"]
            except (OSError, ValueError, KeyError):  # not written yet, or half-written
                time.sleep(0.1)
        self.scheduler.kill()
        raise RuntimeError(f"dask scheduler wrote no address in {timeout_s} s:\n{self.log('scheduler')[-3000:]}")

    def _spawn(self, name: str, cmd: list[str], env: dict) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "w")
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.folder,
                                start_new_session=True)

    def add_worker(self, name: str, preload: str | None = None, **env) -> subprocess.Popen:
        """A worker process (no nanny: the Popen is the worker itself), one thread."""
        cmd = [sys.executable, "-m", "dask", "worker", self.address, "--nthreads", "1", "--no-dashboard",
               "--no-nanny", "--host", "127.0.0.1", "--name", name]
        if preload:
            cmd += ["--preload", preload]
        self.workers[name] = self._spawn(f"worker-{name}", cmd, cli_env(**env))
        return self.workers[name]

    def wait_for_workers(self, n: int, timeout_s: float = 120) -> None:
        from distributed import Client

        with Client(self.address, timeout=timeout_s, set_as_default=False) as c:  # connecting waits for the scheduler
            if n:
                c.wait_for_workers(n, timeout=timeout_s)

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text()

    def stop(self) -> None:
        procs = list(self.workers.values()) + [self.scheduler]
        for p in self.workers.values():  # test workers hold nothing worth a graceful close
            if p.poll() is None:
                p.kill()
        if self.scheduler.poll() is None:
            self.scheduler.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def wait_until(condition, timeout_s: float = 180, what: str = "condition") -> None:
    """Poll ``condition()`` every 0.1 s; fail the test after ``timeout_s`` (a hang guard, not a speed test)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
