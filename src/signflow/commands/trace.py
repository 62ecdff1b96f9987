"""``signflow trace REF [--restore DIR]``: where a model came from, and that state rebuilt on request."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from signflow import paths
from signflow.cli import EXIT_OK

DEFAULT_BASE = "main"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reference", metavar="REF",
                        help="models:/NAME/VERSION, models:/NAME@ALIAS, a version or alias of export.registry_name "
                             "(3, champion), an MLflow run id, or a DVC experiment name")
    parser.add_argument("--base", default=DEFAULT_BASE,
                        help="git revision whose params.yaml the run's params are compared with; HEAD when it "
                             "does not exist (default: %(default)s)")
    parser.add_argument("--restore", type=Path, metavar="DIR",
                        help="clone the repository into DIR (new or empty) at the recorded commit, apply the DVC "
                             "experiment, dvc pull, and check models/onnx against the registry byte for byte")
    parser.add_argument("--repository", metavar="URL",
                        help="git repository to clone for --restore (default: the one the run recorded)")


def base_params(base: str) -> tuple[str, dict[str, Any]]:
    """The flattened, validated params of ``base`` (HEAD when ``base`` is not a revision here)."""
    from signflow.catalog import flatten
    from signflow.config import Config, from_mapping, load_yaml
    from signflow.processes import GIT_SECONDS, run

    exists = run(["git", "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"], Path.cwd(), timeout=GIT_SECONDS,
                 check=False).returncode == 0
    revision = base if exists else "HEAD"
    text = run(["git", "show", f"{revision}:{paths.PARAMS.as_posix()}"], Path.cwd(), timeout=GIT_SECONDS).stdout
    return revision, flatten(from_mapping(Config, load_yaml(text)).to_dict())


def run(args: argparse.Namespace) -> int:
    """Entry for `signflow trace`: print the origin; with --restore, rebuild and verify it."""
    from mlflow.tracking import MlflowClient

    from signflow.config import load_config
    from signflow.lineage.refs import resolve
    from signflow.lineage.trace import build_trace, trace_text
    from signflow.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri()
    origin = resolve(MlflowClient(tracking_uri=uri), args.reference, load_config(paths.PARAMS).export.registry_name)
    revision, params = base_params(args.base)
    sys.stdout.write(trace_text(build_trace(origin, params, revision)) + "\n")
    if args.restore is not None:
        from signflow.lineage.restore import restore, restored_text

        restored = restore(origin, args.restore.resolve(), repository=args.repository, tracking_uri=uri)
        sys.stdout.write(restored_text(restored, origin) + "\n")
    return EXIT_OK
