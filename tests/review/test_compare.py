"""The review's comparison on hand-made predictions: pairing, the metric rules, per class, the gate, the verdicts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from signflow.config import GuardsConfig, ReviewConfig
from signflow.data.manifest import DataError
from signflow.review.compare import (
    ACCURACY,
    AUROC,
    ECE,
    HELDOUT_REJECTED,
    KNOWN_ACCURACY,
    MACRO_F1,
    compare_predictions,
    joined_flips_frame,
    read_predictions,
    same_test_set,
)
from signflow.review.gate import check_gate
from signflow.review.stats import BETTER, NO_DIFFERENCE, WORSE
from signflow.review.verdict import verdict_section

CLASSES = ["stop", "give_way", "no_entry", "priority_road"]
CFG = ReviewConfig(bootstrap_resamples=200)
BINS = 15


def predictions(n_per_class: int = 40, wrong: dict[str, int] | None = None, heldout: int = 20,
                heldout_accepted: int = 2, prefix: str = "") -> pd.DataFrame:
    """Target images of four classes (the first ``wrong[c]`` of class c misread), held-out images, all confident."""
    wrong = wrong or {}
    rows = []
    for c, name in enumerate(CLASSES):
        for i in range(n_per_class):
            miss = i < wrong.get(name, 0)
            answer = CLASSES[(c + 1) % len(CLASSES)] if miss else name
            rows.append({"path": f"{prefix}{name}/{i:03d}.png", "label": name, "prediction": answer,
                         "confidence": 0.6 if miss else 0.99, "known_score": 0.6 if miss else 0.99,
                         "decision": answer, "role": "target"})
    for i in range(heldout):
        accepted = i < heldout_accepted
        rows.append({"path": f"{prefix}heldout/{i:03d}.png", "label": "unknown", "prediction": "stop",
                     "confidence": 0.9 if accepted else 0.3, "known_score": 0.9 if accepted else 0.3,
                     "decision": "stop" if accepted else "unknown", "role": "heldout"})
    return pd.DataFrame(rows)


def read(frame: pd.DataFrame) -> pd.DataFrame:
    return read_predictions(frame.sample(frac=1.0, random_state=1).to_csv(index=False), "test")


def test_identical_predictions_show_no_difference_and_pass_the_gate() -> None:
    base = read(predictions(wrong={"stop": 4}))
    review = compare_predictions(base, base.copy(), CFG, BINS)
    assert review.paired
    assert {c.metric for c in review.metrics} == {ACCURACY, KNOWN_ACCURACY, HELDOUT_REJECTED, AUROC, ECE, MACRO_F1}
    for comparison in (*review.metrics, *review.classes):
        assert comparison.verdict == NO_DIFFERENCE
        assert comparison.low == comparison.high == comparison.difference == 0
    assert check_gate(review, CFG.guards).passed


def test_recomputed_metrics_follow_evaluate_rules() -> None:
    """Accuracy covers the model's classes, known accuracy targets, rejection the held-out images."""
    review = compare_predictions(read(predictions()), read(predictions(wrong={"stop": 8}, heldout_accepted=5)),
                                 CFG, BINS)
    assert review.metric(ACCURACY).head == pytest.approx(1 - 8 / 160)
    assert review.metric(KNOWN_ACCURACY).head == pytest.approx(1 - 8 / 160)
    assert review.metric(HELDOUT_REJECTED).base == pytest.approx(18 / 20)
    assert review.metric(HELDOUT_REJECTED).head == pytest.approx(15 / 20)


def test_one_class_worse_while_the_mean_is_not_detected_is_named_by_the_gate() -> None:
    base = read(predictions(wrong={"give_way": 10, "stop": 0}))
    head = read(predictions(wrong={"give_way": 0, "stop": 12}))  # the mean barely moves, stop collapses
    review = compare_predictions(base, head, CFG, BINS)
    assert review.metric(ACCURACY).verdict == NO_DIFFERENCE
    by_class = {c.metric: c for c in review.classes}
    assert by_class["stop"].verdict == WORSE and by_class["give_way"].verdict == BETTER
    gate = check_gate(review, GuardsConfig(accuracy=None, known_accuracy=None, heldout_rejected=None, auroc=None,
                                            max_ece=None))
    assert not gate.passed
    assert len(gate.failures) == 1 and gate.failures[0].startswith("class stop:")


def test_clearly_worse_head_fails_the_accuracy_guard_with_its_numbers() -> None:
    review = compare_predictions(read(predictions()), read(predictions(wrong=dict.fromkeys(CLASSES, 10))), CFG, BINS)
    accuracy = review.metric(ACCURACY)
    assert accuracy.verdict == WORSE and accuracy.high < 0
    gate = check_gate(review, CFG.guards)
    failure = next(f for f in gate.failures if f.startswith(ACCURACY))
    assert "-25.00 points" in failure and "95% confidence" in failure and "margin of 0.50 points" in failure


def test_clearly_better_head_is_better_with_an_interval_excluding_zero() -> None:
    review = compare_predictions(read(predictions(wrong=dict.fromkeys(CLASSES, 10))), read(predictions()), CFG, BINS)
    for key in (ACCURACY, KNOWN_ACCURACY, MACRO_F1):
        assert review.metric(key).verdict == BETTER and review.metric(key).low > 0
    assert review.metric(ECE).verdict == BETTER  # lower is better: head's calibration error fell
    assert check_gate(review, CFG.guards).passed


def test_small_improvement_on_few_images_does_not_pass_non_inferiority() -> None:
    """The margin is non-inferiority: a test set too small to show 'not worse by 0.5 points' fails it."""
    review = compare_predictions(read(predictions(n_per_class=5, wrong={"stop": 1})),
                                 read(predictions(n_per_class=5, wrong={"give_way": 1})), CFG, BINS)
    assert review.metric(ACCURACY).verdict == NO_DIFFERENCE
    assert any(f.startswith(ACCURACY) for f in check_gate(review, CFG.guards).failures)


def test_different_test_sets_are_compared_unpaired() -> None:
    base, head = read(predictions()), read(predictions(n_per_class=50, prefix="v2/"))
    assert not same_test_set(base, head)
    review = compare_predictions(base, head, CFG, BINS)
    assert not review.paired
    assert review.metric(ACCURACY).method.startswith("Newcombe")
    assert review.metric(AUROC).method.startswith("bootstrap (unpaired)")
    assert "The test sets differ" in verdict_section(review, check_gate(review, CFG.guards), CFG.confidence)


def test_relabelled_image_breaks_the_pairing() -> None:
    base = read(predictions())
    head = base.copy()
    head.loc[0, "label"] = "no_entry"
    assert not same_test_set(base, head)


def test_ece_guard_uses_heads_value() -> None:
    head = predictions()
    head["confidence"] = 0.5  # right every time at 50% confidence: ECE 0.5
    review = compare_predictions(read(predictions()), read(head), CFG, BINS)
    failures = check_gate(review, GuardsConfig(max_ece=0.05)).failures
    assert any(f.startswith(f"{ECE}: head's 0.5") for f in failures)


def test_flips_frame_pairs_answers_of_the_same_image() -> None:
    base, head = read(predictions()), read(predictions(wrong={"stop": 3}))
    joined = joined_flips_frame(base, head)
    assert len(joined) == 160  # held-out images are not part of test.accuracy
    flipped = joined[joined["base_prediction"] != joined["head_prediction"]]
    assert sorted(flipped["path"]) == [f"stop/{i:03d}.png" for i in range(3)]
    assert (flipped["base_prediction"] == "stop").all()


def test_bad_predictions_files_are_named() -> None:
    frame = predictions()
    with pytest.raises(DataError, match="lacks columns \\['decision'\\]"):
        read_predictions(frame.drop(columns="decision").to_csv(index=False), "base:metrics/predictions.csv")
    with pytest.raises(DataError, match="more than once"):
        read_predictions(pd.concat([frame, frame.head(1)]).to_csv(index=False), "head")


def test_verdict_section_shows_the_gate_and_a_row_per_metric_and_class() -> None:
    review = compare_predictions(read(predictions()), read(predictions(wrong={"stop": 20})), CFG, BINS)
    text = verdict_section(review, check_gate(review, CFG.guards), CFG.confidence)
    assert "**Gate: failed**" in text and "- class stop:" in text
    assert text.count("| `test.") == 3 and "| stop |" in text
    assert "99.00% interval" in text  # Bonferroni over five labels? four classes here: 1 - 0.05/4


def test_recomputed_metrics_equal_evaluate_json_of_a_real_run(reproduced) -> None:  # noqa: ANN001
    """From predictions.csv, the review's base numbers are evaluate's own (the tiny pipeline's real run)."""
    root = reproduced.project.root
    frame = read_predictions((root / "metrics/predictions.csv").read_text(), "tiny")
    review = compare_predictions(frame, frame, ReviewConfig(bootstrap_resamples=100), BINS)
    recorded = json.loads((root / "metrics/evaluate.json").read_text())
    for comparison in review.metrics:
        assert comparison.base == pytest.approx(recorded[comparison.metric], abs=1e-5), comparison.metric
    assert np.isfinite([c.base for c in review.metrics]).all()


def test_ece_guard_does_not_blame_a_pull_request_for_its_base() -> None:
    """Above the limit but no higher than base's: the pull request did not raise it."""
    frame = predictions()
    frame["confidence"] = 0.5
    review = compare_predictions(read(frame), read(frame), CFG, BINS)
    assert review.metric(ECE).head > 0.05
    assert check_gate(review, GuardsConfig(max_ece=0.05)).passed


def test_fast_auroc_and_macro_f1_equal_sklearns() -> None:
    from sklearn.metrics import f1_score, roc_auc_score

    from signflow.review.compare import _auroc, _macro_f1

    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"label": rng.choice(CLASSES, 300), "prediction": rng.choice([*CLASSES, "unknown"], 300),
                          "known_score": rng.choice([0.1, 0.5, 0.7, 0.9], 300)})  # ties on purpose
    idx = rng.integers(0, 300, 300)
    assert _macro_f1(frame)(idx) == pytest.approx(
        f1_score(frame["label"].to_numpy()[idx], frame["prediction"].to_numpy()[idx], average="macro",
                 zero_division=0))
    known, held = np.arange(0, 200), np.arange(200, 300)
    scores = frame["known_score"].to_numpy()
    expected = roc_auc_score(np.r_[np.ones(200), np.zeros(100)], np.r_[scores[known], scores[held]])
    assert _auroc(frame)(known, held) == pytest.approx(expected)
