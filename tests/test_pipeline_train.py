"""End to end: the train stage under real DVC, then a `dvc exp run` that changes only the strategy.

Same approach as ``test_pipeline_data.py``: a throw-away copy of the project
with a shrunken params.yaml (synthetic source, 3 tracks x 3 frames per class,
32 px, simple_cnn, one epoch), the stages importing the copied sources, MLflow
in a sqlite store beside the copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from signflow.checkpoint import load_checkpoint
from signflow.experiment import HISTORY_COLUMNS

pytestmark = pytest.mark.slow

PROJECT_PATHS = ["params.yaml", "dvc.yaml", "stages", "src", ".dvcignore", ".gitignore"]
DATA_STAGES = ["download", "split", "add_unknown"]
IMAGE_SIZE = 32
DVC_TIMEOUT = 600


class Project:
    """A copy of the project under ``root``, with DVC and git run from the test's venv."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(args, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=DVC_TIMEOUT)
        if proc.returncode:
            pytest.fail(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def dvc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("dvc", *args)

    def params(self) -> dict[str, Any]:
        return yaml.safe_load((self.root / "params.yaml").read_text())


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Project:
    base = tmp_path_factory.mktemp("pipeline-train")
    root = base / "project"
    root.mkdir()
    for name in PROJECT_PATHS:
        source = repo_root / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif source.exists():
            shutil.copy2(source, root / name)

    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(root / "src"),  # the stages import the copied package
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(base / "dvc-site"),
        "SIGNFLOW_LOG": "WARNING",
        "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "signflow tests",
        "GIT_AUTHOR_EMAIL": "tests@signflow.invalid",
        "GIT_COMMITTER_NAME": "signflow tests",
        "GIT_COMMITTER_EMAIL": "tests@signflow.invalid",
    }
    env.pop("DVC_EXP_NAME", None)
    if shutil.which("dvc", path=env["PATH"]) is None:
        pytest.skip(f"no dvc executable beside {sys.executable}")
    proj = Project(root, env)
    proj.run("git", "init", "-q")
    proj.dvc("init", "-q")
    shutil.copy2(repo_root / ".dvc" / "config", root / ".dvc" / "config")

    params = proj.params()
    params["strategy"] = "linear"
    params["data"].update(source="synthetic", image_size=IMAGE_SIZE, decode_workers=1)
    params["data"]["synthetic"].update(tracks_per_class=3, frames_per_track=3)
    # With 3 tracks per class, these fractions give each split one whole track.
    params["split"].update(train=0.4, val=0.3, test=0.3)
    params["unknown"].update(max_images=12, heldout_max_images=6)
    params["model"].update(backbone="simple_cnn", weights="none")
    params["train"].update(epochs=1, batch_size=16, threads=1, device="cpu", feature_views=1)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return proj


@pytest.fixture(scope="module")
def repro(project: Project) -> subprocess.CompletedProcess[str]:
    return project.dvc("repro", "train")


@pytest.fixture(scope="module")
def experiment(project: Project, repro: object) -> Iterator[subprocess.CompletedProcess[str]]:
    project.run("git", "add", "-A")
    project.run("git", "commit", "-q", "-m", "baseline: linear")
    yield project.dvc("exp", "run", "-S", "strategy=full", "train")


def test_repro_train_writes_model_metrics_and_run(project: Project, repro: subprocess.CompletedProcess[str]) -> None:
    for stage in [*DATA_STAGES, "train"]:
        assert f"Running stage '{stage}'" in repro.stdout, repro.stdout
    root = project.root
    summary = json.loads((root / "metrics" / "train.json").read_text())
    assert summary["epochs_run"] == 1 and summary["best_epoch"] == 0
    history = pd.read_csv(root / "metrics" / "train_history.csv")
    assert list(history.columns) == HISTORY_COLUMNS and history["epoch"].tolist() == [0]

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
    listed = project.dvc("exp", "list", "--name-only").stdout.split()
    assert full[0]["name"] in listed
