"""What several commands share: argparse types and the one-line failure."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from signflow.cli import EXIT_USAGE
from signflow.logs import error_line


def int_at_least(low: int) -> Callable[[str], int]:
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


def float_above(low: float, what: str = "a number") -> Callable[[str], float]:
    """An argparse type: a number > ``low``, with a message naming the bound."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not value > low:
            raise argparse.ArgumentTypeError(f"must be > {low:g}, got {value}")
        return value

    return parse


def fail(message: str) -> int:
    """A one-line error on stderr (no traceback): for refused models and bad values."""
    print(error_line(message), file=sys.stderr)
    return EXIT_USAGE
