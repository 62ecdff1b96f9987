"""Closed-set evaluation metrics (open set: :mod:`signflow.evaluation.openset`).

Pure functions over numpy arrays (no torch, no I/O): the evaluate stage passes
labels, softmax probabilities and scores in and writes what comes back. Every
public function returns plain Python floats/ints/lists/dicts (or, for the
confusion counts, an integer array) so results go straight to JSON and MLflow;
an undefined value is ``None``, never NaN.

Closed set: the known test images only, scored against the model's K classes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
)

# Equal-width confidence bins for ECE and the reliability diagram; 15 follows
# Guo et al. 2017 (https://arxiv.org/abs/1706.04599), so numbers compare.
ECE_BINS = 15
# Confidence of the interval shown next to each test accuracy.
CONFIDENCE_LEVEL = 0.95
# Digits in the text classification report (sklearn's default of 2 hides
# differences between runs).
REPORT_DIGITS = 4


# ---------------------------------------------------------------- validation


def _as_labels(labels: np.ndarray, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got {labels.min()}..{labels.max()}")
    return labels.astype(np.int64)


def _as_probs(
    labels: np.ndarray, probs: np.ndarray, n_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    raw = np.asarray(probs)
    if raw.ndim != 2 or (n_classes is not None and raw.shape[1] != n_classes):
        raise ValueError(f"probs must have shape (N, {n_classes or 'K'}), got {raw.shape}")
    # Tolerance of the input's own precision (as sklearn's log_loss uses):
    # catches logits passed by mistake, forgives float32 softmax rounding.
    dtype = raw.dtype if np.issubdtype(raw.dtype, np.floating) else np.float64
    if not np.allclose(raw.sum(axis=1), 1.0, rtol=0.0, atol=math.sqrt(np.finfo(dtype).eps)):
        raise ValueError("probs rows must sum to 1 (softmax outputs, not logits)")
    # Renormalise in float64 so float32 rounding neither trips log_loss's
    # float64 check nor shifts ECE sums.
    probs = raw.astype(np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)
    labels = _as_labels(labels, probs.shape[1])
    if len(labels) != len(probs):
        raise ValueError(f"labels ({len(labels)}) and probs ({len(probs)}) differ in length")
    if len(labels) == 0:
        raise ValueError("cannot compute classification metrics on zero samples")
    return labels, probs


# ---------------------------------------------------------------- closed set


def reliability_bins(labels: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> list[dict]:
    """Top-label confidence vs accuracy per equal-width bin over [0, 1] (see :func:`calibration_bins`)."""
    labels, probs = _as_probs(labels, probs)
    return calibration_bins(probs.max(axis=1), probs.argmax(axis=1) == labels, n_bins)


def calibration_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> list[dict]:
    """Mean confidence and accuracy per equal-width confidence bin over [0, 1].

    Bins are right-closed, ``(lower, upper]`` (the first also holds 0), as in
    Guo et al. Every bin is returned so the diagram keeps its x axis; an empty
    bin has ``count`` 0 and ``confidence``/``accuracy`` ``None``. This is the
    single source for ECE (evaluate's, and the pull-request review's from
    predictions.csv), so the plot and the numbers cannot disagree.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # searchsorted 'left' puts a value equal to an edge in the bin below it.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        members = index == b
        count = int(members.sum())
        rows.append(
            {
                "bin_lower": float(edges[b]),
                "bin_upper": float(edges[b + 1]),
                "confidence": float(confidence[members].mean()) if count else None,
                "accuracy": float(correct[members].mean()) if count else None,
                "count": count,
            }
        )
    return rows


def expected_calibration_error(bins: Sequence[dict]) -> float:
    """ECE from :func:`reliability_bins`: count-weighted mean |accuracy - confidence|."""
    total = sum(row["count"] for row in bins)
    return float(
        sum(row["count"] / total * abs(row["accuracy"] - row["confidence"]) for row in bins if row["count"])
    )


def classification_metrics(
    labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str], n_bins: int = ECE_BINS
) -> dict:
    """Flat closed-set metrics for ``metrics/*.json``.

    ``labels`` (N,) ints in [0, K); ``probs`` (N, K) softmax rows. Predictions
    are the argmax. Macro F1 averages over the classes that occur in labels or
    predictions (sklearn's default), so a class absent from this split and
    never predicted does not count as an F1 of 0. Balanced accuracy is the mean
    recall over classes present in ``labels``. Log loss uses all K columns.
    """
    n_classes = len(class_names)
    labels, probs = _as_probs(labels, probs, n_classes)
    preds = probs.argmax(axis=1)
    with warnings.catch_warnings():
        # Known images predicted as the unknown class (absent from labels) are
        # expected; they already count as misses in their true class's recall.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        balanced = float(balanced_accuracy_score(labels, preds))
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "balanced_accuracy": balanced,
        "macro_f1": float(f1_score(labels, preds, average="macro", zero_division=0)),
        "log_loss": float(log_loss(labels, y_proba=probs, labels=list(range(n_classes)))),
        "ece": expected_calibration_error(reliability_bins(labels, probs, n_bins)),
        "n": int(len(labels)),
    }


def wilson_interval(successes: int, n: int, level: float = CONFIDENCE_LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion (Wilson 1927): how sure one test split makes an accuracy.

    Unlike the normal approximation it stays inside [0, 1] and is not zero-width
    at 100%: 389 right of 389 gives (0.990, 1.0), so "no error" still reads as
    "at least 99%". ``(0.0, 1.0)`` for an empty split.
    """
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n={n}], got {successes}")
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p, z2 = successes / n, z * z / n
    centre = (p + z2 / 2) / (1 + z2)
    half = z / (1 + z2) * math.sqrt(p * (1 - p) / n + z2 / (4 * n))
    # At 0 or n the bound is exactly 0 or 1: no float rounding left in it.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    return low, 1.0 if successes == n else min(1.0, centre + half)


def per_class_table(labels: np.ndarray, preds: np.ndarray, class_names: Sequence[str]) -> list[dict]:
    """One row per class (all K, in index order); undefined ratios are 0."""
    n_classes = len(class_names)
    labels = _as_labels(labels, n_classes)
    preds = _as_labels(preds, n_classes)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, preds, labels=list(range(n_classes)), zero_division=0
    )
    return [
        {
            "class": name,
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "support": int(support[k]),
        }
        for k, name in enumerate(class_names)
    ]


def classification_report_text(labels: np.ndarray, preds: np.ndarray, class_names: Sequence[str]) -> str:
    """sklearn's text report over all K classes, so absent ones still show."""
    n_classes = len(class_names)
    return classification_report(
        _as_labels(labels, n_classes),
        _as_labels(preds, n_classes),
        labels=list(range(n_classes)),
        target_names=list(class_names),
        digits=REPORT_DIGITS,
        zero_division=0,
    )


def confusion_matrix_counts(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) int counts, rows actual, columns predicted, all K classes."""
    return confusion_matrix(
        _as_labels(labels, n_classes), _as_labels(preds, n_classes), labels=list(range(n_classes))
    )


def confusion_rows(labels: np.ndarray, preds: np.ndarray, class_names: Sequence[str]) -> list[dict]:
    """``{actual, predicted}`` class names per image: the input DVC's confusion template wants."""
    n_classes = len(class_names)
    labels = _as_labels(labels, n_classes)
    preds = _as_labels(preds, n_classes)
    return [{"actual": class_names[a], "predicted": class_names[p]} for a, p in zip(labels, preds, strict=True)]
