"""The one progress/cancel protocol of Edifice.

Core functions take ``progress: Progress | None``. Adapters exist for the
terminal (:class:`TerminalProgress`), QGIS (``processing_algs.feedback``) and
anything else that subclasses :class:`Progress`.
"""
from __future__ import annotations

import sys
import time

from .errors import Cancelled


class Progress:
    """Null progress: reports nothing, never cancelled. Subclass and override
    :meth:`set_fraction`, :meth:`is_cancelled`, :meth:`info` and :meth:`warning`."""

    def set_fraction(self, fraction: float) -> None:
        """Report completion as a fraction in [0, 1]."""

    def is_cancelled(self) -> bool:
        return False

    def info(self, message: str) -> None:
        """A line of information for the user's log."""

    def warning(self, message: str) -> None:
        """A warning the user should read."""

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` if the user asked to stop."""
        if self.is_cancelled():
            raise Cancelled()

    def span(self, start: float, end: float) -> "Progress":
        """A child progress whose [0, 1] maps onto [start, end] of this one."""
        return _Span(self, start, end)


class _Span(Progress):
    def __init__(self, parent: Progress, start: float, end: float):
        self._parent, self._start, self._end = parent, start, end

    def set_fraction(self, fraction: float) -> None:
        f = min(max(fraction, 0.0), 1.0)
        self._parent.set_fraction(self._start + (self._end - self._start) * f)

    def is_cancelled(self) -> bool:
        return self._parent.is_cancelled()

    def info(self, message: str) -> None:
        self._parent.info(message)

    def warning(self, message: str) -> None:
        self._parent.warning(message)


class RecordingProgress(Progress):
    """Keeps what a run reports (for tests, notebooks and callers that show it later): ``infos``,
    ``warnings``, ``lines`` (both, in order, warnings prefixed 'warning: ') and ``fractions``."""

    def __init__(self):
        self.infos: list[str] = []
        self.warnings: list[str] = []
        self.lines: list[str] = []
        self.fractions: list[float] = []

    def set_fraction(self, fraction: float) -> None:
        self.fractions.append(fraction)

    def info(self, message: str) -> None:
        self.infos.append(message)
        self.lines.append(message)

    def warning(self, message: str) -> None:
        self.warnings.append(message)
        self.lines.append("warning: " + message)


class TerminalProgress(Progress):
    """Progress bar on stderr for the CLI; Ctrl-C is handled by the CLI itself."""

    def __init__(self, stream=None, min_interval_s: float = 0.2):
        self._stream = stream or sys.stderr
        self._last: float | None = None  # no bar drawn yet: the first one is always drawn
        self._min_interval = min_interval_s
        self._tty = hasattr(self._stream, "isatty") and self._stream.isatty()

    def set_fraction(self, fraction: float) -> None:
        now = time.monotonic()
        if fraction < 1.0 and self._last is not None and now - self._last < self._min_interval:
            return
        self._last = now
        if self._tty:
            width = 30
            done = int(round(width * min(max(fraction, 0.0), 1.0)))
            self._stream.write(f"\r[{'#' * done}{'.' * (width - done)}] {100 * fraction:5.1f} %")
            if fraction >= 1.0:
                self._stream.write("\n")
            self._stream.flush()

    def info(self, message: str) -> None:
        self._clear_line()
        self._stream.write(message + "\n")

    def warning(self, message: str) -> None:
        self._clear_line()
        self._stream.write("warning: " + message + "\n")

    def _clear_line(self) -> None:
        if self._tty:
            self._stream.write("\r\033[K")


def ensure(progress: Progress | None) -> Progress:
    """Return ``progress`` or a null :class:`Progress`."""
    return progress if progress is not None else Progress()
