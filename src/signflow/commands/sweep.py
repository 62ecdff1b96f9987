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
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from signflow import paths
from signflow.commands.args import float_above, int_at_least
from signflow.processes import CommandError
from signflow.sweep import grid, runner, table

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
    parser.add_argument("--timeout", type=float_above(0, "a number of seconds"), metavar="SECONDS",
                        help="stop waiting after this long; unfinished points count as failed (default: no limit)")
    parser.add_argument("--sort-by", default=table.DEFAULT_SORT,
                        help="table column to sort by, missing values last (default: %(default)s)")
    parser.add_argument("--ascending", action="store_true", help="sort ascending (default: descending)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="Markdown table to write; the CSV goes beside it (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the grid and print the planned points; queue nothing, write nothing")


def run(args: argparse.Namespace) -> int:
    """Entry for `signflow sweep`: 0 when every queued point succeeded, 1 if any failed, 2 if nothing ran."""
    repo = Path.cwd()
    try:
        overrides = grid.read_grid(args.set_params, args.grid)
        columns = table.columns_for(grid.grid_keys(overrides))
        table.check_sort_column(args.sort_by, columns)
        points = grid.plan_points(repo / paths.PARAMS, overrides, args.prefix)
        if args.dry_run:
            planned = {point.name: runner.ExperimentState(runner.PLANNED, {}, {}) for point in points}
            print(table.markdown_table(table.build_rows(points, planned), columns), end="")
            return EXIT_OK
        outcome = runner.run_points(repo, points, args.jobs, args.timeout)
    except (grid.SweepError, CommandError) as err:
        log.error("sweep: %s", err)
        return EXIT_ERROR
    rows = table.build_rows(points, outcome.states, outcome.notes)
    sys.stdout.write(table.write_results(table.sort_rows(rows, args.sort_by, not args.ascending), columns, args.out))
    return EXIT_OK if table.all_succeeded(rows) else EXIT_FAILED
