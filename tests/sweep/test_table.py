"""signflow.sweep.table: one row per point, sorting with missing values last, Markdown and CSV."""

from __future__ import annotations

import csv

import pytest

from signflow.sweep import table
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
