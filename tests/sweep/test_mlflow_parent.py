"""signflow.sweep.mlflow_parent: a sweep's parent run, its experiments' runs found by their tags and nested.

Against a real MLflow store (sqlite in tmp_path), with runs tagged as the stages
tag them; an unreachable server is a warning, never an error.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from signflow.provenance import TAG_BASELINE, TAG_EXPERIMENT
from signflow.sweep import mlflow_parent
from signflow.sweep.mlflow_parent import ARTIFACT_DIR, TAG_PARENT, TAG_SWEEP
from signflow.tracking import EXPERIMENT

from http_server import free_port


def stage_run(client: MlflowClient, experiment_id: str, name: str, baseline: str) -> str:
    """A run as the train stage opens it for DVC experiment ``name`` on ``baseline``."""
    run = client.create_run(experiment_id, run_name=name, tags={TAG_EXPERIMENT: name, TAG_BASELINE: baseline})
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def test_the_sweep_is_a_parent_run_over_its_experiments_runs(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(EXPERIMENT)
    stage_run(client, experiment_id, "sweep-1-s0", "old")  # the same name on an earlier commit: not this sweep's
    time.sleep(0.01)  # distinct start times: the newest run of a name is the one linked
    first = stage_run(client, experiment_id, "sweep-1-s0", "base")
    rerun = stage_run(client, experiment_id, "sweep-1-s1", "base")
    unrelated = stage_run(client, experiment_id, "workspace", "base")
    table = tmp_path / "sweep.md"
    table.write_text("| point |\n")

    linked = mlflow_parent.link_sweep(uri, "lr-sweep", "base", ["sweep-1-s0", "sweep-1-s1", "sweep-2-s0"],
                                      [table], {"sweep-1/test.accuracy.mean": 0.8})
    assert linked.children == {"sweep-1-s0": first, "sweep-1-s1": rerun} and linked.missing == ["sweep-2-s0"]
    parent = client.get_run(linked.parent_id)
    assert parent.info.run_name == "lr-sweep" and parent.info.status == "FINISHED"
    assert parent.data.tags[TAG_SWEEP] == "lr-sweep" and TAG_EXPERIMENT not in parent.data.tags
    assert parent.data.metrics == {"sweep-1/test.accuracy.mean": 0.8}
    assert [a.path for a in client.list_artifacts(linked.parent_id, ARTIFACT_DIR)] == [f"{ARTIFACT_DIR}/sweep.md"]
    children = client.search_runs([experiment_id], filter_string=f"tags.{TAG_PARENT} = '{linked.parent_id}'")
    assert sorted(run.info.run_id for run in children) == sorted([first, rerun])
    assert all(run.data.tags[TAG_SWEEP] == "lr-sweep" for run in children)
    assert TAG_PARENT not in client.get_run(unrelated).data.tags


def test_an_unreachable_store_is_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with caplog.at_level(logging.WARNING):
        assert mlflow_parent.record_sweep(uri, "lr-sweep", "base", ["sweep-1"]) is None
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "could not record sweep lr-sweep" in record.getMessage() and "the table is written" in record.getMessage()
