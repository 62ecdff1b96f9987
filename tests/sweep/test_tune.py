"""`signflow tune`'s parts without DVC: the space file, trials asked as points, telling results, resuming,
surplus trials of clones, and the train stage's link to its trial, all on a real SQLite Optuna storage."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from signflow.sweep import tune
from signflow.sweep.grid import SweepError
from signflow.sweep.runner import FAILED, QUEUED, SUCCESS, ExperimentState
from signflow.training import trial_link
from signflow.training.loop import EpochStats

optuna = pytest.importorskip("optuna")

REPO = Path(__file__).resolve().parents[2]
CLONE = "host:/clone-a"
SPACE = {
    "metric": "val_loss",
    "pruner": {"name": "median", "n_startup_trials": 1},
    "sampler": {"name": "random", "seed": 3},
    "enqueue": [{"train.lr": 0.003}],
    "params": {"train.lr": {"choices": [0.003, 0.01, 10.0]},
               "train.weight_decay": {"low": 0.0, "high": 0.001},
               "train.epochs": {"low": 1, "high": 4}},
}


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _space(**changes: Any) -> tune.Space:
    return tune.parse_space({**SPACE, **changes}, "space.yaml")


def _storage(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


def _request(tmp_path: Path, space: tune.Space, trials: int = 4, study: str = "s") -> tune.TuneRequest:
    return tune.TuneRequest(tmp_path, space, study, _storage(tmp_path), trials, jobs=2)


def _params(tmp_path: Path) -> str:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    return (tmp_path / "params.yaml").read_text()


def _summary(**values: Any) -> ExperimentState:
    return ExperimentState(SUCCESS, {"metrics/train.json": values}, {})


# ------------------------------------------------------------------ the space file


def test_a_space_file_becomes_optuna_distributions_ints_for_int_bounds() -> None:
    space = _space()
    dists = tune.distributions(space)
    assert isinstance(dists["train.lr"], optuna.distributions.CategoricalDistribution)
    assert isinstance(dists["train.weight_decay"], optuna.distributions.FloatDistribution)
    assert isinstance(dists["train.epochs"], optuna.distributions.IntDistribution)
    assert not space.maximize and space.summary_key == "best_val_loss"


@pytest.mark.parametrize(("changes", "names"), [
    ({"params": {"train.lr": {"low": 1.0, "high": 0.1}}}, "params.train.lr"),
    ({"params": {"train.lr": {"low": 0.0, "high": 0.1, "log": True}}}, "params.train.lr"),
    ({"params": {"train.lr": {"low": 0.1}}}, "params.train.lr"),
    ({"params": {"train.lr": {"choices": []}}}, "params.train.lr"),
    ({"params": {"train.lr": [0.1, 0.2]}}, "params.train.lr"),
    ({"params": {"train.lr": {"low": 0.1, "high": 1.0, "scale": "log"}}}, "scale"),
    ({"metric": "test.accuracy"}, "metric 'test.accuracy'"),
    ({"pruner": {"name": "median", "patience": 3}}, "pruner"),
    ({"pruner": "hyperband-ish"}, "pruner"),
    ({"sampler": "grid"}, "sampler"),
    ({"enqueue": [{"train.momentum": 0.5}]}, "enqueue: train.momentum"),
    ({"trials": 3}, "unknown field 'trials'"),
])
def test_a_bad_space_file_names_the_key(changes: dict, names: str) -> None:
    with pytest.raises(SweepError, match="space.yaml") as err:
        _space(**changes)
    assert names in str(err.value)


@pytest.mark.parametrize(("params", "names"), [
    ({"train.no_such_key": {"low": 0.1, "high": 1.0}}, "train.no_such_key"),
    ({"strategy": {"choices": ["linear", "no_such_strategy"]}}, "no_such_strategy"),
    ({"train.epochs": {"low": 0, "high": 3}}, "train.epochs"),
])
def test_every_bound_is_validated_against_params_before_anything_runs(
    tmp_path: Path, params: dict, names: str
) -> None:
    _params(tmp_path)
    with pytest.raises(SweepError, match=names):
        tune.check_space(_space(params=params, enqueue=[]), tmp_path / "params.yaml", tmp_path)


def test_a_valid_space_passes_its_checks(tmp_path: Path) -> None:
    _params(tmp_path)
    tune.check_space(_space(), tmp_path / "params.yaml", tmp_path)


# ------------------------------------------------------------------ asking


def test_an_asked_trial_is_a_validated_point_named_after_its_number_and_linked_by_attrs(tmp_path: Path) -> None:
    text, space = _params(tmp_path), _space()
    study = tune.open_study(_storage(tmp_path), "s", space, CLONE)
    request = _request(tmp_path, space)
    first = tune.ask_trial(study, request, tune.distributions(space), text, tmp_path, CLONE)
    second = tune.ask_trial(study, request, tune.distributions(space), text, tmp_path, CLONE)
    assert (first.name, second.name) == ("s-t0", "s-t1")
    assert first.values["train.lr"] == 0.003  # the enqueued point comes first
    trial = study.trials[1]
    assert second.values == trial.params and set(second.values) == set(SPACE["params"])
    assert f"train.epochs={trial.params['train.epochs']}" in second.overrides
    assert trial.user_attrs == {trial_link.ATTR_EXPERIMENT: "s-t1", tune.ATTR_CLONE: CLONE}
    # The study records what the train stage needs to build the same pruner and report the same metric.
    assert study.user_attrs[trial_link.ATTR_METRIC] == "val_loss"
    assert study.user_attrs[trial_link.ATTR_PRUNER] == {"name": "median", "n_startup_trials": 1}


def test_a_point_the_workspace_refuses_fails_its_trial_and_another_is_asked(tmp_path: Path) -> None:
    text = _params(tmp_path)
    # strategy=linear needs pretrained weights; the workspace's backbone has them, simple_cnn has none.
    space = _space(params={"model.backbone": {"choices": ["simple_cnn"]}, "strategy": {"choices": ["linear"]}},
                   enqueue=[])
    study = tune.open_study(_storage(tmp_path), "s", space, CLONE)
    with pytest.raises(SweepError, match="sampled points in a row were refused"):
        tune.ask_trial(study, _request(tmp_path, space), tune.distributions(space), text, tmp_path, CLONE)
    failed = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert len(failed) == tune.MAX_INVALID_IN_A_ROW and "pretrained" in failed[0].user_attrs[tune.ATTR_NOTE]


def test_a_trial_asked_beyond_the_requested_number_fails_as_surplus(tmp_path: Path) -> None:
    text, space = _params(tmp_path), _space()
    clone_a = tune.open_study(_storage(tmp_path), "s", space, CLONE)
    clone_b = tune.open_study(_storage(tmp_path), "s", space, "host:/clone-b")
    request = _request(tmp_path, space, trials=2)
    dists = tune.distributions(space)
    assert tune.ask_trial(clone_a, request, dists, text, tmp_path, CLONE) is not None
    assert tune.ask_trial(clone_b, request, dists, text, tmp_path, "host:/clone-b") is not None
    # Both clones saw room for one more and asked at once: the later number loses.
    assert tune.ask_trial(clone_a, request, dists, text, tmp_path, CLONE) is None
    states = [trial.state.name for trial in clone_b.trials]
    assert states == ["RUNNING", "RUNNING", "FAIL"] and "surplus" in clone_b.trials[2].user_attrs[tune.ATTR_NOTE]


def test_a_study_resumed_with_another_space_is_refused(tmp_path: Path) -> None:
    tune.open_study(_storage(tmp_path), "s", _space(), CLONE)
    with pytest.raises(SweepError, match="another search space"):
        tune.open_study(_storage(tmp_path), "s", _space(metric="val_accuracy"), CLONE)


def test_a_resumed_or_joined_study_draws_with_another_seed(tmp_path: Path) -> None:
    space = _space()
    assert tune.session_seed(space, True, CLONE, 0) == 3
    joined = {tune.session_seed(space, False, clone, 5) for clone in (CLONE, "host:/clone-b")}
    assert len(joined) == 2 and 3 not in joined
    assert tune.session_seed(_space(sampler="tpe"), False, CLONE, 5) is None


# ------------------------------------------------------------------ telling and resuming


@pytest.mark.parametrize(("state", "told", "value"), [
    (_summary(best_val_loss=0.5, epochs_run=3), "COMPLETE", 0.5),
    (_summary(best_val_loss=9.0, epochs_run=1, pruned=True), "PRUNED", None),
    (ExperimentState(FAILED, {}, {}), "FAIL", None),
    (_summary(epochs_run=3), "FAIL", None),  # stopped before train wrote its value
])
def test_a_finished_experiment_is_told_to_the_study(tmp_path: Path, state: ExperimentState, told: str,
                                                    value: float | None) -> None:
    study = tune.open_study(_storage(tmp_path), "s", _space(), CLONE)
    number = study.ask().number
    assert tune.tell(study, number, state, _space(), note="boom" if state.status == FAILED else "") == told
    trial = study.trials[number]
    assert trial.state.name == told and trial.value == value
    assert trial.user_attrs.get(tune.ATTR_EPOCHS) == state.metrics.get("metrics/train.json", {}).get("epochs_run")


def test_resuming_collects_this_clones_live_experiments_and_replaces_lost_ones(tmp_path: Path) -> None:
    space = _space()
    study = tune.open_study(_storage(tmp_path), "s", space, CLONE)
    for name, clone in (("s-t0", CLONE), ("s-t1", CLONE), ("s-t2", CLONE), ("s-t3", "host:/clone-b")):
        trial = study.ask()
        trial.set_user_attr(trial_link.ATTR_EXPERIMENT, name)
        trial.set_user_attr(tune.ATTR_CLONE, clone)
    states = {"s-t0": ExperimentState(QUEUED, {}, {}), "s-t1": _summary(best_val_loss=0.2, epochs_run=2)}

    active = tune.adopt_running(study, CLONE, states)

    assert active == {"s-t0": 0, "s-t1": 1}  # still queued, and finished while tune was away: both collected
    assert [trial.state.name for trial in study.trials] == ["RUNNING", "RUNNING", "FAIL", "RUNNING"]
    assert "gone" in study.trials[2].user_attrs[tune.ATTR_NOTE]  # killed between ask and queue
    # The lost trial no longer counts: the next ask replaces it.
    assert len(tune.counted(study)) == 3


def test_a_relative_sqlite_storage_is_made_absolute_for_the_workers(tmp_path: Path) -> None:
    assert tune.resolve_storage("sqlite:///sweeps/x.db", tmp_path) == f"sqlite:///{tmp_path / 'sweeps/x.db'}"
    assert tune.resolve_storage("sqlite:////abs/x.db", tmp_path) == "sqlite:////abs/x.db"
    assert tune.resolve_storage("postgresql://host/db", tmp_path) == "postgresql://host/db"


# ------------------------------------------------------------------ the train stage's side


def _stats(epoch: int, val_loss: float) -> EpochStats:
    return EpochStats(epoch, 1.0, 0.5, val_loss, 0.5, 0.001, 1.0)


def test_outside_a_study_the_train_stage_gets_no_callback_and_needs_no_optuna() -> None:
    assert trial_link.link_from_env({}) is None
    assert trial_link.trial_callbacks({"DVC_EXP_NAME": "exp-1"}) == []


def test_a_trial_reports_each_epoch_and_stops_when_its_study_prunes_it(tmp_path: Path) -> None:
    space = _space()
    study = tune.open_study(_storage(tmp_path), "s", space, CLONE)
    good = study.ask()
    for epoch, loss in enumerate((1.0, 0.8, 0.6)):
        good.report(loss, epoch)
    study.tell(good, 0.6)
    bad = study.ask()
    bad.set_user_attr(trial_link.ATTR_EXPERIMENT, "s-t1")
    env = {trial_link.STORAGE_ENV: _storage(tmp_path), trial_link.STUDY_ENV: "s", "DVC_EXP_NAME": "s-t1"}

    (callback,) = trial_link.trial_callbacks(env)  # a fresh process's view: the study loaded from the storage

    assert callback(_stats(0, 0.9)) is False  # better than the completed trial at epoch 0
    assert callback(_stats(1, 50.0)) is True  # far worse than the median at epoch 1: pruned
    assert study.trials[1].intermediate_values == {0: 0.9, 1: 50.0}


def test_an_unknown_experiment_or_unreachable_study_trains_without_pruning(tmp_path: Path) -> None:
    tune.open_study(_storage(tmp_path), "s", _space(), CLONE)
    env = {trial_link.STORAGE_ENV: _storage(tmp_path), trial_link.STUDY_ENV: "s", "DVC_EXP_NAME": "other"}
    assert trial_link.trial_callbacks(env) == []
    assert trial_link.trial_callbacks({**env, trial_link.STUDY_ENV: "no-such-study"}) == []


def test_without_optuna_tune_says_how_to_install_it_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from signflow.cli import EXIT_USAGE, main

    monkeypatch.setitem(__import__("sys").modules, "optuna", None)  # `import optuna` raises ImportError
    monkeypatch.chdir(tmp_path)
    assert main(["tune", "space.yaml"]) == EXIT_USAGE
    assert capsys.readouterr().err.strip().splitlines() == [f"signflow: error: {tune.INSTALL_HINT}"]


def test_a_clone_is_done_when_the_study_has_its_trials_and_its_own_have_finished(tmp_path: Path) -> None:
    study = tune.open_study(_storage(tmp_path), "s", _space(), CLONE)
    mine, theirs = study.ask(), study.ask()
    mine.set_user_attr(tune.ATTR_CLONE, CLONE)
    theirs.set_user_attr(tune.ATTR_CLONE, "host:/clone-b")
    assert not tune.is_done(study, 2, CLONE)  # its own trial still runs (e.g. after a timeout)
    study.tell(mine, 0.5)
    assert tune.is_done(study, 2, CLONE)  # the other clone collects its own
    assert not tune.is_done(study, 3, CLONE)  # the study is short of trials
