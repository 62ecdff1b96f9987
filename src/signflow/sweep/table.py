"""A sweep's results table: one row per point (its params, metrics, status and note), sorted, as Markdown and CSV.

Skipped and failed points stay listed, with why; a failed experiment's metrics
files are the baseline's (copied into its commit), so its metrics are not shown.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from signflow import markdown, paths
from signflow.files import write_text
from signflow.sweep.grid import Point, SweepError
from signflow.sweep.runner import MISSING, SKIPPED, SUCCESS, ExperimentState

log = logging.getLogger(__name__)

DEFAULT_SORT = "test.accuracy"
FLOAT_DIGITS = 4  # metric precision in the Markdown table (the CSV keeps full precision)
# Columns after the name and the swept params: (column, metrics file, key in it).
METRICS: tuple[tuple[str, str, str], ...] = (
    ("test.accuracy", paths.EVALUATE_METRICS.as_posix(), "test.accuracy"),
    ("test.macro_f1", paths.EVALUATE_METRICS.as_posix(), "test.macro_f1"),
    ("openset.auroc", paths.EVALUATE_METRICS.as_posix(), "openset.auroc"),
    ("train_seconds", paths.TRAIN_TIMINGS.as_posix(), "train_seconds"),  # a timings file: see paths.TIMINGS_DIR
)
METRIC_COLUMNS = frozenset(column for column, _, _ in METRICS)
NAME_COLUMN, STATUS_COLUMN, NOTE_COLUMN = "experiment", "status", "note"


def columns_for(grid_keys: Sequence[str]) -> list[str]:
    return [NAME_COLUMN, *grid_keys, *(column for column, _, _ in METRICS), STATUS_COLUMN, NOTE_COLUMN]


def build_rows(
    points: Sequence[Point], states: Mapping[str, ExperimentState], notes: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """One row per point: its params, metrics (successful experiments only), status and note."""
    notes = notes or {}
    rows = []
    for point in points:
        row: dict[str, Any] = {NAME_COLUMN: point.name, **point.values}
        state = None if point.skip_reason else states.get(point.name)
        status = SKIPPED if point.skip_reason else (state.status if state else MISSING)
        for column, file, key in METRICS:
            row[column] = state.metrics.get(file, {}).get(key) if state and status == SUCCESS else None
        row[STATUS_COLUMN] = status
        row[NOTE_COLUMN] = point.skip_reason or notes.get(point.name, "")
        rows.append(row)
    return rows


def _sortable(value: Any) -> tuple[int, Any]:
    """Numbers before text, so a column mixing them still sorts."""
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def check_sort_column(column: str, columns: Sequence[str]) -> None:
    if column not in columns:
        raise SweepError(f"--sort-by {column!r}: not a column; choose one of {', '.join(columns)}")


def sort_rows(rows: Sequence[Mapping[str, Any]], column: str, descending: bool = True) -> list[dict[str, Any]]:
    """Rows sorted by ``column``; rows without a value (skipped, failed) last, in their grid order."""
    if rows:
        check_sort_column(column, list(rows[0]))
    present = [dict(row) for row in rows if row.get(column) is not None]
    missing = [dict(row) for row in rows if row.get(column) is None]
    return sorted(present, key=lambda row: _sortable(row[column]), reverse=descending) + missing


def value_text(value: Any) -> str:
    """A cell's text: strings as they are, anything else as JSON (true, null, [15, 32]), empty for None."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def _cell(column: str, value: Any) -> str:
    if isinstance(value, float) and column in METRIC_COLUMNS:
        return f"{value:.{FLOAT_DIGITS}f}"
    return value_text(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    body = [[_cell(column, row.get(column)) for column in columns] for row in rows]
    return markdown.table(columns, body) + "\n"


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([value_text(row.get(column)) for column in columns] for row in rows)
    return buffer.getvalue()


def write_results(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], out: Path) -> str:
    """Write ``out`` (Markdown) and the same rows as CSV beside it, atomically; return the Markdown."""
    text = markdown_table(rows, columns)
    write_text(out, text)
    write_text(out.with_suffix(".csv"), csv_text(rows, columns))
    log.info("wrote %s and %s", out, out.with_suffix(".csv"))
    return text


def all_succeeded(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Every point that was not skipped succeeded."""
    return all(row[STATUS_COLUMN] in (SUCCESS, SKIPPED) for row in rows)
