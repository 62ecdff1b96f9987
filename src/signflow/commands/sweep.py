"""`signflow sweep`: a grid of `dvc exp run` experiments, queued, waited for, and tabled.

Why not just `dvc exp run --queue -S strategy=linear,full`: DVC queues every
point of such a grid blindly. A typo (`strategy=foo`) then fails in each
experiment after minutes of work, and points that make no sense (a `linear`
head on `simple_cnn`, which has no pretrained weights) waste a worker. Here the
grid is expanded as DVC expands it, every point is applied to a copy of
``params.yaml`` and validated with ``load_config``, senseless points are skipped
with the reason, and only then is anything queued: one named experiment per
point (`<prefix>-<index>`), run by `dvc queue start -j N`. The results come from
`dvc exp show --json` as one table, Markdown and CSV (``signflow.sweep``).

One training run is one draw of its seeds: `--seeds N` repeats every point over
seeds 0..N-1 (`<prefix>-<index>-s<seed>`), and the table then gives per point
the mean, sd and 95% interval of each metric, ranked by the interval's lower
bound. Finally the sweep becomes one MLflow parent run with its experiments'
runs nested under it (``signflow.sweep.mlflow_parent``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from signflow import paths
from signflow.commands.args import float_above, int_at_least
from signflow.processes import CommandError
from signflow.sweep import grid, runner, seeds, table
from signflow.sweep.runner import Outcome

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1  # some queued experiment failed or did not finish in time
EXIT_ERROR = 2  # nothing ran: bad grid, invalid point, or a dvc command failed
DEFAULT_JOBS = 1
# Not under reports/: that folder is the `report` stage's DVC output, so a file
# written there makes `dvc status` list the stage as changed and the next
# `dvc repro` deletes it.
DEFAULT_OUT = Path("sweeps/sweep.md")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `signflow sweep` (the CLI registers the subcommand)."""
    parser.add_argument("-S", "--set-param", dest="set_params", action="append", default=[], metavar="KEY=V1,V2",
                        help="a grid axis in dvc exp run's syntax, e.g. -S strategy=linear,full or "
                             "-S 'train.lr=range(0.001,0.004,0.001)' (repeatable)")
    parser.add_argument("--grid", type=Path, metavar="FILE.yaml",
                        help="YAML mapping of dotted params key -> list of values (merged with -S)")
    parser.add_argument("--jobs", "-j", type=int_at_least(1), default=DEFAULT_JOBS,
                        help="experiments run in parallel by `dvc queue start -j` (default: %(default)s)")
    parser.add_argument("--prefix", default=grid.DEFAULT_PREFIX,
                        help="experiment names are <prefix>-<index> (default: %(default)s)")
    parser.add_argument("--seeds", type=int_at_least(1), default=1, metavar="N",
                        help="run every point with seeds 0..N-1 and table mean, sd and 95%% interval per point "
                             "(default: %(default)s)")
    parser.add_argument("--seed-keys", type=lambda text: text.split(","), default=list(grid.DEFAULT_SEED_KEYS),
                        metavar="KEY[,KEY]", help="the params keys --seeds sets, e.g. train.seed,split.seed; a grid "
                                                  "that varies one of them is grouped by the rest (default: "
                                                  f"{','.join(grid.DEFAULT_SEED_KEYS)})")
    parser.add_argument("--name", help="the sweep's MLflow parent run and signflow.sweep tag (default: the prefix)")
    parser.add_argument("--stage", metavar="STAGE",
                        help="run each experiment up to this dvc.yaml stage, e.g. evaluate (the table's metrics) "
                             "to skip report and export (default: the whole pipeline)")
    parser.add_argument("--timeout", type=float_above(0, "a number of seconds"), metavar="SECONDS",
                        help="stop waiting after this long; unfinished points count as failed (default: no limit)")
    parser.add_argument("--sort-by", default=table.DEFAULT_SORT,
                        help="table column to sort by, missing values last; over seeds a metric ranks by its "
                             "interval's lower bound (default: %(default)s)")
    parser.add_argument("--ascending", action="store_true", help="sort ascending (default: descending)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="Markdown table to write; the CSV goes beside it (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the grid and print the planned points; queue nothing, write nothing")


def sort_columns(keys: list[str], seed_keys: list[str], seeded: bool) -> list[str]:
    """What --sort-by may name: the table's columns; over seeds also a metric (ranked by its interval)."""
    if not seeded:
        return table.columns_for(keys)
    return [*table.summary_columns(keys, seed_keys, for_csv=True), *(metric for metric, _, _ in table.METRICS)]


def run(args: argparse.Namespace) -> int:
    """Entry for `signflow sweep`: 0 when every queued point succeeded, 1 if any failed, 2 if nothing ran."""
    repo = Path.cwd()
    try:
        overrides = grid.read_grid(args.set_params, args.grid)
        keys = grid.grid_keys(overrides)
        points = grid.plan_points(repo / paths.PARAMS, overrides, args.prefix, args.seeds, args.seed_keys)
        seeded = table.is_seeded(points)
        table.check_sort_column(args.sort_by, sort_columns(keys, args.seed_keys, seeded))
        if args.stage:
            runner.check_stage(repo, args.stage)
        if args.dry_run:
            planned = {point.name: runner.ExperimentState(runner.PLANNED, {}, {}) for point in points}
            rows = table.with_points(points, table.build_rows(points, planned))
            columns = table.run_columns(keys, args.seed_keys) if seeded else table.columns_for(keys)
            print(table.markdown_table(rows, columns), end="")
            return EXIT_OK
        outcome = runner.run_points(repo, points, args.jobs, args.timeout, args.stage)
    except (grid.SweepError, CommandError) as err:
        log.error("sweep: %s", err)
        return EXIT_ERROR
    rows = table.build_rows(points, outcome.states, outcome.notes)
    write = write_seed_tables if seeded else write_tables
    text, metrics = write(args, keys, points, rows)
    sys.stdout.write(text)
    artifacts = [args.out, args.out.with_suffix(".csv"), *([table.runs_csv_path(args.out)] if seeded else [])]
    record(repo, args.name or args.prefix, points, outcome, artifacts, metrics)
    return EXIT_OK if table.all_succeeded(rows) else EXIT_FAILED


def write_tables(args: argparse.Namespace, keys: list[str], points: list[grid.Point],
                 rows: list[dict]) -> tuple[str, dict[str, float]]:
    """One row per experiment, sorted: the Markdown, and `<experiment>/<metric>` for the parent run."""
    sorted_rows = table.sort_rows(rows, args.sort_by, not args.ascending)
    text = table.write_results(sorted_rows, table.columns_for(keys), args.out)
    return text, {f"{row[table.NAME_COLUMN]}/{metric}": row[metric]
                  for row in rows for metric in table.METRIC_COLUMNS if row.get(metric) is not None}


def write_seed_tables(args: argparse.Namespace, keys: list[str], points: list[grid.Point],
                      rows: list[dict]) -> tuple[str, dict[str, float]]:
    """The per-point summary over seeds, then every experiment: the Markdown, and the summary's metrics."""
    descending = not args.ascending
    summary = table.build_summary(points, rows, args.seed_keys, args.sort_by, descending)
    runs = table.with_points(points, rows)
    runs = table.sort_rows(runs, args.sort_by, descending) if args.sort_by in runs[0] else runs
    return table.write_seed_results(summary, keys, args.seed_keys, runs, args.out), summary_metrics(summary)


def summary_metrics(summary: list[dict]) -> dict[str, float]:
    """`<point>/<metric>.<mean|sd|low|high>` of a seed summary: what the parent run logs."""
    return {f"{row[table.POINT_COLUMN]}/{seeds.column(metric, statistic)}": row[seeds.column(metric, statistic)]
            for row in summary for metric in table.METRIC_COLUMNS
            for statistic in (seeds.MEAN, seeds.SD, seeds.LOW, seeds.HIGH)
            if row.get(seeds.column(metric, statistic)) is not None}


def record(repo: Path, name: str, points: list[grid.Point], outcome: Outcome, artifacts: list[Path],
           metrics: dict[str, float]) -> None:
    """The sweep as an MLflow parent run over the runs of the experiments that ran (warns, never fails)."""
    from signflow.sweep import mlflow_parent
    from signflow.tracking import resolve_tracking_uri

    ran = [point.name for point in points if point.skip_reason is None]
    mlflow_parent.record_sweep(resolve_tracking_uri(repo), name, outcome.baseline, ran, artifacts, metrics)
