"""`signflow sweep`: grid parsing, checks before queueing, the results table, and one real sweep under DVC.

The pure parts run on plain data (a parsed `dvc exp show --json` structure
shaped like DVC 3's); the orchestration runs against a fake `dvc`; the slow
test queues a two-point grid in a throw-away copy of the project (tiny pipeline,
as in ``tests/pipeline/test_train_stage.py``) and checks DVC, MLflow and the table agree.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient

from signflow.commands import sweep
from signflow.commands.sweep import (
    FAILED,
    QUEUED,
    SKIPPED,
    SUCCESS,
    Point,
    SweepError,
)

from project_copy import Project
from tiny_project import tiny_copy

EXAMPLE_GRID = Path(__file__).with_name("sweep_grid_example.yaml")
IMAGE_SIZE = 32
SWEEP_TIMEOUT = 1200  # s the e2e sweep may wait for its experiments (about 3 min on 2 idle cores)
PROCESS_TIMEOUT = SWEEP_TIMEOUT + 300
EVALUATE, TRAIN, TRAIN_TIMINGS = "metrics/evaluate.json", "metrics/train.json", "metrics/timings/train.json"
FAILED_LOG = """\
Running stage 'train':
> python stages/train.py
Traceback (most recent call last):
  File "/tmp/x/src/signflow/model/backbones.py", line 196, in _build_torchvision
signflow.model.backbones.WeightsUnavailableError: ImageNet weights for backbone 'resnet18' are not available offline
  Put the file at: /root/.cache/torch/hub/checkpoints/resnet18-f37072fd.pth
ERROR: failed to reproduce 'train': failed to run: python stages/train.py, exited with 1
ERROR: failed to reproduce 'train': failed to run: python stages/train.py, exited with 1
"""


@pytest.fixture
def params(repo_root: Path) -> dict[str, Any]:
    """The real params.yaml, on simple_cnn from scratch (the baseline the skip rules are checked against)."""
    loaded = yaml.safe_load((repo_root / "params.yaml").read_text())
    loaded["strategy"] = "scratch"
    loaded["model"].update(backbone="simple_cnn", weights="none")
    return loaded


# ------------------------------------------------------------------ grid parsing


def test_comma_syntax_keeps_types() -> None:
    grid = sweep.parse_assignments([
        "strategy=linear,full", "unknown.enabled=true,false", "train.epochs=1,2",
        "train.lr=0.01,1e-3", "data.folder.path='a,b',plain", "unknown.heldout=[15,32],[]",
    ])
    assert grid == {
        "strategy": ["linear", "full"], "unknown.enabled": [True, False], "train.epochs": [1, 2],
        "train.lr": [0.01, 0.001], "data.folder.path": ["a,b", "plain"], "unknown.heldout": [[15, 32], []],
    }
    assert [type(v) for v in grid["unknown.enabled"] + grid["train.epochs"] + grid["train.lr"]] == [
        bool, bool, int, int, float, float]
    assert list(grid) == ["strategy", "unknown.enabled", "train.epochs", "train.lr", "data.folder.path",
                          "unknown.heldout"]


@pytest.mark.parametrize("text", ["0.001", "1e-05", "3", "-3", "01", "true", "False", "null", "yes", "linear",
                                  "'a,b'", "'true'", "[1,x,true]", "[]", "a b", "inf", "1."])
def test_values_parse_as_dvc_parses_them(text: str) -> None:
    """DVC reads `-S key=value` with Hydra's override grammar; ours must agree on every scalar kind."""
    parser = pytest.importorskip("hydra.core.override_parser.overrides_parser").OverridesParser.create()
    expected = parser.parse_overrides([f"key={text}"])[0].value()
    ours = sweep.parse_value(text)
    assert ours == expected and type(ours) is type(expected)


@pytest.mark.parametrize("value", [0.001, 1e-05, 3, -3, True, False, None, "linear", "a,b", "true", "01", "it's",
                                   "a\\b", "end\\", "", "a b", "1e-3", "x=y", [1, "x", True], {12: "stop", "b": 1}])
def test_values_are_spelled_so_dvc_reads_them_back(value: Any) -> None:
    parser = pytest.importorskip("hydra.core.override_parser.overrides_parser").OverridesParser.create()
    spelled = sweep.format_value(value)
    parsed = parser.parse_overrides([f"key={spelled}"])[0]
    assert not parsed.is_sweep_override(), spelled  # a comma in a value must not turn one point into a sweep
    assert parsed.value() == value and type(parsed.value()) is type(value), spelled


def test_yaml_grid_keeps_types_and_order() -> None:
    grid = sweep.parse_grid_text(
        "train.lr: [1e-3, 0.01]\nunknown.enabled: [true, false]\ntrain.epochs: [1, 2]\nstrategy: scratch\n"
    )
    assert grid == {"train.lr": [0.001, 0.01], "unknown.enabled": [True, False], "train.epochs": [1, 2],
                    "strategy": ["scratch"]}
    assert isinstance(grid["train.lr"][0], float) and isinstance(grid["train.epochs"][0], int)
    assert isinstance(grid["unknown.enabled"][0], bool)


def test_example_grid_file_parses_and_validates(repo_root: Path) -> None:
    grid = sweep.load_grid_file(EXAMPLE_GRID)
    assert grid["train.lr"] == [0.001, 0.0003]
    real = yaml.safe_load((repo_root / "params.yaml").read_text())
    real["model"].update(backbone="efficientnet_lite0", weights="imagenet")
    points = sweep.plan_points(real, grid)
    assert len(points) == 12 and all(point.skip_reason is None for point in points)


@pytest.mark.parametrize(("text", "message"), [
    ("- 1\n- 2\n", "expected a mapping"),
    ("train: {lr: [0.1]}\n", "dotted params key"),
    ("train.lr: [0.1, 0.1]\n", "lists the value 0.1 twice"),
    ("train.lr: []\n", "has no values"),
    ("train.lr: [0.1\n", "not valid YAML"),
])
def test_bad_grid_files_fail_with_one_line(text: str, message: str) -> None:
    with pytest.raises(SweepError, match=message) as err:
        sweep.parse_grid_text(text)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("args", "message"), [
    (["strategy"], "expected a dotted params key=value"),
    (["strategy="], "empty value"),
    (["strategy=linear,,full"], "empty value"),
    (["strategy='linear"], "unbalanced"),
    (["train.lr=range(1,3)"], "not supported"),
    (["unknown.enabled=true,True"], "twice"),
])
def test_bad_assignments_fail(args: list[str], message: str) -> None:
    with pytest.raises(SweepError, match=message):
        sweep.parse_assignments(args)


def test_a_key_given_twice_is_an_error() -> None:
    with pytest.raises(SweepError, match="strategy is given twice"):
        sweep.parse_assignments(["strategy=linear", "strategy=full"])
    with pytest.raises(SweepError, match="train.lr is given both with -S and in --grid"):
        sweep.merge_grids(sweep.parse_assignments(["train.lr=0.1"]), sweep.parse_grid_text("train.lr: [0.2]"))


def test_product_order_is_stable_and_names_are_ref_safe() -> None:
    points = sweep.expand({"strategy": ["linear", "full"], "unknown.enabled": [True, False]}, prefix="lr_grid")
    assert [(p.name, p.overrides) for p in points] == [
        ("lr_grid-1", {"strategy": "linear", "unknown.enabled": True}),
        ("lr_grid-2", {"strategy": "linear", "unknown.enabled": False}),
        ("lr_grid-3", {"strategy": "full", "unknown.enabled": True}),
        ("lr_grid-4", {"strategy": "full", "unknown.enabled": False}),
    ]
    assert points[1].set_args() == ["-S", "strategy=linear", "-S", "unknown.enabled=false"]
    for prefix in ("", "-x", "a/b", "a b", "a..b", "x" * 41):
        with pytest.raises(SweepError, match="--prefix"):
            sweep.expand({"strategy": ["full"]}, prefix=prefix)
    with pytest.raises(SweepError, match="empty grid"):
        sweep.expand({})


# ------------------------------------------------------------------ checks before queueing


def test_linear_on_simple_cnn_is_skipped_with_the_reason(params: dict[str, Any]) -> None:
    points = sweep.plan_points(params, {"strategy": ["linear", "scratch"]})
    linear, scratch = points
    assert linear.skip_reason and "simple_cnn" in linear.skip_reason and "scratch" in linear.skip_reason
    assert scratch.skip_reason is None
    rows = sweep.build_rows(points, {})
    assert rows[0]["status"] == SKIPPED and rows[0]["note"] == linear.skip_reason


def test_pretrained_strategy_with_weights_none_is_skipped(params: dict[str, Any]) -> None:
    params["model"].update(backbone="efficientnet_lite0", weights="none")
    linear, full, scratch = sweep.plan_points(params, {"strategy": ["linear", "full", "scratch"]})
    assert "frozen random backbone" in linear.skip_reason
    assert "model.weights=none" in full.skip_reason and scratch.skip_reason is None


def test_all_points_skipped_is_an_error(params: dict[str, Any]) -> None:
    with pytest.raises(SweepError, match="all 2 points are skipped"):
        sweep.plan_points(params, {"strategy": ["linear", "full"]})


@pytest.mark.parametrize(("grid", "message"), [
    ({"strategy": ["scratch", "foo"]}, r"sweep-2 \(strategy=foo\): params.yaml: strategy='foo' is invalid"),
    ({"train.lrr": [0.1]}, "params.yaml has no key 'train.lrr'"),
    ({"train.epochs": [1, 0]}, "sweep-2 .*train.epochs=0 is invalid"),
    ({"train": [1]}, "sweep-1 .*train=1 is invalid"),
])
def test_invalid_points_fail_before_anything_is_queued(
    tmp_path: Path, params: dict[str, Any], monkeypatch: pytest.MonkeyPatch, grid: dict, message: str
) -> None:
    calls: list[Sequence[str]] = []
    monkeypatch.setattr(sweep, "run_tool", lambda argv, repo, timeout=None: calls.append(argv) or "")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SweepError, match=message):
        sweep.run_sweep(tmp_path, grid)
    assert calls == []


def test_invalid_value_exits_2_from_the_command(
    tmp_path: Path, params: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[Sequence[str]] = []
    monkeypatch.setattr(sweep, "run_tool", lambda argv, repo, timeout=None: calls.append(argv) or "")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TQDM_MININTERVAL", "10")  # setup_logging sets it off a terminal
    assert sweep.main(["-S", "strategy=scratch,foo"]) == sweep.EXIT_ERROR
    assert calls == [] and "strategy='foo' is invalid" in caplog.text
    assert sweep.main(["-S", "strategy=scratch", "--sort-by", "nope"]) == sweep.EXIT_ERROR
    assert calls == [] and "--sort-by 'nope'" in caplog.text


# ------------------------------------------------------------------ results


def _exp(name: str, state: str | None, metrics: dict[str, dict[str, Any]], error: dict | None = None) -> dict:
    """One experiment group as `dvc exp show --json` lists it under its baseline."""
    rev = {"rev": f"rev-{name}", "name": name, "error": error, "experiments": None,
           "data": {"rev": f"rev-{name}", "params": {"params.yaml": {"data": {"strategy": "full"}}},
                    "metrics": {path: {"data": data} for path, data in metrics.items()}}}
    executor = None if state is None else {"state": state, "name": "dvc-task", "local": {"returncode": 0}}
    return {"revs": [rev], "executor": executor, "name": name}


def _show(*experiments: dict, baseline: str = "base") -> list[dict]:
    return [{"rev": "workspace", "name": None, "data": {}, "error": None, "experiments": None},
            {"rev": baseline, "name": "main", "data": {}, "error": None, "experiments": list(experiments)}]


def _metrics(accuracy: float, seconds: float = 1.0) -> dict[str, dict[str, Any]]:
    return {EVALUATE: {"test.accuracy": accuracy, "test.macro_f1": accuracy / 2, "openset.auroc": 0.9},
            TRAIN: {"best_val_accuracy": 0.5}, TRAIN_TIMINGS: {"train_seconds": seconds}}


def test_table_from_exp_show_keeps_failed_and_skipped_points() -> None:
    baseline = _metrics(0.25)  # a failed experiment's commit still holds the baseline's metrics files
    show = _show(_exp("sweep-1", SUCCESS, _metrics(0.9, 3.5)), _exp("sweep-3", FAILED, baseline, {"msg": "failed"}),
                 _exp("sweep-4", None, _metrics(0.7)), _exp("other", QUEUED, {}))
    states = sweep.experiment_states(show, "base")
    assert states["sweep-1"].status == SUCCESS and states["sweep-4"].status == SUCCESS
    assert states["sweep-3"].status == FAILED and states["other"].status == QUEUED
    assert states["sweep-1"].params == {"strategy": "full"}
    points = [Point(1, "sweep-1", {"train.lr": 0.01}), Point(2, "sweep-2", {"train.lr": 0.1}, "makes no sense"),
              Point(3, "sweep-3", {"train.lr": 1.0}), Point(4, "sweep-4", {"train.lr": 1e-4})]
    rows = sweep.build_rows(points, states, {"sweep-3": sweep.log_tail(FAILED_LOG)})
    assert [row["experiment"] for row in rows] == ["sweep-1", "sweep-2", "sweep-3", "sweep-4"]
    assert rows[0] == {"experiment": "sweep-1", "train.lr": 0.01, "test.accuracy": 0.9, "test.macro_f1": 0.45,
                       "openset.auroc": 0.9, "train_seconds": 3.5, "status": SUCCESS, "note": ""}
    failed = rows[2]
    assert failed["status"] == FAILED and failed["test.accuracy"] is None
    assert failed["note"].startswith("signflow.model.backbones.WeightsUnavailableError: ImageNet weights")
    assert failed["note"].endswith("exited with 1") and failed["note"].count("ERROR:") == 1
    assert rows[1]["status"] == SKIPPED and rows[1]["note"] == "makes no sense"

    columns = sweep.columns_for(["train.lr"])
    markdown = sweep.markdown_table(sweep.sort_rows(rows, "test.accuracy"), columns)
    lines = markdown.splitlines()
    assert lines[0] == ("| experiment | train.lr | test.accuracy | test.macro_f1 | openset.auroc | train_seconds "
                        "| status | note |")
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| sweep-1", "| sweep-4", "| sweep-2", "| sweep-3"]
    assert "| 0.9000 |" in lines[2] and "WeightsUnavailableError" in lines[5] and len(lines) == 6
    table = list(csv.DictReader(sweep.csv_text(rows, columns).splitlines()))
    assert [row["status"] for row in table] == [SUCCESS, SKIPPED, FAILED, SUCCESS]
    assert table[0]["test.accuracy"] == "0.9" and table[2]["test.accuracy"] == ""


def test_experiments_of_another_baseline_are_ignored_and_a_missing_baseline_is_an_error() -> None:
    show = _show(_exp("sweep-1", SUCCESS, _metrics(0.9)), baseline="old")
    assert sweep.experiment_states(show + _show(baseline="new")[1:], "new") == {}
    with pytest.raises(SweepError, match="baseline commit"):
        sweep.experiment_states(show, "new")


def test_sorting_puts_missing_values_last() -> None:
    rows = [{"experiment": name, "test.accuracy": acc, "train_seconds": sec}
            for name, acc, sec in [("a", 0.5, 3.0), ("b", None, None), ("c", 0.9, 1.0), ("d", 0.7, None)]]
    assert [r["experiment"] for r in sweep.sort_rows(rows, "test.accuracy")] == ["c", "d", "a", "b"]
    assert [r["experiment"] for r in sweep.sort_rows(rows, "test.accuracy", descending=False)] == ["a", "d", "c", "b"]
    assert [r["experiment"] for r in sweep.sort_rows(rows, "train_seconds", descending=False)] == ["c", "a", "b", "d"]
    mixed = [{"experiment": "x", "v": "linear"}, {"experiment": "y", "v": 2}, {"experiment": "z", "v": None}]
    assert [r["experiment"] for r in sweep.sort_rows(mixed, "v", descending=False)] == ["y", "x", "z"]
    with pytest.raises(SweepError, match="--sort-by 'nope'"):
        sweep.sort_rows(rows, "nope")


def test_markdown_cells_stay_on_one_line() -> None:
    rows = [{"experiment": "e", "k": "a|b", "status": FAILED, "note": "line one\nline | two"}]
    body = sweep.markdown_table(rows, ["experiment", "k", "status", "note"]).splitlines()[2]
    assert body == "| e | 'a\\|b' | failed | line one line \\| two |"


# ------------------------------------------------------------------ orchestration against a fake dvc


class FakeDvc:
    """Answers the commands run_sweep sends: git HEAD, queueing, start, exp show (sweep-2 fails), queue logs."""

    def __init__(self, existing: Sequence[str] = ()) -> None:
        self.calls: list[list[str]] = []
        self.timeouts: list[float | None] = []
        self.queued: list[str] = []
        self.shows = 0
        self.existing = list(existing)

    def __call__(self, argv: Sequence[str], repo: Path, timeout: float | None = None) -> str:
        argv = list(argv)
        self.calls.append(argv)
        self.timeouts.append(timeout)
        if argv[:2] == ["git", "rev-parse"]:
            return "base\n"
        if argv[:3] == ["dvc", "exp", "run"]:
            self.queued.append(argv[argv.index("-n") + 1])
        elif argv[:3] == ["dvc", "exp", "show"]:
            self.shows += 1
            return json.dumps(self.show())
        elif argv[:3] == ["dvc", "queue", "logs"]:
            return FAILED_LOG
        return ""

    def show(self) -> list[dict]:
        finished = self.shows > 2  # first the name check, then one poll with everything still queued
        groups = [_exp(name, SUCCESS, {}) for name in self.existing]
        for index, name in enumerate(self.queued):
            state = (FAILED if name.endswith("-2") else SUCCESS) if finished else QUEUED
            groups.append(_exp(name, state, _metrics(0.5 + index / 10)))
        return _show(*groups)


def test_run_sweep_queues_waits_and_tables(
    tmp_path: Path, params: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeDvc()
    monkeypatch.setattr(sweep, "run_tool", fake)
    monkeypatch.setattr(sweep, "POLL_SECONDS", 0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TQDM_MININTERVAL", "10")  # setup_logging sets it off a terminal
    out = tmp_path / "out" / "grid.md"
    code = sweep.main(["-S", "strategy=scratch,linear", "-S", "train.lr=0.01,1e-3", "--jobs", "2", "--out", str(out)])
    assert code == sweep.EXIT_FAILED  # sweep-2 failed

    queue_calls = [call for call in fake.calls if call[:3] == ["dvc", "exp", "run"]]
    assert queue_calls == [
        ["dvc", "exp", "run", "--queue", "-n", "sweep-1", "-S", "strategy=scratch", "-S", "train.lr=0.01"],
        ["dvc", "exp", "run", "--queue", "-n", "sweep-2", "-S", "strategy=scratch", "-S", "train.lr=0.001"],
    ]  # sweep-3 and sweep-4 (linear on simple_cnn) skipped
    assert ["dvc", "queue", "start", "-j", "2"] in fake.calls
    assert fake.calls.index(["dvc", "queue", "start", "-j", "2"]) > fake.calls.index(queue_calls[-1])
    assert ["dvc", "queue", "logs", "sweep-2"] in fake.calls and ["dvc", "queue", "logs", "sweep-1"] not in fake.calls

    printed = capsys.readouterr().out
    assert printed == out.read_text()
    table = list(csv.DictReader(out.with_suffix(".csv").read_text().splitlines()))
    assert [(r["experiment"], r["status"]) for r in table] == [
        ("sweep-1", SUCCESS), ("sweep-2", FAILED), ("sweep-3", SKIPPED), ("sweep-4", SKIPPED)]
    assert "WeightsUnavailableError" in table[1]["note"] and "simple_cnn" in table[2]["note"]
    assert list(table[0])[:3] == ["experiment", "strategy", "train.lr"]


def test_names_in_use_stop_the_sweep_before_queueing(
    tmp_path: Path, params: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeDvc(existing=["sweep-2"])
    monkeypatch.setattr(sweep, "run_tool", fake)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SweepError, match="names already used on this commit: sweep-2; pass another --prefix"):
        sweep.run_sweep(tmp_path, {"train.lr": [0.1, 0.2]})
    assert fake.queued == []


def test_timeout_reports_unfinished_points_as_not_succeeded(
    tmp_path: Path, params: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeDvc()
    fake.show = lambda: _show(*(_exp(name, "running", {}) for name in fake.queued))  # never finishes
    monkeypatch.setattr(sweep, "run_tool", fake)
    monkeypatch.setattr(sweep, "POLL_SECONDS", 0.01)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = sweep.run_sweep(tmp_path, {"train.lr": [0.1]}, timeout=0.05)
    assert not result.all_succeeded
    assert result.rows[0]["status"] == "running" and "not finished" in result.rows[0]["note"]


def test_a_command_that_outlives_its_timeout_is_killed_and_named(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    hang = f"import os, pathlib, time; pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid())); time.sleep(600)"
    with pytest.raises(SweepError, match=r"did not finish within 2 s; killed it"):
        sweep.run_tool([sys.executable, "-c", hang], tmp_path, timeout=2)
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left running
        os.kill(pid, 0)


def test_a_hung_poll_is_killed_retried_and_the_sweep_finishes(
    tmp_path: Path, params: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeDvc()
    polls_seen = 0

    def hang_first_poll(argv: Sequence[str], repo: Path, timeout: float | None = None) -> str:
        nonlocal polls_seen
        if list(argv[:3]) == ["dvc", "exp", "show"] and fake.queued:
            polls_seen += 1
            if polls_seen == 1:
                fake.calls.append(list(argv))
                fake.timeouts.append(timeout)
                raise SweepError(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s; killed it")
        return fake(argv, repo, timeout)

    monkeypatch.setattr(sweep, "run_tool", hang_first_poll)
    monkeypatch.setattr(sweep, "POLL_SECONDS", 0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = sweep.run_sweep(tmp_path, {"strategy": ["scratch"]})
    assert [row["status"] for row in result.rows] == [SUCCESS]
    assert polls_seen >= 2  # the hung poll, then the ones that saw the experiment finish
    shows = [(call, t) for call, t in zip(fake.calls, fake.timeouts, strict=True) if call[:3] == ["dvc", "exp", "show"]]
    assert len(shows) > 1 and {t for _, t in shows[1:]} == {sweep.POLL_CALL_SECONDS}  # every poll is bounded
    assert all("--no-fetch" in call for call, _ in shows)  # no git fetch from running experiments' workspaces


def test_add_arguments_defaults() -> None:
    parser = argparse.ArgumentParser()
    sweep.add_arguments(parser)
    args = parser.parse_args(["-S", "strategy=linear,full"])
    assert args.set_params == ["strategy=linear,full"] and args.grid is None and args.jobs == 1
    assert args.prefix == "sweep" and args.sort_by == "test.accuracy" and args.timeout is None
    assert not args.ascending and args.out == sweep.DEFAULT_OUT


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
    states = sweep.experiment_states(shown, head)
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
    markdown = (baseline.root / sweep.DEFAULT_OUT).read_text()
    assert markdown in proc.stdout
    header, _, *body = markdown.splitlines()
    assert header.startswith("| experiment | strategy | unknown.enabled | test.accuracy |")
    assert len(body) == len(expected)
    table = list(csv.DictReader((baseline.root / sweep.DEFAULT_OUT.with_suffix(".csv")).read_text().splitlines()))
    assert {row["experiment"]: (row["strategy"], row["unknown.enabled"]) for row in table} == {
        name: (strategy, str(unknown).lower()) for name, (strategy, unknown) in expected.items()}
    assert all(row["status"] == SUCCESS and 0 <= float(row["test.accuracy"]) <= 1 for row in table)
    accuracies = [float(row["test.accuracy"]) for row in table]
    assert accuracies == sorted(accuracies, reverse=True)
    # The table lives outside the report stage's output: the pipeline stays up to date.
    assert baseline.status() == {}
