"""``signflow promote VERSION``: make a registered version the champion, if it passes the review gate."""

from __future__ import annotations

import argparse
import logging
import sys

from signflow import paths
from signflow.cli import EXIT_OK

log = logging.getLogger(__name__)

EXIT_REFUSED = 1  # the gate refused the candidate: like `pr-report --gate`, distinct from errors (2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("version", metavar="VERSION",
                        help="the candidate: a version of export.registry_name (3), an alias (previous: roll "
                             "back), or models:/NAME/VERSION")
    parser.add_argument("--force", action="store_true",
                        help="promote even when the gate refuses; needs --reason, recorded on the versions")
    parser.add_argument("--reason", metavar="TEXT", help="why: recorded with the decision (required with --force)")


def run(args: argparse.Namespace) -> int:
    """Entry for `signflow promote`: judge, move the aliases, record; exit 1 when refused."""
    from mlflow.tracking import MlflowClient

    from signflow.config import load_config
    from signflow.lineage.promotion import PromotionError, decide
    from signflow.lineage.refs import resolve
    from signflow.tracking import resolve_tracking_uri

    cfg = load_config(paths.PARAMS)
    client = MlflowClient(tracking_uri=resolve_tracking_uri())
    origin = resolve(client, args.version, cfg.export.registry_name)
    if origin.version is None:
        raise PromotionError(f"{args.version!r} is not a registered version of {cfg.export.registry_name!r}")
    decision = decide(client, origin.version.name, origin.version, cfg.review, cfg.evaluate.ece_bins,
                      force=args.force, reason=args.reason)
    sys.stdout.write(decision.markdown)
    if not decision.promoted:
        for failure in decision.gate.failures if decision.gate else ():
            log.error("refused: %s", failure)
        return EXIT_REFUSED
    log.info("version %s is the champion (%s)", decision.candidate, decision.outcome)
    return EXIT_OK
