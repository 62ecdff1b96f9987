"""signflow.sweep.seeds: per-point statistics over seeds, ranking by the interval's lower bound, the top mark."""

from __future__ import annotations

import statistics

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from signflow.sweep import seeds


def frame(values: dict[str, list[float | None]], metric: str = "acc") -> pd.DataFrame:
    return pd.DataFrame([{"point": point, metric: value} for point, items in values.items() for value in items])


@pytest.mark.parametrize("values", [[0.81, 0.84, 0.79], [0.5, 0.9], [1.0, 2.0, 4.0, 8.0, 16.0]])
def test_interval_is_scipys_t_interval_of_the_mean(values: list[float]) -> None:
    expected = stats.ttest_1samp(values, 0).confidence_interval(seeds.CONFIDENCE)  # scipy's other route to it
    assert seeds.t_interval(values) == pytest.approx((expected.low, expected.high))
    described = seeds.describe([*values, None, float("nan")])  # missing seeds are dropped
    assert described["n"] == len(values) and described["mean"] == pytest.approx(statistics.fmean(values))
    assert described["sd"] == pytest.approx(statistics.stdev(values))  # ddof=1
    assert (described["low"], described["high"]) == pytest.approx((expected.low, expected.high))


def test_one_value_has_no_spread_and_equal_values_a_point_interval() -> None:
    assert seeds.t_interval([0.7]) is None
    assert seeds.describe([0.7]) == {"n": 1, "mean": 0.7, "sd": None, "low": None, "high": None}
    assert seeds.t_interval([0.7, 0.7, 0.7]) == (0.7, 0.7)
    assert seeds.describe([])["mean"] is None


def test_points_rank_by_the_lower_bound_not_the_mean() -> None:
    rows = frame({"wide": [0.95, 0.65, 0.95], "tight": [0.84, 0.85, 0.86], "low": [0.5, 0.52, 0.51]})
    summary = seeds.summarize(rows, "point", ["acc"])
    by_mean = summary.sort_values("acc.mean", ascending=False)["point"].tolist()
    assert by_mean == ["wide", "tight", "low"]  # wide has the best mean, but its interval reaches far down
    lows = {name: stats.ttest_1samp(group["acc"], 0).confidence_interval().low for name, group in rows.groupby("point")}
    assert lows["tight"] > lows["low"] > lows["wide"]
    assert seeds.rank(summary, "acc")["point"].tolist() == ["tight", "low", "wide"]
    # Lower is better (e.g. seconds): ranked by the upper bound, ascending.
    assert seeds.rank(summary, "acc", higher_is_better=False)["point"].tolist() == ["low", "tight", "wide"]
    assert list(summary.columns) == ["point", "n", "acc.mean", "acc.sd", "acc.low", "acc.high"]


def test_with_one_seed_ranking_falls_back_to_the_value_and_points_without_values_go_last() -> None:
    summary = seeds.summarize(frame({"a": [0.6], "b": [None], "c": [0.9]}), "point", ["acc"])
    assert seeds.rank(summary, "acc")["point"].tolist() == ["c", "a", "b"]
    assert summary["n"].tolist() == [1, 0, 1]


def test_top_marks_every_point_no_other_beats_significantly() -> None:
    rng = np.random.default_rng(0)
    clearly_better = frame({"best": list(0.9 + rng.normal(0, 0.005, 5)), "tie_a": list(0.7 + rng.normal(0, 0.01, 5)),
                            "tie_b": list(0.7 + rng.normal(0, 0.01, 5))})
    assert seeds.top_points(clearly_better, "point", "acc") == {"best"}
    # Two tied at the top are both marked; the clearly worse one is not.
    tied_top = frame({"tie_a": [0.90, 0.92, 0.88], "tie_b": [0.91, 0.89, 0.90], "worse": [0.60, 0.62, 0.61]})
    assert seeds.top_points(tied_top, "point", "acc") == {"tie_a", "tie_b"}
    # Lower is better: the same data, the other way round.
    assert seeds.top_points(tied_top, "point", "acc", higher_is_better=False) == {"worse"}


def test_the_top_mark_uses_welchs_one_sided_test() -> None:
    better, worse = [0.80, 0.90, 0.85], [0.70, 0.74, 0.72, 0.71]
    welch = stats.ttest_ind(better, worse, equal_var=False, alternative="greater").pvalue
    assert seeds.beats(better, worse) == (welch < seeds.ALPHA) and seeds.beats(better, worse)
    assert not seeds.beats(worse, better)
    close = [0.71, 0.75, 0.73]  # overlaps `worse`: not significantly better
    assert stats.ttest_ind(close, worse, equal_var=False, alternative="greater").pvalue >= seeds.ALPHA
    assert not seeds.beats(close, worse)
    assert seeds.beats([0.9, 0.9], [0.8, 0.8]) and not seeds.beats([0.8, 0.8], [0.8, 0.8])  # no spread at all


def test_nothing_is_marked_when_a_point_has_one_seed() -> None:
    assert seeds.top_points(frame({"a": [0.9, 0.91], "b": [0.5]}), "point", "acc") is None
    assert seeds.top_points(frame({"a": [None, None], "b": [0.5, 0.6]}), "point", "acc") == {"b"}
