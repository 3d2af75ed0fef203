"""A local package index for installer tests: tiny wheels built in the test from generated
projects (``pip wheel``, offline), served as a PEP 503 "simple" index by ``python -m http.server``
as a real process on 127.0.0.1 (its directory listings are valid index pages)."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path


def build_wheel(work: Path, name: str, version: str, code: str, requires=()) -> Path:
    """Build ``name-version`` (one module ``name`` with - as _, holding ``code``) into ``work/wheels``."""
    module = name.replace("-", "_")
    src = work / f"src-{name}"
    (src / module).mkdir(parents=True)
    (src / module / "__init__.py").write_text(f"__version__ = {version!r}\n{code}\n")
    deps = ", ".join(repr(r) for r in requires)
    (src / "setup.py").write_text(f"from setuptools import setup\nsetup(name={name!r}, version={version!r}, "
                                  f"packages=[{module!r}], install_requires=[{deps}])\n")
    out = work / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                        "-w", str(out), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return next(out.glob(f"{module}-{version}-*.whl"))


def make_index(wheels, root: Path) -> Path:
    """Lay ``wheels`` out as ``root/simple/<normalised name>/<wheel>``; returns ``root``."""
    for whl in wheels:
        project = re.sub(r"[-_.]+", "-", whl.name.split("-")[0]).lower()
        folder = root / "simple" / project
        folder.mkdir(parents=True, exist_ok=True)
        (folder / whl.name).write_bytes(whl.read_bytes())
    return root


class IndexServer:
    """``python -m http.server`` on 127.0.0.1 (an ephemeral port) serving ``root``."""

    def __init__(self, root: Path):
        self.proc = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
                                      "--directory", str(root)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            m = re.search(r"port (\d+)", line)
            if m:
                self.url = f"http://127.0.0.1:{m.group(1)}/simple/"
                return
        self.stop()
        raise RuntimeError(f"http.server did not start: {line}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc.stdout.close()
