"""`signflow sweep`: its options, a dry run, and refusing an invalid grid before anything runs.

The grid, the runner and the table have their own tests (tests/sweep/). The real
sweep, a two-point grid on two queue workers whose DVC experiments, MLflow runs
and table must agree, runs in
tests/test_tracking_server.py::test_pipeline_logs_to_the_server_then_two_queue_workers_log_one_named_run_each:
its queued experiments log to a tracking server, so one pair of experiments proves both.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from signflow import cli, processes
from signflow.commands.sweep import DEFAULT_OUT, EXIT_ERROR, EXIT_OK, add_arguments

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
    assert args.seeds == 1 and args.seed_keys == ["train.seed"] and args.name is None
    assert parser.parse_args(["--seed-keys", "train.seed,split.seed"]).seed_keys == ["train.seed", "split.seed"]
    for bad in (["--jobs", "0"], ["--timeout", "0"], ["--timeout", "soon"], ["--seeds", "0"]):
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


def test_dry_run_over_seeds_lists_each_points_experiments(
    workspace: list[list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["sweep", "--dry-run", *SIMPLE_CNN, "-S", "strategy=scratch", "-S", "train.lr=0.01,0.1",
                     "--seeds", "2", "--seed-keys", "train.seed,split.seed", "--sort-by", "test.accuracy"])
    assert code == EXIT_OK and workspace == []
    header, _, *body = capsys.readouterr().out.splitlines()
    assert header.startswith("| experiment | point | train.seed | split.seed | model.backbone |")
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in body]
    assert [row[:4] for row in cells] == [["sweep-1-s0", "sweep-1", "0", "0"], ["sweep-1-s1", "sweep-1", "1", "1"],
                                          ["sweep-2-s0", "sweep-2", "0", "0"], ["sweep-2-s1", "sweep-2", "1", "1"]]


def test_an_invalid_grid_exits_2_before_any_command(
    workspace: list[list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    assert cli.main(["sweep", "-S", "strategy=full,foo"]) == EXIT_ERROR
    assert workspace == [] and "sweep-2 (strategy=foo): params.yaml: strategy='foo' is invalid" in caplog.text
    assert cli.main(["sweep", "-S", "strategy=full", "--sort-by", "nope"]) == EXIT_ERROR
    assert workspace == [] and "--sort-by 'nope'" in caplog.text
    assert cli.main(["sweep", "-S", "train.seed=0,1", "--seeds", "2"]) == EXIT_ERROR
    assert workspace == [] and "train.seed is in the grid and --seeds 2 is given" in caplog.text
