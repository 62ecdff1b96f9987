"""PR report against a real, tiny git + DVC repo: base branch `main`, one feature commit."""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from signflow.prreport import (
    PrReportError,
    add_arguments,
    build_pr_report,
    command_env,
    is_empty_table,
    run,
    write_pr_report,
)

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
BASE_LR, FEATURE_LR = 0.1, 0.2
BASE_ACC, FEATURE_ACC = 0.80, 0.90

# The stage reads its one param and writes a metric and a plot that both depend on it,
# plus a plot that never changes (it must not be listed).
WRITE_METRICS = f"""\
import json, pathlib, yaml
lr = yaml.safe_load(open("params.yaml"))["train"]["lr"]
acc = {BASE_ACC} if lr == {BASE_LR} else {FEATURE_ACC}
json.dump({{"accuracy": acc}}, open("metrics.json", "w"))
pathlib.Path("metrics").mkdir(exist_ok=True)
pathlib.Path("metrics/history.csv").write_text(f"step,accuracy\\n0,0.5\\n1,{{acc}}\\n")
pathlib.Path("metrics/classes.csv").write_text("class,count\\n0,3\\n")
"""

DVC_YAML = """\
stages:
  train:
    cmd: python write_metrics.py
    deps:
      - write_metrics.py
    params:
      - train.lr
    metrics:
      - metrics.json:
          cache: false
    plots:
      - metrics/history.csv:
          cache: false
          x: step
      - metrics/classes.csv:
          cache: false
"""


def sh(repo: Path, *argv: str) -> str:
    """Run a command in ``repo`` with the venv first on PATH (as prreport does); fail loudly."""
    proc = subprocess.run(argv, cwd=repo, env=command_env(), capture_output=True, text=True)
    assert proc.returncode == 0, f"{argv} failed:\n{proc.stderr}"
    return proc.stdout


def set_lr(repo: Path, lr: float) -> None:
    (repo / "params.yaml").write_text(f"train:\n  lr: {lr}\n")


def commit_repro(repo: Path, message: str) -> None:
    sh(repo, "dvc", "repro", "--quiet")
    sh(repo, "git", "add", "-A")
    sh(repo, *GIT, "commit", "--quiet", "-m", message)


@pytest.fixture(scope="module")
def pr_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`main`: lr 0.1 / accuracy 0.80; checked-out `feature`: lr 0.2 / accuracy 0.90."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DVC_NO_ANALYTICS", "1")
    repo = tmp_path_factory.mktemp("pr_repo")
    sh(repo, "git", "init", "--quiet", "--initial-branch=main")
    sh(repo, "dvc", "init", "--quiet")
    (repo / "write_metrics.py").write_text(WRITE_METRICS)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    set_lr(repo, BASE_LR)
    commit_repro(repo, "base")
    sh(repo, "git", "checkout", "--quiet", "-b", "feature")
    set_lr(repo, FEATURE_LR)
    commit_repro(repo, "raise lr")
    yield repo
    mp.undo()


@pytest.fixture(autouse=True)
def _no_analytics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")


def table_row(report: str, name: str) -> list[str]:
    """Cells of the markdown table row whose cells include ``name``."""
    for line in report.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if name in cells:
            return cells
    raise AssertionError(f"no table row for {name!r} in:\n{report}")


def test_report_shows_param_and_metric_changes(pr_repo: Path) -> None:
    report = build_pr_report(pr_repo, base="main")
    assert report.startswith("## ")
    assert table_row(report, "train.lr")[-2:] == [str(BASE_LR), str(FEATURE_LR)]
    acc = table_row(report, "accuracy")
    assert acc[2:4] == [str(BASE_ACC), str(FEATURE_ACC)]
    assert float(acc[4]) == pytest.approx(FEATURE_ACC - BASE_ACC)
    assert "no changes" not in report.lower()


def test_report_lists_only_changed_plots_and_hints_plots_diff(pr_repo: Path) -> None:
    report = build_pr_report(pr_repo, base="main")
    assert "`metrics/history.csv`" in report
    assert "metrics/classes.csv" not in report
    assert "dvc plots diff main" in report


def test_uncommitted_workspace_change_counts(pr_repo: Path) -> None:
    """CI reproduces without committing: the workspace, not HEAD, is what gets compared."""
    new_plot = pr_repo / "metrics" / "roc.csv"
    new_plot.write_text("fpr,tpr\n0,0\n1,1\n")
    try:
        assert "`metrics/roc.csv`" in build_pr_report(pr_repo, base="feature")
    finally:
        new_plot.unlink()


def test_no_change_says_so(pr_repo: Path) -> None:
    report = build_pr_report(pr_repo, base="feature")
    for section in ("params", "metrics", "plot files"):
        assert f"no changes in {section} vs `feature`" in report.lower()
    assert "|" not in report


def test_bad_base_ref_names_it(pr_repo: Path) -> None:
    with pytest.raises(PrReportError, match="no-such-branch"):
        build_pr_report(pr_repo, base="no-such-branch")


def test_failing_dvc_command_is_named_with_its_stderr(pr_repo: Path, tmp_path: Path) -> None:
    fake = tmp_path / "fake-dvc"
    fake.write_text("#!/bin/sh\necho 'boom: remote unreachable' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(PrReportError) as err:
        build_pr_report(pr_repo, base="main", dvc=str(fake))
    message = str(err.value)
    assert "params diff main --md" in message and "exit 3" in message
    assert "boom: remote unreachable" in message


def test_missing_dvc_binary_is_named(pr_repo: Path) -> None:
    with pytest.raises(PrReportError, match="not-a-dvc"):
        build_pr_report(pr_repo, base="main", dvc="not-a-dvc")


def test_run_writes_and_prints(pr_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "reports" / "pr.md"
    monkeypatch.chdir(pr_repo)
    assert run(parser.parse_args(["--out", str(out)])) == 0
    printed = capsys.readouterr().out
    assert out.read_text() == printed
    assert "train.lr" in printed
    assert run(parser.parse_args(["--base", "nope", "--out", str(out)])) == 1
    assert out.read_text() == printed, "a failed run must not overwrite the last report"


def test_defaults() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    assert (args.base, args.out) == ("main", Path("reports/pr.md"))


def test_write_pr_report_is_what_build_returns(pr_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "pr.md"
    assert write_pr_report(pr_repo, "main", out) == out.read_text() == build_pr_report(pr_repo, "main")


@pytest.mark.parametrize(
    ("markdown", "empty"),
    [
        ("| Path | Param | a | b |\n|---|---|---|---|\n\n", True),
        ("", True),
        ("| Path | Param | a | b |\n|---|---|---|---|\n| p | x | 1 | 2 |\n", False),
    ],
)
def test_is_empty_table(markdown: str, empty: bool) -> None:
    assert is_empty_table(markdown) is empty


def test_metrics_file_is_committed_so_git_can_diff(pr_repo: Path) -> None:
    """Guards the fixture: `cache: false` outputs are in git, so both revisions are readable."""
    assert json.loads(sh(pr_repo, "git", "show", "main:metrics.json")) == {"accuracy": BASE_ACC}
