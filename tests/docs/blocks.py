"""The shell code blocks of the README and the docs pages, with the marker each one carries.

Every fenced block whose language is a shell's must have, on the line just before it, either
``<!-- run -->`` (the docs test executes it, in order, on a copy of the tiny project) or
``<!-- not-run: reason -->`` (why it cannot run here: a GPU, a cluster, GitHub, S3, a long real-data run).
Hand-written: Markdown parsers drop HTML comments or keep them apart from the next block, and all this
needs is fences and the line before each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

SHELL_LANGUAGES = frozenset({"bash", "sh", "shell", "console", "zsh"})
RUN, NOT_RUN = "run", "not-run"
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
_MARKER = re.compile(r"^\s*<!--\s*(run|not-run)\s*(?::\s*(.*?))?\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its language, its marker (None: unmarked) and its text."""

    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    marker: str | None  # RUN, NOT_RUN or None
    reason: str  # the not-run reason ("" otherwise)
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"

    def commands(self) -> list[str]:
        """The lines a user types: ``$ `` lines of a console block, every other block whole."""
        lines = self.text.splitlines()
        if self.language == "console":
            return [line[2:] for line in lines if line.startswith("$ ")]
        return lines


@dataclass(frozen=True)
class Problem:
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


def parse(path: Path) -> tuple[list[Block], list[Problem]]:
    """Every fenced block of ``path`` and the marker problems: an unmarked shell block, a not-run marker
    without a reason, a marker not followed by a shell block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    problems: list[Problem] = []
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if not fence:
            marker = _MARKER.match(lines[index])
            if marker and not (index + 1 < len(lines) and _is_shell_fence(lines[index + 1])):
                problems.append(Problem(f"{path.name}:{index + 1}", "marker not followed by a shell code block"))
            index += 1
            continue
        chars, language = fence.group(1), fence.group(2).lower()
        end = index + 1
        while end < len(lines) and lines[end].strip() != chars:
            end += 1
        marker = _MARKER.match(lines[index - 1]) if index > 0 else None
        kind, reason = (marker.group(1), (marker.group(2) or "").strip()) if marker else (None, "")
        block = Block(path, index + 1, language, kind, reason, "\n".join(lines[index + 1:end]))
        blocks.append(block)
        if language in SHELL_LANGUAGES:
            if kind is None:
                problems.append(Problem(block.where, "shell block without <!-- run --> or <!-- not-run: reason -->"))
            elif kind == NOT_RUN and not reason:
                problems.append(Problem(block.where, "<!-- not-run --> needs a reason: <!-- not-run: why -->"))
        index = end + 1
    return blocks, problems


def _is_shell_fence(line: str) -> bool:
    fence = _FENCE.match(line)
    return bool(fence) and fence.group(2).lower() in SHELL_LANGUAGES


def doc_files(repo_root: Path) -> list[Path]:
    """README.md, then the docs pages in the site's navigation order (the order their commands run in)."""
    config = yaml.safe_load((repo_root / "mkdocs.yml").read_text())
    docs_dir = repo_root / config.get("docs_dir", "docs")
    pages = [docs_dir / page for page in _nav_pages(config["nav"])]
    return [repo_root / "README.md", *pages]


def _nav_pages(nav: object) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in _nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    return []


def shell_blocks(paths: list[Path]) -> tuple[list[Block], list[Problem]]:
    """The shell blocks of ``paths``, in order, and every marker problem."""
    blocks: list[Block] = []
    problems: list[Problem] = []
    for path in paths:
        found, wrong = parse(path)
        blocks += [block for block in found if block.language in SHELL_LANGUAGES]
        problems += wrong
    return blocks, problems


if __name__ == "__main__":  # the list of executed and not-run commands, for a review
    import sys

    root = Path(__file__).resolve().parents[2]
    found, wrong = shell_blocks(doc_files(root))
    for block in found:
        label = "run" if block.marker == RUN else f"not-run ({block.reason})"
        print(f"{block.where}  {label}")
        for command in block.commands():
            if command.strip() and not command.lstrip().startswith("#"):
                print(f"    {command}")
    for problem in wrong:
        print(f"PROBLEM {problem}")
    sys.exit(1 if wrong else 0)
