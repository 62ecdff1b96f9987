"""``signflow pr-report``: the pull-request report of this workspace against a base revision."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from signflow.cli import EXIT_FILES_FAILED, EXIT_OK
from signflow.processes import CommandError
from signflow.review.report import DEFAULT_BASE, DEFAULT_IMAGES_DIR, DEFAULT_OUT, PrReportError, write_pr_report

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", default=DEFAULT_BASE,
                        help="git revision to compare against, e.g. origin/main in CI (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="markdown file to write (default: %(default)s)")
    parser.add_argument("--images-dir", type=Path, default=DEFAULT_IMAGES_DIR,
                        help="folder for the base-vs-head PNG of each changed plot file, linked from the markdown "
                             "by relative paths; the PNGs already in it are removed (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Entry for `signflow pr-report`: write the report, print it; 1 on a failed command."""
    try:
        markdown = write_pr_report(Path.cwd(), args.base, args.out, images_dir=args.images_dir)
    except (PrReportError, CommandError) as err:
        log.error("%s", err)
        return EXIT_FILES_FAILED
    sys.stdout.write(markdown)
    return EXIT_OK
