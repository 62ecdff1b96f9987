"""The evaluate stage's library: closed-set and open-set results for one model.

Closed set: every test image with a trainable label (the targets, plus the
trained "unknown" class when enabled). Open set: target images against the
held-out sign types the model never saw, scored by max softmax over the known
classes; the rejection threshold is chosen on validation, never on test, by the
policy ``evaluate.threshold.policy`` names (``signflow.evaluation.threshold``),
and the trade-off every threshold offers there is written beside it. When
the data has an official test set (GTSRB's), its closed-set metrics are
reported too, as ``official_test.*``, comparable with published results.
Accuracy and rejection by slice of the test split (sign size, position in its
track, data source) are ``slice.*`` (``signflow.evaluation.slices``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from signflow.catalog import UNKNOWN_NAME
from signflow.config import EvaluateConfig, ThresholdConfig
from signflow.data.manifest import ROLE_HELDOUT, ROLE_TARGET
from signflow.evaluation.metrics import (
    CONFIDENCE_LEVEL,
    classification_metrics,
    classification_report_text,
    confusion_rows,
    expected_calibration_error,
    per_class_table,
    reliability_bins,
    wilson_interval,
)
from signflow.evaluation.openset import (
    POLICY_KEYS,
    decide,
    max_softmax_score,
    openset_accuracy,
    openset_outcomes,
    openset_scores,
    roc_points,
    share_assigned_known,
)
from signflow.evaluation.slices import SLICE_PREFIX, slice_metrics
from signflow.evaluation.threshold import OpenSetSplit, choose_all, outcomes_at, tradeoff_curve
from signflow.model.calibration import softmax
from signflow.model.inference import LoadedModel, predict_logits

ROUND_DIGITS = 6  # stable, diff-friendly numbers in metrics files
OPENSET_PREFIX = "openset."  # evaluate.json's open-set keys
PREDICTION_COLUMNS = ["path", "label", "prediction", "confidence", "known_score", "decision", "role"]


@dataclass(frozen=True)
class Scored:
    """One split's manifest with the model's outputs."""

    frame: pd.DataFrame
    probs: np.ndarray  # calibrated: softmax(logits / temperature)
    scores: np.ndarray  # known-ness: max calibrated softmax over known classes
    raw_probs: np.ndarray  # softmax(logits), before calibration: ECE before/after

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    def mask(self, role: str) -> np.ndarray:
        return (self.frame["role"] == role).to_numpy()

    @property
    def labelled(self) -> np.ndarray:
        return (self.frame["label_idx"] >= 0).to_numpy()


@dataclass(frozen=True)
class OpenSetResult:
    metrics: dict[str, Any]  # evaluate.json's openset.* keys, without the prefix
    tradeoff: pd.DataFrame  # threshold.tradeoff_curve on validation


@dataclass(frozen=True)
class EvaluationResult:
    metrics: dict[str, Any]
    per_class: pd.DataFrame
    confusion: pd.DataFrame
    predictions: pd.DataFrame
    roc: pd.DataFrame
    reliability: pd.DataFrame
    tradeoff: pd.DataFrame  # validation: known kept vs held-out rejected per threshold, each policy's row named
    report_text: str


def score_split(loaded: LoadedModel, frame: pd.DataFrame, images: np.ndarray, batch_size: int) -> Scored:
    logits = predict_logits(loaded, images, batch_size)  # a memory map stays one: batches are copied
    probs = softmax(logits, loaded.temperature)
    return Scored(frame.reset_index(drop=True), probs, max_softmax_score(probs, loaded.unknown_index), softmax(logits))


def openset_rows(s: Scored) -> np.ndarray:
    """The rows of the open-set evaluation: targets and held-out images (the trained "unknown" ones are not)."""
    return s.mask(ROLE_TARGET) | s.mask(ROLE_HELDOUT)


def _openset_view(s: Scored) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Targets vs held-out rows: scores, is_known, preds, labels."""
    rows = openset_rows(s)
    return s.scores[rows], s.mask(ROLE_TARGET)[rows], s.preds[rows], s.frame["label_idx"].to_numpy()[rows]


def openset_split(s: Scored, unknown_index: int | None) -> OpenSetSplit:
    """The :func:`openset_rows` of ``s`` as the threshold policies see them."""
    scores, is_known, preds, labels = _openset_view(s)
    return OpenSetSplit.from_predictions(scores, preds, labels, is_known, unknown_index)


def open_set(val: Scored, test: Scored, unknown_index: int | None, cfg: ThresholdConfig) -> OpenSetResult:
    """AUROC, FPR@95%TPR, share of held-out called known, open-set outcomes at the val threshold; the trade-off."""
    v_split, t_split = openset_split(val, unknown_index), openset_split(test, unknown_index)
    choices = choose_all(cfg, v_split)
    chosen = choices[cfg.policy]
    threshold = chosen.threshold
    t_scores, t_known, t_preds, t_labels = _openset_view(test)
    result = openset_scores(t_scores[t_known], t_scores[~t_known])
    outcomes = openset_outcomes(t_scores, t_preds, t_labels, t_known, threshold, unknown_index)
    metrics = {
        "auroc": result["auroc"],
        "fpr_at_95_tpr": result["fpr_at_95_tpr"],
        "n_known": result["n_known"],
        "n_heldout": result["n_heldout"],
        "heldout_assigned_known": share_assigned_known(t_preds[~t_known], unknown_index),
        "threshold": threshold,
        "accuracy": openset_accuracy(t_scores, t_preds, t_labels, t_known, threshold, unknown_index),
        **outcomes,
        "known_kept": outcomes_at(t_split, threshold)["known_kept"],
        # The policy as the sidecar records it (openset.POLICY_KEYS names its keys).
        **{POLICY_KEYS[field].removeprefix(OPENSET_PREFIX): value for field, value in chosen.record().items()},
    }
    return OpenSetResult(metrics, tradeoff_curve(v_split, choices))


def _flat(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}.{k}": round(v, ROUND_DIGITS) if isinstance(v, float) else v for k, v in values.items()
            if v is None or isinstance(v, (int, float, str))}


def _accuracy_interval(labels: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    """The 95% Wilson interval of the accuracy: how far one run's number may be from the model's true rate."""
    low, high = wilson_interval(int((preds == labels).sum()), len(labels), CONFIDENCE_LEVEL)
    return {"accuracy_ci_low": low, "accuracy_ci_high": high}


def official_test_metrics(official: Scored, class_names: list[str], ece_bins: int) -> dict[str, Any]:
    """Closed-set metrics of the official test set's labelled rows (held-out rows are left out)."""
    rows = official.labelled
    labels, probs = official.frame["label_idx"].to_numpy()[rows], official.probs[rows]
    closed = classification_metrics(labels, probs, class_names, ece_bins)
    return _flat("official_test", {**{k: closed[k] for k in ("accuracy", "macro_f1", "n")},
                                   **_accuracy_interval(labels, probs.argmax(axis=1))})


def split_slices(split: Scored, decisions: list[str], cfg: EvaluateConfig) -> dict[str, Any]:
    """evaluate.json's ``slice.*`` keys: right classes and "unknown" answers (``decisions``) of ``split``'s images."""
    correct = split.preds == split.frame["label_idx"].to_numpy()
    rejected = np.asarray(decisions, dtype=object) == UNKNOWN_NAME
    return _flat(SLICE_PREFIX, slice_metrics(split.frame, correct, rejected, cfg.slices.size_bins))


def evaluate(
    loaded: LoadedModel, val: Scored, test: Scored, cfg: EvaluateConfig, official: Scored | None = None
) -> EvaluationResult:
    """Everything the evaluate stage writes, computed from scored val and test splits (and the official test set)."""
    names = loaded.class_names
    mask = test.labelled
    labels, probs = test.frame["label_idx"].to_numpy()[mask], test.probs[mask]
    preds = probs.argmax(axis=1)
    closed = classification_metrics(labels, probs, names, cfg.ece_bins)
    closed.update(_accuracy_interval(labels, preds))
    raw_bins = reliability_bins(labels, test.raw_probs[mask], cfg.ece_bins)
    closed["ece_uncalibrated"] = expected_calibration_error(raw_bins)
    closed["temperature"] = loaded.temperature
    val_labels = val.frame["label_idx"].to_numpy()[val.labelled]
    val_closed = classification_metrics(val_labels, val.probs[val.labelled], names, cfg.ece_bins)
    opened = open_set(val, test, loaded.unknown_index, cfg.threshold)
    t_scores, t_known, _, _ = _openset_view(test)
    roc_rows = roc_points(t_scores[t_known], t_scores[~t_known])
    predictions = test.frame.assign(
        prediction=[names[p] for p in test.preds],
        confidence=test.probs.max(axis=1).round(ROUND_DIGITS),
        known_score=test.scores.round(ROUND_DIGITS),
        decision=decide(test.probs, names, opened.metrics["threshold"]),
    )[PREDICTION_COLUMNS]
    return EvaluationResult(
        metrics={**_flat("test", closed), **_flat("val", {"accuracy": val_closed["accuracy"]}),
                 **_flat(OPENSET_PREFIX.rstrip("."), opened.metrics),
                 **(official_test_metrics(official, names, cfg.ece_bins) if official is not None else {}),
                 **split_slices(test, predictions["decision"].tolist(), cfg)},
        per_class=pd.DataFrame(per_class_table(labels, preds, names)).round(ROUND_DIGITS),
        confusion=pd.DataFrame(confusion_rows(labels, preds, names)),
        predictions=predictions,
        roc=pd.DataFrame(roc_rows, columns=["fpr", "tpr", "threshold"]).round(ROUND_DIGITS),
        reliability=pd.DataFrame(reliability_bins(labels, probs, cfg.ece_bins)).round(ROUND_DIGITS),
        tradeoff=opened.tradeoff.round(ROUND_DIGITS),
        report_text=classification_report_text(labels, preds, names),
    )
