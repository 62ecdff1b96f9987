"""Is head better than base? Intervals, tests and a verdict for each metric of a pull-request review.

A pull request changes a model; the review evaluates the base model and the
head model and must say, per metric, whether the change is real or the noise of
one finite test split. Each comparison returns a :class:`Comparison`: the two
values, their difference (head - base), an interval of that difference and a
verdict read from the interval (better / worse / no detectable difference).

Why these methods:

- **Paired when the images are the same.** Base and head are usually scored on
  the same test images, so their errors are correlated: most images are right
  (or wrong) for both. Comparing the two accuracies as independent samples
  would throw that away and miss real changes; the paired methods look at the
  images on which the two models disagree.
- **Exact McNemar for paired accuracies.** Only the discordant images carry
  information (b: head right, base wrong; c: the reverse). Under "no
  difference" each is equally likely to go either way, so b is Binomial(b + c,
  1/2): the exact binomial test (``scipy.stats.binomtest``), valid for the few
  discordant images a small change produces, where the chi-square version is not.
- **An interval consistent with that test.** The difference of accuracies is
  (b - c)/n = (b + c)/n * (2 pi - 1) with pi = b/(b + c); scaling the
  Clopper-Pearson interval of pi (conditional on b + c) gives the interval.
  Clopper-Pearson is the inversion of the same exact binomial test, both
  central, and Binomial(m, 1/2) is symmetric, so the interval excludes 0
  exactly when the two-sided McNemar p-value is below 1 - confidence: the
  verdict and the p-value shown beside it never disagree. (They could only
  meet at a tail probability exactly equal to (1 - confidence)/2, a dyadic
  rational, which no usual confidence such as 0.9, 0.95 or 0.99 gives.)
- **Newcombe's hybrid score interval when the test sets differ** (unpaired:
  the split changed in the pull request). Newcombe 1998 (Stat Med 17:873,
  method 10) combines the two Wilson intervals; in his comparison it keeps
  close to its nominal coverage where the Wald interval does not, even at
  0% or 100%. Fisher's exact test gives the p-value shown beside it; it is
  slightly conservative, so in rare borderline cases it may exceed
  1 - confidence while the interval excludes 0: the verdict follows the interval.
- **Percentile bootstrap for metrics without a closed form** (AUROC, ECE,
  macro F1): ``scipy.stats.bootstrap`` resamples images, and the metric is
  recomputed on each resample. Paired: the same resampled images for base and
  head. Stratified: each group of images (e.g. known and held-out images for
  the open-set AUROC) is resampled on its own, so every resample keeps both
  kinds and the metric stays defined. Percentile, not BCa: BCa's jackknife
  would recompute the metric once per image, and on a constant bootstrap
  distribution (identical models) the percentile interval is exactly (0, 0).
- **Bonferroni across classes** (:func:`corrected_confidence`): five per-class
  comparisons at 95% each would flag at least one class in about 23% of
  pull requests that change nothing (1 - 0.95**5); at 1 - 0.05/5 = 99% each
  the chance stays under 5%.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from signflow.evaluation.metrics import CONFIDENCE_LEVEL, wilson_interval

BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no detectable difference"

# Human names of the methods, as the report shows them.
METHOD_MCNEMAR = "McNemar exact"
METHOD_NEWCOMBE = "Newcombe score (unpaired)"
METHOD_PAIRED_BOOTSTRAP = "paired bootstrap"
METHOD_UNPAIRED_BOOTSTRAP = "bootstrap (unpaired)"

# Under "no difference" a discordant image is as likely to favour head as base.
_NULL_PROPORTION = 0.5
# scipy.stats.bootstrap needs at least two observations in each sample (stratum).
MIN_STRATUM_SIZE = 2
# Bound on resampled indices held in memory at once (resamples per batch x images):
# 10 million int64 indices is about 80 MB, whatever the size of the test split.
BOOTSTRAP_MAX_CELLS = 10_000_000

# A metric on the rows selected by one index array per stratum (the same order as the strata given).
MetricFn = Callable[..., float]


@dataclass(frozen=True)
class Comparison:
    """One metric, base against head: the difference, its interval and the verdict read from it."""

    metric: str  # e.g. "test.accuracy"
    base: float | None  # the metric on base (None when it cannot be computed)
    head: float | None
    difference: float  # head - base (point estimate)
    low: float  # interval of the difference at `confidence`
    high: float
    confidence: float  # e.g. 0.95
    p_value: float | None  # None for bootstrap comparisons
    method: str  # one of the METHOD_* names
    n: int  # images compared (paired) or base + head images (unpaired)
    higher_is_better: bool = True
    detail: str = ""  # e.g. "12 improved, 3 regressed" for McNemar

    @property
    def verdict(self) -> str:
        """BETTER or WORSE when the interval excludes 0 (direction by ``higher_is_better``), else NO_DIFFERENCE."""
        if self.low > 0:
            return BETTER if self.higher_is_better else WORSE
        if self.high < 0:
            return WORSE if self.higher_is_better else BETTER
        return NO_DIFFERENCE


# ---------------------------------------------------------------- validation


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")


def _as_outcomes(name: str, correct: np.ndarray) -> np.ndarray:
    """``correct`` as a 1-D boolean array (one entry per image); ValueError when empty or not 0/1."""
    values = np.asarray(correct)
    if values.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one entry per image), got shape {values.shape}")
    if values.size == 0:
        raise ValueError(f"{name} is empty: a comparison needs at least one scored image")
    if values.dtype != bool and not np.isin(values, (0, 1)).all():
        raise ValueError(f"{name} must be booleans (image right or wrong), got values other than 0 and 1")
    return values.astype(bool)


def _as_strata(name: str, strata: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Each stratum as a 1-D integer index array with enough images to be resampled."""
    parts = tuple(np.asarray(stratum) for stratum in strata)
    if not parts:
        raise ValueError(f"{name} is empty: give at least one array of image indices")
    for i, part in enumerate(parts):
        if part.ndim != 1 or len(part) < MIN_STRATUM_SIZE:
            raise ValueError(f"{name}[{i}] has shape {part.shape}: each stratum must be a 1-D array "
                             f"of at least {MIN_STRATUM_SIZE} image indices to be resampled")
        if not np.issubdtype(part.dtype, np.integer):
            raise ValueError(f"{name}[{i}] must hold integer row indices, got dtype {part.dtype}")
    return parts


# ---------------------------------------------------------------- proportions


def _mcnemar(improved: int, regressed: int, n: int, confidence: float) -> tuple[float, float, float]:
    """(low, high, p) for the paired difference of accuracies (improved - regressed)/n: exact McNemar.

    The interval is the Clopper-Pearson interval of pi = improved/(improved + regressed),
    mapped through (b + c)/n * (2 pi - 1); see the module docstring for why it agrees with p.
    """
    discordant = improved + regressed
    if discordant == 0:  # the models agree on every image: nothing to test, no difference
        return 0.0, 0.0, 1.0
    test = stats.binomtest(improved, discordant, _NULL_PROPORTION)
    ci = test.proportion_ci(confidence_level=confidence, method="exact")
    scale = discordant / n
    return scale * (2 * ci.low - 1), scale * (2 * ci.high - 1), float(test.pvalue)


def paired_proportions(metric: str, base_correct: np.ndarray, head_correct: np.ndarray,
                       confidence: float = CONFIDENCE_LEVEL) -> Comparison:
    """Accuracy of head against base on the same images (aligned boolean arrays): exact McNemar.

    ``base``/``head`` are the two accuracies; ``difference`` their difference;
    ``detail`` counts the images head fixed and broke.
    """
    _check_confidence(confidence)
    base = _as_outcomes("base_correct", base_correct)
    head = _as_outcomes("head_correct", head_correct)
    if len(base) != len(head):
        raise ValueError(f"a paired comparison needs the same images: base has {len(base)} outcomes, "
                         f"head {len(head)}; use unpaired_proportions when the test sets differ")
    n = len(base)
    improved, regressed = int(np.sum(head & ~base)), int(np.sum(base & ~head))
    low, high, p_value = _mcnemar(improved, regressed, n, confidence)
    return Comparison(metric=metric, base=float(base.mean()), head=float(head.mean()),
                      difference=(improved - regressed) / n, low=low, high=high, confidence=confidence,
                      p_value=p_value, method=METHOD_MCNEMAR, n=n,
                      detail=f"{improved} improved, {regressed} regressed")


def unpaired_proportions(metric: str, base_correct: np.ndarray, head_correct: np.ndarray,
                         confidence: float = CONFIDENCE_LEVEL) -> Comparison:
    """Accuracy of head against base on different images: Newcombe's interval, Fisher's exact p-value."""
    _check_confidence(confidence)
    base = _as_outcomes("base_correct", base_correct)
    head = _as_outcomes("head_correct", head_correct)
    base_right, head_right = int(base.sum()), int(head.sum())
    base_acc, head_acc = base_right / len(base), head_right / len(head)
    base_low, base_high = wilson_interval(base_right, len(base), confidence)
    head_low, head_high = wilson_interval(head_right, len(head), confidence)
    difference = head_acc - base_acc
    # Newcombe 1998, method 10: each end combines the two Wilson half-widths on the side it moves.
    low = difference - math.hypot(head_acc - head_low, base_high - base_acc)
    high = difference + math.hypot(head_high - head_acc, base_acc - base_low)
    table = [[head_right, len(head) - head_right], [base_right, len(base) - base_right]]
    p_value = float(stats.fisher_exact(table).pvalue)
    return Comparison(metric=metric, base=base_acc, head=head_acc, difference=difference, low=low, high=high,
                      confidence=confidence, p_value=p_value, method=METHOD_NEWCOMBE, n=len(base) + len(head),
                      detail=f"base {base_right}/{len(base)} right, head {head_right}/{len(head)} right")


# ---------------------------------------------------------------- bootstrap


def _percentile_interval(data: tuple[np.ndarray, ...], statistic: Callable[..., float], confidence: float,
                         resamples: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic``, each array of ``data`` resampled on its own."""
    _check_confidence(confidence)
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    images = sum(len(part) for part in data)
    with warnings.catch_warnings():
        # scipy warns about "the BCa interval" when a bound is NaN; the error below says more, about our method.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(data, statistic, paired=False, vectorized=False, method="percentile",
                                 n_resamples=resamples, batch=max(1, BOOTSTRAP_MAX_CELLS // images),
                                 confidence_level=confidence, rng=np.random.default_rng(seed))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        # A NaN bound would read as "no difference"; a metric undefined on some resamples is a bug to fix.
        raise ValueError("the bootstrap interval is undefined: the metric is not finite on some resamples "
                         "(stratify so each resample keeps every kind of image the metric needs)")
    return low, high


def _bootstrap_detail(resamples: int, seed: int, strata: Sequence[np.ndarray]) -> str:
    sizes = "+".join(str(len(part)) for part in strata)
    return f"{resamples} resamples, seed {seed}, strata {sizes}"


def paired_bootstrap(metric: str, base_value: MetricFn, head_value: MetricFn, strata: Sequence[np.ndarray],
                     confidence: float, resamples: int, seed: int, higher_is_better: bool = True) -> Comparison:
    """Any metric of head against base on the same images: stratified paired percentile bootstrap.

    ``base_value(*index_arrays)`` and ``head_value(*index_arrays)`` compute the
    metric on the rows the arrays select, one array per stratum (rows aligned
    between base and head, so one resample selects the same images for both).
    Each stratum is resampled with replacement on its own; the point estimates
    use every row. Same ``seed``, same interval.
    """
    parts = _as_strata("strata", strata)

    def statistic(*indices: np.ndarray) -> float:
        return head_value(*indices) - base_value(*indices)

    base, head = float(base_value(*parts)), float(head_value(*parts))
    low, high = _percentile_interval(parts, statistic, confidence, resamples, seed)
    return Comparison(metric=metric, base=base, head=head, difference=head - base, low=low, high=high,
                      confidence=confidence, p_value=None, method=METHOD_PAIRED_BOOTSTRAP,
                      n=sum(len(part) for part in parts), higher_is_better=higher_is_better,
                      detail=_bootstrap_detail(resamples, seed, parts))


def unpaired_bootstrap(metric: str, base_value: MetricFn, head_value: MetricFn, base_strata: Sequence[np.ndarray],
                       head_strata: Sequence[np.ndarray], confidence: float, resamples: int, seed: int,
                       higher_is_better: bool = True) -> Comparison:
    """Any metric of head against base on different images: base and head resampled independently.

    ``base_value(*base_index_arrays)`` and ``head_value(*head_index_arrays)``
    take one index array per stratum of their own side; every stratum of both
    sides is resampled with replacement on its own.
    """
    base_parts, head_parts = _as_strata("base_strata", base_strata), _as_strata("head_strata", head_strata)
    split = len(base_parts)

    def statistic(*indices: np.ndarray) -> float:
        return head_value(*indices[split:]) - base_value(*indices[:split])

    base, head = float(base_value(*base_parts)), float(head_value(*head_parts))
    low, high = _percentile_interval((*base_parts, *head_parts), statistic, confidence, resamples, seed)
    return Comparison(metric=metric, base=base, head=head, difference=head - base, low=low, high=high,
                      confidence=confidence, p_value=None, method=METHOD_UNPAIRED_BOOTSTRAP,
                      n=sum(len(part) for part in (*base_parts, *head_parts)), higher_is_better=higher_is_better,
                      detail=_bootstrap_detail(resamples, seed, (*base_parts, *head_parts)))


# ---------------------------------------------------------------- multiple comparisons


def corrected_confidence(confidence: float, comparisons: int) -> float:
    """Bonferroni: the confidence of each of ``comparisons`` intervals so all hold together at ``confidence``.

    1 - (1 - confidence)/comparisons: five per-class comparisons at 95% overall
    are made at 99% each, so a pull request that changes nothing flags a class
    in at most 5% of reviews, not 23%.
    """
    _check_confidence(confidence)
    if isinstance(comparisons, bool) or int(comparisons) != comparisons or comparisons < 1:
        raise ValueError(f"comparisons must be a whole number of at least 1, got {comparisons!r}")
    return 1 - (1 - confidence) / int(comparisons)
