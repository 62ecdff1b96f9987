"""MLflow faults during the pipeline: training and evaluation finish, metrics stay in metrics/, one warning each.

Already covered elsewhere: an unreachable tracking store (tests/test_tracking.py::
test_unreachable_server_warns_once_and_the_work_completes) and a server going down mid-training,
then `signflow log-run` completing the same run (tests/test_tracking_server.py::
test_server_outage_mid_training_then_log_run_completes_the_same_run).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from signflow.tracking import EXPERIMENT

from project_copy import Project
from tiny_project import Reproduced, reproduced_copy

pytestmark = pytest.mark.slow

RELOG_HINT = "signflow log-run"
STAGES = ("train", "evaluate")


def _project(tmp_path: Path, reproduced: Reproduced) -> tuple[Project, str]:
    """A copy with its data stages done (they log nothing to MLflow), train and evaluate to run, an empty store."""
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    return reproduced_copy(reproduced, tmp_path, tracking_uri=uri, strategy="scratch", epochs=2), uri


def _warnings_per_stage(proj: Project) -> dict[str, list[str]]:
    """Each stage run on its own: its WARNING lines (the stage's stderr, which DVC passes through)."""
    found = {}
    for stage in STAGES:
        run = proj.dvc("repro", "--single-item", stage)
        found[stage] = [line for line in (run.stdout + run.stderr).splitlines() if " WARNING " in line]
    return found


def _assert_local_metrics(proj: Project) -> None:
    assert json.loads((proj.root / "metrics" / "train.json").read_text())["epochs_run"] == 2
    assert "test.accuracy" in json.loads((proj.root / "metrics" / "evaluate.json").read_text())
    assert proj.status("evaluate") == {}


def _relog(proj: Project, uri: str) -> str:
    proj.run(sys.executable, "-m", "signflow", "log-run")
    run_id = json.loads((proj.root / "models" / "run.json").read_text())["run_id"]
    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.lifecycle_stage == "active"
    assert "best_val_accuracy" in run.data.metrics and "test.accuracy" in run.data.metrics
    return run_id


def test_sqlite_store_locked_by_another_writer(tmp_path: Path, reproduced: Reproduced) -> None:
    proj, uri = _project(tmp_path, reproduced)
    MlflowClient(tracking_uri=uri).search_experiments()  # the store exists, with its tables
    holder = sqlite3.connect(uri.removeprefix("sqlite:///"), isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # another writer holds the database for the whole pipeline
        warnings = _warnings_per_stage(proj)
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    _assert_local_metrics(proj)
    for stage, lines in warnings.items():
        assert len(lines) == 1 and RELOG_HINT in lines[0], (stage, lines)
    assert "locked" in warnings["train"][0]
    _relog(proj, uri)  # the hint works once the lock is gone


def test_run_deleted_between_train_and_evaluate(tmp_path: Path, reproduced: Reproduced) -> None:
    proj, uri = _project(tmp_path, reproduced)
    proj.dvc("repro", "train")
    client = MlflowClient(tracking_uri=uri)
    deleted = json.loads((proj.root / "models" / "run.json").read_text())["run_id"]
    client.delete_run(deleted)  # as the MLflow UI's "Delete" does

    run = proj.dvc("repro", "--single-item", "evaluate")
    lines = [line for line in (run.stdout + run.stderr).splitlines() if " WARNING " in line]
    assert len(lines) == 1 and RELOG_HINT in lines[0] and deleted in lines[0], lines
    _assert_local_metrics(proj)
    assert client.get_run(deleted).info.lifecycle_stage == "deleted"  # evaluate did not bring it back

    relogged = _relog(proj, uri)
    assert relogged != deleted
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [relogged]
