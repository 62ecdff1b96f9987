"""Closed-set metrics against values computed by hand on tiny fixed arrays."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from signflow.evaluation import metrics as m

NAMES3 = ["stop", "yield", "priority"]


def _peaked_probs(preds: list[int], n_classes: int, top: float) -> np.ndarray:
    """Rows with ``top`` on the predicted class and the rest spread evenly."""
    probs = np.full((len(preds), n_classes), (1 - top) / (n_classes - 1))
    probs[np.arange(len(preds)), preds] = top
    return probs


# labels 0 0 0 1 1 2 / preds 0 0 1 1 2 2 -> correct at 0, 1, 3, 5.
# accuracy 4/6. Recalls: c0 2/3, c1 1/2, c2 1/1 -> balanced (2/3+1/2+1)/3 = 13/18.
# Precisions: c0 2/2, c1 1/2 (idx 2 wrong), c2 1/2 (idx 4 wrong).
# F1: c0 2*1*(2/3)/(5/3) = 4/5, c1 1/2, c2 2*(1/2)*1/(3/2) = 2/3 -> macro 59/90.
LABELS6 = np.array([0, 0, 0, 1, 1, 2])


PREDS6 = np.array([0, 0, 1, 1, 2, 2])


def test_classification_metrics_by_hand() -> None:
    probs = _peaked_probs(PREDS6.tolist(), 3, top=0.7)  # others 0.15 each
    out = m.classification_metrics(LABELS6, probs, NAMES3)
    assert out["n"] == 6
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["balanced_accuracy"] == pytest.approx(13 / 18)
    assert out["macro_f1"] == pytest.approx(59 / 90)
    # True-class probability is 0.7 for the 4 right, 0.15 for the 2 wrong.
    assert out["log_loss"] == pytest.approx(-(4 * math.log(0.7) + 2 * math.log(0.15)) / 6)
    # One bin, confidence 0.7, accuracy 4/6.
    assert out["ece"] == pytest.approx(0.7 - 4 / 6)
    json.dumps(out)  # plain Python types only


def test_per_class_table_and_report_show_absent_class() -> None:
    names = NAMES3 + ["unknown"]
    rows = m.per_class_table(LABELS6, PREDS6, names)
    assert [r["class"] for r in rows] == names
    assert rows[0] == pytest.approx({"class": "stop", "precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert rows[3] == {"class": "unknown", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert "unknown" in m.classification_report_text(LABELS6, PREDS6, names)
    json.dumps(rows)


def test_ece_by_hand_two_bins() -> None:
    # Confidences 0.9 (right), 0.7 (wrong) -> bin (0.5, 1]: conf 0.8, acc 0.5, gap 0.3.
    # Confidences 0.4 (right), 0.45 (wrong) -> bin [0, 0.5]: conf 0.425, acc 0.5, gap 0.075.
    # ECE = 2/4 * 0.3 + 2/4 * 0.075 = 0.1875.
    probs = np.array([[0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.4, 0.3, 0.3], [0.45, 0.35, 0.2]])
    labels = np.array([0, 1, 0, 2])
    bins = m.reliability_bins(labels, probs, n_bins=2)
    assert [b["count"] for b in bins] == [2, 2]
    assert bins[0]["confidence"] == pytest.approx(0.425)
    assert bins[1]["accuracy"] == pytest.approx(0.5)
    assert m.expected_calibration_error(bins) == pytest.approx(0.1875)
    assert m.classification_metrics(labels, probs, NAMES3, n_bins=2)["ece"] == pytest.approx(0.1875)


def test_ece_zero_when_perfectly_calibrated() -> None:
    # Confidence 0.8 everywhere and 4 of 5 right.
    probs = np.tile([0.8, 0.2], (5, 1))
    labels = np.array([0, 0, 0, 0, 1])
    assert m.classification_metrics(labels, probs, ["a", "b"])["ece"] == pytest.approx(0.0, abs=1e-12)


def test_reliability_bins_cover_all_samples_and_edges_go_down() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=50)
    bins = m.reliability_bins(rng.integers(0, 4, 50), probs)
    assert len(bins) == m.ECE_BINS
    assert sum(b["count"] for b in bins) == 50
    assert all(b["confidence"] is None for b in bins if b["count"] == 0)
    # A confidence exactly on an edge (0.5) belongs to the bin ending there.
    edge = m.reliability_bins(np.array([0]), np.array([[0.5, 0.5]]), n_bins=2)
    assert [b["count"] for b in edge] == [1, 0]
    json.dumps(bins)


def test_confusion_outputs() -> None:
    rows = m.confusion_rows(LABELS6, PREDS6, NAMES3)
    assert rows[2] == {"actual": "stop", "predicted": "yield"}
    counts = m.confusion_matrix_counts(LABELS6, PREDS6, 4)
    expected = np.array([[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(counts, expected)


def test_labels_out_of_range_rejected() -> None:
    with pytest.raises(ValueError, match="labels"):
        m.classification_metrics(np.array([0, 3]), np.full((2, 3), 1 / 3), NAMES3)


def test_logits_rejected_float32_softmax_accepted() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        m.classification_metrics(np.array([0, 1]), np.array([[2.0, -1.0, 0.5], [0.1, 3.0, 0.2]]), NAMES3)
    probs32 = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]], dtype=np.float32)  # sums off by ~1e-8
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither sklearn's sum check nor the unknown-class note fires
        out = m.classification_metrics(np.array([0, 0]), probs32, NAMES3)
    assert out["accuracy"] == 0.5


def test_wilson_interval_by_hand() -> None:
    z = 1.959963984540054
    low, high = m.wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(z * z / (10 + z * z))  # closed form at p = 0
    low, high = m.wilson_interval(389, 389)
    assert high == 1.0 and low == pytest.approx(389 / (389 + z * z))  # closed form at p = 1
    low, high = m.wilson_interval(50, 100)
    assert (low + high) / 2 == pytest.approx(0.5) and 0.40 < low < 0.41
    assert m.wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes"):
        m.wilson_interval(11, 10)


def test_wilson_interval_narrows_with_more_images() -> None:
    small, large = m.wilson_interval(97, 100), m.wilson_interval(970, 1000)
    assert large[1] - large[0] < (small[1] - small[0]) / 2
