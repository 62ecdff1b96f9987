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
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from signflow.logs import EXIT_USER_ERROR, report_user_errors, setup_logging

EXIT_OK = 0
EXIT_FILES_FAILED = 1
EXIT_USAGE = EXIT_USER_ERROR


class Command(NamedTuple):
    """A subcommand: its help line, and its code as "module:function" names, imported only when it runs."""

    help: str
    add_arguments: str  # "module:function" taking the subparser
    handler: str  # "module:function" taking the parsed arguments, returning the exit code


def resolve(target: str) -> Callable[..., Any]:
    """The function a registry entry names ("package.module:function"), importing its module."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


# ------------------------------------------------------------------ registry


def command(help: str, module: str) -> Command:
    """A registry entry for ``signflow.commands.<module>``, which defines ``add_arguments`` and ``run``."""
    return Command(help, f"signflow.commands.{module}:add_arguments", f"signflow.commands.{module}:run")


COMMANDS: dict[str, Command] = {
    "predict": command("classify image files with a trained model (.pt checkpoint, or .onnx without torch)",
                       "predict"),
    "list-backbones": command("list the backbones model.backbone accepts", "list_backbones"),
    "pr-report": command("markdown of params/metrics/plots changes against a base ref", "pr_report"),
    "log-run": command("complete the MLflow run of models/run.json from local outputs (after an outage)", "log_run"),
    # = remote.DESCRIPTION (a test checks), written out so --help does not import remote.
    "remote": command("configure the default DVC remote that dvc push/pull use for data and models", "remote"),
    "sweep": command("queue a grid of experiments on the DVC queue, run them, tabulate the results", "sweep"),
    "tune": command("search hyper-parameters with Optuna, each trial a DVC experiment on the queue (signflow[tune])",
                    "tune"),
    "mlflow-server": command("run an MLflow tracking server (SQL store, proxied artifacts) on 127.0.0.1",
                             "mlflow_server"),
    "trace": command("where a model came from (commit, experiment, data hashes, params, metrics); --restore DIR "
                     "rebuilds it", "trace"),
    "promote": command("make a registered version the champion if it passes the review gate against the current one",
                       "promote"),
    "preset": command("write a set of params.yaml keys from presets/NAME.yaml (gtsrb43: the 43-class benchmark)",
                      "preset"),
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
