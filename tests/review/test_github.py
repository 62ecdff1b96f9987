"""The report on GitHub Actions: job summary, step outputs, comment body, and the review script end to end.

GitHub's files are ordinary files the runner reads after the step: pointing
GITHUB_STEP_SUMMARY and GITHUB_OUTPUT at ``tmp_path`` tests what the runner
would read. The outputs are read back with :func:`parse_outputs`, written here
from GitHub's documented format, not from the module under test.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest

from signflow.review.github import (
    COMMENT_MARKER,
    GitHubTargets,
    append_summary,
    comment_body,
    from_env,
    output_lines,
    publish,
    run_url,
    summary_markdown,
    truncate,
    write_outputs,
)
from signflow.review.report import plots_section

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / ".github" / "scripts" / "pr-review.sh"
SERVER, REPOSITORY, RUN_ID = "https://github.example", "octo/signflow", "4242"
# GitHub's run page: {server}/{repo}/actions/runs/{id}
RUN_URL = "https://github.example/octo/signflow/actions/runs/4242"
GITHUB_LIMITS = {"comment": 65_536, "summary": 1024 * 1024}  # characters; bytes (GitHub's docs)


def parse_outputs(text: str) -> dict[str, str]:
    """A $GITHUB_OUTPUT file as the runner reads it (docs: "Setting an output parameter", "Multiline strings").

    ``name=value`` on one line, or ``name<<DELIMITER``, the value's lines, and a
    line equal to DELIMITER. A missing closing delimiter fails the step on GitHub: here, the test.
    """
    values, lines = {}, iter(text.split("\n"))
    for line in lines:
        if not line:
            continue
        equals, heredoc = line.find("="), line.find("<<")
        if equals >= 0 and (heredoc < 0 or equals < heredoc):
            values[line[:equals]] = line[equals + 1:]
            continue
        assert heredoc > 0, f"not an output line: {line!r}"
        name, delimiter = line[:heredoc], line[heredoc + 2:]
        body = []
        for value_line in lines:
            if value_line == delimiter:
                break
            body.append(value_line)
        else:
            pytest.fail(f"output {name!r}: no closing delimiter {delimiter!r}")
        values[name] = "\n".join(body)
    return values


def github_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "GITHUB_OUTPUT": str(tmp_path / "output.txt"),
        "GITHUB_SERVER_URL": SERVER,
        "GITHUB_REPOSITORY": REPOSITORY,
        "GITHUB_RUN_ID": RUN_ID,
    }
    env.update(overrides)
    return {name: value for name, value in env.items() if value}


# ------------------------------------------------------------------ environment


def test_run_url_is_the_run_page() -> None:
    env = {"GITHUB_SERVER_URL": SERVER + "/", "GITHUB_REPOSITORY": REPOSITORY, "GITHUB_RUN_ID": RUN_ID}
    assert run_url(env) == RUN_URL
    assert run_url({**env, "GITHUB_RUN_ID": ""}) is None


@pytest.mark.parametrize("actions", [None, "false", ""])
def test_from_env_is_none_outside_github(tmp_path: Path, actions: str | None) -> None:
    env = github_env(tmp_path)
    env.pop("GITHUB_ACTIONS")
    if actions is not None:
        env["GITHUB_ACTIONS"] = actions
    assert from_env(env) is None


def test_from_env_reads_the_files_and_run(tmp_path: Path) -> None:
    assert from_env(github_env(tmp_path, GITHUB_OUTPUT="")) == GitHubTargets(
        summary=tmp_path / "summary.md", output=None, run_url=RUN_URL)


# ------------------------------------------------------------------ pictures and sizes


def test_relative_pictures_become_links_to_the_run() -> None:
    markdown = ("before\n  ![metrics/roc.csv: `main` left, workspace right](pr/metrics-roc_csv.png)\n"
                "![logo](https://example.com/logo.png)\n")
    assert summary_markdown(markdown, RUN_URL) == (
        "before\n  [metrics/roc.csv: `main` left, workspace right (picture in the pr-report artifact)]"
        f"({RUN_URL})\n![logo](https://example.com/logo.png)\n")
    assert summary_markdown("![a](pr/a.png)", None) == "a (picture in the pr-report artifact)"


def test_the_reports_own_picture_links_are_rewritten(tmp_path: Path) -> None:
    """The markdown signflow.review.report writes (not a hand-made imitation) keeps no picture."""
    section = plots_section(tmp_path, "main", ["metrics/history.csv"],
                            {"metrics/history.csv": tmp_path / "reports" / "pr" / "history.png"}, tmp_path / "reports")
    assert "](pr/history.png)" in section
    linked = summary_markdown(section, RUN_URL)
    assert "![" not in linked and f"(picture in the pr-report artifact)]({RUN_URL})" in linked


def test_truncate_cuts_at_a_line_and_adds_the_note() -> None:
    text = "aaaa\nbbbb\ncccc\n"
    assert truncate(text, len(text), "N") == text
    # note "\n\nN\n" (4) leaves 10 of 14: "aaaa\nbbbb\n", cut after its last full line
    assert truncate(text, 14, "N") == "aaaa\nbbbb\n\nN\n"
    assert truncate("x" * 20, 10, "N") == "xxxxxx\n\nN\n"  # one line longer than the room: cut inside it


def test_truncate_by_bytes_never_splits_a_character() -> None:
    cut = truncate("é" * 10, 10, "N", size=lambda s: len(s.encode("utf-8")))  # é: 2 bytes
    assert cut == "ééé\n\nN\n"


def test_long_comment_is_cut_under_githubs_limit_with_a_note() -> None:
    rows = [f"| metrics/row{i}.json | accuracy | 0.{i:05d} |" for i in range(3000)]  # about 120,000 chars
    markdown = "## signflow pipeline report\n\n" + "\n".join(rows) + "\n"
    body = comment_body(markdown, RUN_URL)
    assert body.startswith(COMMENT_MARKER + "\n")
    assert 60_000 < len(body) < GITHUB_LIMITS["comment"]
    kept, note = body.removeprefix(COMMENT_MARKER + "\n").rsplit("\n\n", 1)
    assert markdown.startswith(kept + "\n")  # whole lines, in order
    assert "truncated" in note and RUN_URL in note


def test_short_comment_is_the_marker_and_the_linked_report() -> None:
    markdown = "## signflow pipeline report\n\n![p](pr/p.png)\n"
    assert comment_body(markdown, RUN_URL) == f"{COMMENT_MARKER}\n{summary_markdown(markdown, RUN_URL)}"


def test_summary_is_cut_under_a_mebibyte() -> None:
    markdown = "é" * 300_000 + "\n" + "ü" * 300_000 + "\n"  # 1.2 MB in UTF-8, 600,002 characters
    summary = summary_markdown(markdown, RUN_URL)
    assert len(summary.encode("utf-8")) <= GITHUB_LIMITS["summary"]
    assert summary.startswith("é" * 300_000 + "\n\n_(truncated")


# ------------------------------------------------------------------ outputs


def test_outputs_parse_back(tmp_path: Path) -> None:
    values = {
        "gate": "fail",
        "failures": "test.accuracy worse by up to 1.2 points at 95% confidence, margin 0.5\nsecond guard",
        "empty": "",
        "tricky": "a=b<<EOF\nEOF\n\nlast line then newline\n",
    }
    path = tmp_path / "output.txt"
    write_outputs(path, values)
    write_outputs(path, {"report": "reports/pr.md"})  # appended, as several steps do
    assert parse_outputs(path.read_text()) == {**values, "report": "reports/pr.md"}


def test_delimiter_never_occurs_in_the_value() -> None:
    value = "one\nDELIM\ntwo"
    block = output_lines("failures", value, delimiter="DELIM")  # the proposed delimiter is a line of the value
    delimiter = block.split("\n", 1)[0].split("<<", 1)[1]
    assert delimiter and delimiter not in value
    assert parse_outputs(block) == {"failures": value}


@pytest.mark.parametrize("name", ["a=b", "a<<b", "a\nb", "", "1st"])
def test_bad_output_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="output name"):
        output_lines(name, "x")


def test_summary_blocks_are_appended(tmp_path: Path) -> None:
    path = tmp_path / "summary.md"
    append_summary(path, "first")
    append_summary(path, "second\n\n")
    assert path.read_text() == "first\n\nsecond\n"


# ------------------------------------------------------------------ publish


def test_publish_writes_summary_outputs_and_comment(tmp_path: Path) -> None:
    report = tmp_path / "reports" / "pr.md"
    markdown = "## signflow pipeline report\n\n![plot](pr/plot.png)\n"
    failures = ["test.accuracy worse by up to 1.2 points at 95% confidence, margin 0.5", "a guard\nover two lines"]
    env = github_env(tmp_path)
    publish(markdown, False, failures, report, env)

    outputs = parse_outputs(Path(env["GITHUB_OUTPUT"]).read_text())
    assert outputs == {
        "gate": "fail",
        "failures": f"{failures[0]}\na guard over two lines",
        "report": report.as_posix(),
        "comment": (tmp_path / "reports" / "pr-comment.md").as_posix(),
    }
    assert Path(outputs["comment"]).read_text() == comment_body(markdown, RUN_URL)
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert "## signflow pipeline report" in summary and f"]({RUN_URL})" in summary and "![" not in summary


def test_publish_skips_an_unset_output_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    env = github_env(tmp_path, GITHUB_OUTPUT="")
    with caplog.at_level(logging.INFO, logger="signflow.review.github"):
        publish("## report\n", True, [], tmp_path / "pr.md", env)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["pr-comment.md", "summary.md"]
    assert "GITHUB_OUTPUT unset" in caplog.text


def test_publish_writes_nothing_outside_github(tmp_path: Path) -> None:
    env = github_env(tmp_path, GITHUB_ACTIONS="false")
    publish("## report\n", True, [], tmp_path / "pr.md", env)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ the script, for real


def test_script_is_executable() -> None:
    assert os.access(SCRIPT, os.X_OK), f"{SCRIPT} must be executable: pr.yml runs it directly"


@pytest.mark.parametrize("code", [0, 1, 2])
def test_script_passes_the_arguments_and_keeps_the_exit_code(tmp_path: Path, code: int) -> None:
    """A stand-in ``signflow`` first on PATH: records its arguments, exits ``code`` (0 pass, 1 gate, 2 error)."""
    bin_dir, args = tmp_path / "bin", tmp_path / "args.txt"
    bin_dir.mkdir()
    fake = bin_dir / "signflow"
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "{args}"\nexit {code}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([str(SCRIPT), "origin/main"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert args.read_text().split("\n")[:-1] == [
        "pr-report", "--base", "origin/main", "--out", "reports/pr.md", "--images-dir", "reports/pr", "--gate",
        "--github"]


def test_script_without_base_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run([str(SCRIPT)], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0 and "usage" in proc.stderr
