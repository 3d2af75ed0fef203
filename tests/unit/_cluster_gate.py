"""Dask worker preload (``dask worker --preload``) for the cluster tests: the worker's first
tile write stops at a gate, so a test can kill the worker (or the driver) while a block is
half-written, whatever the machine's speed. Writes ``reached.<pid>`` into the folder
``$EDIFICE_TEST_GATE`` (holding the worker's address) and waits there until a file ``release``
appears."""
import os
import time
from pathlib import Path


def dask_setup(worker):  # called by Dask when the worker starts
    from edifice.core import sliding_window

    gate = Path(os.environ["EDIFICE_TEST_GATE"])
    original = sliding_window._write_block

    def gated(ds, data, window):  # runs in the engine's writer thread: the worker object, not get_worker()
        (gate / f"reached.{os.getpid()}").write_text(worker.address)
        while not (gate / "release").exists():
            time.sleep(0.05)
        original(ds, data, window)

    sliding_window._write_block = gated
