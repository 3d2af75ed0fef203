"""A local package index for installer tests, served as a PEP 503 "simple" index by
``python -m http.server`` as a real process on 127.0.0.1 (its directory listings are valid
index pages). Two kinds of wheels: tiny ones built in the test from generated projects
(``pip wheel``, offline), and the real wheelhouse of Edifice's runtime dependencies that
``pip download`` fetches from ``requirements.lock`` (:func:`build_wheelhouse`, cached)."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
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


def runtime_requirements(lock_text: str) -> list[str]:
    """The pinned lines of ``requirements.lock`` that Edifice needs at run time (comments and
    ``# tests only`` lines left out)."""
    out = []
    for line in lock_text.splitlines():
        if "# tests only" in line:
            continue
        req = line.split("#", 1)[0].strip()
        if req:
            out.append(req)
    return out


def build_wheelhouse(lock: Path, extra_requirements, cache: Path, python: str = sys.executable) -> Path:
    """The wheels of ``lock``'s runtime requirements with their dependencies (``pip download
    --only-binary=:all:``, pip's own configuration: torch comes from where scripts/setup.sh takes
    it, the local CPU wheel), plus ``extra_requirements`` (the installer's pins that differ from
    the lock, without dependencies), in ``cache/<hash of both>/``: built once, then reused."""
    reqs = runtime_requirements(lock.read_text())
    extra = sorted(set(extra_requirements) - set(reqs))
    key = hashlib.sha256("\n".join(reqs + ["--"] + extra).encode()).hexdigest()[:16]
    done = cache / key
    if (done / ".complete").exists():
        return done
    work = cache / f".{key}.{os.getpid()}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "requirements.txt").write_text("\n".join(reqs) + "\n")
    base = [python, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:", "-d", str(work)]
    for cmd in (base + ["-r", str(work / "requirements.txt")], base + ["--no-deps", *extra] if extra else None):
        if cmd is None:
            continue
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            raise RuntimeError(f"pip download failed: {r.stdout[-1500:]}{r.stderr[-1500:]}")
    (work / ".complete").write_text("\n".join(reqs + extra) + "\n")
    shutil.rmtree(done, ignore_errors=True)
    work.rename(done)
    return done


def project_name(wheel_name: str) -> str:
    """The PEP 503 normalised project name of a wheel file name."""
    return re.sub(r"[-_.]+", "-", wheel_name.split("-")[0]).lower()


def make_index(wheels, root: Path, link: bool = False) -> Path:
    """Lay ``wheels`` out as ``root/simple/<normalised name>/<wheel>`` (copies, or symbolic links
    with ``link``: http.server follows them); returns ``root``."""
    for whl in wheels:
        folder = root / "simple" / project_name(whl.name)
        folder.mkdir(parents=True, exist_ok=True)
        if link:
            (folder / whl.name).symlink_to(whl.resolve())
        else:
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
