"""Connecting to a Dask cluster, checking its workers, and the worker plugin that keeps a model.

``cluster`` is ``tcp://HOST:PORT`` (a running ``dask scheduler``; any address Dask takes)
or ``local:N`` (a LocalCluster of N worker processes on this machine, one thread each).
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading

from ..errors import EdificeError, InputError
from ..progress import Progress

#: seconds to wait for a scheduler before giving up
CONNECT_TIMEOUT_S = 10
#: seconds a server that accepted the connection has to answer Dask's handshake
HANDSHAKE_TIMEOUT_S = 10
PLUGIN_NAME = "edifice-model"
WORKER_FIX = ("install Edifice's Python dependencies in the worker's environment (pip install -r "
              "requirements.lock, which pins torch) or start the worker with the Python of Edifice's environment "
              "(.venv/bin/dask worker ...), then run again.")


def _require_dask():
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise InputError("CLUSTER", f"Dask (dask.distributed) cannot be imported in this Python environment ({exc}).",
                         "pip install 'dask[distributed]' (pinned in requirements.lock), or leave CLUSTER "
                         "empty to run on this machine.") from exc


def parse_cluster(spec: str) -> tuple[str, int | str]:
    """('local', N) or ('address', 'tcp://host:port')."""
    s = (spec or "").strip()
    if s.lower().startswith("local:"):
        try:
            n = int(s.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise InputError("CLUSTER", f"'{spec}' does not give a number of local workers.",
                             "write local:N with N >= 1, e.g. local:2.")
        return "local", n
    if "://" not in s and ":" not in s:
        raise InputError("CLUSTER", f"'{spec}' is not a scheduler address.",
                         "give tcp://HOST:PORT (the address `dask scheduler` prints) or local:N.")
    return "address", s if "://" in s else f"tcp://{s}"


@contextlib.contextmanager
def connect(spec: str, progress: Progress):
    """A ``distributed.Client`` for ``spec``; a scheduler that does not answer within
    :data:`CONNECT_TIMEOUT_S` seconds is a clear :class:`InputError`."""
    _require_dask()
    from distributed import Client, LocalCluster

    kind, value = parse_cluster(spec)
    if kind == "local":
        _require_python_executable()
        progress.info(f"Starting a local Dask cluster of {value} worker process(es).")
        with LocalCluster(n_workers=value, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
                Client(lc) as client:
            yield client
        return
    client = _client_of_scheduler(Client, value)
    try:
        has_dashboard = "dashboard" in client.scheduler_info().get("services", {})
        progress.info(f"Connected to the Dask scheduler at {value}; dashboard (task stream): "
                      f"{client.dashboard_link if has_dashboard else 'none'}.")
        yield client
    finally:
        client.close()


def _client_of_scheduler(client_class, address: str):
    """A client of the scheduler at ``address``, or a clear :class:`InputError` within about
    :data:`CONNECT_TIMEOUT_S` seconds where none answers there."""
    try:
        _check_handshake(address, CONNECT_TIMEOUT_S)
    except TimeoutError as exc:  # the port is open but its server does not speak Dask's protocol
        raise InputError("CLUSTER", f"something listens at {address} but no Dask scheduler answers there (no "
                         f"handshake in {HANDSHAKE_TIMEOUT_S} s): is it the dashboard's port (8787 by default) "
                         "or another service?", "give the scheduler's address, which `dask scheduler` prints as "
                         "'Scheduler at: tcp://HOST:PORT' (port 8786 by default).") from exc
    except OSError as exc:
        raise _no_scheduler(address, exc) from exc
    try:
        return client_class(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise _no_scheduler(address, exc) from exc


def _no_scheduler(address: str, exc: BaseException) -> InputError:
    return InputError("CLUSTER", f"no Dask scheduler answers at {address} (waited {CONNECT_TIMEOUT_S} s: {exc}).",
                      "start one (`dask scheduler`, then `dask worker " + address + "` on each GPU node), check "
                      "the address and that the port is open, or leave CLUSTER empty to run on this machine.")


def _check_handshake(address: str, timeout_s: float) -> None:
    """Open a comm to ``address`` (OSError when nothing accepts within ``timeout_s`` seconds) and exchange
    Dask's handshake (TimeoutError when that takes :data:`HANDSHAKE_TIMEOUT_S` more). ``distributed`` bounds
    the TCP connect but not the handshake: a server that accepts and stays silent (an HTTP server such as a
    dashboard) hangs ``Client`` for good. Runs its own event loop in a helper thread, so that a caller's
    running loop (Jupyter) does not matter; only ``tcp://`` addresses are probed."""
    if not address.startswith("tcp://"):
        return
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from distributed.comm import connect as open_comm

    async def probe():
        comm = await asyncio.wait_for(open_comm(address, timeout=timeout_s), timeout_s + HANDSHAKE_TIMEOUT_S)
        await comm.close()

    with ThreadPoolExecutor(1, thread_name_prefix="edifice-dask-probe") as pool:
        pool.submit(asyncio.run, probe()).result()


def _require_python_executable() -> None:
    """local:N spawns worker processes with ``sys.executable``: inside QGIS that is QGIS itself."""
    name = os.path.basename(sys.executable or "").lower()
    if not name.startswith("python"):
        raise InputError("CLUSTER", f"local:N starts Python worker processes, which this program "
                         f"({sys.executable}) cannot do (e.g. inside QGIS).",
                         "start a scheduler and workers from a shell (`dask scheduler`, then `dask worker "
                         "tcp://127.0.0.1:8786 --nthreads 1` per GPU or core) and give tcp://127.0.0.1:8786.")


def probe_worker() -> dict:
    """Run on each worker: what it can import (torch, Edifice) and where."""
    out = {"python": sys.executable, "pid": os.getpid()}
    try:
        import torch

        out["torch"] = torch.__version__
        out["cuda"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception as exc:  # noqa: BLE001 - reported to the driver
        out["torch_error"] = f"{type(exc).__name__}: {exc}"
    return out


def check_workers(client, progress: Progress, wait_s: float = CONNECT_TIMEOUT_S, needs_torch: bool = True) -> dict:
    """Ask every worker what it can import; refuse a cluster with no worker, or (``needs_torch``)
    with a worker that cannot import torch (naming it and the fix)."""
    try:
        client.wait_for_workers(1, timeout=wait_s)
    except (TimeoutError, OSError) as exc:
        raise InputError("CLUSTER", f"the scheduler has no worker (waited {wait_s:g} s).",
                         "start workers: `dask worker <scheduler address> --nthreads 1` on each node (one per GPU)."
                         ) from exc
    answers = client.run(probe_worker, on_error="return")
    bad = {w: (a.get("torch_error") if isinstance(a, dict) else f"{type(a).__name__}: {a}")
           for w, a in answers.items() if not isinstance(a, dict) or (needs_torch and "torch_error" in a)}
    if bad:
        names = "; ".join(f"worker {w} ({answers[w].get('python') if isinstance(answers[w], dict) else '?'}): "
                          f"{why}" for w, why in sorted(bad.items()))
        raise InputError("CLUSTER", f"torch cannot be imported on {len(bad)} worker(s): {names}.", WORKER_FIX)
    gpus = sum(int(a.get("cuda", 0)) for a in answers.values())
    progress.info(f"{len(answers)} worker(s) ready ({gpus} GPU(s) visible to them).")
    return answers


try:  # the plugin is a WorkerPlugin where dask is installed; the module imports without it
    from distributed.diagnostics.plugin import WorkerPlugin as _PluginBase
except ImportError:  # pragma: no cover - dask missing: connect() refuses first
    _PluginBase = object


#: name of :class:`ProfilerPause` on the workers during a run
PROFILER_PAUSE = "edifice-profiler-pause"


class ProfilerPause(_PluginBase):
    """Worker plugin: pauses Dask's statistical profiler while registered (one run; the driver
    unregisters it at the end, which starts it again). The profiler is a 10 ms timer on the worker's
    event loop that walks the whole stack of the task thread (twice) and merges it into its counts,
    holding the GIL, 100 times a second: a task thread running a network (short torch calls between
    Python lines) hands the GIL over and waits for it each time. Measured (tiny U-Net, 1-worker
    LocalCluster): the event loop's CPU fell from 3.5 % to 1.8 % of the run's wall time without it.
    Only the dashboard's Profile page loses this run's samples; the task stream is unchanged."""

    idempotent = True
    _CALLBACKS = ("profile", "profile-cycle")

    def setup(self, worker=None):
        self.paused = []
        for key in self._CALLBACKS:
            pc = getattr(worker, "periodic_callbacks", {}).get(key)
            if pc is not None and pc.is_running():
                pc.stop()
                self.paused.append(key)

    def teardown(self, worker=None):
        for key in getattr(self, "paused", []):
            pc = worker.periodic_callbacks.get(key)
            if pc is not None:
                pc.start()


class ModelPlugin(_PluginBase):
    """Worker plugin: loads the checkpoint once per worker, on the device the worker has
    (``auto``: its GPU, one worker per GPU), and keeps the predictor for every block the
    worker runs. Registered by the driver under :data:`PLUGIN_NAME` (building use) or another
    name. ``loader(checkpoint, device, precision)``: a picklable function that loads the model
    (default: the building-use predictor)."""

    idempotent = False

    def __init__(self, checkpoint: str, device: str, precision: str, fingerprint, loader=None):
        self.checkpoint, self.device, self.precision, self.fingerprint = checkpoint, device, precision, fingerprint
        self.loader = loader or _load_predictor
        self._predictor = None
        self._lock = threading.Lock()

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_predictor", "_lock")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._predictor, self._lock = None, threading.Lock()

    def setup(self, worker=None):
        """Load the model as the worker gets the plugin (errors are raised by the first block,
        naming the worker)."""
        self.worker = worker
        try:
            self.predictor()
        except Exception:  # noqa: BLE001 - reported by predictor() in the block task
            pass

    def teardown(self, worker=None):
        self._predictor = None

    def predictor(self):
        """The worker's predictor, loading the model on first use."""
        with self._lock:
            if self._predictor is None:
                _require_torch()
                self._predictor = self.loader(self.checkpoint, self.device, self.precision)
            return self._predictor


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a worker without torch
        raise EdificeError(f"CLUSTER: torch cannot be imported on worker {_worker_name()} ({sys.executable}): "
                           f"{exc}. Fix: {WORKER_FIX}") from None


def _load_predictor(checkpoint: str, device: str, precision: str):
    from ..use.building_use_map import load_use_model
    from ..sliding_window import Predictor, resolve_device

    model = load_use_model(checkpoint)[0]
    dev, _ = resolve_device(device)
    return Predictor(model, dev, precision=precision)


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except Exception:  # noqa: BLE001 - not on a worker
        return "(this process)"


def worker_predictor(plugin_args: tuple, name: str = PLUGIN_NAME):
    """The predictor of the worker running this task: from the :class:`ModelPlugin` registered
    under ``name`` (the same checkpoint fingerprint), else a plugin made here from
    ``plugin_args`` and registered on the worker."""
    from distributed import get_worker

    worker = get_worker()
    plugin = worker.plugins.get(name)
    if not isinstance(plugin, ModelPlugin) or plugin.fingerprint != plugin_args[3]:
        plugin = ModelPlugin(*plugin_args)
        plugin.setup(worker)
        worker.plugins[name] = plugin
    return plugin.predictor()
