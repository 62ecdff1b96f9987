"""Logging set-up for entry points only (library modules just get a logger)."""

from __future__ import annotations

import logging
import os
import sys

# Off a terminal (CI, `dvc exp run --queue` logs) a progress bar redraws at most this often (s),
# so logs keep progress without thousands of carriage-return lines.
NON_TTY_PROGRESS_INTERVAL = "10"


def setup_logging(level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("SIGNFLOW_LOG", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not sys.stderr.isatty():
        # tqdm reads TQDM_<ARG> environment variables as defaults for its arguments.
        os.environ.setdefault("TQDM_MININTERVAL", NON_TTY_PROGRESS_INTERVAL)
