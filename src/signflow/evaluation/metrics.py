"""Closed-set and open-set evaluation metrics.

Pure functions over numpy arrays (no torch, no I/O): the evaluate stage passes
labels, softmax probabilities and scores in and writes what comes back. Every
public function returns plain Python floats/ints/lists/dicts (or, for the
confusion counts, an integer array) so results go straight to JSON and MLflow;
an undefined value is ``None``, never NaN.

Two evaluations:

* closed set: the known test images only, scored against the model's K classes;
* open set: known test images against held-out sign types the model never saw.
  The "known-ness" score is the maximum softmax probability over the known
  classes (Hendrycks & Gimpel 2017, https://arxiv.org/abs/1610.02136); known
  images are the positive class throughout.
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
    roc_auc_score,
    roc_curve,
)

# Equal-width confidence bins for ECE and the reliability diagram; 15 follows
# Guo et al. 2017 (https://arxiv.org/abs/1706.04599), so numbers compare.
ECE_BINS = 15
# Share of known images accepted by the fallback threshold and at which the
# open-set FPR is reported (the usual "FPR at 95% TPR").
DEFAULT_TPR = 0.95
# Decimal digits kept in ``tpr * n`` before rounding up: 0.95 * 20 must be 19,
# not 19.000000000000004 (which would demand a 20th accepted image).
_COUNT_DIGITS = 9
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


def _as_scores(scores: np.ndarray, name: str) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{name} contains non-finite values")
    return scores


# ---------------------------------------------------------------- closed set


def reliability_bins(labels: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> list[dict]:
    """Top-label confidence vs accuracy per equal-width bin over [0, 1].

    Bins are right-closed, ``(lower, upper]`` (the first also holds 0), as in
    Guo et al. Every bin is returned so the diagram keeps its x axis; an empty
    bin has ``count`` 0 and ``confidence``/``accuracy`` ``None``. This is the
    single source for ECE, so the plot and the number cannot disagree.
    """
    labels, probs = _as_probs(labels, probs)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
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


# ------------------------------------------------------------------ open set


def _openset_labels(known_scores: np.ndarray, heldout_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    known = _as_scores(known_scores, "known_scores")
    heldout = _as_scores(heldout_scores, "heldout_scores")
    y = np.r_[np.ones(len(known), dtype=np.int64), np.zeros(len(heldout), dtype=np.int64)]
    return y, np.r_[known, heldout]


def fpr_at_tpr(fpr: np.ndarray, tpr: np.ndarray, target_tpr: float = DEFAULT_TPR) -> float:
    """FPR where the ROC curve first reaches ``target_tpr``, linearly interpolated.

    Convention: the ROC is the piecewise-linear path through the points in
    threshold order (``drop_intermediate=False``). A point on a segment is the
    operating point of picking randomly between the two thresholds (what a tie
    of known and held-out scores does), so it is achievable; taking the next
    ROC point instead would overstate FPR whenever TPR jumps past the target.
    Among points that reach the target exactly, the first (lowest FPR) wins.
    """
    j = int(np.argmax(tpr >= target_tpr))  # tpr ends at 1, so some point qualifies
    if j == 0 or tpr[j] == target_tpr:
        return float(fpr[j])
    share = (target_tpr - tpr[j - 1]) / (tpr[j] - tpr[j - 1])
    return float(fpr[j - 1] + share * (fpr[j] - fpr[j - 1]))


def openset_scores(known_scores: np.ndarray, heldout_scores: np.ndarray) -> dict:
    """AUROC and FPR@95%TPR of known (positive) vs held-out images.

    Higher score = more known. ``fpr_at_95_tpr`` is the share of held-out images
    accepted at the threshold accepting 95% of known ones (see
    :func:`fpr_at_tpr` for the interpolation). With no known or no held-out
    images both are undefined: they are ``None`` and ``reason`` says why (the
    key is present only then).
    """
    y, scores = _openset_labels(known_scores, heldout_scores)
    n_known, n_heldout = int(y.sum()), int(len(y) - y.sum())
    if n_known == 0 or n_heldout == 0:
        return {
            "auroc": None,
            "fpr_at_95_tpr": None,
            "n_known": n_known,
            "n_heldout": n_heldout,
            "reason": "no known images" if n_known == 0 else "no held-out images",
        }
    fpr, tpr, _ = roc_curve(y, scores, drop_intermediate=False)
    return {
        "auroc": float(roc_auc_score(y, scores)),
        "fpr_at_95_tpr": fpr_at_tpr(fpr, tpr, DEFAULT_TPR),
        "n_known": n_known,
        "n_heldout": n_heldout,
    }


def roc_points(known_scores: np.ndarray, heldout_scores: np.ndarray) -> list[dict]:
    """``{fpr, tpr, threshold}`` rows for DVC's ROC plot; ``[]`` if a side is empty.

    Collinear points are dropped (the curve is unchanged). The first row is the
    accept-nothing point (0, 0); sklearn gives it threshold +inf, which JSON
    cannot hold, so it is ``None``.
    """
    y, scores = _openset_labels(known_scores, heldout_scores)
    if y.all() or not y.any():
        return []
    fpr, tpr, thresholds = roc_curve(y, scores, drop_intermediate=True)
    return [
        {"fpr": float(f), "tpr": float(t), "threshold": float(th) if np.isfinite(th) else None}
        for f, t, th in zip(fpr, tpr, thresholds, strict=True)
    ]


def _said_unknown(preds: np.ndarray, unknown_index: int | None) -> np.ndarray:
    # A model without an unknown class can never say "unknown" by itself.
    if unknown_index is None:
        return np.zeros(len(preds), dtype=bool)
    return preds == unknown_index


def prediction_correct(
    preds: np.ndarray, labels: np.ndarray, is_known: np.ndarray, unknown_index: int | None
) -> np.ndarray:
    """Per-image correctness before any threshold (the ``val_correct`` input).

    A known image is correct iff its predicted class is right. A held-out image
    is correct iff the model predicted its unknown class (never, without one);
    its label is ignored. One definition shared by threshold choice and
    open-set accuracy.
    """
    preds, labels, is_known = np.asarray(preds), np.asarray(labels), np.asarray(is_known, dtype=bool)
    if not len(preds) == len(labels) == len(is_known):
        raise ValueError("preds, labels and is_known differ in length")
    return np.where(is_known, preds == labels, _said_unknown(preds, unknown_index))


def _openset_hits(scores: np.ndarray, is_known: np.ndarray, correct: np.ndarray, threshold: float) -> np.ndarray:
    # Known: accepted and right. Held-out: rejected, or already called unknown.
    accepted = scores >= threshold
    return np.where(is_known, accepted & correct, ~accepted | correct)


def _threshold_at_tpr(known_scores: np.ndarray, target_tpr: float) -> float:
    # The highest threshold still accepting ceil(target * n) known images.
    needed = max(1, math.ceil(round(target_tpr * len(known_scores), _COUNT_DIGITS)))
    return float(np.sort(known_scores)[::-1][needed - 1])


def choose_threshold(
    val_scores: np.ndarray, val_is_known: np.ndarray, val_correct: np.ndarray, *, tolerance_se: float
) -> float:
    """Rejection threshold picked on the VALIDATION split only.

    An image is accepted when ``score >= threshold``. Open-set accuracy on val
    (see :func:`openset_accuracy`; ``val_correct`` from
    :func:`prediction_correct`) only changes at observed scores, so the
    candidates are the distinct val scores plus one just above the largest
    (reject all). The threshold is the LOWEST candidate whose val accuracy is
    within ``tolerance_se`` binomial standard errors of the best (the
    one-standard-error rule of Breiman et al. 1984, ESL 7.10): thresholds
    that differ by a few val images are not told apart by that split, and of
    those the one rejecting least loses least known-class recall when real
    inputs are less confident than validation ones (synthetic to real).
    ``tolerance_se=0`` is the plain maximum, ties to the lowest. Without
    held-out val images there is nothing to trade against, so the threshold
    accepts ``DEFAULT_TPR`` of the known val images instead (the highest score
    keeping that many).
    """
    scores = _as_scores(val_scores, "val_scores")
    is_known = np.asarray(val_is_known, dtype=bool)
    correct = np.asarray(val_correct, dtype=bool)
    if not len(scores) == len(is_known) == len(correct):
        raise ValueError("val_scores, val_is_known and val_correct differ in length")
    if len(scores) == 0:
        raise ValueError("cannot choose a threshold on an empty validation set")
    if not tolerance_se >= 0:
        raise ValueError(f"tolerance_se must be >= 0, got {tolerance_se}")
    if is_known.all():
        return _threshold_at_tpr(scores, DEFAULT_TPR)
    candidates = np.r_[np.unique(scores), np.nextafter(scores.max(), np.inf)]
    # Vectorised over candidates: counts of each kind of hit via sorted scores.
    known_right = np.sort(scores[is_known & correct])
    heldout_missed = np.sort(scores[~is_known & ~correct])  # right only if rejected
    hits = (
        len(known_right)
        - np.searchsorted(known_right, candidates, side="left")
        + np.searchsorted(heldout_missed, candidates, side="left")
        + int((~is_known & correct).sum())
    )
    # In image counts, so the comparison is exact: n * SE = sqrt(n p (1 - p)).
    best = int(hits.max())
    slack = tolerance_se * math.sqrt(best * (len(scores) - best) / len(scores))
    return float(candidates[int(np.argmax(hits >= best - slack))])  # argmax: first, i.e. lowest


def openset_accuracy(
    scores: np.ndarray,
    preds: np.ndarray,
    labels: np.ndarray,
    is_known: np.ndarray,
    threshold: float,
    unknown_index: int | None,
) -> float:
    """Accuracy when images scoring below ``threshold`` are called "unknown".

    A known image is correct iff accepted (``score >= threshold``) with the
    right class; a held-out image iff it ends up "unknown": rejected, or given
    the model's unknown class. Labels of held-out images are ignored.
    """
    scores = _as_scores(scores, "scores")
    is_known = np.asarray(is_known, dtype=bool)
    if len(scores) == 0:
        raise ValueError("cannot compute open-set accuracy on zero images")
    correct = prediction_correct(preds, labels, is_known, unknown_index)
    return float(_openset_hits(scores, is_known, correct, threshold).mean())


def openset_outcomes(
    scores: np.ndarray,
    preds: np.ndarray,
    labels: np.ndarray,
    is_known: np.ndarray,
    threshold: float,
    unknown_index: int | None,
) -> dict:
    """The two sides of open-set accuracy at ``threshold``, what a user of the model meets.

    ``known_accuracy``: share of known images accepted with the right class (a
    rejected known image counts as wrong). ``heldout_rejected``: share of
    held-out images that end up "unknown". ``None`` for a side with no images.
    """
    scores = _as_scores(scores, "scores")
    is_known = np.asarray(is_known, dtype=bool)
    hits = _openset_hits(scores, is_known, prediction_correct(preds, labels, is_known, unknown_index), threshold)
    return {
        "known_accuracy": float(hits[is_known].mean()) if is_known.any() else None,
        "heldout_rejected": float(hits[~is_known].mean()) if (~is_known).any() else None,
    }


def share_assigned_known(heldout_preds: np.ndarray, unknown_index: int | None) -> float | None:
    """Share of held-out images the model files under a known class.

    Without an unknown class every prediction is a known class, so this is 1.0
    by construction; it is computed the same way so both model kinds report
    the same key. ``None`` when there are no held-out images.
    """
    preds = np.asarray(heldout_preds).ravel()
    if len(preds) == 0:
        return None
    return float(np.mean(~_said_unknown(preds, unknown_index)))
