"""The manifest of a cluster run: which blocks are finished, for which inputs and settings.

``manifest.json`` in the run folder holds a ``fingerprint`` (inputs with size and
modification time, model, settings, block size) and ``done`` {block id: summary}. It is
rewritten atomically (temporary file + rename) each time a block finishes, so a driver
killed at any moment leaves a valid manifest. A manifest with another fingerprint is
discarded with its block files (an earlier run on other inputs or settings).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..progress import Progress


class Manifest:
    """Finished blocks of one run, kept in ``folder/manifest.json``."""

    def __init__(self, folder: Path, fingerprint: dict, resume: bool, progress: Progress):
        self.folder = Path(folder)
        self.path = self.folder / "manifest.json"
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
        old = self._load() if resume else None
        if old is not None and old.get("fingerprint") == self.fingerprint:
            self.done: dict[str, dict] = dict(old.get("done", {}))
        else:
            if old is not None or (self.folder.exists() and any(self.folder.iterdir())):
                progress.info(f"Blocks in '{self.folder}' of an earlier run with other inputs or settings "
                              "are discarded.")
                shutil.rmtree(self.folder, ignore_errors=True)
            self.done = {}
        self.folder.mkdir(parents=True, exist_ok=True)
        self.save()

    def _load(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"fingerprint": self.fingerprint, "done": self.done}, indent=1))
        os.replace(tmp, self.path)

    def is_done(self, block_id: str, files: list[str]) -> bool:
        """True when the block is recorded as finished and all its files exist."""
        return block_id in self.done and all(os.path.exists(f) for f in files)

    def mark_done(self, block_id: str, summary: dict) -> None:
        self.done[block_id] = summary
        self.save()
