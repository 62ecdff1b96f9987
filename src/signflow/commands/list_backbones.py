"""``signflow list-backbones``: the names ``model.backbone`` accepts, one a line."""

from __future__ import annotations

import argparse

from signflow.cli import EXIT_OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace) -> int:
    from signflow.catalog import list_backbones

    print("\n".join(list_backbones()))
    return EXIT_OK
