"""`signflow sweep --seeds 2` end to end on the tiny project: a 2-point grid is 4 DVC experiments, one MLflow
parent run with 4 nested children, and a table with each point's mean, sd and interval over its seeds.

The queue, the stages and MLflow are real (the project's own sqlite store); each
experiment stops at evaluate (`--stage`), the last stage the table reads. The
statistics and the linking have unit tests beside this file.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from signflow.commands.sweep import DEFAULT_OUT
from signflow.provenance import TAG_EXPERIMENT
from signflow.sweep.mlflow_parent import ARTIFACT_DIR, TAG_PARENT, TAG_SWEEP
from signflow.sweep.runner import SUCCESS, experiment_states
from signflow.sweep.table import runs_csv_path
from signflow.tracking import EXPERIMENT

from project_copy import Project
from tiny_project import Reproduced, reproduced_copy, store_uri

pytestmark = pytest.mark.slow

QUEUE_TIMEOUT_S = 600.0
SWEEP_GRACE_S = 300.0  # beyond its own --timeout, for the sweep to write its table and exit
LRS = {"sweep-1": 0.01, "sweep-2": 0.003}  # both differ from the baseline's lr: every experiment trains
SEEDS = 2
NAME = "seeds-e2e"


def _sweep(proj: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """`signflow sweep *args` in ``proj``; no queue worker outlives it."""
    command = [sys.executable, "-m", "signflow", "sweep", *args, "--timeout", str(QUEUE_TIMEOUT_S)]
    try:
        return subprocess.run(command, cwd=proj.root, env=proj.env, capture_output=True, text=True,
                              timeout=QUEUE_TIMEOUT_S + SWEEP_GRACE_S, check=False)
    finally:
        proj.stop_queue()


def test_two_points_over_two_seeds_are_four_experiments_under_one_mlflow_parent(
    tmp_path: Path, reproduced: Reproduced
) -> None:
    proj = reproduced_copy(reproduced, tmp_path, strategy="scratch", epochs=1)
    params = proj.params()
    params["train"]["threads"] = 0  # each queue worker takes its share of the cores
    proj.set_params(params)
    proj.run("git", "add", "-A")
    proj.run("git", "commit", "-q", "-m", "baseline")
    sweep = _sweep(proj, "-S", "train.lr=" + ",".join(map(str, LRS.values())), "--seeds", str(SEEDS),
                   "--jobs", "2", "--name", NAME, "--stage", "evaluate")
    assert sweep.returncode == 0, sweep.stderr[-3000:]

    # DVC: each point once per seed, named <point>-s<seed>, with that train.seed.
    names = {f"{point}-s{seed}": (lr, seed) for point, lr in LRS.items() for seed in range(SEEDS)}
    head = proj.run("git", "rev-parse", "HEAD").stdout.strip()
    states = experiment_states(json.loads(proj.dvc("exp", "show", "--json").stdout), head)
    assert set(states) == set(names), sorted(states)
    for name, (lr, seed) in names.items():
        assert states[name].status == SUCCESS
        assert (states[name].params["train"]["lr"], states[name].params["train"]["seed"]) == (lr, seed)

    # MLflow: one parent run for the sweep, the four experiments' runs nested under it.
    client = MlflowClient(tracking_uri=store_uri(tmp_path))
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    tagged = client.search_runs([experiment_id], filter_string=f"tags.`{TAG_SWEEP}` = '{NAME}'")
    (parent,) = [run for run in tagged if TAG_PARENT not in run.data.tags]
    assert parent.info.run_name == NAME and parent.info.status == "FINISHED"
    children = client.search_runs([experiment_id], filter_string=f"tags.{TAG_PARENT} = '{parent.info.run_id}'")
    assert sorted(run.data.tags[TAG_EXPERIMENT] for run in children) == sorted(names)
    assert {run.data.params["train.seed"] for run in children} == {str(seed) for seed in range(SEEDS)}
    artifacts = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, ARTIFACT_DIR)}
    assert artifacts == {DEFAULT_OUT.name, DEFAULT_OUT.with_suffix(".csv").name, runs_csv_path(DEFAULT_OUT).name}

    # The table: per point n, mean, sd and interval of each metric, agreeing with the experiments' own values.
    summary = list(csv.DictReader((proj.root / DEFAULT_OUT.with_suffix(".csv")).read_text().splitlines()))
    runs = list(csv.DictReader((proj.root / runs_csv_path(DEFAULT_OUT)).read_text().splitlines()))
    assert sorted(row["point"] for row in summary) == sorted(LRS) and len(runs) == len(names)
    for row in summary:
        accuracies = [float(run["test.accuracy"]) for run in runs if run["point"] == row["point"]]
        assert row["n"] == str(SEEDS) and row["status"] == SUCCESS
        assert float(row["test.accuracy.mean"]) == pytest.approx(sum(accuracies) / SEEDS)
        assert float(row["test.accuracy.low"]) <= float(row["test.accuracy.mean"]) <= float(row["test.accuracy.high"])
        assert float(row["test.accuracy.sd"]) >= 0
        assert parent.data.metrics[f"{row['point']}/test.accuracy.mean"] == pytest.approx(
            float(row["test.accuracy.mean"]))
    header = (proj.root / DEFAULT_OUT).read_text().splitlines()[0]
    assert all(f"test.accuracy.{statistic}" in header for statistic in ("mean", "sd", "ci95"))
