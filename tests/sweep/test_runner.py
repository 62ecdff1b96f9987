"""signflow.sweep.runner: reading `dvc exp show --json`, queueing, bounded polls and failure notes, against a fake dvc.

The fake stands in for ``signflow.processes.run`` (tests/sweep/fakes.py); the
real queue runs in tests/sweep/test_sweep_e2e.py.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from signflow import cli, processes
from signflow.commands import sweep as command
from signflow.processes import CommandError, Result
from signflow.sweep import grid, runner
from signflow.sweep.grid import SweepError
from signflow.sweep.runner import FAILED, QUEUED, SKIPPED, SUCCESS

from .fakes import FAILED_LOG, FakeDvc, exp_group, exp_show, metrics


def test_states_from_exp_show() -> None:
    baseline = metrics(0.25)  # a failed experiment's commit still holds the baseline's metrics files
    show = exp_show(exp_group("sweep-1", SUCCESS, metrics(0.9, 3.5)),
                    exp_group("sweep-3", FAILED, baseline, {"msg": "failed"}),
                    exp_group("sweep-4", None, metrics(0.7)), exp_group("other", QUEUED, {}))
    states = runner.experiment_states(show, "base")
    assert states["sweep-1"].status == SUCCESS and states["sweep-4"].status == SUCCESS
    assert states["sweep-3"].status == FAILED and states["other"].status == QUEUED
    assert states["sweep-1"].params == {"strategy": "full"}
    assert states["sweep-1"].metrics["metrics/timings/train.json"] == {"train_seconds": 3.5}


def test_experiments_of_another_baseline_are_ignored_and_a_missing_baseline_is_an_error() -> None:
    show = exp_show(exp_group("sweep-1", SUCCESS, metrics(0.9)), baseline="old")
    assert runner.experiment_states(show + exp_show(baseline="new")[1:], "new") == {}
    with pytest.raises(SweepError, match="baseline commit"):
        runner.experiment_states(show, "new")


def test_a_failed_experiments_note_is_its_error() -> None:
    note = runner.log_tail(FAILED_LOG)
    assert note.startswith("signflow.model.backbones.WeightsUnavailableError: ImageNet weights")
    assert note.endswith("exited with 1") and note.count("ERROR:") == 1


def test_sweep_queues_waits_and_tables(
    fake_dvc: FakeDvc, params_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(params_file.parent)
    out = params_file.parent / "out" / "grid.md"
    code = cli.main(["sweep", "-S", "strategy=scratch,linear", "-S", "train.lr=0.01,1e-3", "--jobs", "2",
                     "--out", str(out)])
    assert code == command.EXIT_FAILED  # sweep-2 failed

    queue_calls = fake_dvc.dvc_calls("dvc", "exp", "run")
    assert queue_calls == [
        ["dvc", "exp", "run", "--queue", "-n", "sweep-1", "-S", "strategy=scratch", "-S", "train.lr=0.01"],
        ["dvc", "exp", "run", "--queue", "-n", "sweep-2", "-S", "strategy=scratch", "-S", "train.lr=0.001"],
    ]  # sweep-3 and sweep-4 (linear on simple_cnn) skipped
    assert ["dvc", "queue", "start", "-j", "2"] in fake_dvc.calls
    assert fake_dvc.calls.index(["dvc", "queue", "start", "-j", "2"]) > fake_dvc.calls.index(queue_calls[-1])
    assert fake_dvc.dvc_calls("dvc", "queue", "logs") == [["dvc", "queue", "logs", "sweep-2"]]

    printed = capsys.readouterr().out
    assert printed == out.read_text()
    table = list(csv.DictReader(out.with_suffix(".csv").read_text().splitlines()))
    assert [(r["experiment"], r["status"]) for r in table] == [
        ("sweep-1", SUCCESS), ("sweep-2", FAILED), ("sweep-3", SKIPPED), ("sweep-4", SKIPPED)]
    assert "WeightsUnavailableError" in table[1]["note"] and "simple_cnn" in table[2]["note"]
    assert list(table[0])[:3] == ["experiment", "strategy", "train.lr"]
    # The tracking server is down: the MLflow record is one warning, the table is written anyway.
    assert "MLflow: could not record sweep sweep" in caplog.text


def test_sweep_over_seeds_tables_each_points_statistics(
    fake_dvc: FakeDvc, params_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(params_file.parent)
    pipeline = "stages:\n  train: {cmd: 'true'}\n  evaluate: {cmd: 'true'}\n"
    (params_file.parent / runner.PIPELINE_FILE).write_text(pipeline)
    out = params_file.parent / "out" / "seeds.md"
    code = cli.main(["sweep", "-S", "train.lr=0.01,1e-3", "--seeds", "2", "--prefix", "lr", "--out", str(out),
                     "--stage", "evaluate"])
    assert code == command.EXIT_OK  # the fake fails names ending in -2: none here
    assert fake_dvc.queued == ["lr-1-s0", "lr-1-s1", "lr-2-s0", "lr-2-s1"]
    assert fake_dvc.dvc_calls("dvc", "exp", "run")[1][-3:] == ["-S", "train.seed=1", "evaluate"]
    summary = list(csv.DictReader(out.with_suffix(".csv").read_text().splitlines()))
    assert [row["point"] for row in summary] == ["lr-2", "lr-1"]  # the fake's accuracy grows with the queue order
    assert summary[0]["n"] == "2" and float(summary[0]["test.accuracy.mean"]) == pytest.approx(0.75)  # 0.7, 0.8
    assert float(summary[0]["test.accuracy.low"]) < 0.75 < float(summary[0]["test.accuracy.high"])
    runs = list(csv.DictReader(command.table.runs_csv_path(out).read_text().splitlines()))
    assert len(runs) == 4 and capsys.readouterr().out == out.read_text()


def test_an_unknown_stage_stops_the_sweep_before_any_dvc_call(
    fake_dvc: FakeDvc, params_file: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(params_file.parent)
    (params_file.parent / runner.PIPELINE_FILE).write_text("stages:\n  train: {cmd: 'true'}\n")
    assert cli.main(["sweep", "-S", "train.lr=0.01", "--stage", "evaluat"]) == command.EXIT_ERROR
    assert fake_dvc.calls == [] and "--stage 'evaluat': not a stage of dvc.yaml; choose one of train" in caplog.text


def test_names_in_use_stop_the_sweep_before_queueing(fake_dvc: FakeDvc, params_file: Path) -> None:
    fake_dvc.existing = ["sweep-2"]
    points = grid.plan_points(params_file, ["train.lr=0.1,0.2"])
    with pytest.raises(SweepError, match="names already used on this commit: sweep-2; pass another --prefix"):
        runner.run_points(params_file.parent, points, jobs=1)
    assert fake_dvc.queued == []


def test_timeout_reports_unfinished_points_as_not_succeeded(
    fake_dvc: FakeDvc, params_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dvc.show = lambda: exp_show(*(exp_group(name, "running", {}) for name in fake_dvc.queued))  # never ends
    monkeypatch.setattr(runner, "POLL_SECONDS", 0.01)
    outcome = runner.run_points(params_file.parent, grid.plan_points(params_file, ["train.lr=0.1"]), 1, timeout=0.05)
    assert outcome.states["sweep-1"].status == "running" and "not finished" in outcome.notes["sweep-1"]


def test_a_hung_poll_is_killed_retried_and_the_sweep_finishes(
    fake_dvc: FakeDvc, params_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    polls_seen = 0

    def hang_first_poll(argv: Sequence[str], cwd: Path, *, timeout: float, **kwargs: Any) -> Result:
        nonlocal polls_seen
        if list(argv[:3]) == ["dvc", "exp", "show"] and fake_dvc.queued:
            polls_seen += 1
            if polls_seen == 1:  # what processes.run raises for a call it killed
                fake_dvc.calls.append(list(argv))
                fake_dvc.timeouts.append(timeout)
                raise CommandError(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s; killed it", argv)
        return fake_dvc(argv, cwd, timeout=timeout, **kwargs)

    monkeypatch.setattr(processes, "run", hang_first_poll)
    outcome = runner.run_points(params_file.parent, grid.plan_points(params_file, ["strategy=scratch"]), 1)
    assert outcome.states["sweep-1"].status == SUCCESS and outcome.notes == {}
    assert polls_seen >= 2  # the hung poll, then the ones that saw the experiment finish
    shows = [(call, t) for call, t in zip(fake_dvc.calls, fake_dvc.timeouts, strict=True)
             if call[:3] == ["dvc", "exp", "show"]]
    assert len(shows) > 1 and {t for _, t in shows[1:]} == {runner.POLL_CALL_SECONDS}  # every poll is bounded
    assert all("--no-fetch" in call for call, _ in shows)  # no git fetch from running experiments' workspaces


def test_polls_that_keep_failing_stop_the_sweep(
    fake_dvc: FakeDvc, params_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_poll(argv: Sequence[str], cwd: Path, *, timeout: float, **kwargs: Any) -> Result:
        if list(argv[:3]) == ["dvc", "exp", "show"] and fake_dvc.queued:
            raise CommandError("`dvc exp show` failed (exit 1): lock held", argv, 1)
        return fake_dvc(argv, cwd, timeout=timeout, **kwargs)

    monkeypatch.setattr(processes, "run", broken_poll)
    with pytest.raises(CommandError, match="lock held"):
        runner.run_points(params_file.parent, grid.plan_points(params_file, ["strategy=scratch"]), 1)
