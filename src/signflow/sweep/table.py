"""A sweep's results table: one row per point (its params, metrics, status and note), sorted, as Markdown and CSV.

Skipped and failed points stay listed, with why; a failed experiment's metrics
files are the baseline's (copied into its commit), so its metrics are not shown.
A sweep over seeds gets a summary first: one row per grid point with each
metric's mean, sd and 95% interval over its seeds (``signflow.sweep.seeds``),
ranked by the interval's lower bound and marked where no point beats it; the
per-experiment table follows, and its CSV goes beside the summary's.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from signflow import markdown, paths
from signflow.files import write_text
from signflow.sweep import seeds
from signflow.sweep.grid import Point, SweepError
from signflow.sweep.runner import FAILED, MISSING, SKIPPED, SUCCESS, ExperimentState

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
POINT_COLUMN, INTERVAL = "point", "ci95"  # a seed summary's name column; its interval column `<metric>.ci95`
RUNS_SUFFIX = "-runs"  # a seed sweep's per-experiment CSV: <out stem>-runs.csv
NO_VALUE = "-"  # a statistic one seed cannot give (sd, interval, the top mark)


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


def _is_metric(column: str) -> bool:
    """A metric column or one of its statistics (`test.accuracy`, `test.accuracy.mean`)."""
    return column in METRIC_COLUMNS or column.rsplit(".", 1)[0] in METRIC_COLUMNS


def _number(value: float) -> str:
    return f"{value:.{FLOAT_DIGITS}f}"


def _cell(column: str, value: Any) -> str:
    if column == seeds.TOP_COLUMN:
        return NO_VALUE if value is None else ("yes" if value else "")
    if isinstance(value, float) and _is_metric(column):
        return _number(value)
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


# ------------------------------------------------------------------ sweeps over seeds


def summary_columns(grid_keys: Sequence[str], seed_keys: Sequence[str], *, for_csv: bool) -> list[str]:
    """A seed summary's columns: the point, its params (not the seeds), n, per metric mean, sd and the interval
    (one `[low, high]` column in Markdown, `.low` and `.high` in CSV), the top mark, status and note."""
    interval = [seeds.LOW, seeds.HIGH] if for_csv else [INTERVAL]
    stats_columns = [seeds.column(metric, statistic) for metric, _, _ in METRICS
                     for statistic in (seeds.MEAN, seeds.SD, *interval)]
    params = [key for key in grid_keys if key not in seed_keys]
    return [POINT_COLUMN, *params, seeds.N_COLUMN, *stats_columns, seeds.TOP_COLUMN, STATUS_COLUMN, NOTE_COLUMN]


def run_columns(grid_keys: Sequence[str], seed_keys: Sequence[str]) -> list[str]:
    """The per-experiment table of a seed sweep: the plain table with its point and the seed keys."""
    plain = columns_for([key for key in grid_keys if key not in seed_keys])
    return [plain[0], POINT_COLUMN, *seed_keys, *plain[1:]]


def _interval_text(low: float | None, high: float | None) -> str:
    return NO_VALUE if low is None or high is None or pd.isna(low) else f"[{_number(low)}, {_number(high)}]"


def _point_status(statuses: Sequence[str]) -> str:
    """success when every seed succeeded, skipped when all were, else failed (the note says which)."""
    if all(status == SKIPPED for status in statuses):
        return SKIPPED
    return SUCCESS if all(status in (SUCCESS, SKIPPED) for status in statuses) else FAILED


def _clean(value: Any) -> Any:
    """pandas' NaN as None (an empty cell), numpy scalars as Python's."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def with_points(points: Sequence[Point], rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``build_rows``' rows, each with the grid point its experiment repeats."""
    return [{**row, POINT_COLUMN: point.point} for point, row in zip(points, rows, strict=True)]


def build_summary(
    points: Sequence[Point], rows: Sequence[Mapping[str, Any]], seed_keys: Sequence[str], sort_by: str,
    descending: bool = True,
) -> list[dict[str, Any]]:
    """One row per grid point from the per-experiment ``rows`` (``build_rows``), ranked by ``sort_by``: for a
    metric by its interval's worse end (``seeds.rank``) with the top mark; for a param by its value."""
    metrics = [metric for metric, _, _ in METRICS]
    frame = pd.DataFrame(with_points(points, rows))
    ranked = sort_by in METRIC_COLUMNS
    summary = seeds.summarize(frame, POINT_COLUMN, metrics)
    if ranked:
        summary = seeds.rank(summary, sort_by, higher_is_better=descending)
    top = seeds.top_points(frame, POINT_COLUMN, sort_by, higher_is_better=descending) if ranked else None
    first = {}
    for point in points:
        first.setdefault(point.point, point)
    members = frame.groupby(POINT_COLUMN, sort=False)
    result = []
    for record in summary.to_dict("records"):
        name = record[POINT_COLUMN]
        group = members.get_group(name)
        row = {POINT_COLUMN: name,
               **{key: value for key, value in first[name].values.items() if key not in seed_keys},
               **{key: _clean(value) for key, value in record.items() if key != POINT_COLUMN}}
        for metric in metrics:
            row[seeds.column(metric, INTERVAL)] = _interval_text(row[seeds.column(metric, seeds.LOW)],
                                                                row[seeds.column(metric, seeds.HIGH)])
        row[seeds.TOP_COLUMN] = None if top is None else name in top
        row[STATUS_COLUMN] = _point_status(group[STATUS_COLUMN].tolist())
        notes = zip(group[NAME_COLUMN], group[NOTE_COLUMN], strict=True)
        row[NOTE_COLUMN] = "; ".join(f"{experiment}: {note}" for experiment, note in notes if note)
        result.append(row)
    return result if ranked else sort_rows(result, sort_by, descending)


def runs_csv_path(out: Path) -> Path:
    return out.with_name(out.stem + RUNS_SUFFIX + ".csv")


def write_seed_results(
    summary: Sequence[Mapping[str, Any]], grid_keys: Sequence[str], seed_keys: Sequence[str],
    runs: Sequence[Mapping[str, Any]], out: Path,
) -> str:
    """Write ``out`` (the summary, then every experiment, in Markdown), its CSV beside it and the experiments'
    CSV (``runs_csv_path``); return the Markdown."""
    md_columns = summary_columns(grid_keys, seed_keys, for_csv=False)
    experiment_columns = run_columns(grid_keys, seed_keys)
    text = (markdown_table(summary, md_columns) + "\nEvery experiment:\n\n"
            + markdown_table(runs, experiment_columns))
    write_text(out, text)
    write_text(out.with_suffix(".csv"), csv_text(summary, summary_columns(grid_keys, seed_keys, for_csv=True)))
    write_text(runs_csv_path(out), csv_text(runs, experiment_columns))
    log.info("wrote %s, %s and %s", out, out.with_suffix(".csv"), runs_csv_path(out))
    return text


def is_seeded(points: Sequence[Point]) -> bool:
    """Whether the sweep repeats its points over seeds (its experiments belong to groups)."""
    return any(point.group for point in points)
