"""The ``signflow`` command line: one registry of subcommands, each (help, add_arguments, handler).

Exit codes: 0 all fine, 1 some input files failed (the rest still ran),
2 usage errors, a model that is refused or another error the user can fix
(one line, ``signflow: error: ...``; see ``signflow.logs.USER_ERRORS``). Each command's code is named, not
imported ("module:function"): only the module of the command being run is
imported, and only its arguments are added, so ``signflow --help`` imports no
command module and ``signflow predict --backend onnx`` nothing heavy (no torch,
yaml, pandas, DVC or MLflow).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from signflow import paths
from signflow.catalog import DEVICES
from signflow.logs import EXIT_USER_ERROR, error_line, report_user_errors, setup_logging

if TYPE_CHECKING:
    from signflow.serving.predictor import Predictor
    from signflow.tracking import RunFiles

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FILES_FAILED = 1
EXIT_USAGE = EXIT_USER_ERROR

# --model's default per backend.
DEFAULT_MODELS = {"torch": paths.BEST_MODEL, "onnx": paths.ONNX_MODEL}


class Command(NamedTuple):
    """A subcommand: its help line, and its code as "module:function" names, imported only when it runs."""

    help: str
    add_arguments: str  # "module:function" taking the subparser
    handler: str  # "module:function" taking the parsed arguments, returning the exit code


def resolve(target: str) -> Callable[..., Any]:
    """The function a registry entry names ("package.module:function"), importing its module."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


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
    print(error_line(message), file=sys.stderr)
    return EXIT_USAGE


# ------------------------------------------------------------------ predict


def _add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    # numpy, OpenCV: imported only when this command runs (onnxruntime and torch only when a model loads).
    from signflow.serving.batch import DEFAULT_BATCH_SIZE, DEFAULT_TOP_K
    from signflow.serving.predictor import list_backends

    parser.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_DIR",
                        help="image files and/or directories (searched recursively for images)")
    parser.add_argument("--backend", choices=list_backends(), default=None,
                        help="torch: a .pt checkpoint in PyTorch; onnx: an exported .onnx model in onnxruntime, "
                             "without torch (default: from --model's suffix, else torch)")
    parser.add_argument("--model", type=Path, default=None,
                        help="model file: .pt or .onnx (default: "
                             + ", ".join(f"{path} for {name}" for name, path in DEFAULT_MODELS.items()) + ")")
    parser.add_argument("--top-k", type=_int_at_least(1), default=DEFAULT_TOP_K,
                        help="classes listed per image (default: %(default)s)")
    parser.add_argument("--threshold", default="auto",
                        help="known-ness below this gives 'unknown': a number in [0, 1], or 'auto' "
                             "for the threshold the evaluate stage chose on validation (from --metrics for a "
                             "checkpoint, from the sidecar JSON for an .onnx model) (default: %(default)s)")
    parser.add_argument("--metrics", type=Path, default=paths.EVALUATE_METRICS,
                        help="evaluate stage metrics read by --threshold auto with a checkpoint (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="also write a bar chart of probabilities per image")
    parser.add_argument("--batch-size", type=_int_at_least(1), default=DEFAULT_BATCH_SIZE,
                        help="images per forward pass (default: %(default)s)")
    parser.add_argument("--workers", type=_int_at_least(0), default=0,
                        help="decoding threads; 0 = one per core (default: %(default)s)")
    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help="torch backend only; onnx runs on the CPU (default: %(default)s)")


def _predict_model(args: argparse.Namespace) -> Path:
    """The model file: --model, else --backend's default; ValueError when --backend cannot run --model."""
    from signflow.serving.predictor import resolve_backend

    if args.model is None:
        return DEFAULT_MODELS[args.backend or "torch"]
    needs = resolve_backend(args.model)  # the suffix decides; --backend only states what the user expects
    if args.backend is not None and args.backend != needs:
        raise ValueError(f"--backend {args.backend} cannot run {args.model}: a {args.model.suffix} file needs "
                         f"--backend {needs} (or leave --backend out)")
    return args.model


def _load_predictor(args: argparse.Namespace) -> tuple[Predictor, float]:
    """The model and the rejection threshold, or ValueError (PredictorError) with one readable line."""
    from signflow.serving.batch import AUTO, resolve_threshold
    from signflow.serving.predictor import load_predictor

    model = _predict_model(args)
    if args.threshold.strip().lower() != AUTO:
        threshold = resolve_threshold(args.threshold, args.metrics)  # a bad value fails before the model loads
        return load_predictor(model, args.device, threshold), threshold
    predictor = load_predictor(model, args.device)
    # An ONNX model carries the evaluate stage's threshold in its sidecar; a checkpoint has none (--metrics).
    return predictor, resolve_threshold(AUTO, args.metrics, predictor.stored_threshold)


def _run_predict(args: argparse.Namespace) -> int:
    from signflow.serving.batch import format_table, plot_probabilities, predict_files

    try:
        predictor, threshold = _load_predictor(args)
    except ValueError as err:  # PredictorError included
        return _fail(str(err))
    results = predict_files(predictor, args.inputs, threshold, args.top_k, args.batch_size, args.workers)
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
        summaries=tuple(root / p for p in (paths.TRAIN_SUMMARY, paths.TRAIN_TIMINGS, paths.EVALUATE_METRICS,
                                           paths.EXPORT_METRICS, paths.EXPORT_TIMINGS)),
        model=root / paths.BEST_MODEL,
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

CLI = "signflow.cli"
COMMANDS: dict[str, Command] = {
    "predict": Command("classify image files with a trained model (.pt checkpoint, or .onnx without torch)",
                       f"{CLI}:_add_predict_arguments", f"{CLI}:_run_predict"),
    "list-backbones": Command("list the backbones model.backbone accepts",
                              f"{CLI}:_add_no_arguments", f"{CLI}:_run_list_backbones"),
    "pr-report": Command("markdown of params/metrics/plots changes against a base ref",
                         "signflow.review.report:add_arguments", "signflow.review.report:run"),
    "log-run": Command("complete the MLflow run of models/run.json from local outputs (after an outage)",
                       f"{CLI}:_add_log_run_arguments", f"{CLI}:_run_log_run"),
    # = remote.DESCRIPTION (a test checks), written out so --help does not import remote.
    "remote": Command("configure the default DVC remote that dvc push/pull use for data and models",
                      "signflow.commands.remote:add_arguments", "signflow.commands.remote:run"),
    "sweep": Command("queue a grid of experiments on the DVC queue, run them, tabulate the results",
                     "signflow.commands.sweep:add_arguments", "signflow.commands.sweep:run"),
    "mlflow-server": Command("run an MLflow tracking server (SQL store, proxied artifacts) on 127.0.0.1",
                             "signflow.commands.mlflow_server:add_arguments", "signflow.commands.mlflow_server:run"),
    "preset": Command("write a set of params.yaml keys from presets/NAME.yaml (gtsrb43: the 43-class benchmark)",
                      "signflow.commands.preset:add_arguments", "signflow.commands.preset:run"),
}


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with every command listed; the arguments (and modules) only of ``commands`` (default: all)."""
    parser = argparse.ArgumentParser(prog="signflow", description="signflow: traffic-sign classification pipeline")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.help)
        if commands is None or name in commands:
            resolve(command.add_arguments)(sub)
            sub.set_defaults(handler=command.handler)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` runs: its first word not an option (the top level has only -h)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``signflow`` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command_in(argv)
    parser = build_parser([command] if command else [])
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help (0) and on usage errors (2)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    setup_logging()
    return report_user_errors(lambda: resolve(args.handler)(args))


if __name__ == "__main__":
    sys.exit(main())
