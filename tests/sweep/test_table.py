"""signflow.sweep.table: one row per point, sorting with missing values last, Markdown and CSV; seed summaries."""

from __future__ import annotations

import csv
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
from scipy import stats

from signflow.sweep import grid, table
from signflow.sweep.grid import Point, SweepError
from signflow.sweep.runner import FAILED, SKIPPED, SUCCESS, ExperimentState

from .fakes import EVALUATE, TRAIN_TIMINGS, metrics


def point(index: int, lr: float, skip_reason: str | None = None) -> Point:
    return Point(index, f"sweep-{index}", (f"train.lr={lr}",), {"train.lr": lr}, skip_reason)


def test_rows_keep_failed_and_skipped_points() -> None:
    states = {"sweep-1": ExperimentState(SUCCESS, metrics(0.9, 3.5), {}),
              "sweep-3": ExperimentState(FAILED, metrics(0.25), {}),  # the baseline's files, copied
              "sweep-4": ExperimentState(SUCCESS, metrics(0.7), {})}
    points = [point(1, 0.01), point(2, 0.1, "makes no sense"), point(3, 1.0), point(4, 1e-4)]
    rows = table.build_rows(points, states, {"sweep-3": "ValueError: boom"})
    assert [row["experiment"] for row in rows] == ["sweep-1", "sweep-2", "sweep-3", "sweep-4"]
    assert rows[0] == {"experiment": "sweep-1", "train.lr": 0.01, "test.accuracy": 0.9, "test.macro_f1": 0.45,
                       "openset.auroc": 0.9, "train_seconds": 3.5, "status": SUCCESS, "note": ""}
    assert rows[2]["status"] == FAILED and rows[2]["test.accuracy"] is None and rows[2]["note"] == "ValueError: boom"
    assert rows[1]["status"] == SKIPPED and rows[1]["note"] == "makes no sense"
    assert not table.all_succeeded(rows) and table.all_succeeded([rows[0], rows[1]])

    columns = table.columns_for(["train.lr"])
    lines = table.markdown_table(table.sort_rows(rows, "test.accuracy"), columns).splitlines()
    assert lines[0] == ("| experiment | train.lr | test.accuracy | test.macro_f1 | openset.auroc | train_seconds "
                        "| status | note |")
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| sweep-1", "| sweep-4", "| sweep-2", "| sweep-3"]
    assert "| 0.9000 |" in lines[2] and "| 0.0001 |" in lines[3] and "boom" in lines[5] and len(lines) == 6
    rows_csv = list(csv.DictReader(table.csv_text(rows, columns).splitlines()))
    assert [row["status"] for row in rows_csv] == [SUCCESS, SKIPPED, FAILED, SUCCESS]
    assert rows_csv[0]["test.accuracy"] == "0.9" and rows_csv[2]["test.accuracy"] == ""


def test_metrics_columns_read_their_files() -> None:
    assert {file for _, file, _ in table.METRICS} == {EVALUATE, TRAIN_TIMINGS}


def test_sorting_puts_missing_values_last() -> None:
    rows = [{"experiment": name, "test.accuracy": acc, "train_seconds": sec}
            for name, acc, sec in [("a", 0.5, 3.0), ("b", None, None), ("c", 0.9, 1.0), ("d", 0.7, None)]]
    assert [r["experiment"] for r in table.sort_rows(rows, "test.accuracy")] == ["c", "d", "a", "b"]
    assert [r["experiment"] for r in table.sort_rows(rows, "test.accuracy", descending=False)] == ["a", "d", "c", "b"]
    assert [r["experiment"] for r in table.sort_rows(rows, "train_seconds", descending=False)] == ["c", "a", "b", "d"]
    mixed = [{"experiment": "x", "v": "linear"}, {"experiment": "y", "v": 2}, {"experiment": "z", "v": None}]
    assert [r["experiment"] for r in table.sort_rows(mixed, "v", descending=False)] == ["y", "x", "z"]
    with pytest.raises(SweepError, match="--sort-by 'nope'"):
        table.sort_rows(rows, "nope")


def test_cells_stay_on_one_line_and_values_read_as_dvc_writes_them() -> None:
    rows = [{"experiment": "e", "k": "a|b", "flag": False, "ids": [15, 32], "status": FAILED,
             "note": "line one\nline | two"}]
    body = table.markdown_table(rows, ["experiment", "k", "flag", "ids", "status", "note"]).splitlines()[2]
    assert body == "| e | a\\|b | false | [15, 32] | failed | line one line \\| two |"


# ------------------------------------------------------------------ over seeds


def seeded_points(skip_second: bool = False) -> list[Point]:
    """Two grid points (train.lr 0.01, 0.1) over two seeds, as `--seeds 2` plans them."""
    planned = grid.repeat_over_seeds([point(1, 0.01), point(2, 0.1)], 2, ["train.seed"])
    return planned if not skip_second else [*planned[:2], *(replace(p, skip_reason="no") for p in planned[2:])]


def test_seed_summary_has_mean_sd_and_interval_per_point_ranked_by_its_lower_bound() -> None:
    points = seeded_points()
    accuracies = {"sweep-1-s0": 0.99, "sweep-1-s1": 0.70, "sweep-2-s0": 0.80, "sweep-2-s1": 0.82}
    states = {name: ExperimentState(SUCCESS, metrics(acc), {}) for name, acc in accuracies.items()}
    rows = table.build_rows(points, states)
    summary = table.build_summary(points, rows, ["train.seed"], "test.accuracy")
    # sweep-1 has the better mean (0.845), but its interval reaches far down; sweep-2's is narrow
    assert [row["point"] for row in summary] == ["sweep-2", "sweep-1"]
    assert summary[1]["test.accuracy.mean"] > summary[0]["test.accuracy.mean"]
    best = summary[0]
    expected = stats.ttest_1samp([0.80, 0.82], 0).confidence_interval(0.95)
    assert best["train.lr"] == 0.1 and "train.seed" not in best and best["n"] == 2
    assert best["test.accuracy.mean"] == pytest.approx(0.81)
    assert best["test.accuracy.sd"] == pytest.approx(statistics.stdev([0.80, 0.82]))
    assert (best["test.accuracy.low"], best["test.accuracy.high"]) == pytest.approx((expected.low, expected.high))
    assert best["status"] == SUCCESS and best["top"] is True and summary[1]["top"] is True  # n=2: nothing is sure

    md = table.summary_columns(["train.lr", "train.seed"], ["train.seed"], for_csv=False)
    assert md[:3] == ["point", "train.lr", "n"] and "test.accuracy.ci95" in md and "test.accuracy.low" not in md
    lines = table.markdown_table(summary, md).splitlines()
    assert f"| [{expected.low:.4f}, {expected.high:.4f}] |" in lines[2] and "| 0.8100 |" in lines[2]
    csv_columns = table.summary_columns(["train.lr", "train.seed"], ["train.seed"], for_csv=True)
    assert {"test.accuracy.mean", "test.accuracy.sd", "test.accuracy.low", "test.accuracy.high"} <= set(csv_columns)


def test_a_failed_seed_is_left_out_of_its_points_statistics_and_named_in_its_note(tmp_path: Path) -> None:
    points = seeded_points(skip_second=True)
    states = {"sweep-1-s0": ExperimentState(SUCCESS, metrics(0.9), {}),
              "sweep-1-s1": ExperimentState(FAILED, metrics(0.1), {})}
    rows = table.build_rows(points, states, {"sweep-1-s1": "ValueError: boom"})
    summary = table.build_summary(points, rows, ["train.seed"], "test.accuracy")
    first, second = summary
    assert first["point"] == "sweep-1" and first["n"] == 1 and first["test.accuracy.mean"] == 0.9
    assert first["test.accuracy.sd"] is None and first["test.accuracy.ci95"] == table.NO_VALUE
    assert first["status"] == FAILED and first["note"] == "sweep-1-s1: ValueError: boom"
    assert second["status"] == SKIPPED and second["n"] == 0 and first["top"] is None  # one seed: nothing marked

    out = tmp_path / "sweep.md"
    runs = table.with_points(points, rows)
    text = table.write_seed_results(summary, ["train.lr"], ["train.seed"], runs, out)
    assert out.read_text() == text and text.count("| point |") == 2  # the summary, then every experiment
    assert "| - | - |" in text  # one seed: no sd, no interval (the top mark is "-" too)
    summary_csv = list(csv.DictReader(out.with_suffix(".csv").read_text().splitlines()))
    assert summary_csv[0]["test.accuracy.low"] == "" and summary_csv[0]["n"] == "1"
    runs_csv = list(csv.DictReader(table.runs_csv_path(out).read_text().splitlines()))
    assert [(row["experiment"], row["point"], row["train.seed"]) for row in runs_csv] == [
        ("sweep-1-s0", "sweep-1", "0"), ("sweep-1-s1", "sweep-1", "1"), ("sweep-2-s0", "sweep-2", "0"),
        ("sweep-2-s1", "sweep-2", "1")]
