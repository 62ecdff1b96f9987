"""The label check: folds grouped by track, track consensus, cleanlab's ranking, counts and metric keys."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from signflow.audit.labels import (
    audit_labels,
    estimate_label_errors,
    label_metrics,
    labelled,
    out_of_fold_probs,
    rank_label_issues,
    track_consensus,
    track_groups,
)
from signflow.data.manifest import ROLE_HELDOUT, ROLE_TARGET, ROLE_UNKNOWN

CLASSES = ["a", "b", "unknown"]
SPLITS = ["train", "val", "test"]
C = 0.003  # params.yaml audit.logistic_c


def test_folds_never_train_on_the_predicted_track() -> None:
    """Features that only identify the track carry no class: grouped folds must leave the classifier at chance."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(60), 4)  # 60 tracks of 4 frames
    labels = np.repeat(rng.integers(0, 2, 60), 4)  # one random class per track
    features = np.eye(60)[groups] + rng.normal(0, 0.01, (240, 60))
    grouped = out_of_fold_probs(features, labels, groups, 5, 1.0, 2)
    leaky = out_of_fold_probs(features, labels, np.arange(240), 5, 1.0, 2)  # every frame its own group
    assert np.allclose(grouped.sum(1), 1.0)
    assert (grouped.argmax(1) == labels).mean() < 0.7  # chance: 0.5
    assert (leaky.argmax(1) == labels).mean() > 0.95  # siblings vouch: the leak the grouping prevents


def test_a_class_missing_from_a_fold_gets_probability_zero() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2])  # class 2: one image, one track
    groups = np.arange(9)
    features = np.eye(9)
    probs = out_of_fold_probs(features, labels, groups, 3, 1.0, 4)
    assert probs.shape == (9, 4) and np.allclose(probs.sum(1), 1.0)
    assert probs[8, 2] == 0.0 and (probs[:, 3] == 0).all()  # class 3 never occurs


def test_track_consensus_averages_a_track_and_leaves_single_images_alone() -> None:
    probs = np.array([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9], [0.3, 0.7]])
    consensus = track_consensus(probs, np.array([0, 0, 1, 2]))
    assert np.allclose(consensus, [[0.7, 0.3], [0.7, 0.3], [0.1, 0.9], [0.3, 0.7]])
    frame = pd.DataFrame({"class_id": ["12", "12", "13", "12"], "track": ["1", "1", "1", "2"]})
    assert track_groups(frame).tolist() == [0, 0, 1, 2]  # GTSRB numbers tracks per class


def test_rank_puts_confident_contradictions_first_and_skips_agreements() -> None:
    labels = np.array([0, 0, 0, 0, 2, 2, 2, 2])  # class 1 absent: cleanlab sees classes 0 and 2 only
    probs = np.array([[0.9, 0, 0.1], [0.95, 0, 0.05], [0.2, 0, 0.8], [0.4, 0, 0.6],
                      [0.1, 0, 0.9], [0.05, 0, 0.95], [0.97, 0, 0.03], [0.2, 0, 0.8]])
    assert rank_label_issues(labels, probs).tolist() == [6, 2, 3]
    assert estimate_label_errors(labels, probs) >= 1


def _blobs(flips: list[int]) -> tuple[pd.DataFrame, np.ndarray]:
    """Two separable classes plus unknown, tracks of 3 frames, every fifth track in val and test."""
    rng = np.random.default_rng(1)
    rows, features = [], []
    for track in range(60):
        label = track % 3
        split = SPLITS[0] if track % 5 < 3 else SPLITS[1 + track % 5 - 3]
        centre = rng.normal(0, 1, 8) * 0.3 + np.eye(8)[label] * 4
        for frame in range(3):
            rows.append({"split": split, "row": len(rows), "path": f"{track}_{frame}.png", "class_id": str(label),
                         "track": str(track), "label_idx": label, "role": ROLE_UNKNOWN if label == 2 else ROLE_TARGET})
            features.append(centre + rng.normal(0, 0.3, 8))
    frame = pd.DataFrame(rows)
    frame.loc[flips, "label_idx"] = 1 - frame.loc[flips, "label_idx"]  # a <-> b
    return frame, np.array(features)


def test_audit_labels_ranks_flipped_frames_first_with_the_true_class_suggested() -> None:
    flips = [0, 31, 94]  # frames of class a and b tracks
    frame, features = _blobs(flips)
    audit = audit_labels(frame, features, CLASSES, SPLITS, folds=5, c=C)
    assert audit.images == len(frame) and audit.accuracy is not None and audit.accuracy > 0.95
    top = audit.suspects.head(len(flips))
    assert set(top["row"]) == set(flips)
    truth = {row: CLASSES[int(frame.loc[row, "class_id"])] for row in flips}
    assert all(top["suggested"] == top["row"].map(truth)) and all(top["label"] != top["suggested"])
    assert (top["label_probability"] < top["suggested_probability"]).all()
    assert audit.counts["images"].sum() == len(frame)
    assert audit.counts["suspects"].sum() == len(audit.suspects)
    assert audit.estimated_errors >= 1


def test_labelled_rows_leave_the_heldout_role_out() -> None:
    frame = pd.DataFrame({"role": [ROLE_TARGET, ROLE_UNKNOWN, ROLE_HELDOUT]})
    assert labelled(frame).index.tolist() == [0, 1]


def test_one_class_is_not_checked_and_says_why() -> None:
    frame, features = _blobs([])
    one = frame[frame["label_idx"] == 0]
    audit = audit_labels(one, features[one.index], CLASSES, SPLITS, folds=5, c=C)
    assert audit.images == 0 and audit.suspects.empty and "classes" in audit.skipped
    metrics = label_metrics(audit, SPLITS, CLASSES)
    assert metrics["labels.suspects"] == 0 and "labels.oof_accuracy" not in metrics


def test_label_metrics_are_flat_per_split_and_class() -> None:
    frame, features = _blobs([0, 31])
    audit = audit_labels(frame, features, CLASSES, SPLITS, folds=5, c=C)
    metrics = label_metrics(audit, SPLITS, CLASSES)
    assert metrics["labels.suspects"] == len(audit.suspects)
    assert sum(metrics[f"labels.suspects.{s}"] for s in SPLITS) == len(audit.suspects)
    assert sum(metrics[f"labels.suspects.class.{c}"] for c in CLASSES) == len(audit.suspects)
    assert metrics["labels.oof_accuracy"] == pytest.approx(audit.accuracy, abs=1e-4)
    assert metrics["labels.estimated_errors"] == audit.estimated_errors
