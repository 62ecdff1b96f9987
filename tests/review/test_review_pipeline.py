"""The review on real pipeline runs: a pretrained model, the same model barely trained, and a data change.

One project (the tiny pipeline with enough test images for a verdict: 20 per class) is
built once for the module and committed three times, each a real `dvc repro evaluate`:

- ``good``: efficientnet_lite0 (ImageNet weights), the linear strategy, 10 epochs;
- ``worse``: the same with 1 epoch at a learning rate too small to learn anything;
- ``more-data``: ``good`` with more tracks per class, so the split and the test set change.

Each test checks out the revision it plays as head (``dvc checkout`` restores its outputs
from the cache) and runs ``signflow pr-report`` (or the GitHub script) against another.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from signflow.review.github import COMMENT_MARKER
from signflow.review.stats import BETTER, NO_DIFFERENCE, WORSE

from .test_github import SCRIPT, github_env, parse_outputs
from project_copy import DVC_TIMEOUT, Project
from tiny_project import tiny_copy

pytestmark = pytest.mark.slow

GOOD, WORSE_TAG, MORE_DATA = "good", "worse", "more-data"
TRACKS, MORE_TRACKS = 20, 24


def commit(proj: Project, tag: str) -> None:
    proj.run("git", "add", "-A")
    proj.run("git", "commit", "-q", "-m", tag)
    proj.run("git", "tag", tag)


def set_train(proj: Project, **train: float) -> None:
    params = proj.params()
    params["train"].update(train)
    proj.set_params(params)


@pytest.fixture(scope="module")
def project(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Project:
    proj = tiny_copy(repo_root, tmp_path_factory.mktemp("review"), backbone="efficientnet_lite0",
                     weights="imagenet", epochs=10)
    params = proj.params()
    params["data"]["synthetic"].update(tracks_per_class=TRACKS, frames_per_track=4)
    params["split"].update(train=0.5, val=0.25, test=0.25)
    params["unknown"].update(max_images=40, heldout_max_images=40)
    params["train"].update(lr=0.003)
    proj.set_params(params)
    proj.dvc("repro", "evaluate")
    commit(proj, GOOD)
    set_train(proj, epochs=1, lr=1e-6)
    proj.dvc("repro", "evaluate")
    commit(proj, WORSE_TAG)
    proj.run("git", "checkout", "-q", GOOD)
    proj.dvc("checkout", "--force", "--with-deps", "evaluate")
    params = proj.params()
    params["data"]["synthetic"]["tracks_per_class"] = MORE_TRACKS
    proj.set_params(params)
    proj.dvc("repro", "evaluate")
    commit(proj, MORE_DATA)
    return proj


def head_at(proj: Project, revision: str) -> None:
    """The workspace as ``revision`` left it: its commit and its DVC outputs."""
    proj.run("git", "checkout", "-q", "-f", revision)
    proj.run("git", "clean", "-fdq", "reports")
    proj.dvc("checkout", "--force", "--with-deps", "evaluate")


def pr_report(proj: Project, base: str, *extra: str) -> tuple[int, str, str]:
    """``signflow pr-report --base base --gate``: the exit code, the markdown and the log."""
    proc = proj.run("signflow", "pr-report", "--base", base, "--gate", *extra, check=False)
    assert proc.returncode in (0, 1), f"pr-report failed ({proc.returncode}):\n{proc.stderr}"
    return proc.returncode, (proj.root / "reports/pr.md").read_text(), proc.stderr


def verdicts(markdown: str) -> dict[str, str]:
    """Metric -> verdict, from the verdict table's rows (first cell the metric, last the verdict)."""
    found = {}
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 8:
            found[cells[0].strip("`")] = cells[-1].strip("*")
    return found


def test_cosmetic_change_shows_no_difference_and_passes(project: Project) -> None:
    head_at(project, GOOD)
    (project.root / "NOTES.md").write_text("A sentence that changes no result.\n")
    project.run("git", "checkout", "-q", "-b", "cosmetic")
    commit(project, "cosmetic-change")
    status, markdown, _ = pr_report(project, GOOD)
    assert status == 0
    assert "**Gate: passed**" in markdown and "Paired: base and head scored the same" in markdown
    found = verdicts(markdown)
    assert {"test.accuracy", "openset.known_accuracy", "openset.heldout_rejected", "openset.auroc"} <= set(found)
    assert set(found.values()) == {NO_DIFFERENCE}
    assert "No test image flipped" in markdown
    assert "No change in the data" in markdown


def test_worse_head_fails_the_gate_naming_metric_and_class(project: Project) -> None:
    head_at(project, WORSE_TAG)
    status, markdown, log = pr_report(project, GOOD)
    assert status == 1
    assert verdicts(markdown)["test.accuracy"] == WORSE
    assert "gate failed: test.accuracy: head - base = -" in log
    assert "gate failed: class " in log and "significantly worse" in log
    gallery = project.root / "reports/pr/flips.png"
    assert gallery.is_file() and "](pr/flips.png)" in markdown
    assert "right on base and wrong on head" in markdown


def test_better_head_is_better_with_an_interval_excluding_zero(project: Project) -> None:
    head_at(project, GOOD)
    _, markdown, _ = pr_report(project, WORSE_TAG)
    assert verdicts(markdown)["test.accuracy"] == BETTER
    row = next(line for line in markdown.splitlines() if line.startswith("| `test.accuracy`"))
    interval = row.split("|")[5].strip()  # "[+a points, +b points]"
    assert interval.startswith("[+") and ", +" in interval


def test_data_change_is_compared_unpaired_with_the_data_diff(project: Project) -> None:
    head_at(project, MORE_DATA)
    _, markdown, _ = pr_report(project, GOOD)
    assert "**The test sets differ**" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| `test.accuracy`"))
    assert "Newcombe" in row
    data = markdown[markdown.index("### Data"):]
    assert "tracks" in data and "+" in data
    assert "No change in the data" not in data
    assert (project.root / "reports/pr/new_images.png").is_file()


def test_github_script_publishes_a_failed_gate(project: Project, tmp_path: Path) -> None:
    head_at(project, WORSE_TAG)
    env = {**project.env, **github_env(tmp_path)}
    proc = subprocess.run([str(SCRIPT), GOOD], cwd=project.root, env=env, capture_output=True, text=True,
                          timeout=DVC_TIMEOUT)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    outputs = parse_outputs((tmp_path / "output.txt").read_text())
    assert outputs["gate"] == "fail" and "test.accuracy" in outputs["failures"]
    assert (project.root / outputs["comment"]).read_text().startswith(COMMENT_MARKER + "\n")
    summary = (tmp_path / "summary.md").read_text()
    assert "**Gate: failed**" in summary and "![" not in summary  # pictures become links to the run


def test_metrics_of_the_runs_are_what_the_review_compares(project: Project) -> None:
    """Guards the fixture: the runs differ as intended (a real model against an untrained one)."""
    good = json.loads(project.run("git", "show", f"{GOOD}:metrics/evaluate.json").stdout)
    worse = json.loads(project.run("git", "show", f"{WORSE_TAG}:metrics/evaluate.json").stdout)
    assert good["test.accuracy"] > worse["test.accuracy"] + 0.2
    assert good["test.n"] >= 80
