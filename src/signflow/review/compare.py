"""Head against base on the test images, metric by metric: the numbers behind the review's verdicts.

Both revisions' ``metrics/predictions.csv`` are in git, one row per test image.
When both hold the same images (same paths, labels and roles), they are joined
by path and compared **paired**: each image is its own control, so a change
shows up as images that flipped, and the tests see far smaller effects than
two separate accuracies with their own intervals would. When the test sets
differ (the data or the split changed) the comparison is **unpaired** and says
so. The metrics are recomputed from the predictions with the rules
``evaluate`` uses (``signflow.evaluation``), so base and head here equal the
numbers in their ``metrics/evaluate.json``:

- ``test.accuracy``: images of the model's classes (targets and "unknown"),
  argmax right; exact McNemar;
- ``openset.known_accuracy``: target images, the served answer (``decision``)
  right; ``openset.heldout_rejected``: held-out images answered "unknown";
- ``openset.auroc`` (target vs held-out known-ness), ``test.ece`` and
  ``test.macro_f1``: bootstrap, stratified where the metric needs both kinds
  (AUROC and macro F1 by counting, equal to sklearn's, as the bootstrap calls
  them thousands of times);
- per class: each class's accuracy (recall), Bonferroni-corrected across
  classes so a review of five classes does not cry wolf one time in four.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from signflow.catalog import UNKNOWN_NAME
from signflow.config import ReviewConfig
from signflow.data.manifest import ROLE_HELDOUT, ROLE_TARGET, DataError
from signflow.evaluation.metrics import calibration_bins, expected_calibration_error
from signflow.review.stats import (
    MIN_STRATUM_SIZE,
    Comparison,
    corrected_confidence,
    paired_bootstrap,
    paired_proportions,
    unpaired_bootstrap,
    unpaired_proportions,
)

KEY = "path"  # the stable id of a test image: its path in the dataset
SAME_SET_COLUMNS = (KEY, "label", "role")  # equal in both revisions: the same test images
ACCURACY = "test.accuracy"
KNOWN_ACCURACY = "openset.known_accuracy"
HELDOUT_REJECTED = "openset.heldout_rejected"
AUROC = "openset.auroc"
ECE = "test.ece"
MACRO_F1 = "test.macro_f1"


def read_predictions(text: str, origin: str) -> pd.DataFrame:
    """``metrics/predictions.csv`` from its text, checked: the columns the review needs, one row per image.

    DataError (a user error: one line, exit 2) naming the file and what is wrong with it.
    """
    frame = pd.read_csv(io.StringIO(text), dtype={KEY: str, "label": str, "prediction": str, "decision": str})
    needed = {*SAME_SET_COLUMNS, "prediction", "confidence", "known_score", "decision"}
    missing = sorted(needed - set(frame.columns))
    if missing:
        raise DataError(f"{origin}: predictions.csv lacks columns {missing} (re-run `dvc repro evaluate`)")
    duplicated = frame[KEY][frame[KEY].duplicated()]
    if len(duplicated):
        raise DataError(f"{origin}: predictions.csv lists {duplicated.iloc[0]!r} more than once")
    return frame.sort_values(KEY, ignore_index=True)


def same_test_set(base: pd.DataFrame, head: pd.DataFrame) -> bool:
    """True when both revisions scored the same images with the same labels and roles (so pairing is valid)."""
    columns = list(SAME_SET_COLUMNS)
    return len(base) == len(head) and base[columns].reset_index(drop=True).equals(head[columns].reset_index(drop=True))


# ------------------------------------------------------------------ per-image rules


def closed_set_rows(frame: pd.DataFrame) -> np.ndarray:
    """Images of the model's classes (targets and "unknown"): what test.accuracy, ECE and macro F1 cover."""
    return (frame["role"] != ROLE_HELDOUT).to_numpy()


def argmax_right(frame: pd.DataFrame) -> np.ndarray:
    return (frame["prediction"] == frame["label"]).to_numpy()


def known_right(frame: pd.DataFrame) -> np.ndarray:
    """Per target image: accepted with the right class (a rejected known image is wrong), as evaluate counts it."""
    return (frame["decision"] == frame["label"]).to_numpy()


def heldout_rejected(frame: pd.DataFrame) -> np.ndarray:
    return (frame["decision"] == UNKNOWN_NAME).to_numpy()


@dataclass(frozen=True)
class ProportionMetric:
    """A metric that is a share of images: which images count, and which are right."""

    key: str
    rows: Callable[[pd.DataFrame], np.ndarray]
    right: Callable[[pd.DataFrame], np.ndarray]


PROPORTIONS = (
    ProportionMetric(ACCURACY, closed_set_rows, argmax_right),
    ProportionMetric(KNOWN_ACCURACY, lambda f: (f["role"] == ROLE_TARGET).to_numpy(), known_right),
    ProportionMetric(HELDOUT_REJECTED, lambda f: (f["role"] == ROLE_HELDOUT).to_numpy(), heldout_rejected),
)


# ------------------------------------------------------------------ bootstrap metrics on index arrays


def _ece(frame: pd.DataFrame, n_bins: int) -> Callable[[np.ndarray], float]:
    confidence, right = frame["confidence"].to_numpy(dtype=float), argmax_right(frame)
    return lambda idx: expected_calibration_error(calibration_bins(confidence[idx], right[idx], n_bins))


def _macro_f1(frame: pd.DataFrame) -> Callable[[np.ndarray], float]:
    """Macro F1 over the classes in labels or predictions (sklearn's rule, as evaluate's), by counting.

    Counted with ``np.bincount`` rather than ``sklearn.metrics.f1_score``: the bootstrap
    calls it thousands of times, and sklearn's input checks cost ~3 ms a call.
    tests/review/test_compare.py checks the two agree.
    """
    codes, names = pd.factorize(pd.concat([frame["label"], frame["prediction"]], ignore_index=True))
    labels, preds, k = codes[: len(frame)], codes[len(frame):], len(names)

    def value(idx: np.ndarray) -> float:
        truth, guess = labels[idx], preds[idx]
        hits = np.bincount(truth[truth == guess], minlength=k)
        actual, predicted = np.bincount(truth, minlength=k), np.bincount(guess, minlength=k)
        present = (actual + predicted) > 0
        denominator = actual + predicted
        f1 = np.divide(2 * hits, denominator, out=np.zeros(k), where=denominator > 0)
        return float(f1[present].mean())

    return value


def _auroc(frame: pd.DataFrame) -> Callable[[np.ndarray, np.ndarray], float]:
    """AUROC of known (target) against held-out scores as the Mann-Whitney U statistic over n1 * n2.

    The same number as ``roc_auc_score`` (ties count one half) that evaluate reports via
    ``signflow.evaluation.openset.openset_scores``, from one ranking, fast enough for the bootstrap.
    """
    from scipy.stats import rankdata

    scores = frame["known_score"].to_numpy(dtype=float)

    def value(known: np.ndarray, held: np.ndarray) -> float:
        ranks = rankdata(np.concatenate([scores[known], scores[held]]))
        n_known, n_held = len(known), len(held)
        return float((ranks[:n_known].sum() - n_known * (n_known + 1) / 2) / (n_known * n_held))

    return value


def _strata(frame: pd.DataFrame, key: str) -> list[np.ndarray]:
    """Index arrays resampled separately: AUROC needs known and held-out images in every resample."""
    if key == AUROC:
        return [np.flatnonzero(frame["role"] == ROLE_TARGET), np.flatnonzero(frame["role"] == ROLE_HELDOUT)]
    return [np.flatnonzero(closed_set_rows(frame))]


def _bootstrap_statistic(frame: pd.DataFrame, key: str, ece_bins: int) -> Callable[..., float]:
    if key == AUROC:
        return _auroc(frame)
    return _ece(frame, ece_bins) if key == ECE else _macro_f1(frame)


BOOTSTRAPPED = ((AUROC, True), (ECE, False), (MACRO_F1, True))  # (metric, higher is better)


# ------------------------------------------------------------------ the comparison


@dataclass(frozen=True)
class Review:
    """Every comparison of one review: overall metrics, then one per class."""

    paired: bool
    metrics: tuple[Comparison, ...]
    classes: tuple[Comparison, ...]
    class_confidence: float  # the per-class level after the Bonferroni correction
    n_base: int
    n_head: int

    def metric(self, key: str) -> Comparison | None:
        return next((c for c in self.metrics if c.metric == key), None)


def _has_rows(strata: Sequence[np.ndarray]) -> bool:
    """Enough images in every stratum to resample (a tiny split may hold one held-out image, or none)."""
    return all(len(s) >= MIN_STRATUM_SIZE for s in strata)


def _proportion(metric: ProportionMetric, base: pd.DataFrame, head: pd.DataFrame, paired: bool,
                confidence: float) -> Comparison | None:
    base_rows, head_rows = metric.rows(base), metric.rows(head)
    if not base_rows.any() or not head_rows.any():
        return None  # e.g. no held-out images: evaluate reports None for it too
    base_right, head_right = metric.right(base)[base_rows], metric.right(head)[head_rows]
    compare = paired_proportions if paired else unpaired_proportions
    return compare(metric.key, base_right, head_right, confidence)


def _bootstrapped(key: str, higher_is_better: bool, base: pd.DataFrame, head: pd.DataFrame, paired: bool,
                  cfg: ReviewConfig, ece_bins: int) -> Comparison | None:
    base_strata, head_strata = _strata(base, key), _strata(head, key)
    if not _has_rows(base_strata) or not _has_rows(head_strata):
        return None
    options = {"confidence": cfg.confidence, "resamples": cfg.bootstrap_resamples, "seed": cfg.seed,
               "higher_is_better": higher_is_better}
    base_value, head_value = _bootstrap_statistic(base, key, ece_bins), _bootstrap_statistic(head, key, ece_bins)
    if paired:
        return paired_bootstrap(key, base_value, head_value, head_strata, **options)
    return unpaired_bootstrap(key, base_value, head_value, base_strata, head_strata, **options)


def per_class(base: pd.DataFrame, head: pd.DataFrame, paired: bool, confidence: float) -> list[Comparison]:
    """Each class's accuracy (recall on its closed-set images), base against head, at ``confidence``."""
    labels = sorted(set(base.loc[closed_set_rows(base), "label"]) | set(head.loc[closed_set_rows(head), "label"]))
    compare = paired_proportions if paired else unpaired_proportions
    found = []
    for label in labels:
        base_rows = closed_set_rows(base) & (base["label"] == label).to_numpy()
        head_rows = closed_set_rows(head) & (head["label"] == label).to_numpy()
        if base_rows.any() and head_rows.any():
            found.append(compare(label, argmax_right(base)[base_rows], argmax_right(head)[head_rows], confidence))
    return found


def compare_predictions(base: pd.DataFrame, head: pd.DataFrame, cfg: ReviewConfig, ece_bins: int) -> Review:
    """Head against base: paired when both scored the same images, unpaired otherwise."""
    paired = same_test_set(base, head)
    metrics = [_proportion(m, base, head, paired, cfg.confidence) for m in PROPORTIONS]
    metrics += [_bootstrapped(key, up, base, head, paired, cfg, ece_bins) for key, up in BOOTSTRAPPED]
    n_classes = max(1, len(set(base["label"]) | set(head["label"])))
    class_confidence = corrected_confidence(cfg.confidence, n_classes)
    return Review(
        paired=paired,
        metrics=tuple(m for m in metrics if m is not None),
        classes=tuple(per_class(base, head, paired, class_confidence)),
        class_confidence=class_confidence,
        n_base=len(base),
        n_head=len(head),
    )


def joined_flips_frame(base: pd.DataFrame, head: pd.DataFrame) -> pd.DataFrame:
    """The closed-set images of a paired review, base's and head's answers side by side (the flip gallery's input)."""
    rows = closed_set_rows(head)
    return pd.DataFrame({
        KEY: head[KEY][rows].to_numpy(),
        "label": head["label"][rows].to_numpy(),
        "role": head["role"][rows].to_numpy(),
        "base_prediction": base["prediction"][rows].to_numpy(),
        "base_confidence": base["confidence"][rows].to_numpy(),
        "head_prediction": head["prediction"][rows].to_numpy(),
        "head_confidence": head["confidence"][rows].to_numpy(),
    })
