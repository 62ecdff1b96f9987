"""PR report against a real, tiny git + DVC repo: base branch `main`, one feature commit."""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from signflow.commands.pr_report import EXIT_ERROR, add_arguments, run
from signflow.processes import CommandError, command_env
from signflow.review.plots import KINDS, plot_comparison
from signflow.review.report import (
    DEFAULT_IMAGES_DIR,
    TIMINGS_TITLE,
    PrReportError,
    build_pr_report,
    image_name,
    is_empty_table,
    split_table,
    write_pr_report,
)

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
BASE_LR, FEATURE_LR = 0.1, 0.2
BASE_ACC, FEATURE_ACC = 0.80, 0.90
BASE_SECONDS, FEATURE_SECONDS = 1.5, 2.5
HISTORY, CLASSES = "metrics/history.csv", "metrics/classes.csv"
TIMINGS, TIMINGS_HISTORY = "metrics/timings/train.json", "metrics/timings/history.csv"

# The stage reads its one param and writes a metric and a plot that both depend on it,
# plus a plot that never changes (it must not be listed), and timings (a metrics file and a CSV).
WRITE_METRICS = f"""\
import json, pathlib, yaml
lr = yaml.safe_load(open("params.yaml"))["train"]["lr"]
acc = {BASE_ACC} if lr == {BASE_LR} else {FEATURE_ACC}
seconds = {BASE_SECONDS} if lr == {BASE_LR} else {FEATURE_SECONDS}
json.dump({{"accuracy": acc}}, open("metrics.json", "w"))
pathlib.Path("metrics/timings").mkdir(parents=True, exist_ok=True)
pathlib.Path("{HISTORY}").write_text(f"step,accuracy\\n0,0.5\\n1,{{acc}}\\n")
pathlib.Path("{CLASSES}").write_text("class,count\\n0,3\\n")
json.dump({{"train_seconds": seconds}}, open("{TIMINGS}", "w"))
pathlib.Path("{TIMINGS_HISTORY}").write_text(f"step,seconds\\n0,{{seconds}}\\n")
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
      - metrics/timings/train.json:
          cache: false
    outs:
      - metrics/timings/history.csv:
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


def section(report: str, title: str) -> str:
    """The text of the section headed ``title`` (up to the next section)."""
    start = report.index(title + "\n")
    end = report.find("\n### ", start + len(title))
    return report[start : end if end >= 0 else len(report)]


def halves(png: Path) -> tuple[np.ndarray, np.ndarray]:
    """The left (base) and right (head) halves of a comparison PNG."""
    image = mpimg.imread(png)
    width = image.shape[1]
    assert width % 2 == 0, f"{png}: two sides of equal width expected, got {width} px"
    return image[:, : width // 2], image[:, width // 2 :]


def test_report_shows_param_and_metric_changes(pr_repo: Path) -> None:
    report = build_pr_report(pr_repo, base="main").markdown
    assert report.startswith("## ")
    assert table_row(report, "train.lr")[-2:] == [str(BASE_LR), str(FEATURE_LR)]
    acc = table_row(report, "accuracy")
    assert acc[2:4] == [str(BASE_ACC), str(FEATURE_ACC)]
    assert float(acc[4]) == pytest.approx(FEATURE_ACC - BASE_ACC)
    assert "no changes" not in report.lower()


def test_timings_are_shown_apart_from_the_metrics(pr_repo: Path) -> None:
    report = build_pr_report(pr_repo, base="main").markdown
    metrics, timings = section(report, "### Metrics"), section(report, TIMINGS_TITLE)
    assert "train_seconds" not in metrics and TIMINGS not in metrics
    assert table_row(timings, "train_seconds")[:4] == [TIMINGS, "train_seconds", str(BASE_SECONDS),
                                                       str(FEATURE_SECONDS)]
    assert f"`{TIMINGS_HISTORY}`" in timings  # a changed timings CSV: listed here, never drawn
    assert TIMINGS_HISTORY not in section(report, "### Plots")


def test_timings_only_change_shows_no_metrics_diff(pr_repo: Path, tmp_path: Path) -> None:
    """Same results, another runner: the metrics and plots sections say "no changes"; no picture is drawn."""
    saved = {name: (pr_repo / name).read_text() for name in (TIMINGS, TIMINGS_HISTORY)}
    (pr_repo / TIMINGS).write_text(json.dumps({"train_seconds": 99.0}))
    (pr_repo / TIMINGS_HISTORY).write_text("step,seconds\n0,99.0\n")
    try:
        report = build_pr_report(pr_repo, base="feature", images_dir=tmp_path / "pr").markdown
    finally:
        for name, text in saved.items():
            (pr_repo / name).write_text(text)
    assert section(report, "### Metrics").strip().endswith("No changes in metrics vs `feature`.")
    assert "No changes in plot files vs `feature`." in section(report, "### Plots")
    assert table_row(section(report, TIMINGS_TITLE), "train_seconds")[2:4] == [str(FEATURE_SECONDS), "99.0"]
    assert list((tmp_path / "pr").glob("*.png")) == []


def test_changed_plot_csv_is_drawn_base_beside_head(pr_repo: Path, tmp_path: Path) -> None:
    images = tmp_path / "reports" / "pr"
    images.mkdir(parents=True)
    (images / "stale.png").write_bytes(b"left by an earlier report")
    report = build_pr_report(pr_repo, base="main", images_dir=images).markdown

    png = images / image_name(HISTORY)
    assert sorted(images.iterdir()) == [png]  # the changed CSV only: not classes.csv, not the timings CSV
    link = f"pr/{png.name}"  # relative to the markdown beside the folder (reports/pr.md)
    assert f"]({link})" in section(report, "### Plots")
    base, head = halves(png)
    assert base.shape == head.shape and not np.array_equal(base, head)
    assert image_name(CLASSES) not in report


def test_link_is_relative_to_the_markdown(pr_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "site" / "pr.md"
    images = tmp_path / "artifacts"
    markdown = write_pr_report(pr_repo, "main", out, images_dir=images).markdown
    assert f"](../artifacts/{image_name(HISTORY)})" in markdown
    assert (out.parent / "../artifacts" / image_name(HISTORY)).is_file()


def _kind_frames(kind: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A small file of each kind (as the pipeline writes it) and a changed version of it."""
    rng = np.random.default_rng(0)
    if kind == "confusion":
        actual = rng.choice(["stop", "give_way", "no_entry"], size=60)
        base = pd.DataFrame({"actual": actual, "predicted": actual})
        head = base.assign(predicted=np.where(np.arange(60) % 4 == 0, "stop", actual))
    elif kind == "roc":
        base = pd.DataFrame({"fpr": [0.0, 0.1, 0.4, 1.0], "tpr": [0.0, 0.6, 0.9, 1.0], "threshold": [1, 0.9, 0.5, 0]})
        head = base.assign(tpr=[0.0, 0.8, 0.95, 1.0])
    elif kind == "reliability":
        base = pd.DataFrame({"bin_lower": [0.0, 0.5], "bin_upper": [0.5, 1.0], "confidence": [np.nan, 0.8],
                             "accuracy": [np.nan, 0.7], "count": [0, 10]})
        head = base.assign(accuracy=[np.nan, 0.8])
    elif kind == "history":
        base = pd.DataFrame({"epoch": [0, 1, 2], "train_loss": [1.0, 0.6, 0.4], "val_loss": [1.1, 0.8, 0.7],
                             "train_accuracy": [0.5, 0.7, 0.8], "val_accuracy": [0.4, 0.6, 0.7], "lr": [1e-3] * 3})
        head = base.assign(val_loss=[1.1, 0.7, 0.5])
    else:
        base = pd.DataFrame({"class": ["stop", "give_way"], "precision": [0.9, 0.8], "recall": [0.85, 0.9],
                             "support": [20, 30]})
        head = base.assign(recall=[0.95, 0.9])
    return base, head


@pytest.mark.parametrize("kind", [kind.name for kind in KINDS])
def test_each_kind_draws_equal_data_alike_and_changes_apart(kind: str, tmp_path: Path) -> None:
    base, head = _kind_frames(kind)
    same, changed = tmp_path / "same.png", tmp_path / "changed.png"
    assert plot_comparison(base, base.copy(), same, labels=("rev", "rev")) == kind
    left, right = halves(same)
    assert np.array_equal(left, right), "equal data under equal labels must give identical halves"
    assert plot_comparison(base, head, changed, labels=("rev", "rev")) == kind
    left, right = halves(changed)
    assert not np.array_equal(left, right)


def test_a_file_missing_on_one_side_is_drawn_alone_and_per_row_data_is_not_drawn(tmp_path: Path) -> None:
    base, head = _kind_frames("roc")
    assert plot_comparison(None, head, tmp_path / "new.png") == "roc"
    assert plot_comparison(base, None, tmp_path / "gone.png") == "roc"
    per_image = pd.DataFrame({"path": [f"{i}.png" for i in range(200)], "confidence": np.linspace(0, 1, 200)})
    assert plot_comparison(per_image, per_image.iloc[:100], tmp_path / "rows.png") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gone.png", "new.png"]


def test_split_table_moves_rows_by_path() -> None:
    table = ("| Path | Metric | main | workspace | Change |\n|---|---|---|---|---|\n"
             "| metrics/a.json | x | 1 | 2 | 1 |\n| metrics/timings/a.json | s | 1 | 3 | 2 |\n")
    kept, moved = split_table(table, lambda path: path.startswith("metrics/timings/"))
    assert kept.splitlines()[2:] == ["| metrics/a.json | x | 1 | 2 | 1 |"]
    assert moved.splitlines()[2:] == ["| metrics/timings/a.json | s | 1 | 3 | 2 |"]
    assert kept.splitlines()[:2] == moved.splitlines()[:2] == table.splitlines()[:2]
    assert split_table(table, lambda path: False)[1] == ""


def test_report_lists_only_changed_plots_and_hints_plots_diff(pr_repo: Path) -> None:
    report = build_pr_report(pr_repo, base="main").markdown
    assert "`metrics/history.csv`" in report
    assert "metrics/classes.csv" not in report
    assert "dvc plots diff main" in report


def test_uncommitted_workspace_change_counts(pr_repo: Path) -> None:
    """CI reproduces without committing: the workspace, not HEAD, is what gets compared."""
    new_plot = pr_repo / "metrics" / "roc.csv"
    new_plot.write_text("fpr,tpr\n0,0\n1,1\n")
    try:
        assert "`metrics/roc.csv`" in build_pr_report(pr_repo, base="feature").markdown
    finally:
        new_plot.unlink()


def test_no_change_says_so(pr_repo: Path) -> None:
    report = build_pr_report(pr_repo, base="feature").markdown
    for what in ("params", "metrics", "plot files", "timings"):
        assert f"no changes in {what} vs `feature`" in report.lower()
    assert "|" not in report


def test_bad_base_ref_names_it(pr_repo: Path) -> None:
    with pytest.raises(PrReportError, match="no-such-branch"):
        build_pr_report(pr_repo, base="no-such-branch")


def test_failing_dvc_command_is_named_with_its_stderr(pr_repo: Path, tmp_path: Path) -> None:
    fake = tmp_path / "fake-dvc"
    fake.write_text("#!/bin/sh\necho 'boom: remote unreachable' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(CommandError) as err:
        build_pr_report(pr_repo, base="main", dvc=str(fake))
    message = str(err.value)
    assert "params diff main --md" in message and "exit 3" in message
    assert "boom: remote unreachable" in message


def test_missing_dvc_binary_is_named(pr_repo: Path) -> None:
    with pytest.raises(CommandError, match="not-a-dvc"):
        build_pr_report(pr_repo, base="main", dvc="not-a-dvc")


def test_run_writes_and_prints(pr_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "reports" / "pr.md"
    monkeypatch.chdir(pr_repo)
    assert run(parser.parse_args(["--out", str(out), "--images-dir", str(tmp_path / "reports" / "pr")])) == 0
    printed = capsys.readouterr().out
    assert out.read_text() == printed
    assert "train.lr" in printed
    assert (tmp_path / "reports" / "pr" / image_name(HISTORY)).is_file()
    assert run(parser.parse_args(["--base", "nope", "--out", str(out), "--images-dir", str(tmp_path)])) == EXIT_ERROR
    assert out.read_text() == printed, "a failed run must not overwrite the last report"


def test_defaults() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    assert (args.base, args.out, args.images_dir) == ("main", Path("reports/pr.md"), Path("reports/pr"))
    assert args.images_dir == DEFAULT_IMAGES_DIR


def test_write_pr_report_is_what_build_returns(pr_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "pr.md"
    written = write_pr_report(pr_repo, "main", out).markdown
    assert written == out.read_text() == build_pr_report(pr_repo, "main").markdown


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
