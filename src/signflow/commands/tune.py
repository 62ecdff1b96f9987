"""`signflow tune`: hyper-parameter search with Optuna, every trial a named DVC experiment on the DVC queue.

Why not Optuna's own `study.optimize` around `dvc repro`: a trial must be an
experiment like any other (`dvc exp show` lists it, `dvc exp apply` + `dvc repro`
reproduces it, `dvc exp push` shares it) and run in DVC's queue workers, in
parallel, in their own workspaces. So the tuner asks Optuna for trials, checks
each against params.yaml like every sweep point, queues it as `<study>-t<N>`
and tells the study how it went (``signflow.sweep.tune``); the train stage,
started as a trial, reports each epoch to the study and stops when pruned
(``signflow.training.trial_link``). The study lives in a storage (a SQLite file
in sweeps/ by default, a database URL for a team): Ctrl-C and `signflow tune`
again continues it, and clones on one storage share its trials out.
Optuna is the optional extra `signflow[tune]`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from signflow import paths
from signflow.commands.args import float_above, int_at_least
from signflow.processes import CommandError
from signflow.sweep.grid import SweepError, check_prefix

if TYPE_CHECKING:
    from signflow.sweep.tune import TuneRequest

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_SHORT = 1  # the study is short of its trials, or this clone's are unfinished (timeout)
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT
DEFAULT_TRIALS = 20
DEFAULT_JOBS = 1
DEFAULT_STUDY = "tune"
DEFAULT_OUT_DIR = Path("sweeps")  # not reports/: that is the report stage's DVC output (see commands.sweep)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `signflow tune` (the CLI registers the subcommand)."""
    parser.add_argument("space", type=Path, metavar="SPACE.yaml",
                        help="search space: metric, pruner, sampler, enqueue and params (dotted key -> "
                             "{low, high[, log, step]} or {choices: [...]}); see docs/sweeps.md")
    parser.add_argument("--trials", "-n", type=int_at_least(1), default=DEFAULT_TRIALS,
                        help="finished trials the study should have, over every run and clone (default: %(default)s)")
    parser.add_argument("--jobs", "-j", type=int_at_least(1), default=DEFAULT_JOBS,
                        help="trials run in parallel by `dvc queue start -j` (default: %(default)s)")
    parser.add_argument("--study", default=DEFAULT_STUDY,
                        help="study name; experiments are <study>-t<trial> (default: %(default)s)")
    parser.add_argument("--storage", metavar="URL",
                        help="Optuna storage (SQLAlchemy URL) shared by every clone tuning the study "
                             f"(default: sqlite:///{DEFAULT_OUT_DIR}/optuna.db in this repository)")
    parser.add_argument("--stage", metavar="STAGE",
                        help="run each trial up to this dvc.yaml stage, e.g. train (default: the whole pipeline)")
    parser.add_argument("--push", metavar="GIT_REMOTE",
                        help="push each finished trial's experiment there (`dvc exp push`), for the other clones "
                             "tuning the study to `dvc exp pull` (default: no push)")
    parser.add_argument("--timeout", type=float_above(0, "a number of seconds"), metavar="SECONDS",
                        help="stop waiting after this long; running trials are collected by the next run")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR,
                        help="folder of the trials table (<study>.md, .csv) and plots (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Entry for `signflow tune`: 0 when the study has its trials (other clones' may still run) and this clone's
    have finished, 1 when not (timeout), 2 (a one-line error) when nothing could run, 130 on Ctrl-C."""
    from signflow.sweep import tune

    tune.require_optuna()  # one line naming the extra to install
    repo = Path.cwd()
    check_prefix(args.study)
    space = tune.read_space(args.space)
    if args.stage:
        tune.runner.check_stage(repo, args.stage)
    storage = tune.resolve_storage(args.storage, repo) if args.storage else tune.default_storage(repo, args.out_dir)
    (repo / args.out_dir).mkdir(parents=True, exist_ok=True)
    request = tune.TuneRequest(repo, space, args.study, storage, args.trials, args.jobs, args.stage, args.timeout,
                                 args.push)
    try:
        with tempfile.TemporaryDirectory(prefix="signflow-tune-") as workdir:
            tune.check_space(space, repo / paths.PARAMS, Path(workdir))
            study = tune.run_study(request, Path(workdir))
    except CommandError as err:
        raise SweepError(str(err)) from None
    except KeyboardInterrupt:
        log.warning("tune interrupted: queued trials keep running on the DVC queue (`dvc queue kill` stops them); "
                    "`signflow tune` again with the same --study continues the study and collects them")
        return EXIT_INTERRUPTED
    return report(request, study, repo / args.out_dir)


def report(request: TuneRequest, study: Any, out_dir: Path) -> int:
    """The trials table (Markdown on stdout, CSV beside it), the best trial, plots, the MLflow parent run."""
    from signflow.sweep import mlflow_parent, table, tune
    from signflow.tracking import resolve_tracking_uri

    keys = list(request.space.params)
    rows = tune.trial_rows(study, keys)
    columns = ["trial", "state", "experiment", *keys, "value", "epochs_run", "note"]
    rows = table.sort_rows(rows, "value", descending=request.space.maximize)
    out = out_dir / f"{request.study}.md"
    text = table.write_results(rows, columns, out)
    sys.stdout.write(text)
    best = tune.best_trial(study)
    if best is not None:
        name = best.user_attrs.get(tune.ATTR_EXPERIMENT)
        sys.stdout.write(f"best trial: {best.number} ({name}), {request.space.metric} {best.value:.4f}; "
                         f"`dvc exp apply {name}` puts it in the workspace\n")
    plots = tune.write_plots(study, out_dir, request.study, len(keys))
    clone = tune.clone_id(request.repo)
    mlflow_parent.record_sweep(resolve_tracking_uri(request.repo), request.study,
                               tune.runner.baseline_commit(request.repo), tune.own_experiments(study, clone),
                               [out, out.with_suffix(".csv"), *plots], tune.outcome_metrics(study, request.space))
    return EXIT_OK if tune.is_done(study, request.trials, clone) else EXIT_SHORT
