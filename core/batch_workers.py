"""Batch-parallel CPU inference: each worker thread runs whole batches through a network with ONE
intra-op (OpenMP) thread, instead of every batch being split across all cores.

Why: a small network's forward pass is hundreds of short parallel regions (convolutions of 20 x 20
patches, squeeze-excitation pools, ReLUs), each ending in a barrier of all OpenMP threads. On a
loaded machine one descheduled thread stalls every barrier, and OpenMP's default policy spins while
it waits: measured on 2 cores at load average 6-8 (SHAFTS 100 m network, batches of 64), the
2-thread forward used 1.7-2.6x the CPU time per patch of one-thread batches (3.2-3.6 ms). With one
batch per core there are no barriers at all and the CPU time per patch is that of one thread.

torch's intra-op thread count is process-wide in its API but per thread in OpenMP/MKL:
:func:`cpu_batch_workers` sets one thread in each worker and restores the caller's setting
(``torch.get_num_threads()``) when the pool closes. Imports torch lazily.

Measured (benchmarks/bench_shafts.py, 2 cores, load average 6-9): the SHAFTS inference's wall time
0.57x (THU extent) and 0.46x (10x its area) of the OpenMP-parallel batches it replaced, CPU time
0.41x and 0.38x. On an idle machine the gain is smaller (only the barriers' own cost; not measured:
the machine was never idle).
"""
from __future__ import annotations

import collections
import contextlib
from concurrent.futures import ThreadPoolExecutor
import threading
from typing import Callable, Iterable, Iterator

_lock = threading.Lock()
_open = 0          # pools open now
_saved = 0         # the intra-op thread count before the first of them opened


def _one_intraop_thread() -> None:
    import torch
    torch.set_num_threads(1)


@contextlib.contextmanager
def cpu_batch_workers(workers: int):
    """A thread pool of ``workers`` threads, each running torch with one intra-op thread; on exit the
    pool is shut down (queued work cancelled, running work waited for). The caller's
    ``torch.get_num_threads()`` is restored when the last of any concurrently open pools closes (pools
    opened at once, e.g. by two QGIS tasks, would otherwise restore each other's temporary setting);
    while a pool is open, threads that start using torch elsewhere in the process begin with one
    intra-op thread."""
    import torch
    global _open, _saved
    with _lock:
        if _open == 0:
            _saved = torch.get_num_threads()
        _open += 1
    pool = ThreadPoolExecutor(max(1, int(workers)), thread_name_prefix="edifice-batch",
                              initializer=_one_intraop_thread)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        with _lock:
            _open -= 1
            if _open == 0:
                torch.set_num_threads(_saved)


def ordered_map(pool: ThreadPoolExecutor, fn: Callable, items: Iterable, ahead: int,
                before_submit: Callable[[], None] | None = None) -> Iterator:
    """``fn(item)`` for each item on ``pool``, results in the order of ``items``, with at most
    ``ahead`` items submitted and not yet returned (bounded memory). ``before_submit`` (e.g. a
    cancellation check) runs in the calling thread before each submission; if it or ``fn`` raises,
    the items still queued are cancelled and the exception propagates."""
    pending: collections.deque = collections.deque()
    try:
        for item in items:
            if before_submit is not None:
                before_submit()
            pending.append(pool.submit(fn, item))
            if len(pending) >= max(1, ahead):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()


def even_batches(n: int, batch_size: int, workers: int) -> list[tuple[int, int]]:
    """(start, stop) of batches covering ``range(n)``, at most ``batch_size`` long, their number a
    multiple of ``workers`` where that keeps them non-empty, sizes differing by at most one (so the
    last round keeps every worker busy)."""
    if n <= 0:
        return []
    count = -(-n // max(1, batch_size))
    if workers > 1:
        count = min(n, -(-count // workers) * workers)
    bounds = [round(i * n / count) for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))
