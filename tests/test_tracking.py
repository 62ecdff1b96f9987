"""MLflow tracking: runs land in the store, reopen by id, and a dead server never costs the run.

Each test gets its own sqlite store in ``tmp_path``, copied from one store
created per module (creating MLflow's tables takes seconds), and reads it back
with ``MlflowClient``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from signflow import tracking
from signflow.catalog import flatten
from signflow.commands.log_run import run_files
from signflow.config import load_config
from signflow.tracking import (
    EXPERIMENT,
    FAST_FAIL_ENV,
    STORE_FILE,
    relog_outputs,
    resolve_tracking_uri,
    run_name_for,
    tracked_run,
)

from http_server import free_port

URI_ENV = "MLFLOW_TRACKING_URI"


@pytest.fixture(scope="module")
def template_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An initialised (migrated) empty store, created once and copied by each test."""
    folder = tmp_path_factory.mktemp("mlflow-template")
    path = folder / STORE_FILE
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)  # any default artifact root resolves here, not in the repo
        MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    yield path


@pytest.fixture(autouse=True)
def isolated_mlflow(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Run in tmp_path (artifacts go to ./mlruns) and undo MLflow's process-wide state afterwards.

    ``mlflow.set_tracking_uri`` also exports MLFLOW_TRACKING_URI, which would leak
    into later tests and into subprocesses they start.
    """
    monkeypatch.chdir(tmp_path)
    for key in ("DVC_EXP_NAME", "DVC_ROOT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in FAST_FAIL_ENV.items():
        monkeypatch.setenv(key, value)  # Tracker sets these for good; monkeypatch restores them
    saved = os.environ.get(URI_ENV)
    yield
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    os.environ.pop(URI_ENV, None)
    if saved is not None:
        os.environ[URI_ENV] = saved


@pytest.fixture
def store_uri(template_store: Path, tmp_path: Path) -> str:
    path = tmp_path / STORE_FILE
    shutil.copy2(template_store, path)
    return f"sqlite:///{path}"




def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


# ---- a real run in a sqlite store -------------------------------------------------------------


def test_tracked_run_records_and_reopens(store_uri: str, tmp_path: Path) -> None:
    run_file = tmp_path / "models" / "run.json"
    artifact = tmp_path / "history.csv"
    artifact.write_text("epoch,val_loss\n0,1.5\n1,1.2\n")
    losses = [1.5, 1.2]

    with tracked_run(run_file, "lite0-linear", {"strategy": "linear"}, reuse=False, uri=store_uri) as tracker:
        tracker.log_params({"train.lr": 0.001, "strategy": "linear"})
        for epoch, loss in enumerate(losses):
            tracker.log_metrics({"val_loss": loss, "flag": True, "note": "text"}, step=epoch)
        tracker.log_artifact(artifact)
        tracker.log_artifact(tmp_path / "missing.csv")  # absent outputs are skipped, not an error

    saved = json.loads(run_file.read_text())
    assert saved["run_id"] == tracker.run_id and saved["tracking_uri"] == store_uri
    client = MlflowClient(tracking_uri=store_uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "lite0-linear"
    assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT
    assert run.data.params == {"train.lr": "0.001", "strategy": "linear"}
    assert run.data.tags["strategy"] == "linear"
    assert _history(client, tracker.run_id, "val_loss") == list(enumerate(losses))
    assert set(run.data.metrics) == {"val_loss"}  # booleans and strings are not metrics
    assert [a.path for a in client.list_artifacts(tracker.run_id)] == ["history.csv"]

    # evaluate/report reopen the same run from the run file and add to it
    with tracked_run(run_file, "ignored", {}, reuse=True, uri=store_uri) as reopened:
        reopened.log_metrics({"test_accuracy": 0.75, "recall@1": 0.5})
    assert reopened.run_id == tracker.run_id
    assert json.loads(run_file.read_text()) == saved  # reuse never rewrites the run file
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "lite0-linear"
    assert run.data.metrics["test_accuracy"] == 0.75
    assert run.data.metrics["recall_at_1"] == 0.5  # "@" is not allowed in MLflow keys
    assert _history(client, tracker.run_id, "val_loss") == list(enumerate(losses))
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_failing_body_marks_the_run_killed_and_reraises(store_uri: str, tmp_path: Path) -> None:
    with pytest.raises(ZeroDivisionError):
        with tracked_run(tmp_path / "run.json", "boom", {}, reuse=False, uri=store_uri) as tracker:
            tracker.log_metrics({"train_loss": 1.0}, step=0)
            raise ZeroDivisionError("boom")
    run = MlflowClient(tracking_uri=store_uri).get_run(tracker.run_id)
    assert run.info.status == "KILLED"
    assert run.data.metrics == {"train_loss": 1.0}
    assert mlflow.active_run() is None


# ---- where runs go and what they are called -------------------------------------------------


def test_resolve_tracking_uri_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "main-repo", tmp_path / "exp-copy"
    root.mkdir()
    elsewhere.mkdir()
    monkeypatch.delenv(URI_ENV, raising=False)

    monkeypatch.chdir(elsewhere)
    assert resolve_tracking_uri() == f"sqlite:///{elsewhere.resolve() / STORE_FILE}"
    assert resolve_tracking_uri(root) == f"sqlite:///{root.resolve() / STORE_FILE}"

    monkeypatch.setenv("DVC_ROOT", str(root))  # queued experiments run in a temp copy
    assert resolve_tracking_uri() == f"sqlite:///{root.resolve() / STORE_FILE}"
    assert resolve_tracking_uri(elsewhere) == f"sqlite:///{root.resolve() / STORE_FILE}"

    monkeypatch.setenv(URI_ENV, "http://tracking.example:5000")
    assert resolve_tracking_uri(elsewhere) == "http://tracking.example:5000"


def test_run_name_for_prefers_the_dvc_experiment_name(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_name_for("resnet18", "full") == "resnet18-full"
    monkeypatch.setenv("DVC_EXP_NAME", "zesty-lynx")
    assert run_name_for("resnet18", "full") == "zesty-lynx"
    monkeypatch.setenv("DVC_EXP_NAME", "")
    assert run_name_for("resnet18", "full") == "resnet18-full"


# ---- a dead tracking server -----------------------------------------------------------------


def test_unreachable_server_warns_once_and_the_work_completes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    for name in ("log_params", "log_metrics", "log_artifact", "log_artifacts"):
        monkeypatch.setattr(mlflow, name, lambda *a, _name=name, **k: calls.append(_name))
    uri = f"http://127.0.0.1:{free_port()}"
    output = tmp_path / "metrics.json"
    caplog.set_level(logging.WARNING, logger=tracking.__name__)

    with tracked_run(tmp_path / "run.json", "offline", {}, reuse=False, uri=uri) as tracker:
        tracker.log_params({"lr": 0.1})
        for epoch in range(3):
            tracker.log_metrics({"loss": 1.0 / (epoch + 1)}, step=epoch)
        output.write_text("{}")
        tracker.log_artifact(output)

    assert output.exists()  # the body ran to the end
    assert not tracker.enabled and tracker.run_id is None
    assert calls == []  # no MLflow call after the first failure
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == tracking.__name__]
    assert len(warnings) == 1
    assert "signflow log-run" in warnings[0].getMessage() and uri in warnings[0].getMessage()
    assert mlflow.active_run() is None


# ---- `signflow log-run` ---------------------------------------------------------------------


def _fake_project(root: Path) -> dict:
    params = {"strategy": "linear", "model": {"backbone": "simple_cnn", "dropout": 0.2},
              "train": {"lr": 0.01, "epochs": 2}}
    (root / "metrics").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "metrics" / "train.json").write_text(json.dumps({"best_val_accuracy": 0.8, "stopped_early": False}))
    (root / "metrics" / "train_history.csv").write_text(
        "epoch,train_loss,val_accuracy\n0,1.25,0.6\n1,0.75,0.8\n"
    )
    evaluation = {"test_accuracy": 0.7, "top@1": 0.7, "per_class": {"a": 1}}
    (root / "metrics" / "evaluate.json").write_text(json.dumps(evaluation))
    (root / "models" / "best.pt").write_bytes(b"not really a checkpoint")
    return params


def test_relog_outputs_creates_a_run_from_the_files(store_uri: str, tmp_path: Path) -> None:
    root = tmp_path / "project"
    _fake_project(root)

    run_id = relog_outputs(run_files(root), store_uri)

    assert run_id is not None
    client = MlflowClient(tracking_uri=store_uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "simple_cnn-linear" and run.data.tags["relogged"] == "true"
    assert run.info.status == "FINISHED"
    # The resolved config, as the train stage logs it (defaults filled in).
    expected = {k: str(v) for k, v in flatten(load_config(root / "params.yaml").to_dict()).items()}
    assert run.data.params == expected
    assert run.data.params["model.backbone"] == "simple_cnn" and run.data.params["train.lr"] == "0.01"
    assert _history(client, run_id, "val_accuracy") == [(0, 0.6), (1, 0.8)]
    assert _history(client, run_id, "train_loss") == [(0, 1.25), (1, 0.75)]
    assert run.data.metrics["best_val_accuracy"] == 0.8
    assert run.data.metrics["test_accuracy"] == 0.7 and run.data.metrics["top_at_1"] == 0.7
    assert "stopped_early" not in run.data.metrics and "per_class" not in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert artifacts == {"train_history.csv", "model"}
    assert [a.path for a in client.list_artifacts(run_id, "model")] == ["model/best.pt"]
    assert json.loads((root / "models" / "run.json").read_text())["run_id"] == run_id


def test_relog_completes_the_recorded_run_without_duplicates(store_uri: str, tmp_path: Path) -> None:
    """A run cut off after epoch 0 (its server died) gets the missing epochs and summaries, once."""
    root = tmp_path / "project"
    _fake_project(root)
    files = run_files(root)
    # What the train stage left: a RUNNING run with epoch 0, then the server went away.
    client = MlflowClient(tracking_uri=store_uri)
    run_id = client.create_run(client.create_experiment(EXPERIMENT), run_name="simple_cnn-linear").info.run_id
    client.log_param(run_id, "strategy", "linear")
    client.log_metric(run_id, "train_loss", 1.25, step=0)
    client.log_metric(run_id, "val_accuracy", 0.6, step=0)
    files.run_file.write_text(json.dumps({"run_id": run_id}))
    assert client.get_run(run_id).info.status == "RUNNING"

    for _ in range(2):  # a second log-run changes nothing
        assert relog_outputs(files, store_uri) == run_id
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert _history(client, run_id, "val_accuracy") == [(0, 0.6), (1, 0.8)]
        assert _history(client, run_id, "train_loss") == [(0, 1.25), (1, 0.75)]
        assert run.data.metrics["best_val_accuracy"] == 0.8
        assert run.data.params["strategy"] == "linear" and run.data.params["train.epochs"] == "2"
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_relog_starts_a_new_run_when_the_recorded_one_is_gone(store_uri: str, tmp_path: Path) -> None:
    root = tmp_path / "project"
    _fake_project(root)
    files = run_files(root)
    files.run_file.write_text(json.dumps({"run_id": "0123456789abcdef0123456789abcdef"}))
    run_id = relog_outputs(files, store_uri)
    assert run_id is not None and run_id != "0123456789abcdef0123456789abcdef"
    assert json.loads(files.run_file.read_text())["run_id"] == run_id


def test_reusing_stage_without_a_run_id_logs_nothing(store_uri: str, tmp_path: Path, caplog) -> None:
    """evaluate after a train whose server was down must not open a stray run of its own."""
    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps({"run_id": None}))
    with caplog.at_level(logging.WARNING, logger="signflow.tracking"):
        with tracked_run(run_file, "evaluate", {}, reuse=True, uri=store_uri) as tracker:
            tracker.log_metrics({"test.accuracy": 0.9})
    assert tracker.run_id is None
    assert any("signflow log-run" in r.getMessage() for r in caplog.records)
    assert MlflowClient(tracking_uri=store_uri).search_runs(
        [e.experiment_id for e in MlflowClient(tracking_uri=store_uri).search_experiments()]) == []


def test_relog_outputs_to_a_dead_server_returns_none(tmp_path: Path) -> None:
    root = tmp_path / "project"
    _fake_project(root)
    assert relog_outputs(run_files(root), f"http://127.0.0.1:{free_port()}") is None
    assert not (root / "models" / "run.json").exists()


def test_a_param_longer_than_mlflows_limit_is_cut_and_the_batch_still_logs(store_uri: str, tmp_path: Path) -> None:
    """A long ``split.exclude`` list must not fail the whole log_params batch (tracking would turn off)."""
    exclude = [{"path": f"00012/{i:05d}_00000.ppm", "reason": "a blurred frame of another sign"} for i in range(120)]
    with tracked_run(tmp_path / "run.json", "long", {}, reuse=False, uri=store_uri) as tracker:
        tracker.log_params(flatten({"split": {"exclude": exclude, "seed": 42}}))
    params = MlflowClient(tracking_uri=store_uri).get_run(tracker.run_id).data.params
    assert params["split.seed"] == "42"
    assert len(str(exclude)) > tracking.MAX_PARAM_CHARS >= len(params["split.exclude"])
    assert params["split.exclude"].startswith(str(exclude)[:100])
    assert params["split.exclude"].endswith(f"({len(str(exclude))} characters in all)")
