"""Open-set scores, threshold choice and metrics against values computed by hand."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

from signflow.catalog import unknown_index
from signflow.evaluation import openset
from signflow.evaluation.openset import decide, max_softmax_score


def test_max_softmax_score_excludes_unknown_column() -> None:
    probs = np.array([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])
    np.testing.assert_allclose(max_softmax_score(probs, unknown_index=None), [0.7, 0.5])
    # Confident "unknown" (column 2) -> low known-ness 0.2, not renormalised.
    np.testing.assert_allclose(max_softmax_score(probs, unknown_index=2), [0.2, 0.5])


def test_decide_rejects_the_unknown_class_and_low_known_ness() -> None:
    names = ["stop", "give_way", "unknown"]
    probs = np.array([
        [0.8, 0.1, 0.1],  # confident stop
        [0.1, 0.2, 0.7],  # the unknown class wins
        [0.45, 0.4, 0.15],  # stop wins, but known-ness 0.45 is below 0.5
    ])
    assert decide(probs, names, threshold=0.5) == ["stop", "unknown", "unknown"]
    assert decide(probs, names, threshold=None) == ["stop", "unknown", "stop"]
    # Without an unknown class only the threshold can reject.
    assert decide(probs[:, :2], names[:2], threshold=0.5) == ["stop", "unknown", "unknown"]
    assert decide(np.empty((0, 3)), names, threshold=0.5) == []
    assert unknown_index(names) == 2 and unknown_index(names[:2]) is None


@pytest.mark.parametrize(
    ("known", "heldout", "auroc"),
    [
        ([0.9, 0.8], [0.2, 0.1], 1.0),  # perfectly separated
        ([0.2, 0.1], [0.9, 0.8], 0.0),  # reversed
        # Pairs known>heldout: 0.9>0.6, 0.9>0.1, 0.4>0.1 yes; 0.4>0.6 no -> 3/4.
        ([0.9, 0.4], [0.6, 0.1], 0.75),
    ],
)
def test_auroc(known: list[float], heldout: list[float], auroc: float) -> None:
    out = openset.openset_scores(np.array(known), np.array(heldout))
    assert out["auroc"] == pytest.approx(auroc)
    assert (out["n_known"], out["n_heldout"]) == (2, 2)


def test_fpr_at_95_tpr_interpolates() -> None:
    # Known 0.9 0.8 0.7 0.5, held-out 0.5 0.4 0.3 0.2. ROC points: (0, .75) at
    # t=0.7, then the 0.5 tie moves to (.25, 1). On that segment TPR .95 sits
    # (.95-.75)/.25 = 4/5 of the way -> FPR 4/5 * .25 = 0.2 (next point: 0.25).
    out = openset.openset_scores(np.array([0.9, 0.8, 0.7, 0.5]), np.array([0.5, 0.4, 0.3, 0.2]))
    assert out["fpr_at_95_tpr"] == pytest.approx(0.2)
    # Target hit exactly by a point: its own FPR.
    assert openset.fpr_at_tpr(np.array([0, 0, 0.5, 1]), np.array([0, 0.95, 0.95, 1])) == 0.0


def test_fpr_at_95_tpr_separated_is_zero() -> None:
    out = openset.openset_scores(np.linspace(0.6, 0.9, 20), np.linspace(0.1, 0.5, 10))
    assert out["fpr_at_95_tpr"] == 0.0


@pytest.mark.parametrize("empty_side", ["heldout", "known"])
def test_empty_side_gives_none_not_nan(empty_side: str) -> None:
    scores = np.array([0.9, 0.3])
    known, heldout = (scores, np.array([])) if empty_side == "heldout" else (np.array([]), scores)
    out = openset.openset_scores(known, heldout)
    assert out["auroc"] is None and out["fpr_at_95_tpr"] is None
    assert out["reason"]
    assert openset.roc_points(known, heldout) == []
    json.dumps(out, allow_nan=False)


def test_roc_points_json_safe() -> None:
    rows = openset.roc_points(np.array([0.9, 0.8, 0.7, 0.5]), np.array([0.5, 0.4, 0.3, 0.2]))
    assert rows[0] == {"fpr": 0.0, "tpr": 0.0, "threshold": None}
    assert rows[-1]["fpr"] == 1.0 and rows[-1]["tpr"] == 1.0
    json.dumps(rows, allow_nan=False)


# Scores 0.9 0.8 0.7 0.6 0.5 0.3; known T T T F T F; correct T F T F T F.
# Hits = known-right accepted + held-out rejected:
#   t=0.3: 3+0=3  t=0.5: 3+1=4  t=0.6: 2+1=3  t=0.7: 2+2=4  t=0.8: 1+2=3
#   t=0.9: 1+2=3  above: 0+2=2  -> max 4 at 0.5 and 0.7; lowest is 0.5.
VAL_SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.3])


VAL_KNOWN = np.array([True, True, True, False, True, False])


VAL_CORRECT = np.array([True, False, True, False, True, False])


def test_choose_threshold_by_hand_ties_to_lowest() -> None:
    t = openset.choose_threshold(VAL_SCORES, VAL_KNOWN, VAL_CORRECT, tolerance_se=0.0)
    assert t == 0.5
    # The chosen threshold reaches the hand-computed maximum, 4/6.
    preds = np.where(VAL_CORRECT, 0, 1)  # right iff predicted class 0
    labels = np.zeros(6, dtype=int)
    assert openset.openset_accuracy(VAL_SCORES, preds, labels, VAL_KNOWN, t, None) == pytest.approx(4 / 6)


def test_choose_threshold_sees_only_validation() -> None:
    # The signature has no room for test data, so test arrays cannot leak in.
    assert list(inspect.signature(openset.choose_threshold).parameters) == [
        "val_scores", "val_is_known", "val_correct", "tolerance_se"]
    before = (VAL_SCORES.copy(), VAL_KNOWN.copy(), VAL_CORRECT.copy())
    t = openset.choose_threshold(VAL_SCORES, VAL_KNOWN, VAL_CORRECT, tolerance_se=0.0)
    # Two different "test" sets score differently under the same val threshold.
    preds, labels, known = np.array([0, 0]), np.array([0, -1]), np.array([True, False])
    test_a = openset.openset_accuracy(np.array([0.9, 0.2]), preds, labels, known, t, None)
    test_b = openset.openset_accuracy(np.array([0.4, 0.8]), preds, labels, known, t, None)
    assert (test_a, test_b) == (1.0, 0.0)
    assert openset.choose_threshold(VAL_SCORES, VAL_KNOWN, VAL_CORRECT, tolerance_se=0.0) == t
    for arr, orig in zip((VAL_SCORES, VAL_KNOWN, VAL_CORRECT), before, strict=True):
        np.testing.assert_array_equal(arr, orig)  # inputs untouched


def test_choose_threshold_predicted_unknown_counts_as_rejected() -> None:
    # Known right 0.99 and 0.8; held-out 0.9 and 0.85.
    # Held-out not called "unknown": t=0.8 -> 2+0, 0.85 -> 1+0, 0.9 -> 1+1,
    # 0.99 -> 1+2 = 3, above -> 0+2; best 0.99.
    # Held-out already called "unknown": always right, so t=0.8 keeps all -> 4.
    scores = np.array([0.99, 0.9, 0.85, 0.8])
    known = np.array([True, False, False, True])
    assert openset.choose_threshold(scores, known, np.array([True, False, False, True]), tolerance_se=0.0) == 0.99
    assert openset.choose_threshold(scores, known, np.array([True, True, True, True]), tolerance_se=0.0) == 0.8


def test_choose_threshold_can_reject_everything() -> None:
    scores = np.array([0.9, 0.8, 0.7])
    t = openset.choose_threshold(scores, np.array([False, False, True]), np.array([False, False, False]),
                                 tolerance_se=0.0)
    assert t > 0.9
    assert not np.any(scores >= t)


def test_choose_threshold_fallback_without_heldout() -> None:
    # 20 known scores 0.01..0.20; accepting 95% = 19 of them -> t = 0.02.
    scores = np.round(np.arange(1, 21) * 0.01, 2)
    t = openset.choose_threshold(scores, np.ones(20, dtype=bool), np.ones(20, dtype=bool), tolerance_se=0.0)
    assert t == pytest.approx(0.02)
    assert np.mean(scores >= t) == pytest.approx(openset.DEFAULT_TPR)


# 100 val images: 95 known at 0.9 (the first ``known_wrong_at_high`` of them
# wrong), held-out not called "unknown" at 0.6 (4 of them) and 0.3 (1).
def _one_se_case(known_wrong_at_high: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = np.r_[np.full(95, 0.9), np.full(4, 0.6), 0.3]
    known = np.r_[np.ones(95, dtype=bool), np.zeros(5, dtype=bool)]
    correct = np.r_[np.arange(95) >= known_wrong_at_high, np.zeros(5, dtype=bool)]
    return scores, known, correct


def test_one_standard_error_rule_picks_the_lowest_threshold_not_told_apart() -> None:
    # 5 known wrong: hits 0.3 -> 90, 0.6 -> 91, 0.9 -> 95 (best, p = 0.95).
    # n * SE = sqrt(100 * 0.95 * 0.05) = 2.18 images: 0.6 (4 fewer) is told apart, so 0.9 stays.
    scores, known, correct = _one_se_case(5)
    assert openset.choose_threshold(scores, known, correct, tolerance_se=0.0) == 0.9
    assert openset.choose_threshold(scores, known, correct, tolerance_se=1.0) == 0.9
    # Two standard errors (4.36 images) cover 0.6 (4 fewer) but not 0.3 (5 fewer).
    assert openset.choose_threshold(scores, known, correct, tolerance_se=2.0) == 0.6
    assert openset.choose_threshold(scores, known, correct, tolerance_se=2.5) == 0.3


def test_one_standard_error_rule_keeps_a_perfect_split_s_threshold() -> None:
    # Everything right at 0.9: the standard error of 100/100 is 0, nothing is within it.
    scores, known, correct = _one_se_case(0)
    assert openset.choose_threshold(scores, known, correct, tolerance_se=3.0) == 0.9


def test_choose_threshold_refuses_a_negative_tolerance() -> None:
    with pytest.raises(ValueError, match="tolerance_se"):
        openset.choose_threshold(VAL_SCORES, VAL_KNOWN, VAL_CORRECT, tolerance_se=-1.0)


def test_openset_accuracy_without_unknown_class() -> None:
    # threshold 0.5: known right & 0.9 -> ok; known right but 0.4 -> rejected, wrong;
    # known wrong class -> wrong; held-out 0.3 -> rejected, ok. 2/4.
    scores = np.array([0.9, 0.4, 0.8, 0.3])
    preds = np.array([0, 1, 1, 0])
    labels = np.array([0, 1, 0, -1])
    known = np.array([True, True, True, False])
    assert openset.openset_accuracy(scores, preds, labels, known, 0.5, None) == pytest.approx(0.5)


def test_openset_accuracy_with_unknown_class() -> None:
    # Unknown class 2. Adds: held-out 0.7 predicted 2 -> ok; held-out 0.7 predicted 0
    # -> accepted as known, wrong; known 0.9 predicted 2 -> wrong. 3/7.
    scores = np.array([0.9, 0.4, 0.8, 0.3, 0.7, 0.7, 0.9])
    preds = np.array([0, 1, 1, 0, 2, 0, 2])
    labels = np.array([0, 1, 0, -1, -1, -1, 0])
    known = np.array([True, True, True, False, False, False, True])
    assert openset.openset_accuracy(scores, preds, labels, known, 0.5, unknown_index=2) == pytest.approx(3 / 7)
    # Same arrays with no unknown class: the held-out predicted 2 is no longer ok.
    assert openset.openset_accuracy(scores, preds, labels, known, 0.5, unknown_index=None) == pytest.approx(2 / 7)


def test_prediction_correct() -> None:
    known = np.array([True, True, False, False])
    got = openset.prediction_correct(np.array([0, 2, 2, 1]), np.array([0, 0, -1, -1]), known, unknown_index=2)
    np.testing.assert_array_equal(got, [True, False, True, False])


def test_share_assigned_known() -> None:
    preds = np.array([0, 3, 1, 3])
    assert openset.share_assigned_known(preds, unknown_index=3) == 0.5
    assert openset.share_assigned_known(preds, unknown_index=None) == 1.0
    assert openset.share_assigned_known(np.array([], dtype=int), unknown_index=3) is None


@pytest.mark.parametrize("tolerance_se", [0.0, 1.0, 2.0])
def test_choose_threshold_agrees_with_openset_accuracy_brute_force(tolerance_se: float) -> None:
    # The vectorised search must find the lowest threshold within tolerance_se
    # standard errors of the best of the very accuracy openset_accuracy reports
    # (one definition of "correct").
    rng = np.random.default_rng(7)
    scores = np.round(rng.uniform(size=60), 2)  # rounding makes ties
    known = rng.uniform(size=60) < 0.7
    preds = rng.integers(0, 4, 60)  # class 3 is the unknown class
    labels = np.where(known, rng.integers(0, 3, 60), -1)
    correct = openset.prediction_correct(preds, labels, known, unknown_index=3)
    chosen = openset.choose_threshold(scores, known, correct, tolerance_se=tolerance_se)
    grid = np.r_[np.unique(scores), np.nextafter(scores.max(), np.inf)]
    accs = np.array([openset.openset_accuracy(scores, preds, labels, known, t, 3) for t in grid])
    best = accs.max()
    within = accs >= best - tolerance_se * np.sqrt(best * (1 - best) / len(scores)) - 1e-12
    assert chosen == grid[int(np.argmax(within))]
    assert chosen <= grid[int(np.argmax(accs))]  # never above the plain maximum


def test_openset_outcomes_split_openset_accuracy_into_its_two_sides() -> None:
    scores = np.array([0.9, 0.4, 0.95, 0.3, 0.8, 0.99])
    preds = np.array([0, 1, 1, 0, 2, 0])
    labels = np.array([0, 1, 0, 0, 0, 0])
    known = np.array([True, True, True, False, False, False])
    out = openset.openset_outcomes(scores, preds, labels, known, threshold=0.5, unknown_index=2)
    # known: right+accepted, rejected, wrong class -> 1/3; held-out: rejected, said unknown, accepted -> 2/3
    assert out == {"known_accuracy": pytest.approx(1 / 3), "heldout_rejected": pytest.approx(2 / 3)}
    total = openset.openset_accuracy(scores, preds, labels, known, 0.5, 2)
    assert total == pytest.approx((1 + 2) / 6)
    assert openset.openset_outcomes(scores[:3], preds[:3], labels[:3], known[:3], 0.5, 2)["heldout_rejected"] is None
