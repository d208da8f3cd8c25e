"""Classification metrics from a confusion matrix (pure numpy).

The confusion matrix is the mergeable form: parties evaluate locally, the
aggregator sums their matrices and calls metrics_from_confusion, which gives
the exact pooled precision/recall/f1 (averaging per-party ratios would not).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[t, p] = rows of true class t predicted as p."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels, y_pred {p.size}")
    if t.size and (t.min() < 0 or t.max() >= n_classes or p.min() < 0 or p.max() >= n_classes):
        raise ValueError(f"labels must be in [0, {n_classes})")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # 0/0 -> 0 (sklearn's zero_division=0): a class never predicted has no precision to claim.
    return np.divide(num, den, out=np.zeros(num.shape, dtype=np.float64), where=den > 0)


def metrics_from_confusion(confusion: np.ndarray) -> dict[str, Any]:
    """JSON-able: accuracy, n, per-class lists precision/recall/f1/support, macro_f1, confusion."""
    c = np.asarray(confusion, dtype=np.int64)
    tp = np.diag(c).astype(np.float64)
    predicted = c.sum(axis=0).astype(np.float64)
    support = c.sum(axis=1)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support.astype(np.float64))
    f1 = _ratio(2 * precision * recall, precision + recall)
    n = int(c.sum())
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": support.tolist(),
        "macro_f1": float(f1.mean()),
        "confusion": c.tolist(),
    }


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, Any]:
    return metrics_from_confusion(confusion_matrix(y_true, y_pred, n_classes))
