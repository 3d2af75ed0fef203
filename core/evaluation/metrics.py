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


# --------------------------------------------------------------------------
# Agreement, averages and confidence intervals (evaluation)
# --------------------------------------------------------------------------

def cohen_kappa(cm: np.ndarray) -> float:
    """Cohen's kappa of a confusion matrix: (p_o - p_e) / (1 - p_e).

    When chance agreement is total (p_e == 1: reference and prediction both put
    every item in the same single class) kappa is 0/0; it is reported as 1.0
    when the agreement is perfect (always the case then). An empty matrix gives 0.0.
    """
    cm = np.asarray(cm, dtype=np.float64)
    n = cm.sum()
    if n == 0:
        return 0.0
    po = np.trace(cm) / n
    pe = float((cm.sum(axis=1) * cm.sum(axis=0)).sum()) / (n * n)
    if pe >= 1.0:
        return 1.0 if po >= 1.0 else 0.0
    return float((po - pe) / (1.0 - pe))


def present_classes(cm: np.ndarray) -> np.ndarray:
    """Boolean mask of classes that occur in the reference or the prediction
    (the classes scikit-learn averages over when ``labels`` is not given)."""
    cm = np.asarray(cm)
    return (cm.sum(axis=0) + cm.sum(axis=1)) > 0


def average_metrics(cm: np.ndarray) -> dict[str, dict[str, float]]:
    """Macro, weighted and micro averages of one-vs-rest precision, recall, F1
    and accuracy.

    * macro: unweighted mean over the classes present in the reference or the
      prediction (a class absent from both would only add a meaningless 0);
    * weighted: mean weighted by reference support;
    * micro: from the pooled one-vs-rest counts; for single-label data micro
      precision = recall = F1 = overall accuracy.
    Zero denominators give 0.0, as in :func:`per_class_metrics`.
    """
    cm = np.asarray(cm, dtype=np.float64)
    m = _vector_metrics(cm[None])
    support = cm.sum(axis=1)
    present = present_classes(cm)
    out = {"macro": {}, "weighted": {}, "micro": {}}
    for key in ("accuracy", "precision", "recall", "f1"):
        v = m[key][0]
        out["macro"][key] = float(v[present].mean()) if present.any() else 0.0
        out["weighted"][key] = _safe_div((v * support).sum(), support.sum())
    total = cm.sum()
    k = cm.shape[0]
    tp = np.trace(cm)
    out["micro"]["precision"] = out["micro"]["recall"] = out["micro"]["f1"] = _safe_div(tp, total)
    # pooled one-vs-rest accuracy: each item is counted once per class
    out["micro"]["accuracy"] = _safe_div(k * total - 2 * (total - tp), k * total)
    return out


def _vector_metrics(cms: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class one-vs-rest metrics for a stack of confusion matrices
    (b, k, k) -> dict of (b, k) arrays; zero denominators give 0."""
    cms = np.asarray(cms, dtype=np.float64)
    tp = np.diagonal(cms, axis1=1, axis2=2)
    col = cms.sum(axis=1)
    row = cms.sum(axis=2)
    total = cms.sum(axis=(1, 2))[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(col > 0, tp / col, 0.0)
        recall = np.where(row > 0, tp / row, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        accuracy = np.where(total > 0, (total - col - row + 2 * tp) / total, 0.0)
    return {"accuracy": accuracy, "precision": precision, "recall": recall, "f1": f1, "support": row}


def _vector_summary(cms: np.ndarray) -> dict[str, np.ndarray]:
    """Overall accuracy, kappa, macro/weighted F1 etc. for a stack (b, k, k)."""
    cms = np.asarray(cms, dtype=np.float64)
    m = _vector_metrics(cms)
    n = cms.sum(axis=(1, 2))
    tp = np.trace(cms, axis1=1, axis2=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        po = np.where(n > 0, tp / n, 0.0)
        pe = np.where(n > 0, (cms.sum(axis=1) * cms.sum(axis=2)).sum(axis=1) / (n * n), 0.0)
        kappa = np.where(pe < 1.0, (po - pe) / (1.0 - pe), np.where(po >= 1.0, 1.0, 0.0))
        present = (cms.sum(axis=1) + cms.sum(axis=2)) > 0
        npres = present.sum(axis=1)
        support = m["support"]
        out = {"overall_accuracy": po, "kappa": np.where(n > 0, kappa, 0.0)}
        for key in ("precision", "recall", "f1"):
            out[f"macro_{key}"] = np.where(npres > 0, (m[key] * present).sum(axis=1) / np.maximum(npres, 1), 0.0)
            out[f"weighted_{key}"] = np.where(n > 0, (m[key] * support).sum(axis=1) / np.maximum(n, 1), 0.0)
    return out


def bootstrap_ci(cm: np.ndarray, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0,
                 class_names: Sequence[str] | None = None) -> dict:
    """Percentile bootstrap confidence intervals, resampling items with replacement.

    Resampling n items with replacement from the evaluated (reference,
    prediction) pairs is the same as drawing the confusion matrix from a
    multinomial(n, cm / n) distribution, which is what is done here: exact,
    seeded, and as fast for a million pixels as for a hundred buildings.

    Returns ``{"confidence", "n_boot", "seed", "overall_accuracy": [lo, hi],
    "kappa": [...], "macro_f1": [...], ..., "per_class": {name: {"precision":
    [lo, hi], "recall": [...], "f1": [...]}}}``. Pixels are not independent, so
    intervals at pixel level are narrower than the true uncertainty.
    """
    cm = np.asarray(cm, dtype=np.int64)
    k = cm.shape[0]
    n = int(cm.sum())
    if not (0 < confidence < 1):
        raise ValueError("confidence must be in (0, 1)")
    out: dict = {"confidence": confidence, "n_boot": int(n_boot), "seed": seed}
    if n == 0 or n_boot <= 0:
        return out
    rng = np.random.default_rng(seed)
    cms = rng.multinomial(n, cm.ravel() / n, size=int(n_boot)).reshape(-1, k, k)
    alpha = (1 - confidence) / 2
    q = [alpha, 1 - alpha]
    for key, v in _vector_summary(cms).items():
        out[key] = [float(x) for x in np.quantile(v, q)]
    per = _vector_metrics(cms)
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    out["per_class"] = {
        name: {key: [float(x) for x in np.quantile(per[key][:, i], q)] for key in ("precision", "recall", "f1")}
        for i, name in enumerate(names)}
    return out


def classification_summary(cm: np.ndarray, class_names: Sequence[str], n_boot: int = 1000,
                           confidence: float = 0.95, seed: int = 0) -> dict:
    """JSON-able summary of a confusion matrix (rows = reference, columns = prediction):
    ``classes``, ``confusion_matrix``, ``per_class``, ``overall_accuracy``, ``kappa``,
    ``averages`` (macro/weighted/micro), ``n``, ``absent_from_reference`` and
    ``absent_from_prediction`` (class names), and ``confidence_intervals``
    (omitted when ``n_boot`` is 0)."""
    cm = np.asarray(cm, dtype=np.int64)
    names = [str(c) for c in class_names]
    if cm.shape != (len(names), len(names)):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {len(names)} classes")
    out = {
        "classes": names,
        "confusion_matrix": cm.tolist(),
        "n": int(cm.sum()),
        "overall_accuracy": overall_accuracy(cm),
        "kappa": cohen_kappa(cm),
        "per_class": per_class_metrics(cm, names),
        "averages": average_metrics(cm),
        "absent_from_reference": [c for c, s in zip(names, cm.sum(axis=1)) if s == 0],
        "absent_from_prediction": [c for c, s in zip(names, cm.sum(axis=0)) if s == 0],
    }
    if n_boot:
        out["confidence_intervals"] = bootstrap_ci(cm, n_boot, confidence, seed, names)
    return out


def evaluate_labels(reference: Sequence, prediction: Sequence, classes: Sequence[str] | None = None,
                    n_boot: int = 1000, confidence: float = 0.95, seed: int = 0,
                    ignore: Sequence[str] = ()) -> dict:
    """Score paired label sequences (strings or numbers, one pair per item).

    ``classes`` fixes the class order (and lets a class absent from both sides
    appear with zero support); by default it is the sorted union of the labels.
    Pairs whose reference or prediction is in ``ignore`` are dropped and
    counted in ``ignored``. A label not in ``classes`` raises ``ValueError``
    (map labels through a taxonomy first: :mod:`edifice.core.taxonomy`).
    Returns :func:`classification_summary`'s dict plus ``ignored``.
    """
    ref = [str(x) for x in reference]
    pred = [str(x) for x in prediction]
    if len(ref) != len(pred):
        raise ValueError(f"reference has {len(ref)} labels, prediction {len(pred)}")
    skip = {str(x) for x in ignore}
    keep = [i for i in range(len(ref)) if ref[i] not in skip and pred[i] not in skip]
    ignored = len(ref) - len(keep)
    ref = [ref[i] for i in keep]
    pred = [pred[i] for i in keep]
    if classes is None:
        classes = sorted(set(ref) | set(pred))
    names = [str(c) for c in classes]
    index = {c: i for i, c in enumerate(names)}
    missing = sorted((set(ref) | set(pred)) - set(index))
    if missing:
        raise ValueError(f"labels not in classes: {missing}")
    r = np.fromiter((index[x] for x in ref), dtype=np.int64, count=len(ref))
    p = np.fromiter((index[x] for x in pred), dtype=np.int64, count=len(pred))
    cm = confusion_matrix(r, p, len(names))
    out = classification_summary(cm, names, n_boot, confidence, seed)
    out["ignored"] = ignored
    return out
