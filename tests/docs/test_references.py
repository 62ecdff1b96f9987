"""The tests the docs cite as proof (``reliability/test_x.py::test_name``) exist under that name."""

from __future__ import annotations

import re
from pathlib import Path

from .blocks import doc_files

# `file.py::name`, `file.py::name[param]`, `::name` (the file last named on that line), `::name_*` (a prefix)
_REFERENCE = re.compile(r"`(?:([\w/]+\.py))?::(\w+)(\*?)(?:\[[^\]]*\])?`")


def cited_tests(text: str) -> list[tuple[str, str, bool]]:
    """``(file under tests/, test name, name is a prefix)`` for every citation of ``text``."""
    found = []
    for line in text.splitlines():
        current = None
        for match in _REFERENCE.finditer(line):
            current = match.group(1) or current
            if current is None:
                raise AssertionError(f"`::{match.group(2)}` cites no file: {line[:120]}")
            found.append((current, match.group(2), bool(match.group(3))))
    return found


def test_cited_tests_exist(repo_root: Path) -> None:
    missing = []
    cited = [ref for path in doc_files(repo_root) for ref in cited_tests(path.read_text())]
    assert cited, "no test citations found"
    for file, name, prefix in cited:
        path = repo_root / "tests" / file
        boundary = "" if prefix else r"\b"
        pattern = rf"^\s*(?:async )?def {name}{boundary}"
        if not path.is_file() or not re.search(pattern, path.read_text(), re.M):
            missing.append(f"{file}::{name}{'*' if prefix else ''}")
    assert not missing, "the docs cite tests that do not exist: " + ", ".join(missing)
