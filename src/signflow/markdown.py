"""GitHub Markdown tables: the one writer every report and table uses.

Cells are text: a pipe would split the row and a newline would end it, so
both are escaped here, once. Callers format their own values (digits, units)
and pass strings, or pass ``fmt`` to format each cell; :func:`value_text` is
the reports' one rule for a metric value (the pipeline report and the model card).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DIGITS = 4  # decimals of metric values in reports
MISSING = "n/a"  # a value a report does not have


def value_text(value: Any) -> str:
    """A report value as text: floats to :data:`DIGITS` decimals, booleans lower-case, lists comma-separated
    ("none" when empty), None and NaN as :data:`MISSING`."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.{DIGITS}f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def escape_cell(text: str) -> str:
    """``text`` as one table cell: runs of whitespace (newlines too) become one space, pipes are escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], fmt: Callable[[Any], str] = str) -> str:
    """A Markdown table of ``rows`` under ``headers``, each cell ``fmt(value)`` escaped; no trailing newline."""
    lines = ["| " + " | ".join(map(escape_cell, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(escape_cell(fmt(value)) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def relative_link(target: Path, markdown_dir: Path | None = None) -> str:
    """``target`` as a link from a markdown file in ``markdown_dir`` (default: the working directory), "/"-separated.

    Relative, so the markdown and its pictures stay readable wherever both are copied (a CI artifact).
    """
    return Path(os.path.relpath(Path(target).resolve(), (markdown_dir or Path.cwd()).resolve())).as_posix()
