"""Adapter from QGIS's QgsProcessingFeedback to the core Progress protocol."""
from __future__ import annotations

from qgis.core import QgsProcessingFeedback

from ..core.progress import Progress


class FeedbackProgress(Progress):
    """Core progress reported to a Processing feedback (progress bar, log, cancel)."""

    def __init__(self, feedback: QgsProcessingFeedback | None):
        self.feedback = feedback

    def set_fraction(self, fraction: float) -> None:
        if self.feedback is not None:
            self.feedback.setProgress(100.0 * min(max(fraction, 0.0), 1.0))

    def is_cancelled(self) -> bool:
        return self.feedback is not None and self.feedback.isCanceled()

    def info(self, message: str) -> None:
        if self.feedback is not None:
            self.feedback.pushInfo(message)

    def warning(self, message: str) -> None:
        if self.feedback is not None:
            self.feedback.pushWarning(message)  # a warning, not an error (QGIS >= 3.16)
