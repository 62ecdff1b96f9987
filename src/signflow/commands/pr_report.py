"""``signflow pr-report``: the pull-request report of this workspace against a base revision, and its gate."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from signflow.cli import EXIT_OK, EXIT_USAGE
from signflow.config import ConfigError
from signflow.data.manifest import DataError
from signflow.processes import CommandError
from signflow.review.report import DEFAULT_BASE, DEFAULT_IMAGES_DIR, DEFAULT_OUT, PrReportError, write_pr_report

log = logging.getLogger(__name__)

EXIT_GATE_FAILED = 1  # a guard of review.guards failed: the check that blocks a merge
EXIT_ERROR = EXIT_USAGE  # the report could not be built: distinct from a failed gate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", default=DEFAULT_BASE,
                        help="git revision to compare against, e.g. origin/main in CI (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="markdown file to write (default: %(default)s)")
    parser.add_argument("--images-dir", type=Path, default=DEFAULT_IMAGES_DIR,
                        help="folder for the flip gallery, new-image thumbnails and base-vs-head plot PNGs, "
                             "linked from the markdown by relative paths; the PNGs already in it are removed "
                             "(default: %(default)s)")
    parser.add_argument("--gate", action="store_true",
                        help=f"exit {EXIT_GATE_FAILED} when a guard of the base's review.guards fails, naming the "
                             "metric, by how much and with what confidence (timings never gate)")
    parser.add_argument("--github", action="store_true",
                        help="on GitHub Actions, also write the job summary ($GITHUB_STEP_SUMMARY) and the step "
                             "outputs gate, failures, report, comment ($GITHUB_OUTPUT)")


def run(args: argparse.Namespace) -> int:
    """Entry for `signflow pr-report`: write the report and print it; with --gate, 1 when a guard fails."""
    try:
        report = write_pr_report(Path.cwd(), args.base, args.out, images_dir=args.images_dir)
    except (PrReportError, CommandError, ConfigError, DataError) as err:
        log.error("%s", err)
        return EXIT_ERROR
    sys.stdout.write(report.markdown)
    gate = report.gate
    failures = gate.failures if gate is not None else ()
    if args.github:
        from signflow.review.github import from_env, publish

        if from_env(os.environ) is not None:
            publish(report.markdown, not failures, failures, args.out, os.environ)
        else:
            log.info("--github: not on GitHub Actions (GITHUB_ACTIONS is not true): no summary or outputs written")
    if not args.gate:
        return EXIT_OK
    if gate is None:
        log.warning("gate: no test predictions in both revisions, nothing to check")
        return EXIT_OK
    for failure in failures:
        log.error("gate failed: %s", failure)
    if failures:
        return EXIT_GATE_FAILED
    log.info("gate passed: %s", "; ".join(gate.checked))
    return EXIT_OK
