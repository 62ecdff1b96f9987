"""Everything open-set, in one place: how known an image looks, the threshold, its metrics, the final answer.

Evaluate (the ``decision`` column of predictions.csv), the report (sample
titles) and ``signflow predict`` all answer through :func:`decide`, so an image
is "unknown" by the same rule everywhere: the model's own unknown class wins,
or its known-ness (Hendrycks & Gimpel's max softmax over the known classes,
https://arxiv.org/abs/1610.02136) is below the threshold chosen on validation.
The threshold is chosen on validation by the policy ``evaluate.threshold.policy``
names (``signflow.evaluation.threshold``; the default, :func:`choose_threshold`:
the lowest threshold whose open-set accuracy is within
``evaluate.threshold.tolerance_se`` standard errors of the best) and read back at
prediction time (:func:`resolve_threshold`: from evaluate.json, or an ONNX
model's sidecar, which also records the policy: :func:`threshold_policy_from_metrics`).
Metrics: AUROC, FPR at 95% TPR, the ROC points, open-set accuracy, known images
being the positive class throughout. numpy only at import (sklearn inside the
metric functions), so the light prediction path can use this module.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np

from signflow.catalog import UNKNOWN_NAME, flatten, unknown_index

log = logging.getLogger(__name__)

# Share of known images accepted by the fallback threshold and at which the
# open-set FPR is reported (the usual "FPR at 95% TPR").
DEFAULT_TPR = 0.95
# Decimal digits kept in ``tpr * n`` before rounding up: 0.95 * 20 must be 19,
# not 19.000000000000004 (which would demand a 20th accepted image).
_COUNT_DIGITS = 9
# Key the evaluate stage writes its validation-chosen rejection threshold under.
THRESHOLD_KEY = "openset.threshold"
# evaluate.json keys of the policy that chose it (signflow.evaluation.threshold), by their name in the
# sidecar's "threshold_policy": the policy, its setting (evaluate.threshold.<the policy's key>), and the
# shares of known-class val images kept and of held-out val images rejected at the threshold.
POLICY_KEYS: Mapping[str, str] = MappingProxyType({
    "name": "openset.threshold_policy",
    "setting": "openset.threshold_policy_setting",
    "val_known_kept": "openset.val_known_kept",
    "val_heldout_rejected": "openset.val_heldout_rejected",
})
AUTO = "auto"  # --threshold auto: the threshold chosen on validation (evaluate.json, or an ONNX model's sidecar)


def max_softmax_score(probs: np.ndarray, unknown_index: int | None) -> np.ndarray:
    """Known-ness per image: the largest probability among the known classes.

    The unknown column (if the model has one) is dropped *without*
    renormalising, so an image the model confidently calls "unknown" keeps a
    low score instead of having its small known probabilities inflated.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if unknown_index is not None:
        probs = np.delete(probs, unknown_index, axis=1)
    return probs.max(axis=1)


def decide(probs: np.ndarray, class_names: Sequence[str], threshold: float | None) -> list[str]:
    """The answer per row of ``probs`` (N, K): a class name, or "unknown".

    "unknown" when the model's unknown class wins or the known-ness score is
    below ``threshold``; ``None`` (no threshold chosen yet) rejects nothing.
    """
    names = list(class_names)
    probs = np.asarray(probs)
    if len(probs) == 0:
        return []
    winners = probs.argmax(axis=1)
    rejected = winners == unknown_index(names)
    if threshold is not None:
        rejected |= max_softmax_score(probs, unknown_index(names)) < threshold
    return [UNKNOWN_NAME if reject else names[k] for k, reject in zip(winners, rejected, strict=True)]


# ------------------------------------------------------------------ metrics


def _as_scores(scores: np.ndarray, name: str) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{name} contains non-finite values")
    return scores


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
    from sklearn.metrics import roc_auc_score, roc_curve  # heavy: only when metrics are computed

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
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(y, scores, drop_intermediate=True)
    return [
        {"fpr": float(f), "tpr": float(t), "threshold": float(th) if np.isfinite(th) else None}
        for f, t, th in zip(fpr, tpr, thresholds, strict=True)
    ]


def said_unknown(preds: np.ndarray, unknown_index: int | None) -> np.ndarray:
    """Per image: the model's own unknown class won, so the answer is "unknown" at any threshold."""
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
    return np.where(is_known, preds == labels, said_unknown(preds, unknown_index))


def openset_hits(scores: np.ndarray, is_known: np.ndarray, correct: np.ndarray, threshold: float) -> np.ndarray:
    """Per image, right at ``threshold``: a known image accepted with the right class, a held-out one "unknown"."""
    accepted = scores >= threshold
    return np.where(is_known, accepted & correct, ~accepted | correct)


def threshold_at_tpr(known_scores: np.ndarray, target_tpr: float = DEFAULT_TPR) -> float:
    """The highest threshold still accepting ``ceil(target_tpr * n)`` of ``known_scores``.

    The fallback wherever a threshold needs held-out images and there are none.
    """
    needed = max(1, math.ceil(round(target_tpr * len(known_scores), _COUNT_DIGITS)))
    return float(np.sort(known_scores)[::-1][needed - 1])


def candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    """Every threshold that makes a difference on ``scores``, ascending: each distinct score, then reject-all.

    Accepting is ``score >= threshold``, so outcomes change only at observed
    scores; one just above the largest rejects everything.
    """
    scores = _as_scores(scores, "scores")
    return np.r_[np.unique(scores), np.nextafter(scores.max(), np.inf)]


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
        return threshold_at_tpr(scores, DEFAULT_TPR)
    candidates = candidate_thresholds(scores)
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
    return float(openset_hits(scores, is_known, correct, threshold).mean())


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
    hits = openset_hits(scores, is_known, prediction_correct(preds, labels, is_known, unknown_index), threshold)
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
    return float(np.mean(~said_unknown(preds, unknown_index)))


# ------------------------------------------------------------------ at prediction time


def resolve_threshold(value: str, metrics_path: Path, model_threshold: float | None = None) -> float:
    """The rejection threshold: a number in [0, 1], or ``auto`` for the evaluate stage's choice.

    ``auto`` is ``model_threshold`` when the model carries one (an ONNX
    model's sidecar: the evaluate stage's choice when it was exported), else
    read from ``metrics_path``; it falls back to 0 (never reject) with a
    warning when the metrics file or its key is missing, so predict works
    before `dvc repro evaluate`.
    """
    if value.strip().lower() == AUTO:
        if model_threshold is not None:
            return float(model_threshold)
        return _threshold_from_metrics(Path(metrics_path))
    try:
        threshold = float(value)
    except ValueError:
        raise ValueError(f"--threshold must be 'auto' or a number in [0, 1], got {value!r}") from None
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--threshold must lie in [0, 1], got {threshold}")
    return threshold


def _threshold_from_metrics(metrics_path: Path) -> float:
    if not metrics_path.is_file():
        log.warning("%s not found (run `dvc repro evaluate`); threshold 0: nothing rejected", metrics_path)
        return 0.0
    try:
        # flatten: accept the flat key evaluate writes and a nested {"openset": {"threshold"}} alike.
        threshold = flatten(json.loads(metrics_path.read_text())).get(THRESHOLD_KEY)
    except (json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"{metrics_path} is not a JSON object of metrics: {err}") from None
    if threshold is None:
        log.warning("%s has no %s; threshold 0: nothing rejected", metrics_path, THRESHOLD_KEY)
        return 0.0
    log.info("threshold %.4f from %s", threshold, metrics_path)
    return float(threshold)


def threshold_policy_from_metrics(metrics_path: Path) -> dict | None:
    """The policy that chose the evaluate stage's threshold, as the sidecar records it; None without one.

    Keys: ``name`` (``se_rule``...), ``setting`` (its value of
    ``evaluate.threshold.<the policy's key>``), ``val_known_kept`` and
    ``val_heldout_rejected`` (the validation shares at the threshold; None
    without held-out images). None when ``metrics_path`` is missing or predates
    the policies, so an export never fails for want of it.
    """
    if not metrics_path.is_file():
        return None
    metrics = flatten(json.loads(metrics_path.read_text()))
    if metrics.get(POLICY_KEYS["name"]) is None:
        log.warning("%s records no threshold policy (%s): the sidecar's threshold_policy is null",
                    metrics_path, POLICY_KEYS["name"])
        return None
    return {field: metrics.get(key) for field, key in POLICY_KEYS.items()}
