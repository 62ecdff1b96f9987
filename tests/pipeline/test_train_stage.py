"""End to end: the train stage under real DVC, then a `dvc exp run` that changes only the strategy.

The tiny project (``tiny_project.shrink_params``: synthetic source, 3 tracks x 3 frames
per class, 32 px, simple_cnn, one epoch) as the one `dvc repro` per pytest run left it
(the ``reproduced`` fixture), copied: the stages import the copied sources, MLflow
logs to a copy of its sqlite store beside the copy.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from signflow.model.checkpoint import load_checkpoint
from signflow.training.stage import HISTORY_COLUMNS, TIMINGS_HISTORY_COLUMNS

from project_copy import Project
from tiny_project import IMAGE_SIZE, Reproduced, reproduced_copy

pytestmark = pytest.mark.slow

DATA_STAGES = ["download", "split", "add_unknown"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, reproduced: Reproduced) -> Project:
    return reproduced_copy(reproduced, tmp_path_factory.mktemp("pipeline-train"))


@pytest.fixture(scope="module")
def experiment(project: Project) -> Iterator[subprocess.CompletedProcess[str]]:
    project.run("git", "add", "-A")
    project.run("git", "commit", "-q", "-m", "baseline: linear")
    yield project.dvc("exp", "run", "-S", "strategy=full", "train")


def test_repro_train_writes_model_metrics_and_run(project: Project, reproduced: Reproduced) -> None:
    for stage in [*DATA_STAGES, "train"]:
        assert f"Running stage '{stage}'" in reproduced.log, reproduced.log
    root = project.root
    summary = json.loads((root / "metrics" / "train.json").read_text())
    assert summary["epochs_run"] == 1 and summary["best_epoch"] == 0
    history = pd.read_csv(root / "metrics" / "train_history.csv")
    assert list(history.columns) == HISTORY_COLUMNS and history["epoch"].tolist() == [0]
    # Timings apart: the results files hold none.
    timings = json.loads((root / "metrics" / "timings" / "train.json").read_text())
    assert set(timings) == {"train_seconds", "images_per_second"} and timings["train_seconds"] > 0
    assert not set(timings) & set(summary)
    epoch_seconds = pd.read_csv(root / "metrics" / "timings" / "train_history.csv")
    assert list(epoch_seconds.columns) == TIMINGS_HISTORY_COLUMNS and epoch_seconds["epoch"].tolist() == [0]

    best = load_checkpoint(root / "models" / "best.pt")
    assert best["strategy"] == "linear" and best["backbone"] == "simple_cnn"
    assert best["image_size"] == IMAGE_SIZE
    assert best["class_names"] == [*project.params()["data"]["classes"].values(), "unknown"]
    assert (root / "models" / "last.pt").is_file()

    run = json.loads((root / "models" / "run.json").read_text())
    client = MlflowClient(tracking_uri=project.env["MLFLOW_TRACKING_URI"])
    logged = client.get_run(run["run_id"])
    assert logged.info.status == "FINISHED"
    assert logged.data.params["strategy"] == "linear" and logged.data.params["train.epochs"] == "1"
    assert [m.step for m in client.get_metric_history(run["run_id"], "val_loss")] == [0]
    assert "model" in {a.path for a in client.list_artifacts(run["run_id"])}


def test_exp_run_retrains_without_rerunning_data_stages(
    project: Project, experiment: subprocess.CompletedProcess[str]
) -> None:
    log = experiment.stdout + experiment.stderr
    for stage in DATA_STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in log, log
        assert f"Running stage '{stage}'" not in log, log
    assert "Running stage 'train'" in log, log
    # The experiment's results are in the workspace: a model trained with the new strategy.
    assert project.params()["strategy"] == "full"
    best = load_checkpoint(project.root / "models" / "best.pt")
    assert best["strategy"] == "full"
    assert best["config"]["strategy"] == "full"


def _strategy(entry: dict[str, Any]) -> str | None:
    return entry["data"]["params"]["params.yaml"]["data"].get("strategy")


def test_exp_show_lists_the_experiment(project: Project, experiment: object) -> None:
    shown = json.loads(project.dvc("exp", "show", "--json").stdout)
    head = project.run("git", "rev-parse", "HEAD").stdout.strip()
    baseline = next((entry for entry in shown if entry["rev"] == head), None)
    assert baseline is not None, f"HEAD {head} not in {[e['rev'] for e in shown]}"
    assert _strategy(baseline) == "linear"
    runs = [rev for group in baseline["experiments"] or [] for rev in group["revs"]]
    full = [rev for rev in runs if _strategy(rev) == "full"]
    assert len(full) == 1, [(rev["name"], _strategy(rev)) for rev in runs]
    assert full[0]["data"]["metrics"]["metrics/train.json"]["data"]["epochs_run"] == 1
    assert full[0]["data"]["metrics"]["metrics/timings/train.json"]["data"]["train_seconds"] > 0
    listed = project.dvc("exp", "list", "--name-only").stdout.split()
    assert full[0]["name"] in listed


def _modified_in(project: Project, path: str) -> set[str]:
    """Stages whose dvc.lock entry for ``path`` no longer matches the file."""
    status = project.status()
    return {name for name, changes in status.items() for change in changes
            if isinstance(change, dict) and change.get("changed deps", {}).get(path) == "modified"}


def test_editing_a_module_marks_exactly_the_stages_that_import_it(reproduced: Reproduced, tmp_path: Path) -> None:
    """Deps follow the imports: transforms.py -> audit, train, evaluate, report, export; report.py -> report."""
    project = reproduced_copy(reproduced, tmp_path)  # every stage in dvc.lock
    assert project.status() == {}
    for path, expected in (("src/signflow/model/transforms.py", {"audit", "train", "evaluate", "report", "export"}),
                           ("src/signflow/evaluation/report.py", {"report"})):
        module = project.root / path
        original = module.read_text()
        assert path != "src/signflow/model/transforms.py" or "def eval_transform" in original
        module.write_text(original + "\n# edited\n")
        try:
            assert _modified_in(project, path) == expected
        finally:
            module.write_text(original)
    assert project.status() == {}
