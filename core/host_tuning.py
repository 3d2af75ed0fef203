"""Host-side settings for model runs on the CPU: OpenMP threads that sleep instead of spinning,
and freed memory kept in the process for reuse (glibc only; elsewhere no-ops).

* :func:`quiet_cpu_threads` sets ``OMP_WAIT_POLICY=PASSIVE`` (unless the user set it): torch's
  OpenMP threads then sleep at once when a parallel region ends instead of spinning for
  milliseconds, so the reader and writer threads of the sliding-window engine get the cores.
  OpenMP reads the variable when torch is first imported, so it is set by the CLI's entry point
  and the QGIS plugin's ``classFactory`` before anything imports torch; in a QGIS where torch was
  imported earlier (another plugin, the Python console), start QGIS with ``OMP_WAIT_POLICY=PASSIVE``
  in its environment to get the same.
* :func:`keep_freed_memory` (always, called by the engine's ``Predictor``) raises glibc's mmap
  threshold to 32 MiB and its trim threshold to 128 MiB for the process, so the activation buffers a
  network frees and re-allocates every batch are reused instead of page-faulted (and zeroed) again;
  the memory kept is bounded by those thresholds. Dask's worker processes need it most: the nanny
  starts them with ``MALLOC_TRIM_THRESHOLD_=65536``, which also turns off glibc's growing mmap
  threshold. Measured (tiny U-Net, batches of 4 windows of 256 px, one thread): 12,300 page faults and
  0.047-0.053 s of CPU per window in such a worker, 2,100 and 0.023-0.029 s in a plain process, 40 and
  0.018-0.019 s after :func:`keep_freed_memory`. It also sets glibc's top pad to 64 MiB: a Dask task
  runs in a thread of the worker's thread pool, whose malloc arena is made of heaps of at most 64 MiB,
  and glibc deletes a heap (``heap_trim``, whatever the trim threshold) as soon as it is empty and the
  heap before it has more free room than the top pad (128 KiB by default); buffers that landed in
  such a heap were page-faulted again at every batch. Measured (tiny U-Net, 464 windows in one task of
  a 1-worker LocalCluster, load 6-8 on 2 CPUs): 2 runs of 5 had 530,000-670,000 page faults instead of
  ~42,000, and the task thread's CPU was 8.1-9.8 s (mean 9.1); with the top pad 0 of 5, 37,000-41,000
  faults, 7.6-8.6 s (mean 8.1). The main arena only keeps up to the top pad more when it trims.
* :func:`retained_allocations` keeps freed memory in the process for the duration of a run
  (glibc ``mallopt``: no ``mmap`` for large blocks, no trimming), so the large per-batch buffers
  of the model (activations of tens to hundreds of MiB) are not returned to the kernel and
  page-faulted in again on every batch; afterwards the defaults are restored and the kept memory
  is returned (``malloc_trim``), so a long-lived process (QGIS) does not keep it. A no-op off glibc.
  Off unless ``EDIFICE_KEEP_FREED_MEMORY=1``: measured on 2 CPU cores (ResNet-34 U-Net, 1024/128) it cut
  a CLI run's wall time to 0.76x but raised peak memory 1.3x and made it grow with the area (4x / 1x
  area 1.26 instead of 1.07).
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading

# glibc mallopt parameters and their documented defaults
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -2, -3, -4
_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_MMAP_THRESHOLD: 128 * 1024, _M_MMAP_MAX: 65536}
_KEEP = {_M_MMAP_MAX: 0, _M_TRIM_THRESHOLD: 2**31 - 1}
#: buffers up to this size come from the heap and are reused by :func:`keep_freed_memory`
MMAP_THRESHOLD = 32 * 1024 * 1024
#: free memory kept at the top of the heap before it is returned to the kernel (:func:`keep_freed_memory`)
TRIM_THRESHOLD = 128 * 1024 * 1024
#: glibc's top pad (:func:`keep_freed_memory`): as large as a thread arena's heap (64 MiB), so that an
#: empty heap of a thread's arena is kept instead of deleted
TOP_PAD = 64 * 1024 * 1024
_lock = threading.Lock()
_active = 0
_kept = False


def quiet_cpu_threads() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless already set (effective only before torch is imported)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _libc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.mallopt  # noqa: B018 - glibc only
        lib.malloc_trim  # noqa: B018
        return lib
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once; see the module docstring).
    Returns whether they are raised."""
    global _kept
    if _kept:
        return True
    lib = _libc()
    if lib is not None:
        _kept = bool(lib.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            lib.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(lib.mallopt(_M_TOP_PAD, TOP_PAD))
    return _kept


def _restored_settings() -> dict:
    """mallopt settings after :func:`retained_allocations`: glibc's defaults, or the thresholds of
    :func:`keep_freed_memory` when the process raised them."""
    if not _kept:
        return _DEFAULTS
    return {**_DEFAULTS, _M_MMAP_THRESHOLD: MMAP_THRESHOLD, _M_TRIM_THRESHOLD: TRIM_THRESHOLD}


@contextlib.contextmanager
def retained_allocations(enabled: bool = True):
    """Within the block, freed memory stays in the process (see the module docstring); nested and
    concurrent uses are counted, the defaults come back when the last one ends."""
    global _active
    lib = _libc() if enabled and os.environ.get("EDIFICE_KEEP_FREED_MEMORY", "0") == "1" else None
    if lib is None:
        yield
        return
    with _lock:
        _active += 1
        if _active == 1:
            for key, value in _KEEP.items():
                lib.mallopt(key, value)
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                for key, value in _restored_settings().items():
                    lib.mallopt(key, value)
                lib.malloc_trim(0)
