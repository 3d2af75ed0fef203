"""Resumable block-wise output: each finished output block is kept as a raw file in a
hidden sidecar folder next to the output, with a manifest that says which job it belongs to.
A run killed or cancelled part-way is resumed by a run with the same job: finished blocks
are skipped. The GeoTIFF is assembled from the blocks in order at the end, so a resumed
run writes the same bytes as an uninterrupted one."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"


class BlockStore:
    """Finished blocks of the job described by ``job`` (a JSON-serialisable dict, free of
    secrets) for the output ``output``, in the folder ``.<output name>.parts`` beside it."""

    def __init__(self, output: str | os.PathLike, job: dict):
        out = Path(output)
        self.folder = out.with_name(f".{out.name}.parts")
        self.job = job
        self._done: set[int] = set()
        self.resumed = self._open()

    def _open(self) -> int:
        """Keep the blocks of a previous run of the same job; start afresh otherwise. Returns
        how many finished blocks were kept."""
        manifest = self.folder / MANIFEST
        if manifest.exists():
            try:
                same = json.loads(manifest.read_text()) == self.job
            except (OSError, ValueError):
                same = False
            if same:
                self._done = self.finished()
                return len(self._done)
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(manifest, json.dumps(self.job, indent=1, sort_keys=True).encode())
        return 0

    def _path(self, index: int) -> Path:
        return self.folder / f"b{index:07d}.bin"

    def finished(self) -> set[int]:
        """Indices of the blocks already written."""
        return {int(p.stem[1:]) for p in self.folder.glob("b*.bin")}

    def is_done(self, index: int) -> bool:
        """Whether block ``index`` is stored (by an earlier run or this one: one process writes a store)."""
        return index in self._done

    def put(self, index: int, data: np.ndarray) -> None:
        """Keep block ``index`` (uint8 array, uncompressed: compressing costs more than the disk
        write); the file appears whole or not at all."""
        _atomic_write(self._path(index), memoryview(np.ascontiguousarray(data)).cast("B"))
        self._done.add(index)

    def get(self, index: int, shape: tuple[int, ...], dtype=np.uint8) -> np.ndarray:
        return np.fromfile(self._path(index), dtype=dtype).reshape(shape)

    def remove(self) -> None:
        """Delete the sidecar folder (after the output is in place)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _atomic_write(path: Path, data: bytes | memoryview) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
