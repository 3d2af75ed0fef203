"""The output contract every Edifice writer follows, in both front ends.

Before work starts: an output that is one of the inputs is refused (same file, also through links), the
output folder must exist or be creatable and be writable, and have room for a conservative estimate.
While writing: the result goes to a temporary sibling whose name carries the writer's process id; write
errors that mean a full disk become one clear :class:`DiskFullError`. At the end: the temporary is
verified (reopened, its last block read) before the atomic move. On every exit path — errors, cancel,
Ctrl-C and SIGTERM in the CLI — temporaries are removed; temporaries left by killed runs (their process is
gone) are swept by the next run that writes into the same folder."""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import threading
import uuid
from pathlib import Path
from typing import Iterable, Mapping

from .errors import EdificeError, InputError

#: names of temporaries and scratch folders: ``.<stem>.<pid>-<hex>.partial<suffix>`` /
#: ``.edifice-<tool>-<pid>-<random>``
_PARTIAL_RE = re.compile(r"^\..*\.(\d+)-[0-9a-f]{8}\.partial")
_SCRATCH_RE = re.compile(r"^\.edifice-[a-z0-9_]+-(\d+)-")


class DiskFullError(EdificeError):
    """The disk filled (or a quota was reached) while writing an output; nothing was kept."""


class OutputError(EdificeError):
    """A written output failed its check before being moved into place; nothing was kept."""


class Terminated(BaseException):
    """SIGTERM reached the CLI: unwinds like Ctrl-C so every temporary is removed."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name the same file (through links, ``..`` and case-insensitive systems)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _input_paths(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        text = str(value).split("|")[0]
        return [text] if text and "://" not in text and not text.startswith("/vsi") else []
    if isinstance(value, Mapping):
        value = value.values()
    return [p for v in value for p in _input_paths(v)]


def refuse_input_as_output(outputs: Mapping[str, object], inputs: Mapping[str, object]) -> None:
    """Raise :class:`InputError` when an output path is also one of the inputs (or two outputs coincide).

    ``outputs``/``inputs``: parameter name → path, list of paths, or None."""
    seen: list[tuple[str, str]] = []
    for out_name, out in outputs.items():
        for out_path in _input_paths(out):
            for in_name, value in inputs.items():
                if any(same_file(out_path, p) for p in _input_paths(value)):
                    raise InputError(out_name, f"'{out_path}' is also the input {in_name}; writing it would "
                                               "destroy the input.", "choose another output file name.")
            for other_name, other in seen:
                if same_file(out_path, other):
                    raise InputError(out_name, f"'{out_path}' is also the output {other_name}.",
                                     "give each output its own file name.")
            seen.append((out_name, out_path))


def check_output_folder(name: str, path: str | os.PathLike, need_bytes: int = 0) -> Path:
    """Create the folder of ``path`` if needed and check it is writable and has ``need_bytes`` free;
    the message names the parameter and the folder (never a hidden temporary)."""
    folder = Path(path).expanduser().absolute().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(name, f"the folder '{folder}' cannot be created ({exc.strerror}).",
                         "choose a folder you can write to.") from None
    probe = folder / f".edifice-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"")
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"{name}: the disk holding '{folder}' is full. Fix: free space or choose "
                                "another folder.") from None
        raise InputError(name, f"the folder '{folder}' is not writable ({exc.strerror}).",
                         "choose a folder you can write to.") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    if need_bytes > 0:
        free = shutil.disk_usage(folder).free
        if free < need_bytes:
            raise DiskFullError(f"{name}: '{folder}' has {_mib(free)} free, and this output needs about "
                                f"{_mib(need_bytes)}. Fix: free space or choose another folder.")
    return folder


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 10 * 2**20 else f"{n / 2**10:.0f} KiB"


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (an OSError or a GDAL/rasterio error) means no space or quota left."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    text = str(exc)
    return any(s in text for s in ("No space left", "Disk quota", "File too large"))


def folder_nearly_full(folder: str | os.PathLike, margin_bytes: int = 2**20) -> bool:
    """True when ``folder``'s file system has less than ``margin_bytes`` free (GDAL reports a full disk
    only as 'Write failed' or not at all, so a failed write is checked against the free space)."""
    try:
        return shutil.disk_usage(folder).free < margin_bytes
    except OSError:
        return False


def disk_full_error(name: str, path: str | os.PathLike) -> DiskFullError:
    folder = Path(path).expanduser().absolute().parent
    return DiskFullError(f"{name}: writing '{Path(path).name}' failed because the disk holding '{folder}' is "
                         "full (or a file-size limit was reached); nothing was kept. Fix: free space or "
                         "choose another folder.")


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A temporary name next to ``path`` (same file system: the final move is atomic), tagged with this
    process's id so that a later run can tell a dead run's leftovers from a live run's work."""
    p = Path(path)
    return p.with_name(f".{p.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial{p.suffix or '.tif'}")


def scratch_prefix(tool: str) -> str:
    """Prefix of a scratch folder (``tempfile.TemporaryDirectory(prefix=...)``) that the sweep recognises."""
    return f".edifice-{tool}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove temporaries and scratch folders in ``folder`` whose writing process no longer exists."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _PARTIAL_RE.match(entry.name) or _SCRATCH_RE.match(entry.name)
        if match and not _pid_alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                removed.append(entry)
    return removed


def remove_temporary(tmp: Path) -> None:
    """Remove a temporary and the side files GDAL may have made next to it."""
    for leftover in (tmp, Path(str(tmp) + ".aux.xml"), Path(str(tmp) + ".ovr"), Path(str(tmp) + "-journal"),
                     Path(str(tmp) + "-wal"), Path(str(tmp) + "-shm")):
        with contextlib.suppress(OSError):
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, name: str = "OUTPUT", inputs: Mapping[str, object] | None = None,
                  verify=None, need_bytes: int = 0):
    """Yield a temporary path; when the block ends, ``verify(tmp)`` (if given) checks it and it is moved
    onto ``path``. On any error, cancel or signal it is removed and ``path`` is left untouched.
    ``inputs``: parameter name → path(s) that ``path`` must not be."""
    final = Path(path)
    if inputs:
        refuse_input_as_output({name: final}, inputs)
    folder = check_output_folder(name, final, need_bytes)
    sweep_stale_temporaries(folder)
    tmp = temporary_sibling(final)
    try:
        yield tmp
        if verify is not None:
            verify_written(verify, tmp, final, name, folder)
        os.replace(tmp, final)
    except EdificeError:
        remove_temporary(tmp)
        raise
    except Exception as exc:
        full = is_disk_full(exc) or folder_nearly_full(folder)
        remove_temporary(tmp)
        if full:
            raise disk_full_error(name, final) from exc
        raise
    except BaseException:
        remove_temporary(tmp)
        raise


def verify_written(verify, tmp: Path, final: Path, name: str, folder: Path) -> None:
    """Run ``verify(tmp)``; a failure is a full disk when the disk is (nearly) full, else an OutputError
    that names the output (not the hidden temporary)."""
    try:
        verify(tmp)
    except Exception as exc:  # noqa: BLE001 - any failure to read back means the file is bad
        if folder_nearly_full(folder):
            raise disk_full_error(name, final) from exc
        text = str(exc).replace(str(tmp), str(final))
        raise OutputError(f"{name}: '{final}' could not be read back after writing ({text}); nothing was "
                          "kept. Fix: check the disk and the folder, then run again.") from exc


def _raise_terminated(signum, frame):
    raise Terminated()


def install_termination_handler() -> None:
    """In the CLI's main thread: turn SIGTERM into :class:`Terminated`, so outputs unwind as on Ctrl-C."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


@contextlib.contextmanager
def terminate_cleanly():
    """While the block runs on the main thread of a process where nothing else handles SIGTERM (e.g. a
    tool under qgis_process), SIGTERM unwinds it like an error so its temporaries are removed; the
    previous handling is restored afterwards. Elsewhere (worker threads, the QGIS desktop) a no-op."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def output_paths(values: Iterable[object]) -> list[str]:
    """The file paths among ``values`` (strings, paths, lists), for :func:`refuse_input_as_output`."""
    return [p for v in values for p in _input_paths(v)]
