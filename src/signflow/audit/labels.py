"""Suspect labels by confident learning: images whose given label their pixels contradict.

Full training per fold would cost minutes; the frozen backbone's pooled
features (computed once by the caller, ``signflow.model.features``) with a
logistic regression cost seconds, and give what confident learning needs:
out-of-fold predicted probabilities.

1. **Out of fold**: standardised features, a multinomial logistic regression
   (scikit-learn), ``StratifiedGroupKFold`` grouped by track, so no frame of a
   sign sits in the training folds of the model that predicts it (its
   siblings would vouch for whatever label it has).
2. **Track consensus**: each image's probabilities are the mean over its
   track's frames (all in the same held-out fold, so still out of fold).
   Frames of one track show one physical sign, hence one true class: a hard,
   tiny or blurred frame borrows its siblings' evidence and stops looking like
   a label error, while a frame whose label disagrees with its own track
   stands out. An image without a track (a folder without
   ``data.folder.track_pattern``) is its own track: nothing changes.
3. **cleanlab** (``find_label_issues``) lists every image whose track's
   prediction is another class than its label (``predicted_neq_given``),
   ranked by self-confidence with ``adjust_pred_probs``: each class's
   probabilities are first lowered by the class's mean self-confidence (its
   confident-learning threshold), so a class that is hard throughout (the
   mixed "unknown" class, whose road-works signs look like give-way) does
   not crowd the top. ``num_label_issues`` estimates from the confident
   joint how many labels are wrong. The list is for review from the top: its
   head holds the label errors, its tail the hard tracks the linear probe
   gets wrong. cleanlab's default filter (``prune_by_noise_rate``) gives a
   precise but short list here: on planted flips it missed up to half of
   them (docs/audit.md has the figures).

The held-out role has no trained label and is left out; ``target`` and
``unknown`` images are checked.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from cleanlab.count import num_label_issues
from cleanlab.filter import find_label_issues
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from signflow.data.manifest import ROLE_TARGET, ROLE_UNKNOWN

log = logging.getLogger(__name__)

LABELLED_ROLES = (ROLE_TARGET, ROLE_UNKNOWN)
# lbfgs iterations: on standardised pooled features it converges in well under 100 (measured: 12-46); the cap
# only bounds a pathological input.
MAX_ITER = 1000
MIN_CLASSES, MIN_GROUPS = 2, 2  # below either, there is nothing to cross-validate
SUSPECT_COLUMNS = ["split", "path", "label", "suggested", "suggested_probability", "label_probability"]
COUNT_COLUMNS = ["split", "class", "images", "suspects"]
PREFIX = "labels"
DIGITS = 4  # probabilities in the table and CSV


@dataclass(frozen=True)
class LabelAudit:
    """What the label check found: the ranked suspects, counts per split and class, and how far to trust it."""

    suspects: pd.DataFrame  # :data:`SUSPECT_COLUMNS` + ``row`` (position in its split's arrays), most suspect first
    counts: pd.DataFrame  # :data:`COUNT_COLUMNS`: labelled images and suspects per split and class
    images: int  # labelled images checked (0: the check could not run, ``skipped`` says why)
    accuracy: float | None  # out-of-fold accuracy of the per-image classifier
    estimated_errors: int = 0  # confident learning's estimate of the wrong labels among them
    skipped: str = ""


def labelled(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows with a trained label (``target`` and ``unknown`` roles)."""
    return frame[frame["role"].isin(LABELLED_ROLES)]


def track_groups(frame: pd.DataFrame) -> np.ndarray:
    """A group id per row: its class id and track (GTSRB numbers tracks per class), as the split groups them."""
    keys = frame["class_id"].astype(str) + "/" + frame["track"].astype(str)
    return pd.factorize(keys)[0]


def out_of_fold_probs(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int, c: float,
                      num_classes: int) -> np.ndarray:
    """(N, num_classes) probabilities, each row from a model that never saw the row's group.

    ``StratifiedGroupKFold`` without shuffling: deterministic, so no seed. A
    class missing from a fold's training rows gets probability 0 there.
    """
    folds = min(folds, len(np.unique(groups)))
    probs = np.zeros((len(labels), num_classes))
    for k, (train, held) in enumerate(StratifiedGroupKFold(n_splits=folds).split(features, labels, groups)):
        present = np.unique(labels[train])
        if len(present) < MIN_CLASSES:  # one class to learn: it is the only answer
            probs[np.ix_(held, present)] = 1.0
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=MAX_ITER))
        model.fit(features[train], labels[train])
        probs[np.ix_(held, model.classes_)] = model.predict_proba(features[held])
        log.debug("label check: fold %d/%d fitted on %d images", k + 1, folds, len(train))
    return probs


def track_consensus(probs: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each row's probabilities replaced by the mean over the rows of its group (its track's frames)."""
    sums = np.zeros((groups.max() + 1, probs.shape[1])) if len(groups) else np.zeros((0, probs.shape[1]))
    np.add.at(sums, groups, probs)
    return sums[groups] / np.bincount(groups)[groups, None]


def _present(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels renumbered 0..K'-1 over the classes present, and those classes' columns.

    A class absent from ``labels`` has zero columns (no model trained on it):
    cleanlab sees only the classes it can count.
    """
    present, compact = np.unique(labels, return_inverse=True)
    return compact, probs[:, present]


def rank_label_issues(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Rows whose most probable class is not their label, most suspect first (cleanlab's class-adjusted
    self-confidence: the given label's probability after each class's mean self-confidence is subtracted)."""
    compact, columns = _present(labels, probs)
    return np.asarray(find_label_issues(compact, columns, filter_by="predicted_neq_given",
                                        return_indices_ranked_by="self_confidence",
                                        rank_by_kwargs={"adjust_pred_probs": True}))


def estimate_label_errors(labels: np.ndarray, probs: np.ndarray) -> int:
    """Confident learning's estimate of how many labels are wrong (cleanlab's calibrated confident joint)."""
    return int(num_label_issues(*_present(labels, probs)))


def _counts(rows: pd.DataFrame, suspects: pd.DataFrame, splits: Sequence[str], class_names: Sequence[str]
            ) -> pd.DataFrame:
    index = pd.MultiIndex.from_product([list(splits), list(class_names)], names=["split", "class"])
    images = rows.groupby(["split", "label"]).size().rename_axis(["split", "class"]).reindex(index, fill_value=0)
    flagged = suspects.groupby(["split", "label"]).size().rename_axis(["split", "class"]).reindex(index, fill_value=0)
    return pd.DataFrame({"images": images, "suspects": flagged}).reset_index()[COUNT_COLUMNS]


def audit_labels(frame: pd.DataFrame, features: np.ndarray, class_names: Sequence[str], splits: Sequence[str],
                 folds: int, c: float) -> LabelAudit:
    """Rank the labelled rows of ``frame`` by how much their features contradict their label.

    ``frame``: the labelled rows of every split (``split``, ``row``, ``path``,
    ``label``, ``label_idx``, ``class_id``, ``track``), ``features`` row for
    row; ``class_names[label_idx]`` is each row's given label.
    """
    labels = frame["label_idx"].to_numpy(dtype=np.int64)
    frame = frame.reset_index(drop=True).assign(label=np.asarray(class_names)[labels])  # the label as trained
    groups = track_groups(frame)
    empty = pd.DataFrame(columns=[*SUSPECT_COLUMNS, "row"])
    reason = _why_not(labels, groups)
    if reason:
        log.warning("label check skipped: %s", reason)
        return LabelAudit(empty, _counts(frame, empty, splits, class_names), 0, None, skipped=reason)
    probs = out_of_fold_probs(features, labels, groups, folds, c, len(class_names))
    accuracy = float((probs.argmax(1) == labels).mean())
    consensus = track_consensus(probs, groups)
    ranked = rank_label_issues(labels, consensus)
    suggested = consensus[ranked].argmax(1)
    suspects = pd.DataFrame({
        "split": frame["split"].to_numpy()[ranked],
        "path": frame["path"].to_numpy()[ranked],
        "label": frame["label"].to_numpy()[ranked],
        "suggested": np.asarray(class_names)[suggested],
        "suggested_probability": consensus[ranked, suggested].round(DIGITS),
        "label_probability": consensus[ranked, labels[ranked]].round(DIGITS),
        "row": frame["row"].to_numpy()[ranked],
    })
    estimated = estimate_label_errors(labels, consensus)
    log.info("label check: %d of %d labelled images contradict their track's prediction, about %d label errors "
             "estimated (out-of-fold accuracy %.4f)", len(suspects), len(frame), estimated, accuracy)
    return LabelAudit(suspects, _counts(frame, suspects, splits, class_names), len(frame), accuracy, estimated)


def _why_not(labels: np.ndarray, groups: np.ndarray) -> str:
    """Why the rows cannot be cross-validated ("" when they can)."""
    if len(np.unique(labels)) < MIN_CLASSES:
        return f"fewer than {MIN_CLASSES} labelled classes"
    if len(np.unique(groups)) < MIN_GROUPS:
        return f"fewer than {MIN_GROUPS} tracks to cross-validate over"
    return ""


def label_metrics(audit: LabelAudit, splits: Sequence[str], class_names: Sequence[str]) -> dict[str, float | int]:
    """Flat keys: ``labels.images``, ``labels.suspects``, per split (``labels.suspects.train``) and class
    (``labels.suspects.class.<name>``); when the check ran, ``labels.estimated_errors`` and
    ``labels.oof_accuracy``."""
    by_split = audit.counts.groupby("split")["suspects"].sum()
    by_class = audit.counts.groupby("class")["suspects"].sum()
    metrics: dict[str, float | int] = {f"{PREFIX}.images": audit.images, f"{PREFIX}.suspects": len(audit.suspects)}
    metrics |= {f"{PREFIX}.suspects.{s}": int(by_split.get(s, 0)) for s in splits}
    metrics |= {f"{PREFIX}.suspects.class.{name}": int(by_class.get(name, 0)) for name in class_names}
    if audit.accuracy is not None:
        metrics[f"{PREFIX}.estimated_errors"] = audit.estimated_errors
        metrics[f"{PREFIX}.oof_accuracy"] = round(audit.accuracy, DIGITS)
    return metrics
