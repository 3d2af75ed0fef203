"""core/host_tuning.py keep_freed_memory: with Dask's worker environment (MALLOC_TRIM_THRESHOLD_=65536) every large buffer
freed and allocated again page-faults anew; after keep_freed_memory() it is reused. Counted as the
allocations that page-faulted (not time, nor the number of faults, which transparent huge pages divide by
up to 512), in fresh processes."""
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
faulted = 0
for _ in range(40):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.ones(1 << 20)  # 8 MiB, freed at the next assignment
    del a
    faulted += resource.getrusage(resource.RUSAGE_SELF).ru_minflt > before
print(faulted, done)
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
    assert plain == 40, plain  # every 8 MiB buffer faulted in anew
    assert kept <= 1, kept  # at most the first one


THREAD_SCRIPT = """
import resource, sys
from concurrent.futures import ThreadPoolExecutor
import numpy as np
from edifice.core.host_tuning import keep_freed_memory

def work():  # as a Dask worker's task thread: its own malloc arena, heaps of at most 64 MiB
    kept = [np.ones(30 << 17), np.ones(30 << 17)]  # 2 x 30 MiB stay: the thread's first heap is full
    faulted = 0
    for _ in range(40):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        a = np.ones(30 << 17)  # 30 MiB in a second heap, freed at the next assignment
        del a
        faulted += resource.getrusage(resource.RUSAGE_SELF).ru_minflt > before
    return faulted

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
    assert plain == 40, plain  # every 30 MiB buffer faulted in anew
    assert kept <= 1, kept  # at most the first one
