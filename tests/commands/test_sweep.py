"""`signflow sweep`: its options, a dry run, refusing an invalid grid before anything runs, and one real sweep.

The grid, the runner and the table have their own tests (tests/sweep/); the
slow test queues a two-point grid in a throw-away copy of the project (tiny
pipeline, as in ``tests/pipeline/test_train_stage.py``) and checks DVC, MLflow
and the table agree.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from signflow import cli, processes
from signflow.commands.sweep import DEFAULT_OUT, EXIT_ERROR, EXIT_OK, add_arguments
from signflow.sweep.runner import SUCCESS, experiment_states

from project_copy import Project
from tiny_project import tiny_copy

SWEEP_TIMEOUT = 1200  # s the e2e sweep may wait for its experiments (about 3 min on 2 idle cores)
PROCESS_TIMEOUT = SWEEP_TIMEOUT + 300
# On the real params.yaml: simple_cnn has no pretrained weights, so its `linear` point is skipped.
SIMPLE_CNN = ["-S", "model.backbone=simple_cnn", "-S", "model.weights=none"]


@pytest.fixture
def workspace(tmp_path: Path, repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The current folder holds the real params.yaml; every dvc/git call is recorded, none is run."""
    shutil.copy2(repo_root / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TQDM_MININTERVAL", "10")  # setup_logging sets it off a terminal
    calls: list[list[str]] = []
    monkeypatch.setattr(processes, "run", lambda argv, cwd, **kwargs: calls.append(list(argv)))
    return calls


def test_add_arguments_defaults() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["-S", "strategy=linear,full"])
    assert args.set_params == ["strategy=linear,full"] and args.grid is None and args.jobs == 1
    assert args.prefix == "sweep" and args.sort_by == "test.accuracy" and args.timeout is None
    assert not args.ascending and args.out == DEFAULT_OUT
    for bad in (["--jobs", "0"], ["--timeout", "0"], ["--timeout", "soon"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_dry_run_prints_the_planned_points_and_runs_nothing(
    workspace: list[list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["sweep", "--dry-run", *SIMPLE_CNN, "-S", "strategy=linear,scratch", "-S",
                     "train.epochs=range(1,3)"])
    assert code == EXIT_OK and workspace == []
    header, _, *body = capsys.readouterr().out.splitlines()
    assert header.startswith("| experiment | model.backbone | model.weights | strategy | train.epochs | test.")
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in body]
    assert [(row[0], row[3], row[4], row[-2]) for row in cells] == [
        ("sweep-1", "linear", "1", "skipped"), ("sweep-2", "linear", "2", "skipped"),
        ("sweep-3", "scratch", "1", "planned"), ("sweep-4", "scratch", "2", "planned")]
    assert "simple_cnn has none" in cells[0][-1]
    assert not Path(DEFAULT_OUT).exists()


def test_an_invalid_grid_exits_2_before_any_command(
    workspace: list[list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    assert cli.main(["sweep", "-S", "strategy=full,foo"]) == EXIT_ERROR
    assert workspace == [] and "sweep-2 (strategy=foo): params.yaml: strategy='foo' is invalid" in caplog.text
    assert cli.main(["sweep", "-S", "strategy=full", "--sort-by", "nope"]) == EXIT_ERROR
    assert workspace == [] and "--sort-by 'nope'" in caplog.text


# ------------------------------------------------------------------ end to end under DVC


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Project:
    base = tmp_path_factory.mktemp("sweep")
    # The baseline's strategy (linear) is off the grid: a point equal to the committed baseline reuses
    # its results (DVC skips every stage), so it would train nothing and log no MLflow run.
    # efficientnet_lite0: its ImageNet weights ship offline, so `full` is a real point.
    proj = tiny_copy(repo_root, base, backbone="efficientnet_lite0", weights="imagenet")
    proj.dvc("repro")
    proj.run("git", "add", "-A")
    proj.run("git", "commit", "-q", "-m", "baseline: efficientnet_lite0 linear")
    return proj


@pytest.mark.slow
def test_sweep_end_to_end(baseline: Project, record_property: Any) -> None:
    started = time.monotonic()
    command = [sys.executable, "-m", "signflow", "sweep",
               "-S", "strategy=scratch,full", "-S", "unknown.enabled=false", "--jobs", "2",
               "--timeout", str(SWEEP_TIMEOUT)]
    try:
        proc = subprocess.run(command, cwd=baseline.root, env=baseline.env, capture_output=True, text=True,
                              timeout=PROCESS_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as err:  # the sweep outlived its own --timeout: show where it was
        stderr = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else err.stderr or ""
        queue = baseline.dvc("queue", "status", check=False)
        pytest.fail(f"sweep still running after {PROCESS_TIMEOUT} s:\n{stderr[-3000:]}\n{queue.stdout}{queue.stderr}")
    finally:
        baseline.stop_queue()  # no worker outlives the test
    record_property("sweep_seconds", round(time.monotonic() - started, 1))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Two points, run side by side: the grid's product and order are unit-tested above (CI time).
    expected = {"sweep-1": ("scratch", False), "sweep-2": ("full", False)}

    # DVC: one experiment per point under the baseline, each with the params of its point.
    head = baseline.run("git", "rev-parse", "HEAD").stdout.strip()
    shown = json.loads(baseline.dvc("exp", "show", "--json").stdout)
    states = experiment_states(shown, head)
    assert set(states) == set(expected), sorted(states)
    for name, (strategy, unknown) in expected.items():
        assert states[name].status == SUCCESS
        assert (states[name].params["strategy"], states[name].params["unknown"]["enabled"]) == (strategy, unknown)

    # MLflow: one run per experiment, named after it (the train stage reads DVC_EXP_NAME).
    client = MlflowClient(tracking_uri=baseline.env["MLFLOW_TRACKING_URI"])
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    names = [run.info.run_name for run in client.search_runs(experiment_ids)]
    assert sorted(name for name in names if name.startswith("sweep-")) == sorted(expected), names
    runs = {run.info.run_name: run for run in client.search_runs(experiment_ids)}
    for name, (strategy, _) in expected.items():
        assert runs[name].data.params["strategy"] == strategy

    # The table: Markdown (printed and written) and CSV, one row per point with the swept columns.
    markdown = (baseline.root / DEFAULT_OUT).read_text()
    assert markdown in proc.stdout
    header, _, *body = markdown.splitlines()
    assert header.startswith("| experiment | strategy | unknown.enabled | test.accuracy |")
    assert len(body) == len(expected)
    table = list(csv.DictReader((baseline.root / DEFAULT_OUT.with_suffix(".csv")).read_text().splitlines()))
    assert {row["experiment"]: (row["strategy"], row["unknown.enabled"]) for row in table} == {
        name: (strategy, str(unknown).lower()) for name, (strategy, unknown) in expected.items()}
    assert all(row["status"] == SUCCESS and 0 <= float(row["test.accuracy"]) <= 1 for row in table)
    accuracies = [float(row["test.accuracy"]) for row in table]
    assert accuracies == sorted(accuracies, reverse=True)
    # The table lives outside the report stage's output: the pipeline stays up to date.
    assert baseline.status() == {}
