"""Review statistics against hand-computed cases, published intervals and properties that could fail.

Known values: exact McNemar p-values from the binomial distribution by hand,
Newcombe's 1998 Table II (method 10), Fagerland et al. 2015's Newcombe row,
Fisher's exact p-value from the hypergeometric distribution with math.comb.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from signflow.review.stats import (
    BETTER,
    METHOD_MCNEMAR,
    METHOD_NEWCOMBE,
    METHOD_PAIRED_BOOTSTRAP,
    METHOD_UNPAIRED_BOOTSTRAP,
    NO_DIFFERENCE,
    WORSE,
    Comparison,
    corrected_confidence,
    paired_bootstrap,
    paired_proportions,
    unpaired_bootstrap,
    unpaired_proportions,
)

CONFIDENCE = 0.95
RESAMPLES = 400  # enough for stable 95% percentiles of a mean; keeps the file well under its time budget
SEED = 7


def outcomes(improved: int, regressed: int, both_right: int = 0, both_wrong: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(base_correct, head_correct) with the given discordant and concordant image counts."""
    base = [False] * improved + [True] * regressed + [True] * both_right + [False] * both_wrong
    head = [True] * improved + [False] * regressed + [True] * both_right + [False] * both_wrong
    return np.array(base), np.array(head)


def correct_of(successes: int, n: int) -> np.ndarray:
    return np.arange(n) < successes


def mean_of(values: np.ndarray):
    """A metric over one stratum: the mean of ``values`` on the selected rows."""
    return lambda rows: float(values[rows].mean())


# ---------------------------------------------------------------- verdict


@pytest.mark.parametrize(("low", "high", "higher_is_better", "expected"), [
    (0.01, 0.2, True, BETTER),
    (-0.2, -0.01, True, WORSE),
    (-0.1, 0.1, True, NO_DIFFERENCE),
    (0.01, 0.2, False, WORSE),
    (-0.2, -0.01, False, BETTER),
    (-0.1, 0.1, False, NO_DIFFERENCE),
    (0.0, 0.0, True, NO_DIFFERENCE),  # an interval touching 0 does not exclude it
    (0.0, 0.3, True, NO_DIFFERENCE),
])
def test_verdict_reads_the_interval_in_the_metric_direction(low, high, higher_is_better, expected):
    comparison = Comparison("m", 0.5, 0.5, (low + high) / 2, low, high, CONFIDENCE, None, "test", 10,
                            higher_is_better=higher_is_better)
    assert comparison.verdict == expected


# ---------------------------------------------------------------- McNemar


@pytest.mark.parametrize(("improved", "regressed", "p_value", "verdict"), [
    # Binomial(7, 1/2): P(X <= 1) = (1 + 7)/128, doubled.
    (1, 6, 2 * (1 + 7) / 128, NO_DIFFERENCE),
    # Binomial(5, 1/2): P(X = 0) = 1/32, doubled: 0.0625 > 0.05.
    (0, 5, 2 / 32, NO_DIFFERENCE),
    # Binomial(6, 1/2): P(X = 0) = 1/64, doubled: 0.03125 < 0.05.
    (0, 6, 2 / 64, WORSE),
    (6, 0, 2 / 64, BETTER),
])
def test_mcnemar_exact_p_value_by_hand(improved, regressed, p_value, verdict):
    base, head = outcomes(improved, regressed, both_right=80, both_wrong=13)
    comparison = paired_proportions("test.accuracy", base, head, CONFIDENCE)
    assert comparison.p_value == pytest.approx(p_value)
    assert comparison.verdict == verdict
    n = improved + regressed + 93
    assert comparison.n == n
    assert comparison.difference == pytest.approx((improved - regressed) / n)
    assert comparison.base == pytest.approx((80 + regressed) / n)
    assert comparison.head == pytest.approx((80 + improved) / n)
    assert comparison.method == METHOD_MCNEMAR
    assert comparison.detail == f"{improved} improved, {regressed} regressed"


def test_mcnemar_interval_is_the_scaled_clopper_pearson_interval():
    # 0 of 6 discordant images favour head: the Clopper-Pearson interval of pi is
    # (0, 1 - 0.025**(1/6)) in closed form, and the difference is 6/n * (2 pi - 1).
    n = 100
    base, head = outcomes(0, 6, both_right=n - 6)
    comparison = paired_proportions("test.accuracy", base, head, CONFIDENCE)
    upper_pi = 1 - ((1 - CONFIDENCE) / 2) ** (1 / 6)
    assert comparison.low == pytest.approx(-6 / n)
    assert comparison.high == pytest.approx(6 / n * (2 * upper_pi - 1))
    assert comparison.high < 0


# Discordant counts 0..15 each way: both sides of each level's verdict boundary, where few images make it exact.
GRID = 16
CONCORDANT = (0, 9, 60)


@pytest.mark.parametrize("confidence", [0.90, 0.95, 0.99])
def test_mcnemar_verdict_agrees_with_its_p_value(confidence):
    alpha = 1 - confidence
    for improved in range(GRID):
        for regressed in range(GRID):
            # n varies too (concordant images of both kinds), though it only scales the interval.
            concordant = CONCORDANT[(improved + regressed) % len(CONCORDANT)]
            base, head = outcomes(improved, regressed, both_right=concordant, both_wrong=concordant // 3)
            if len(base) == 0:
                continue
            comparison = paired_proportions("acc", base, head, confidence)
            significant = comparison.p_value < alpha
            expected = (BETTER if improved > regressed else WORSE) if significant else NO_DIFFERENCE
            assert comparison.verdict == expected, (improved, regressed, concordant, comparison)
            assert comparison.low <= comparison.difference <= comparison.high


def test_identical_models_have_no_difference_and_a_zero_width_interval():
    base, _ = outcomes(0, 0, both_right=30, both_wrong=5)
    comparison = paired_proportions("test.accuracy", base, base.copy(), CONFIDENCE)
    assert (comparison.low, comparison.high, comparison.difference) == (0.0, 0.0, 0.0)
    assert comparison.p_value == 1.0
    assert comparison.verdict == NO_DIFFERENCE


def test_paired_proportions_accepts_zero_one_integers():
    base, head = outcomes(0, 6, both_right=10)
    assert paired_proportions("acc", base.astype(int), head.astype(int)) == paired_proportions("acc", base, head)


@pytest.mark.parametrize(("base", "head", "message"), [
    ([], [], "empty"),
    ([True, False], [True], "same images"),
    ([0, 2], [1, 1], "booleans"),
])
def test_paired_proportions_rejects_unusable_inputs(base, head, message):
    with pytest.raises(ValueError, match=message):
        paired_proportions("acc", np.array(base), np.array(head))


@pytest.mark.parametrize("confidence", [0.0, 1.0, 95])
def test_confidence_outside_zero_one_is_rejected(confidence):
    base, head = outcomes(3, 1)
    with pytest.raises(ValueError, match="confidence"):
        paired_proportions("acc", base, head, confidence)


# ---------------------------------------------------------------- Newcombe (unpaired)


@pytest.mark.parametrize(("head", "base", "low", "high", "tolerance"), [
    # Newcombe 1998, Stat Med 17:873, Table II, method 10 (4 decimals published).
    ((56, 70), (48, 80), 0.0524, 0.3339, 5e-5),
    ((9, 10), (3, 10), 0.1705, 0.8090, 5e-5),
    # Fagerland, Lydersen & Laake 2015 (Stat Methods Med Res 24:224), Newcombe hybrid score row (3 decimals / 2).
    ((7, 34), (1, 34), 0.019, 0.34, 5e-3),
])
def test_newcombe_interval_matches_published_values(head, base, low, high, tolerance):
    comparison = unpaired_proportions("test.accuracy", correct_of(*base), correct_of(*head), CONFIDENCE)
    assert comparison.difference == pytest.approx(head[0] / head[1] - base[0] / base[1])
    assert comparison.low == pytest.approx(low, abs=tolerance)
    assert comparison.high == pytest.approx(high, abs=tolerance)
    assert comparison.verdict == BETTER
    assert comparison.n == head[1] + base[1]
    assert comparison.method == METHOD_NEWCOMBE


def test_newcombe_interval_mirrors_when_base_and_head_swap():
    forward = unpaired_proportions("acc", correct_of(48, 80), correct_of(56, 70))
    backward = unpaired_proportions("acc", correct_of(56, 70), correct_of(48, 80))
    assert (backward.low, backward.high) == pytest.approx((-forward.high, -forward.low))
    assert backward.verdict == WORSE


def test_unpaired_p_value_is_fishers_exact_test():
    # 9/10 against 3/10: 12 right of 20, 10 per model; P(head right = k) is hypergeometric,
    # symmetric about 6, so the two-sided p doubles P(k >= 9) = (C(12,9) C(8,1) + C(12,10) C(8,0)) / C(20,10).
    tail = (math.comb(12, 9) * math.comb(8, 1) + math.comb(12, 10) * math.comb(8, 0)) / math.comb(20, 10)
    comparison = unpaired_proportions("acc", correct_of(3, 10), correct_of(9, 10))
    assert comparison.p_value == pytest.approx(2 * tail)


def test_unpaired_identical_results_show_no_difference():
    comparison = unpaired_proportions("acc", correct_of(40, 50), correct_of(40, 50))
    assert comparison.difference == 0.0
    assert comparison.low < 0 < comparison.high
    assert comparison.verdict == NO_DIFFERENCE


def test_unpaired_proportions_rejects_an_empty_side():
    with pytest.raises(ValueError, match="head_correct is empty"):
        unpaired_proportions("acc", correct_of(3, 5), np.array([], dtype=bool))


# ---------------------------------------------------------------- bootstrap


def bernoulli_pair(n: int, base_rate: float, head_rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random(n) < base_rate, rng.random(n) < head_rate


def test_paired_bootstrap_is_reproducible_with_a_seed():
    base, head = bernoulli_pair(300, 0.7, 0.75, seed=1)
    args = ("acc", mean_of(base), mean_of(head), [np.arange(300)], CONFIDENCE, RESAMPLES)
    first, again = paired_bootstrap(*args, SEED), paired_bootstrap(*args, SEED)
    other = paired_bootstrap(*args, SEED + 1)
    assert (first.low, first.high) == (again.low, again.high)
    assert (first.low, first.high) != (other.low, other.high)


def test_paired_bootstrap_of_identical_models_is_exactly_zero():
    values = np.random.default_rng(3).random(200)
    comparison = paired_bootstrap("test.ece", mean_of(values), mean_of(values.copy()), [np.arange(200)],
                                  CONFIDENCE, RESAMPLES, SEED, higher_is_better=False)
    assert (comparison.low, comparison.high, comparison.difference) == (0.0, 0.0, 0.0)
    assert comparison.verdict == NO_DIFFERENCE
    assert comparison.p_value is None
    assert comparison.method == METHOD_PAIRED_BOOTSTRAP


def test_paired_bootstrap_contains_the_true_difference_of_a_large_effect():
    # Accuracy 0.9 against 0.6 on 500 images: the population difference is 0.3.
    base, head = bernoulli_pair(500, 0.6, 0.9, seed=11)
    comparison = paired_bootstrap("test.accuracy", mean_of(base), mean_of(head), [np.arange(500)],
                                  CONFIDENCE, RESAMPLES, SEED)
    assert comparison.low < 0.3 < comparison.high
    assert comparison.low > 0
    assert comparison.verdict == BETTER
    assert comparison.difference == pytest.approx(head.mean() - base.mean())
    assert comparison.n == 500


def test_pairing_detects_a_small_change_the_unpaired_comparison_cannot():
    # Head fixes 20 of base's 200 errors and breaks none: 0.60 -> 0.64 on the same 500 images.
    base = correct_of(300, 500)
    head = base.copy()
    head[300:320] = True
    rows = [np.arange(500)]
    paired = paired_bootstrap("acc", mean_of(base), mean_of(head), rows, CONFIDENCE, RESAMPLES, SEED)
    unpaired = unpaired_bootstrap("acc", mean_of(base), mean_of(head), rows, rows, CONFIDENCE, RESAMPLES, SEED)
    assert paired.verdict == BETTER
    assert paired_proportions("acc", base, head).verdict == BETTER  # McNemar: 20 improved, 0 regressed
    assert unpaired.verdict == NO_DIFFERENCE
    assert unpaired.method == METHOD_UNPAIRED_BOOTSTRAP
    assert unpaired.n == 1000


def test_unpaired_bootstrap_agrees_with_newcombe_for_accuracy():
    base, head = correct_of(240, 400), correct_of(270, 300)  # 0.60 against 0.90, different images
    bootstrap = unpaired_bootstrap("acc", mean_of(base), mean_of(head), [np.arange(400)], [np.arange(300)],
                                   CONFIDENCE, RESAMPLES, SEED)
    newcombe = unpaired_proportions("acc", base, head)
    assert bootstrap.difference == pytest.approx(0.3)
    # Two methods, one question: the ends agree to about a percentage point.
    assert bootstrap.low == pytest.approx(newcombe.low, abs=0.015)
    assert bootstrap.high == pytest.approx(newcombe.high, abs=0.015)
    assert bootstrap.verdict == newcombe.verdict == BETTER


def test_unpaired_bootstrap_gives_each_side_its_own_strata():
    seen: dict[str, set[tuple[int, ...]]] = {"base": set(), "head": set()}

    def recorder(side: str, values: np.ndarray):
        def metric(*rows: np.ndarray) -> float:
            seen[side].add(tuple(len(part) for part in rows))
            return float(values[np.concatenate(rows)].mean())
        return metric

    base_values, head_values = np.linspace(0, 1, 30), np.linspace(0, 1, 12)
    unpaired_bootstrap("m", recorder("base", base_values), recorder("head", head_values),
                       [np.arange(20), np.arange(20, 30)], [np.arange(12)], CONFIDENCE, 50, SEED)
    assert seen == {"base": {(20, 10)}, "head": {(12,)}}


# Open-set AUROC: 40 known images (label 0) and only 3 held-out ones (label 1).
KNOWN, HELD_OUT = 40, 3
AUROC_RESAMPLES = 150


def auroc_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    labels = np.r_[np.zeros(KNOWN, dtype=int), np.ones(HELD_OUT, dtype=int)]
    base_scores = rng.random(KNOWN + HELD_OUT) + labels * 0.3
    head_scores = rng.random(KNOWN + HELD_OUT) + labels * 0.6
    return labels, base_scores, head_scores


def auroc_of(labels: np.ndarray, scores: np.ndarray):
    def metric(*rows: np.ndarray) -> float:
        picked = np.concatenate(rows)
        if len(set(labels[picked].tolist())) < 2:  # undefined: fail loudly rather than return NaN
            raise ValueError("AUROC needs both known and held-out images")
        return float(roc_auc_score(labels[picked], scores[picked]))
    return metric


def test_stratified_bootstrap_keeps_every_stratum_in_each_resample():
    labels, base_scores, head_scores = auroc_data()
    strata = [np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)]
    comparison = paired_bootstrap("openset.auroc", auroc_of(labels, base_scores), auroc_of(labels, head_scores),
                                  strata, CONFIDENCE, AUROC_RESAMPLES, SEED)
    assert comparison.low <= comparison.high
    assert comparison.n == KNOWN + HELD_OUT
    # The check above can fail: resampling all 43 images together loses the 3 held-out ones
    # in about 4% of resamples ((40/43)**43), so 150 resamples almost surely hit one.
    with pytest.raises(ValueError, match="both known and held-out"):
        paired_bootstrap("openset.auroc", auroc_of(labels, base_scores), auroc_of(labels, head_scores),
                         [np.arange(KNOWN + HELD_OUT)], CONFIDENCE, AUROC_RESAMPLES, SEED)


def test_lower_is_better_metric_improves_when_head_is_lower():
    # ECE-like per-image calibration errors: head's are a quarter of base's.
    base_errors = np.random.default_rng(9).random(200) * 0.4
    head_errors = base_errors / 4
    comparison = paired_bootstrap("test.ece", mean_of(base_errors), mean_of(head_errors), [np.arange(200)],
                                  CONFIDENCE, RESAMPLES, SEED, higher_is_better=False)
    assert comparison.difference < 0
    assert comparison.high < 0
    assert comparison.verdict == BETTER
    assert not comparison.higher_is_better


@pytest.mark.parametrize(("strata", "message"), [
    ([], "at least one"),
    ([np.arange(10), np.array([3])], r"strata\[1\].*at least 2"),
    ([np.array([], dtype=int)], r"strata\[0\]"),
    ([np.linspace(0, 1, 5)], "integer"),
])
def test_bootstrap_rejects_unusable_strata(strata, message):
    values = np.ones(10)
    with pytest.raises(ValueError, match=message):
        paired_bootstrap("m", mean_of(values), mean_of(values), strata, CONFIDENCE, RESAMPLES, SEED)


def test_bootstrap_rejects_a_metric_undefined_on_resamples():
    values = np.r_[np.ones(5), np.full(5, np.nan)]  # NaN on some rows: NaN on most resamples
    with pytest.raises(ValueError, match="not finite"):
        paired_bootstrap("m", mean_of(values), lambda rows: 0.0, [np.arange(10)], CONFIDENCE, 50, SEED)


# ---------------------------------------------------------------- Bonferroni


def test_corrected_confidence_divides_the_error_rate():
    assert corrected_confidence(0.95, 5) == pytest.approx(0.99)
    assert corrected_confidence(0.95, 1) == pytest.approx(0.95)


@pytest.mark.parametrize("comparisons", range(1, 11))
def test_corrected_confidence_bounds_the_family_false_alarm_rate(comparisons):
    # Independent comparisons at the corrected level flag something on a no-change PR
    # no more often than the overall level allows (at 95% each, five classes would give 23%).
    each = corrected_confidence(CONFIDENCE, comparisons)
    assert 1 - each ** comparisons <= 1 - CONFIDENCE + 1e-12


@pytest.mark.parametrize(("confidence", "comparisons"), [(0.95, 0), (0.95, -2), (0.95, 2.5), (1.0, 3), (0.0, 3)])
def test_corrected_confidence_rejects_invalid_inputs(confidence, comparisons):
    with pytest.raises(ValueError):
        corrected_confidence(confidence, comparisons)
