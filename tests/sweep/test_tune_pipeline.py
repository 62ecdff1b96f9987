"""`signflow tune` end to end on the tiny project: the real DVC queue, the real stages, a real SQLite Optuna storage.

A search space with an obviously bad region (a learning rate of 10) must get a
trial pruned by the train stage itself; every trial is a DVC experiment; the
best one, applied and re-run outside the study, gives the same metrics; a tune
stopped with Ctrl-C continues the same study without running a trial twice; two clones tuning one
study share its trials out and see each other's experiments after `dvc exp pull`.
The parts without DVC have unit tests in test_tune.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient

from signflow.provenance import TAG_EXPERIMENT
from signflow.sweep.mlflow_parent import ARTIFACT_DIR, TAG_PARENT, TAG_SWEEP
from signflow.sweep.runner import SUCCESS
from signflow.sweep.tune import all_experiment_states
from signflow.tracking import EXPERIMENT
from signflow.training.trial_link import ATTR_EXPERIMENT

from project_copy import Project, copy_built
from tiny_project import Reproduced, reproduced_copy, store_uri

optuna = pytest.importorskip("optuna")
pytestmark = pytest.mark.slow

TUNE_TIMEOUT_S = 900.0
GRACE_S = 300.0  # beyond its own --timeout, for tune to write its table and exit
EPOCHS = 3  # a pruned trial stops before the last one
# Random sampler, seed 3, after the two enqueued points: trials 2 and 4 draw lr=10 (checked in the test), each
# asked only after a trial completed, so the median pruner has something to compare with.
SPACE = {
    "metric": "val_loss",
    "pruner": {"name": "median", "n_startup_trials": 1},
    "sampler": {"name": "random", "seed": 3},
    "enqueue": [{"train.lr": 0.003}, {"train.lr": 0.01}],
    "params": {"train.lr": {"choices": [0.003, 0.01, 10.0]}, "train.weight_decay": {"low": 0.0, "high": 0.001}},
}
TRAIN_SUMMARY = "metrics/train.json"


def _project(reproduced: Reproduced, base: Path) -> Project:
    """The tiny project at EPOCHS epochs, committed, with Optuna importable by its stages and workers."""
    proj = reproduced_copy(reproduced, base, strategy="scratch", epochs=EPOCHS)
    params = proj.params()
    # One thread in the queue's workers and outside: the forced re-run of the best trial must match it exactly
    # (float sums differ with the thread count).
    params["train"]["threads"] = 1
    proj.set_params(params)
    proj.env["PYTHONPATH"] += os.pathsep + str(Path(optuna.__file__).resolve().parents[1])
    proj.run("git", "add", "-A")
    proj.run("git", "commit", "-q", "-m", "baseline")
    return proj


def _space_file(base: Path) -> Path:
    path = base / "space.yaml"  # outside the project: not part of any experiment
    path.write_text(yaml.safe_dump(SPACE, sort_keys=False))
    return path


def _tune_command(space: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "signflow", "tune", str(space), "--stage", "train",
            "--timeout", str(TUNE_TIMEOUT_S), *args]


def _tune(proj: Project, space: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_tune_command(space, *args), cwd=proj.root, env=proj.env, capture_output=True, text=True,
                          timeout=TUNE_TIMEOUT_S + GRACE_S, check=False)


def _study(proj: Project, name: str) -> Any:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{proj.root / 'sweeps' / 'optuna.db'}")


def _experiments(proj: Project) -> dict[str, Any]:
    return all_experiment_states(json.loads(proj.dvc("exp", "show", "--json").stdout))


def _finished(study: Any) -> list[Any]:
    state = optuna.trial.TrialState
    return study.get_trials(states=(state.COMPLETE, state.PRUNED))


def test_six_trials_on_two_workers_prune_the_bad_region_and_the_best_reproduces_outside_the_study(
    tmp_path: Path, reproduced: Reproduced
) -> None:
    proj = _project(reproduced, tmp_path)
    try:
        run = _tune(proj, _space_file(tmp_path), "--trials", "6", "-j", "2", "--study", "e2e")
    finally:
        proj.stop_queue()
    assert run.returncode == 0, run.stderr[-4000:]

    study = _study(proj, "e2e")
    finished = _finished(study)
    assert len(finished) == 6 and len(study.trials) == 6
    bad = [trial.number for trial in study.trials if trial.params["train.lr"] == 10.0]
    assert bad == [2, 4]  # the seed's draws
    pruned = [trial for trial in finished if trial.state == optuna.trial.TrialState.PRUNED]
    # Each was asked after a trial completed, so the median pruner compares it at its first epoch.
    assert {2, 4} <= {trial.number for trial in pruned}, [(t.number, t.intermediate_values) for t in finished]

    # Every trial is a named DVC experiment; a pruned one stopped early and says so in its metrics.
    experiments = _experiments(proj)
    names = [trial.user_attrs[ATTR_EXPERIMENT] for trial in finished]
    assert sorted(names) == sorted(f"e2e-t{trial.number}" for trial in finished)
    assert all(experiments[name].status == SUCCESS for name in names)
    for trial in pruned:
        summary = experiments[trial.user_attrs[ATTR_EXPERIMENT]].metrics[TRAIN_SUMMARY]
        assert summary["pruned"] is True and summary["epochs_run"] < EPOCHS
        assert trial.user_attrs["epochs_run"] == summary["epochs_run"]

    # The table, the best trial's name, the plots.
    best = study.best_trial
    best_name = best.user_attrs[ATTR_EXPERIMENT]
    assert f"best trial: {best.number} ({best_name})" in run.stdout
    assert (proj.root / "sweeps" / "e2e.md").exists() and (proj.root / "sweeps" / "e2e-history.png").exists()
    assert len((proj.root / "sweeps" / "e2e.csv").read_text().splitlines()) == 1 + 6

    # The study is one MLflow parent run, the table and plots its artifacts, every trial's run nested under it.
    client = MlflowClient(tracking_uri=store_uri(tmp_path))
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    tagged = client.search_runs([experiment_id], filter_string=f"tags.`{TAG_SWEEP}` = 'e2e'")
    (parent,) = [mlflow_run for mlflow_run in tagged if TAG_PARENT not in mlflow_run.data.tags]
    children = [mlflow_run.data.tags[TAG_EXPERIMENT] for mlflow_run in tagged if mlflow_run is not parent]
    assert sorted(children) == sorted(names)
    assert parent.data.metrics["best/val_loss"] == pytest.approx(best.value)
    artifacts = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, ARTIFACT_DIR)}
    assert {"e2e.md", "e2e.csv", "e2e-history.png"} <= artifacts

    # The best trial, applied and trained again outside any study, gives the same metrics.
    expected = experiments[best_name].metrics[TRAIN_SUMMARY]
    assert "pruned" not in expected and expected["best_val_loss"] == pytest.approx(best.value)
    proj.dvc("exp", "apply", best_name)
    assert proj.status("train") == {}  # nothing to re-run: the experiment's outputs are the workspace's
    proj.dvc("repro", "--force", "--single-item", "train")
    again = json.loads((proj.root / TRAIN_SUMMARY).read_text())
    assert {key: again[key] for key in ("best_epoch", "epochs_run", "stopped_early")} == {
        key: expected[key] for key in ("best_epoch", "epochs_run", "stopped_early")}
    assert again["best_val_loss"] == pytest.approx(expected["best_val_loss"], rel=1e-6)
    assert "pruned" not in again


def _wait_for_finished(proj: Project, name: str, count: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "tune exited before it could be interrupted"
        if (proj.root / "sweeps" / "optuna.db").exists():
            try:
                if len(_finished(_study(proj, name))) >= count:
                    return
            except KeyError:  # the study is not created yet
                pass
        time.sleep(2)
    pytest.fail(f"fewer than {count} finished trials after {timeout:.0f} s")


def test_ctrl_c_then_tune_again_continues_the_study_and_runs_no_trial_twice(
    tmp_path: Path, reproduced: Reproduced
) -> None:
    proj = _project(reproduced, tmp_path)
    space = _space_file(tmp_path)
    args = ("--trials", "4", "-j", "1", "--study", "resume")
    try:
        log = (tmp_path / "first.log").open("w")
        proc = subprocess.Popen(_tune_command(space, *args), cwd=proj.root, env=proj.env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            _wait_for_finished(proj, "resume", 2, proc, TUNE_TIMEOUT_S)
        finally:
            proc.send_signal(signal.SIGINT)  # Ctrl-C, to tune only: the queue's workers carry on
            first_code = proc.wait(timeout=GRACE_S)
        second = _tune(proj, space, *args)
    finally:
        proj.stop_queue()
    assert first_code == 130, (tmp_path / "first.log").read_text()[-3000:]
    assert second.returncode == 0, second.stderr[-4000:]

    study = _study(proj, "resume")
    finished = _finished(study)
    assert len(finished) == 4
    # Trials lost between ask and queue (none, usually) fail with a note and are replaced; none ran twice.
    lost = [trial for trial in study.trials if trial not in finished]
    assert all(trial.state == optuna.trial.TrialState.FAIL and "gone" in trial.user_attrs["signflow.note"]
               for trial in lost)
    names = [trial.user_attrs[ATTR_EXPERIMENT] for trial in finished]
    assert len(set(names)) == 4
    assert sorted(name for name in _experiments(proj) if name.startswith("resume-")) == sorted(names)


def test_two_clones_tune_one_study_without_duplicates_and_see_each_others_experiments(
    tmp_path: Path, reproduced: Reproduced
) -> None:
    # One team: a bare git remote, a DVC remote, a shared study storage; clone b is a copy of a's committed setup.
    origin, dvc_remote, storage = tmp_path / "origin.git", tmp_path / "dvc-remote", f"sqlite:///{tmp_path}/study.db"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    clone_a = _project(reproduced, tmp_path / "a")
    clone_a.run("git", "remote", "add", "origin", str(origin))
    clone_a.dvc("remote", "add", "-d", "shared", str(dvc_remote))
    clone_a.run("git", "commit", "-q", "-am", "shared DVC remote")
    clone_a.run("git", "push", "-q", "origin", "HEAD:main")
    (tmp_path / "b").mkdir()
    clone_b = copy_built(clone_a, tmp_path / "b", extra_env={"MLFLOW_TRACKING_URI": store_uri(tmp_path / "b")})
    clone_b.env["PYTHONPATH"] = clone_a.env["PYTHONPATH"].replace(str(clone_a.root), str(clone_b.root))
    space = _space_file(tmp_path)
    args = ("--trials", "4", "-j", "1", "--study", "team", "--storage", storage, "--push", "origin")
    try:
        logs = {proj: (proj.root.parent / "tune.log").open("w") for proj in (clone_a, clone_b)}
        procs = {proj: subprocess.Popen(_tune_command(space, *args), cwd=proj.root, env=proj.env, stdout=log,
                                        stderr=subprocess.STDOUT) for proj, log in logs.items()}
        codes = {proj: proc.wait(timeout=TUNE_TIMEOUT_S + GRACE_S) for proj, proc in procs.items()}
    finally:
        clone_a.stop_queue()
        clone_b.stop_queue()
    for proj, code in codes.items():
        assert code == 0, (proj.root.parent / "tune.log").read_text()[-4000:]

    study = optuna.load_study(study_name="team", storage=storage)
    finished = _finished(study)
    names = [trial.user_attrs[ATTR_EXPERIMENT] for trial in finished]
    assert len(finished) == 4 and len(set(names)) == 4
    # Anything else in the study is a surplus trial (both clones asked for the last one), which never ran.
    assert all("surplus" in trial.user_attrs["signflow.note"] for trial in study.trials if trial not in finished)
    by_clone = {trial.user_attrs["signflow.clone"].split(":", 1)[1] for trial in finished}
    assert by_clone == {str(clone_a.root.resolve()), str(clone_b.root.resolve())}
    for proj in (clone_a, clone_b):
        proj.dvc("exp", "pull", "--no-cache", "origin", *names)
        listed = {name for name in _experiments(proj) if name.startswith("team-")}
        assert listed == set(names), (proj.root, listed)
