"""GitHub Markdown tables: the one writer every report and table uses.

Cells are text: a pipe would split the row and a newline would end it, so
both are escaped here, once. Callers format their own values (digits, units)
and pass strings, or pass ``fmt`` to format each cell.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


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
