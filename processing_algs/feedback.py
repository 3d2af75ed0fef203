"""Adapter from QGIS's QgsProcessingFeedback to the core Progress protocol."""
from __future__ import annotations

import time

from qgis.core import QgsProcessingFeedback
from qgis.PyQt.QtCore import QCoreApplication, QEventLoop, QThread

from ..core.progress import Progress

#: how often (s) a long run on the main thread lets Qt deliver a cancel (Ctrl-C under qgis_process)
EVENT_INTERVAL_S = 0.25


class FeedbackProgress(Progress):
    """Core progress reported to a Processing feedback (progress bar, log, cancel)."""

    def __init__(self, feedback: QgsProcessingFeedback | None):
        self.feedback = feedback
        self._last_events = 0.0

    def set_fraction(self, fraction: float) -> None:
        if self.feedback is not None:
            self.feedback.setProgress(100.0 * min(max(fraction, 0.0), 1.0))

    def is_cancelled(self) -> bool:
        if self.feedback is None:
            return False
        self._deliver_pending_cancel()
        return self.feedback.isCanceled()

    def _deliver_pending_cancel(self) -> None:
        """qgis_process turns Ctrl-C (SIGINT) into ``feedback.cancel()`` through Qt's event loop on the
        main thread, which never runs while an algorithm works on that thread: let it run, now and then
        (user input excluded), when the check is made on the main thread."""
        now = time.monotonic()
        if now - self._last_events < EVENT_INTERVAL_S:
            return
        self._last_events = now
        app = QCoreApplication.instance()
        if app is not None and QThread.currentThread() == app.thread():
            QCoreApplication.processEvents(QEventLoop.ExcludeUserInputEvents)

    def info(self, message: str) -> None:
        if self.feedback is not None:
            self.feedback.pushInfo(message)

    def warning(self, message: str) -> None:
        if self.feedback is not None:
            self.feedback.pushWarning(message)  # a warning, not an error (QGIS >= 3.16)
