"""The ``signflow`` command line: one registry of subcommands, each (help, add_arguments, handler).

Exit codes: 0 all fine, 1 some input files failed (the rest still ran),
2 usage errors or a checkpoint that is refused. Heavy modules (torch) are
imported inside handlers so ``signflow --help`` and light commands stay fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from signflow import mlflow_server, paths, presets, prreport, remote, sweep
from signflow.config import DEVICES
from signflow.logs import setup_logging

if TYPE_CHECKING:
    from signflow.inference import LoadedModel
    from signflow.tracking import RunFiles

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FILES_FAILED = 1
EXIT_USAGE = 2

DEFAULT_TOP_K = 3
DEFAULT_BATCH_SIZE = 256


class Command(NamedTuple):
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


def _int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``, with a message naming the bound."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def _fail(message: str) -> int:
    """A one-line error on stderr (no traceback): for refused checkpoints and bad values."""
    one_line = " ".join(message.split())  # torch's messages span several lines
    print(f"signflow: error: {one_line}", file=sys.stderr)
    return EXIT_USAGE


# ------------------------------------------------------------------ predict


def _add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_DIR",
                        help="image files and/or directories (searched recursively for images)")
    parser.add_argument("--model", type=Path, default=paths.BEST_MODEL, help="checkpoint to use (default: %(default)s)")
    parser.add_argument("--top-k", type=_int_at_least(1), default=DEFAULT_TOP_K,
                        help="classes listed per image (default: %(default)s)")
    parser.add_argument("--threshold", default="auto",
                        help="known-ness below this gives 'unknown': a number in [0, 1], or 'auto' "
                             "for the threshold the evaluate stage chose on validation (default: %(default)s)")
    parser.add_argument("--metrics", type=Path, default=paths.EVALUATE_METRICS,
                        help="evaluate stage metrics read by --threshold auto (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="also write a bar chart of probabilities per image")
    parser.add_argument("--batch-size", type=_int_at_least(1), default=DEFAULT_BATCH_SIZE,
                        help="images per forward pass (default: %(default)s)")
    parser.add_argument("--workers", type=_int_at_least(0), default=0,
                        help="decoding processes; 0 = one per core (default: %(default)s)")
    parser.add_argument("--device", choices=DEVICES, default="cpu", help="(default: %(default)s)")


def _load(model_path: Path, device_name: str) -> LoadedModel:
    """The model, or ValueError with one readable line when the checkpoint cannot be used."""
    from signflow.checkpoint import CheckpointError
    from signflow.inference import load_model
    from signflow.runtime import DeviceUnavailableError, resolve_device

    try:
        device = resolve_device(device_name, "--device")
    except DeviceUnavailableError as err:
        raise ValueError(str(err)) from None
    try:
        return load_model(model_path, device)
    except CheckpointError:
        raise
    except (KeyError, ValueError, RuntimeError) as err:
        # Passed the safe load but does not fit this code: wrong shapes, unknown backbone...
        raise CheckpointError(f"cannot use checkpoint {model_path}: {type(err).__name__}: {err}") from None


def _run_predict(args: argparse.Namespace) -> int:
    from signflow.checkpoint import CheckpointError
    from signflow.predict import format_table, plot_probabilities, predict_files, resolve_threshold

    try:
        loaded = _load(args.model, args.device)
        threshold = resolve_threshold(args.threshold, args.metrics)
    except (CheckpointError, ValueError) as err:
        return _fail(str(err))
    results = predict_files(loaded, args.inputs, threshold, args.top_k, args.batch_size, args.workers)
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    if args.plot:
        plot_probabilities(results, args.plot, threshold)
        log.info("wrote %s", args.plot)
    return EXIT_FILES_FAILED if any("error" in r for r in results) else EXIT_OK


# ------------------------------------------------------------------ list-backbones


def _add_no_arguments(parser: argparse.ArgumentParser) -> None:
    """For subcommands without options."""


def _run_list_backbones(args: argparse.Namespace) -> int:
    from signflow.catalog import list_backbones

    print("\n".join(list_backbones()))
    return EXIT_OK


# ------------------------------------------------------------------ log-run


def run_files(root: Path) -> RunFiles:
    """The project's outputs under ``root`` that ``log-run`` re-logs (layout: ``signflow.paths``)."""
    from signflow.tracking import RunFiles

    return RunFiles(
        params=root / paths.PARAMS, history=root / paths.TRAIN_HISTORY,
        summaries=(root / paths.TRAIN_SUMMARY, root / paths.EVALUATE_METRICS), model=root / paths.BEST_MODEL,
        reports=root / paths.REPORTS_DIR, run_file=root / paths.RUN_FILE, root=root,
    )


def _add_log_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=Path("."),
                        help="project root holding params.yaml, metrics/, models/ (default: the current directory)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow URI (default: MLFLOW_TRACKING_URI or sqlite at the root)")


def _run_log_run(args: argparse.Namespace) -> int:
    from signflow.tracking import relog_outputs

    run_id = relog_outputs(run_files(args.root), args.tracking_uri)
    if run_id is None:
        log.error("could not log the run; is the tracking server reachable?")
        return EXIT_FILES_FAILED
    log.info("logged run %s", run_id)
    return EXIT_OK


# ------------------------------------------------------------------ registry

COMMANDS: dict[str, Command] = {
    "predict": Command("classify image files with a trained checkpoint", _add_predict_arguments, _run_predict),
    "list-backbones": Command("list the backbones model.backbone accepts", _add_no_arguments, _run_list_backbones),
    "pr-report": Command("markdown of params/metrics/plots changes against a base ref",
                         prreport.add_arguments, prreport.run),
    "log-run": Command("complete the MLflow run of models/run.json from local outputs (after an outage)",
                       _add_log_run_arguments, _run_log_run),
    "remote": Command(remote.DESCRIPTION, remote.add_arguments, remote.run),
    "sweep": Command("queue a grid of experiments on the DVC queue, run them, tabulate the results",
                     sweep.add_arguments, sweep.run),
    "mlflow-server": Command("run an MLflow tracking server (SQL store, proxied artifacts) on 127.0.0.1",
                             mlflow_server.add_arguments, mlflow_server.run),
    "preset": Command("write a set of params.yaml keys from presets/NAME.yaml (gtsrb43: the 43-class benchmark)",
                      presets.add_arguments, presets.run),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="signflow", description="signflow: traffic-sign classification pipeline")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(sub)
        sub.set_defaults(handler=command.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``signflow`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help (0) and on usage errors (2)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    setup_logging()
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
