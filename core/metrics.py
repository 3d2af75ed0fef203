"""Classification metrics shared by training (validation scores) and evaluation.

Conventions: class indices 0..n-1; confusion matrix rows = reference,
columns = prediction. Per-class metrics are one-vs-rest (seed 000 §3.2).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def confusion_matrix(reference: np.ndarray, prediction: np.ndarray, n_classes: int,
                     ignore: int | None = None) -> np.ndarray:
    """(n, n) int64 counts; pairs where the reference equals ``ignore`` or either
    label is outside [0, n) are skipped."""
    r = np.asarray(reference).ravel().astype(np.int64)
    p = np.asarray(prediction).ravel().astype(np.int64)
    keep = (r >= 0) & (r < n_classes) & (p >= 0) & (p < n_classes)
    if ignore is not None:
        keep &= r != ignore
    return np.bincount(r[keep] * n_classes + p[keep], minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _safe_div(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def per_class_metrics(cm: np.ndarray, class_names: Sequence[str]) -> dict[str, dict[str, float]]:
    """One-vs-rest accuracy, precision, recall, F1 and support for each class.
    A metric whose denominator is zero is reported as 0.0 (never NaN)."""
    cm = np.asarray(cm, dtype=np.int64)
    total = cm.sum()
    out = {}
    for k, name in enumerate(class_names):
        tp = cm[k, k]
        fp = cm[:, k].sum() - tp
        fn = cm[k, :].sum() - tp
        tn = total - tp - fp - fn
        precision = _safe_div(tp, tp + fp)
        recall = _safe_div(tp, tp + fn)
        out[name] = {
            "accuracy": _safe_div(tp + tn, total),
            "precision": precision,
            "recall": recall,
            "f1": _safe_div(2 * precision * recall, precision + recall),
            "support": int(cm[k, :].sum()),
        }
    return out


def overall_accuracy(cm: np.ndarray) -> float:
    cm = np.asarray(cm)
    return _safe_div(np.trace(cm), cm.sum())
