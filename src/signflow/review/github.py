"""The pull-request report on GitHub Actions: job summary, step outputs and the PR comment's body.

``signflow pr-report --github`` calls :func:`publish` after writing the report,
so the workflow (``.github/workflows/pr.yml``) holds no logic, only calls, and
what it would do is tested here by pointing the variables GitHub sets at files.

Two things GitHub cannot show and one it rejects shape the text:

- the job summary and a PR comment cannot show pictures the workflow wrote (no
  public URL; GitHub strips ``data:`` URIs), so each picture linked by a
  relative path becomes a link to the run's page, where the artifact is listed;
- a step's summary is capped at 1 MiB and a comment at 65,536 characters: both
  are cut at a line boundary with a note pointing at the artifact.

Variables: https://docs.github.com/en/actions/reference/variables-reference;
files and their format: https://docs.github.com/en/actions/reference/workflow-commands
("Setting an output parameter", "Multiline strings", "Adding a job summary").
"""

from __future__ import annotations

import bisect
import logging
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from signflow.files import write_text

log = logging.getLogger(__name__)

# Set to "true" by GitHub on every Actions runner: how we know we are there.
ACTIONS_FLAG = "GITHUB_ACTIONS"
SUMMARY_VAR = "GITHUB_STEP_SUMMARY"
OUTPUT_VAR = "GITHUB_OUTPUT"
SERVER_VAR, REPOSITORY_VAR, RUN_ID_VAR = "GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"
ARTIFACT_NAME = "pr-report"  # the name pr.yml uploads reports/pr.md and its PNGs under
# Hidden in the rendered comment: the workflow finds its previous comment by it and edits that one.
COMMENT_MARKER = "<!-- signflow-pr-report -->"
COMMENT_NAME = "pr-comment.md"  # the comment's body, written beside the report
# GitHub's caps: a step's summary file is refused above 1 MiB (bytes); a comment above 65,536 characters.
SUMMARY_BYTES = 1024 * 1024
# The comment is cut below GitHub's 65,536 characters: some room for what GitHub may count differently.
COMMENT_CHARS = 65_000
GATE_PASS, GATE_FAIL = "pass", "fail"
# Output names GitHub accepts (letters, digits, "_" and "-", not starting with a digit): "=" or "<<"
# in a name would change how the runner splits the line.
_OUTPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
# A markdown image: ![alt](target) or ![alt](target "title").
_IMAGE = re.compile(r'!\[([^\]]*)\]\(\s*([^)\s]+)(?:\s+"[^"]*")?\s*\)')
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # http:, https:, data:... : not a file the workflow wrote


@dataclass(frozen=True)
class GitHubTargets:
    """Where GitHub reads a step's results: the summary and output files, and the run's page."""

    summary: Path | None  # $GITHUB_STEP_SUMMARY: markdown appended here is the job summary
    output: Path | None  # $GITHUB_OUTPUT: name=value lines become steps.<id>.outputs.<name>
    run_url: str | None  # the run's page, where the uploaded artifact is listed


def from_env(env: Mapping[str, str]) -> GitHubTargets | None:
    """The targets named by ``env`` (an unset or empty variable: None); None outside GitHub Actions.

    Outside means ``GITHUB_ACTIONS`` is not "true": a developer who exported
    GITHUB_OUTPUT for a test does not get their files written by accident.
    """
    if env.get(ACTIONS_FLAG) != "true":
        return None
    summary, output = (env.get(name) for name in (SUMMARY_VAR, OUTPUT_VAR))
    return GitHubTargets(summary=Path(summary) if summary else None, output=Path(output) if output else None,
                         run_url=run_url(env))


def run_url(env: Mapping[str, str]) -> str | None:
    """``{server}/{repository}/actions/runs/{run id}``, the run's page; None when a variable is missing."""
    server, repository, run_id = (env.get(name, "") for name in (SERVER_VAR, REPOSITORY_VAR, RUN_ID_VAR))
    if not (server and repository and run_id):
        return None
    return f"{server.rstrip('/')}/{repository}/actions/runs/{run_id}"


def link_pictures(markdown: str, url: str | None) -> str:
    """Each picture linked by a relative path becomes a link to ``url`` (plain text without one).

    Pictures with a URL (``https:``...) are left: GitHub shows those itself.
    """

    def replace(match: re.Match[str]) -> str:
        alt, target = match.group(1), match.group(2)
        if _URL_SCHEME.match(target):
            return match.group(0)
        text = f"{alt} (picture in the {ARTIFACT_NAME} artifact)"
        return f"[{text}]({url})" if url else text

    return _IMAGE.sub(replace, markdown)


def truncate(text: str, limit: int, note: str, size: Callable[[str], int] = len) -> str:
    """``text`` if ``size(text) <= limit``, else its longest start ending a line, then ``note``, within ``limit``.

    Cut at a line boundary so a table or list stays well formed; a first line
    longer than the budget is cut where the budget ends. ``size`` measures
    (characters by default; bytes for the job summary).
    """
    if size(text) <= limit:
        return text
    note = f"\n\n{note}\n"
    budget = limit - size(note)
    if budget < 0:
        raise ValueError(f"limit {limit} leaves no room for the note {note!r}")
    # Longest prefix within the budget: size grows with the prefix, so bisect over its length.
    keep = bisect.bisect_right(range(len(text) + 1), budget, key=lambda n: size(text[:n])) - 1
    line_end = text.rfind("\n", 0, keep)
    if line_end > 0:
        keep = line_end + 1
    return text[:keep].rstrip("\n") + note


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8"))


def _truncated_note(where: str, url: str | None) -> str:
    artifact = f"the {ARTIFACT_NAME} artifact" + (f" ({url})" if url else "")
    return f"_(truncated: {where}; the whole report is in {artifact})_"


def summary_markdown(markdown: str, run_url: str | None, limit: int = SUMMARY_BYTES) -> str:
    """The report as the job summary shows it: pictures as links to the run, at most ``limit`` UTF-8 bytes."""
    note = _truncated_note("GitHub shows at most 1 MiB of a step's summary", run_url)
    return truncate(link_pictures(markdown, run_url), limit, note, size=_utf8_size)


def comment_body(markdown: str, run_url: str | None, marker: str = COMMENT_MARKER, limit: int = COMMENT_CHARS) -> str:
    """The PR comment: ``marker`` on the first line, then the report (pictures as links), ``limit`` chars in all."""
    head = f"{marker}\n"
    note = _truncated_note("GitHub refuses comments above 65,536 characters", run_url)
    return head + truncate(link_pictures(markdown, run_url), limit - len(head), note)


def output_lines(name: str, value: str, delimiter: str | None = None) -> str:
    """``name=value``, or for a value with line breaks ``name<<DELIMITER`` / value / ``DELIMITER``.

    The delimiter is random and never a line of the value (a line equal to it
    would end the value early: the runner fails the step, or takes the rest as
    more outputs). Each block ends with a newline, so blocks can be appended.
    """
    if not _OUTPUT_NAME.fullmatch(name):
        raise ValueError(f"output name {name!r}: use letters, digits, '_' or '-', not starting with a digit")
    if "\n" not in value and "\r" not in value:
        return f"{name}={value}\n"
    while delimiter is None or delimiter in value:
        delimiter = f"ghadelimiter_{uuid.uuid4()}"  # the prefix @actions/core uses
    return f"{name}<<{delimiter}\n{value}\n{delimiter}\n"


def _append(path: Path, text: str) -> None:
    """Append ``text`` to one of GitHub's files: appended, not replaced (signflow.files), since GitHub's
    own steps and ours share the file, and the runner reads it only once the step ends."""
    with path.open("a", encoding="utf-8", newline="\n") as handle:
        handle.write(text)


def write_outputs(path: Path, values: Mapping[str, str]) -> None:
    """Append ``values`` to the $GITHUB_OUTPUT file at ``path`` in GitHub's format (see :func:`output_lines`)."""
    _append(Path(path), "".join(output_lines(name, value) for name, value in values.items()))


def append_summary(path: Path, markdown: str) -> None:
    """Append ``markdown`` to the $GITHUB_STEP_SUMMARY file at ``path``, a blank line after what it holds."""
    path = Path(path)
    separator = "\n" if path.exists() and path.stat().st_size else ""
    _append(path, separator + markdown.rstrip("\n") + "\n")


def comment_path(report_path: Path) -> Path:
    """Where the comment's body goes: beside the report (``reports/pr.md`` -> ``reports/pr-comment.md``)."""
    return Path(report_path).with_name(COMMENT_NAME)


def publish(markdown: str, passed: bool, failures: Sequence[str], report_path: Path, env: Mapping[str, str]) -> None:
    """Give GitHub the report: job summary, the comment's body beside the report, and the step's outputs.

    Outputs: ``gate`` ("pass"/"fail"), ``failures`` (one failed guard per line),
    ``report`` (the markdown's path) and ``comment`` (the comment body's path).
    Outside GitHub Actions (``env`` without GITHUB_ACTIONS=true) nothing is
    written; a target whose variable is unset is skipped, with a log line.
    """
    targets = from_env(env)
    if targets is None:
        log.info("not on GitHub Actions (%s is not 'true'): no job summary or outputs", ACTIONS_FLAG)
        return
    if targets.run_url is None:
        log.warning("%s, %s or %s unset: pictures are not linked to the run", SERVER_VAR, REPOSITORY_VAR, RUN_ID_VAR)
    comment = comment_path(report_path)
    write_text(comment, comment_body(markdown, targets.run_url))
    if targets.summary is None:
        log.info("%s unset: no job summary written", SUMMARY_VAR)
    else:
        append_summary(targets.summary, summary_markdown(markdown, targets.run_url))
    if targets.output is None:
        log.info("%s unset: no step outputs written", OUTPUT_VAR)
        return
    write_outputs(targets.output, {
        "gate": GATE_PASS if passed else GATE_FAIL,
        # One guard per line: a guard's own line breaks would read as two guards.
        "failures": "\n".join(" ".join(failure.splitlines()) for failure in failures),
        "report": Path(report_path).as_posix(),
        "comment": comment.as_posix(),
    })
    log.info("gate %s: job summary and outputs written for GitHub", GATE_PASS if passed else GATE_FAIL)
