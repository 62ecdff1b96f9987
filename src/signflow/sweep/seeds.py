"""A sweep over seeds, summarised: per grid point the mean, sd and 95% t-interval of each metric, ranks and marks.

One seed is one draw of the training noise; a point's mean over a few seeds
still moves from draw to draw, so points are ranked by the interval's lower
bound of the chosen metric (the value the point beats with 95% confidence),
not by the mean, and a point is marked "top" when no other point is better by a
one-sided Welch t-test (unequal variances: seeds of different configurations
need not vary alike) at 5%. The statistics are scipy's (``scipy.stats.t``,
``scipy.stats.ttest_ind``); the functions here only group rows and name columns.
With one seed per point there is no spread: the interval is missing, ranking
falls back to the value, and no point is marked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95  # the interval's coverage
ALPHA = 0.05  # one-sided level at which another point "beats" a point
MIN_SEEDS = 2  # the fewest values with a spread (sd, interval, t-test)
# Statistic columns of a metric, `<metric>.<suffix>`.
MEAN, SD, LOW, HIGH = "mean", "sd", "low", "high"
N_COLUMN, TOP_COLUMN = "n", "top"


def column(metric: str, statistic: str) -> str:
    return f"{metric}.{statistic}"


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The t-interval of the mean of ``values``, or None below two values (no spread to scale it by)."""
    values = np.asarray(values, dtype=float)
    if len(values) < MIN_SEEDS:
        return None
    if np.ptp(values) == 0:  # every seed agrees: scipy's interval is (nan, nan) for a zero scale
        return float(values[0]), float(values[0])
    mean, sem = float(values.mean()), float(stats.sem(values))
    low, high = stats.t.interval(confidence, df=len(values) - 1, loc=mean, scale=sem)
    return float(low), float(high)


def describe(values: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, float | int | None]:
    """n, mean, sd (ddof=1) and interval bounds of ``values`` (missing ones dropped); None where undefined."""
    present = [float(value) for value in values if value is not None and not math.isnan(value)]
    interval = t_interval(present, confidence)
    return {N_COLUMN: len(present), MEAN: float(np.mean(present)) if present else None,
            SD: float(np.std(present, ddof=1)) if len(present) >= MIN_SEEDS else None,
            LOW: interval[0] if interval else None, HIGH: interval[1] if interval else None}


def summarize(rows: pd.DataFrame, group: str, metrics: Sequence[str], confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per ``group`` value (in first-seen order): ``n`` (the most values any metric has) and, per metric,
    `<metric>.mean|sd|low|high`."""
    summary = []
    for name, members in rows.groupby(group, sort=False):
        row: dict[str, object] = {group: name, N_COLUMN: 0}
        for metric in metrics:
            described = describe(members[metric].tolist(), confidence)
            row[N_COLUMN] = max(row[N_COLUMN], described.pop(N_COLUMN))
            row.update({column(metric, statistic): value for statistic, value in described.items()})
        summary.append(row)
    return pd.DataFrame(summary)


def rank_key(summary: pd.DataFrame, metric: str, higher_is_better: bool = True) -> pd.Series:
    """What ranks the points: the interval's worse end (lower bound, or upper when lower is better); the mean
    where there is no interval (one seed)."""
    bound = column(metric, LOW if higher_is_better else HIGH)
    return summary[bound].astype(float).fillna(summary[column(metric, MEAN)].astype(float))


def rank(summary: pd.DataFrame, metric: str, higher_is_better: bool = True) -> pd.DataFrame:
    """``summary`` best first by ``rank_key``; points without a value last, in their order."""
    key = rank_key(summary, metric, higher_is_better)
    order = key.sort_values(ascending=not higher_is_better, na_position="last", kind="stable").index
    return summary.loc[order].reset_index(drop=True)


def beats(better: Sequence[float], worse: Sequence[float], higher_is_better: bool = True,
          alpha: float = ALPHA) -> bool:
    """Whether ``better`` is significantly better than ``worse``: a one-sided Welch t-test at ``alpha``."""
    better, worse = _present(better), _present(worse)
    if len(better) < MIN_SEEDS or len(worse) < MIN_SEEDS:
        return False
    alternative = "greater" if higher_is_better else "less"
    if np.ptp(better) == 0 and np.ptp(worse) == 0:  # no spread: scipy's answer (t = ±inf or nan) with a warning
        return bool(better[0] > worse[0]) if higher_is_better else bool(better[0] < worse[0])
    pvalue = stats.ttest_ind(better, worse, equal_var=False, alternative=alternative).pvalue
    return bool(pvalue < alpha)


def _present(values: Sequence[float]) -> np.ndarray:
    array = np.asarray([value for value in values if value is not None], dtype=float)
    return array[~np.isnan(array)]


def top_points(rows: pd.DataFrame, group: str, metric: str, higher_is_better: bool = True,
               alpha: float = ALPHA) -> set[str] | None:
    """The points no other point beats (``beats``) on ``metric``; None unless every point with values has
    two or more (with one seed nothing can be told apart, so nothing is marked)."""
    values = {name: _present(members[metric].tolist()) for name, members in rows.groupby(group, sort=False)}
    values = {name: array for name, array in values.items() if len(array)}
    if not values or any(len(array) < MIN_SEEDS for array in values.values()):
        return None
    return {name for name, array in values.items()
            if not any(beats(other, array, higher_is_better, alpha) for key, other in values.items() if key != name)}
