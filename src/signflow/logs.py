"""Logging set-up and error reporting for entry points only (library modules just get a logger and raise)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn

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


# Errors a user can fix (a bad params.yaml, missing or refused data, archive, checkpoint, download, weights,
# device...): an entry point prints them as one line, ``signflow: error: ...``, with no traceback. Any other
# exception is a bug and keeps its traceback. Named, not imported: the class of a raised exception is already
# imported (looked up in sys.modules), and this module stays light (`signflow predict --backend onnx`).
USER_ERRORS: dict[str, tuple[str, ...]] = {
    "signflow.config": ("ConfigError",),
    "signflow.data.manifest": ("DataError",),
    "signflow.data.archive": ("UnsafeArchiveError",),
    "signflow.data.fetch": ("DownloadError",),
    "signflow.data.fingerprint": ("MissingInputError",),
    "signflow.model.checkpoint": ("CheckpointError",),
    "signflow.model.backbones": ("WeightsUnavailableError", "WeightsMismatchError"),
    "signflow.runtime": ("DeviceUnavailableError",),
    "signflow.serving.export": ("ExportError",),
    "signflow.serving.predictor": ("PredictorError",),
    "signflow.commands.preset": ("PresetError",),
    "signflow.commands.remote": ("RemoteError",),
    "signflow.sweep.grid": ("SweepError",),
    "signflow.review.report": ("PrReportError",),
    "signflow.lineage.refs": ("ModelReferenceError",),
    "signflow.lineage.restore": ("RestoreError",),
    "signflow.lineage.promotion": ("PromotionError",),
    "signflow.processes": ("CommandError",),
}
EXIT_USER_ERROR = 2  # as argparse's usage errors
DEBUG_ENV = "SIGNFLOW_DEBUG"  # =1: user errors keep their traceback too


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is one of :data:`USER_ERRORS` (a subclass counts)."""
    classes = tuple(
        cls
        for module, names in USER_ERRORS.items()
        if module in sys.modules
        for name in names
        if isinstance(cls := getattr(sys.modules[module], name, None), type)
    )
    return isinstance(err, classes)


def first_line(err: BaseException) -> str:
    """The reason of ``err`` on one line: many errors go on with context (SQL, help links, tracebacks of others)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def error_line(message: str) -> str:
    """``signflow: error: <message>`` on one line (some messages, e.g. torch's, span several)."""
    return f"signflow: error: {' '.join(str(message).split())}"


def report_user_errors(main: Callable[[], int | None]) -> int:
    """``main()``'s exit code; a user error printed as one line on stderr instead, exit code 2.

    Bugs propagate with their traceback, and with SIGNFLOW_DEBUG=1 user errors do too.
    """
    try:
        return main() or 0
    except Exception as err:
        if not is_user_error(err) or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        print(error_line(str(err)), file=sys.stderr)
        return EXIT_USER_ERROR


def run_stage(main: Callable[[], int | None]) -> NoReturn:
    """A stage script's ``if __name__ == "__main__":``: run ``main`` and exit with its code."""
    sys.exit(report_user_errors(main))
