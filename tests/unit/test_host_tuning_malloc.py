"""core/host_tuning.py keep_freed_memory: with Dask's worker environment (MALLOC_TRIM_THRESHOLD_=65536) every large buffer
freed and allocated again page-faults anew; after keep_freed_memory() it is reused. Counted in
page faults (not time), in fresh processes."""
from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys
import numpy as np
from edifice.core.host_tuning import keep_freed_memory
done = keep_freed_memory() if sys.argv[1] == "keep" else None
np.ones(1 << 20)  # warm up
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    a = np.ones(1 << 20)  # 8 MiB, freed at the next assignment
    del a
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, done)
"""


def _faults(mode: str, script: str = SCRIPT) -> tuple[int, str]:
    env = {"MALLOC_TRIM_THRESHOLD_": "65536", "PATH": "/usr/bin:/bin"}
    import os

    env.update({k: v for k, v in os.environ.items() if k.startswith(("PYTHON", "VIRTUAL_ENV", "LD_"))})
    r = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    n, done = r.stdout.split()
    return int(n), done


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_buffers_are_reused_after_keep_freed_memory():
    plain, _ = _faults("plain")
    kept, done = _faults("keep")
    assert done == "True"
    # every 8 MiB buffer faulted in again: at least once each (transparent huge pages make it a few
    # faults a buffer, 4 KiB pages 2,048)
    assert plain >= 40, plain
    assert kept < plain / 10, (kept, plain)


THREAD_SCRIPT = """
import resource, sys
from concurrent.futures import ThreadPoolExecutor
import numpy as np
from edifice.core.host_tuning import keep_freed_memory

def work():  # as a Dask worker's task thread: its own malloc arena, heaps of at most 64 MiB
    kept = [np.ones(30 << 17), np.ones(30 << 17)]  # 2 x 30 MiB stay: the thread's first heap is full
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(40):
        a = np.ones(30 << 17)  # 30 MiB in a second heap, freed at the next assignment
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

done = keep_freed_memory() if sys.argv[1] == "keep" else None
with ThreadPoolExecutor(1) as ex:
    print(ex.submit(work).result(), done)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_buffers_of_a_thread_arena_are_reused_after_keep_freed_memory():
    """In a thread other than the main one (a Dask worker's task thread), glibc deletes a heap of the
    thread's arena as soon as it is empty, unless its top pad keeps it: a buffer in a second heap
    was faulted in again at every allocation (a fifth of a worker's runs: 12x the page faults)."""
    plain, _ = _faults("plain", THREAD_SCRIPT)
    kept, done = _faults("keep", THREAD_SCRIPT)
    assert done == "True"
    assert plain >= 40, plain
    assert kept < plain / 10, (kept, plain)
