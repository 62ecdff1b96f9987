"""``signflow log-run``: complete the MLflow run of models/run.json from local outputs (after an outage)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from signflow import paths
from signflow.cli import EXIT_FILES_FAILED, EXIT_OK

if TYPE_CHECKING:
    from signflow.tracking import RunFiles

log = logging.getLogger(__name__)


def run_files(root: Path) -> RunFiles:
    """The project's outputs under ``root`` that ``log-run`` re-logs (layout: ``signflow.paths``)."""
    from signflow.tracking import RunFiles

    return RunFiles(
        params=root / paths.PARAMS, history=root / paths.TRAIN_HISTORY,
        summaries=tuple(root / p for p in (paths.TRAIN_SUMMARY, paths.TRAIN_TIMINGS, paths.EVALUATE_METRICS,
                                           paths.EXPORT_METRICS, paths.EXPORT_TIMINGS)),
        model=root / paths.BEST_MODEL,
        reports=root / paths.REPORTS_DIR, run_file=root / paths.RUN_FILE, root=root,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=Path("."),
                        help="project root holding params.yaml, metrics/, models/ (default: the current directory)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow URI (default: MLFLOW_TRACKING_URI or sqlite at the root)")


def run(args: argparse.Namespace) -> int:
    from signflow.tracking import relog_outputs

    run_id = relog_outputs(run_files(args.root), args.tracking_uri)
    if run_id is None:
        log.error("could not log the run; is the tracking server reachable?")
        return EXIT_FILES_FAILED
    log.info("logged run %s", run_id)
    return EXIT_OK
