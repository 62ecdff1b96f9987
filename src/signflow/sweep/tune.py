"""`signflow tune`'s work: a search space file, an Optuna study (ask and tell), each trial a DVC experiment.

Optuna samples, prunes and stores the study (its sampler, pruners and RDB
storage); DVC runs each trial as a named experiment on its queue; this module
only joins them. Each asked trial becomes a grid ``Point`` (`-S` overrides in
DVC's grammar, validated against ``params.yaml`` as every sweep point is) and is
queued as experiment ``<study>-t<number>``; the trial carries that name
(``dvc_experiment``) and this clone's identity. When its experiment finishes,
the study is told its value (the run's best validation metric from
``metrics/train.json``), or that it was pruned (the train stage stopped it:
``signflow.training.trial_link``) or failed.

Resuming is loading the study: trials already finished are never run again; a
trial this clone left running is collected when its experiment is still on the
queue or finished, and failed (then replaced) when its experiment is gone.
Several clones share one study through its storage: Optuna hands out distinct
trial numbers, so experiment names never collide, and a trial asked beyond the
requested number (two clones asking at once) is failed as surplus before it runs.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signflow import paths, processes
from signflow.config import load_params
from signflow.processes import CommandError
from signflow.sweep import runner
from signflow.sweep.grid import (
    Point,
    SweepError,
    check_point,
    parse_overrides,
    skip_reason,
    spell_value,
)
from signflow.sweep.runner import FAILED, FINISHED_STATES, QUEUED, SUCCESS, ExperimentState
from signflow.training.trial_link import (
    ATTR_EXPERIMENT,
    ATTR_METRIC,
    ATTR_PRUNER,
    METRICS,
    PRUNERS,
    STORAGE_ENV,
    STUDY_ENV,
    create_pruner,
    open_storage,
)

log = logging.getLogger(__name__)

INSTALL_HINT = "signflow tune needs Optuna: pip install 'signflow[tune]'"
ATTR_CLONE = "signflow.clone"  # trial user attr: host and folder of the clone that runs it
ATTR_SPACE = "signflow.space"  # study user attr: the search space it was created with
ATTR_NOTE = "signflow.note"  # trial user attr: why it failed
ATTR_EPOCHS = "epochs_run"  # trial user attr: epochs the trial trained
TRIAL_SUFFIX = "-t"  # experiment name = <study>-t<trial number>
SPACE_FIELDS = frozenset({"metric", "pruner", "sampler", "enqueue", "params"})
DEFAULT_PRUNER = "median"
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler"}  # name -> optuna.samplers class
DEFAULT_SAMPLER = "tpe"
MAX_INVALID_IN_A_ROW = 20  # sampled points that fail validation before the space counts as broken
DEFAULT_DB = "optuna.db"  # the default storage: a SQLite file in the sweeps folder (git-ignored)
SPACE_EXAMPLE = "params: {train.lr: {low: 1.0e-4, high: 0.1, log: true}}"


# ------------------------------------------------------------------ the search space file


@dataclass(frozen=True)
class Space:
    """A search space file: what to optimise, how to prune and sample, and the distribution of each key."""

    metric: str  # an EpochStats field: reported per epoch; the run's best is the trial's value
    pruner: dict[str, Any]  # {"name": ..., **its keyword arguments}
    sampler: dict[str, Any]
    params: dict[str, dict[str, Any]]  # dotted params key -> {low, high, log, step} or {choices}
    enqueue: tuple[dict[str, Any], ...] = ()  # points tried first (Optuna's enqueue_trial)

    @property
    def maximize(self) -> bool:
        return METRICS[self.metric]

    @property
    def summary_key(self) -> str:
        """The metrics/train.json key of the trial's value: the best epoch's metric."""
        return f"best_{self.metric}"

    def record(self) -> dict[str, Any]:
        """What the study stores, to refuse resuming it with another space."""
        return {"metric": self.metric, "params": self.params}


def _named(value: Any, where: str, registry: Mapping[str, str], default: str) -> dict[str, Any]:
    """``value`` (a name, or a mapping with a name and keyword arguments) as {"name": ..., ...}."""
    spec = {"name": default} if value is None else {"name": value} if isinstance(value, str) else value
    if not isinstance(spec, Mapping) or spec.get("name", default) not in registry:
        raise SweepError(f"{where}: give one of {', '.join(registry)} (or a mapping with name: and its options)")
    return {"name": default, **spec}


def distribution(key: str, spec: Any, where: str) -> Any:
    """Optuna's distribution of one params entry; SweepError naming the key when it is not one."""
    import optuna.distributions as dists

    if not isinstance(spec, Mapping):
        raise SweepError(f"{where}: params.{key}: give {{low, high[, log, step]}} or {{choices: [...]}}")
    try:
        if set(spec) == {"choices"}:
            choices = spec["choices"]
            if not isinstance(choices, list) or not choices:
                raise ValueError("choices must be a non-empty list")
            return dists.CategoricalDistribution([_choice(value, f"{where}: params.{key}") for value in choices])
        unknown = set(spec) - {"low", "high", "log", "step"}
        if unknown or not {"low", "high"} <= set(spec):
            raise ValueError(f"unknown or missing fields ({', '.join(sorted(unknown)) or 'low/high'})")
        kind = dists.IntDistribution if all(isinstance(spec.get(f), int) and not isinstance(spec.get(f), bool)
                                            for f in ("low", "high")) else dists.FloatDistribution
        return kind(**{field: spec[field] for field in spec})
    except (ValueError, TypeError) as err:
        raise SweepError(f"{where}: params.{key}: {err}") from None


def _choice(value: Any, where: str) -> Any:
    spell_value(value, where)  # a value `-S` cannot carry fails here, naming the key
    return value


def parse_space(loaded: Any, where: str) -> Space:
    """A space file's YAML data as a ``Space``: every field checked, each error naming its key."""
    if not isinstance(loaded, Mapping) or not isinstance(loaded.get("params"), Mapping) or not loaded["params"]:
        raise SweepError(f"{where}: expected a mapping with params: (e.g. {SPACE_EXAMPLE})")
    unknown = sorted(set(loaded) - SPACE_FIELDS)
    if unknown:
        raise SweepError(f"{where}: unknown field {unknown[0]!r}; the fields are {', '.join(sorted(SPACE_FIELDS))}")
    metric = loaded.get("metric", "val_accuracy")
    if metric not in METRICS:
        raise SweepError(f"{where}: metric {metric!r}: choose one of {', '.join(METRICS)}")
    params = {str(key): dict(spec) if isinstance(spec, Mapping) else spec for key, spec in loaded["params"].items()}
    for key, spec in params.items():
        (override,) = parse_overrides([f"{key}=0"], f"{where}: params.{key}")
        if override.key_or_group != key:
            raise SweepError(f"{where}: params.{key}: not a dotted params key")
        distribution(key, spec, where)
    pruner = _named(loaded.get("pruner"), f"{where}: pruner", PRUNERS, DEFAULT_PRUNER)
    try:
        create_pruner(pruner)
    except (TypeError, ValueError) as err:
        raise SweepError(f"{where}: pruner: {err}") from None
    sampler = _named(loaded.get("sampler"), f"{where}: sampler", SAMPLERS, DEFAULT_SAMPLER)
    enqueue = loaded.get("enqueue") or []
    if not isinstance(enqueue, list) or not all(isinstance(item, Mapping) for item in enqueue):
        raise SweepError(f"{where}: enqueue: give a list of mappings of params key -> value")
    for item in enqueue:
        stray = [key for key in item if key not in params]
        if stray:
            raise SweepError(f"{where}: enqueue: {stray[0]} is not a key of params:")
    return Space(metric, pruner, sampler, params, tuple(dict(item) for item in enqueue))


def read_space(path: Path) -> Space:
    import yaml

    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise SweepError(f"{path}: cannot read it ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise SweepError(f"{path}: not valid YAML ({processes.tail(str(err))})") from None
    return parse_space(loaded, str(path))


def distributions(space: Space) -> dict[str, Any]:
    return {key: distribution(key, spec, "space") for key, spec in space.params.items()}


def corner_values(dist: Any) -> list[Any]:
    """The values that bound a distribution: its choices, or its low and high."""
    return list(dist.choices) if hasattr(dist, "choices") else [dist.low, dist.high]


def make_point(name: str, index: int, values: Mapping[str, Any]) -> Point:
    """A point setting ``values`` (dotted key -> value) with `-S` overrides spelled as DVC parses them."""
    overrides = tuple(f"{key}={spell_value(value, key)}" for key, value in values.items())
    return Point(index, name, overrides, dict(values))


def check_space(space: Space, params_path: Path, workdir: Path) -> None:
    """Every bound of every key, and every enqueued point, applied to params.yaml and validated as every stage
    validates it: a key that is not a params key, or a value it refuses, fails before anything runs."""
    text, copy = Path(params_path).read_text(), workdir / paths.PARAMS.name
    for key, dist in distributions(space).items():
        for value in corner_values(dist):
            check_point(text, make_point(f"params.{key}", 0, {key: value}), copy)
    for position, values in enumerate(space.enqueue, start=1):
        check_point(text, make_point(f"enqueue #{position}", 0, values), copy)


# ------------------------------------------------------------------ the study


def require_optuna() -> None:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise SweepError(INSTALL_HINT) from None


def default_storage(repo: Path, out_dir: Path) -> str:
    return f"sqlite:///{(repo / out_dir / DEFAULT_DB).resolve()}"


def resolve_storage(url: str, repo: Path) -> str:
    """``url`` with a relative SQLite path made absolute: the queue's workers run in other folders."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url[len(prefix):].startswith("/") and url[len(prefix):] != ":memory:":
        return prefix + str((repo / url[len(prefix):]).resolve())
    return url


def clone_id(repo: Path) -> str:
    """This clone among those sharing a study: its host and folder."""
    return f"{socket.gethostname()}:{repo.resolve()}"


def create_sampler(space: Space, session_seed: int | None) -> Any:
    import optuna

    options = {key: value for key, value in space.sampler.items() if key not in ("name", "seed")}
    return getattr(optuna.samplers, SAMPLERS[space.sampler["name"]])(seed=session_seed, **options)


def session_seed(space: Space, created: bool, clone: str, trials_so_far: int) -> int | None:
    """The sampler's seed: the file's for a new study (reproducible); derived from it, the clone and the trials
    so far when joining or resuming one, so a restarted sampler does not draw the same points again."""
    seed = space.sampler.get("seed")
    if seed is None or created:
        return seed
    return int(hashlib.sha256(f"{seed}:{clone}:{trials_so_far}".encode()).hexdigest()[:8], 16)


def open_study(storage: str, name: str, space: Space, clone: str) -> Any:
    """The study ``name`` at ``storage``: created (with the space, metric and pruner as user attrs, the enqueued
    points first) or loaded when it exists, after checking it was made with the same space."""
    import optuna

    store = open_storage(storage)
    direction = "maximize" if space.maximize else "minimize"
    try:
        study = optuna.create_study(storage=store, study_name=name, direction=direction,
                                    pruner=create_pruner(space.pruner), sampler=create_sampler(space, None))
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        created = False
        study = optuna.load_study(study_name=name, storage=store)
    if created:
        study.set_user_attr(ATTR_SPACE, space.record())
        study.set_user_attr(ATTR_METRIC, space.metric)
        study.set_user_attr(ATTR_PRUNER, space.pruner)
        for values in space.enqueue:
            study.enqueue_trial(values)
    elif study.user_attrs.get(ATTR_SPACE) != space.record():
        raise SweepError(f"study {name} at {storage} was created with another search space or metric; "
                         "give another --study name")
    seed = session_seed(space, created, clone, len(study.trials))
    return optuna.load_study(study_name=name, storage=store, sampler=create_sampler(space, seed),
                             pruner=create_pruner(space.pruner))


def set_attr(study: Any, number: int, key: str, value: Any) -> None:
    """A user attribute on trial ``number`` (Optuna's ask-and-tell knows trials by number; its storage by id)."""
    storage = study._storage
    storage.set_trial_user_attr(storage.get_trial_id_from_study_id_trial_number(study._study_id, number), key, value)


def fail(study: Any, number: int, note: str) -> None:
    import optuna

    set_attr(study, number, ATTR_NOTE, note)
    study.tell(number, state=optuna.trial.TrialState.FAIL)
    log.warning("trial %d failed: %s", number, note)


def counted(study: Any) -> list[Any]:
    """The trials that count towards the requested number: finished (complete or pruned) or running."""
    import optuna

    state = optuna.trial.TrialState
    return study.get_trials(deepcopy=False, states=(state.COMPLETE, state.PRUNED, state.RUNNING))


def is_surplus(study: Any, number: int, wanted: int) -> bool:
    """Whether trial ``number`` came after the study already had ``wanted`` counted trials (another clone
    asked at the same moment): trial numbers are handed out in order, so the earlier ones win."""
    return sum(trial.number < number for trial in counted(study)) >= wanted


def experiment_name(study_name: str, number: int) -> str:
    return f"{study_name}{TRIAL_SUFFIX}{number}"


def trial_point(trial: Any, study_name: str, params_text: str, workdir: Path) -> Point:
    """The asked trial as a validated point; SweepError when the workspace's params refuse it or it makes no
    sense (the reason)."""
    point = make_point(experiment_name(study_name, trial.number), trial.number + 1, trial.params)
    reason = skip_reason(check_point(params_text, point, workdir / paths.PARAMS.name))
    if reason:
        raise SweepError(f"{point.name} ({point.label}): {reason}")
    return point


# ------------------------------------------------------------------ telling results


def trial_outcome(state: ExperimentState, space: Space) -> tuple[str, float | None, int | None]:
    """(Optuna state name, value, epochs run) of a finished experiment, from its metrics/train.json."""
    summary = state.metrics.get(paths.TRAIN_SUMMARY.as_posix(), {})
    epochs = summary.get(ATTR_EPOCHS)
    if state.status != SUCCESS:
        return "FAIL", None, epochs
    if summary.get("pruned"):
        return "PRUNED", None, epochs
    value = summary.get(space.summary_key)
    return ("COMPLETE", float(value), epochs) if isinstance(value, int | float) else ("FAIL", None, epochs)


def tell(study: Any, number: int, state: ExperimentState, space: Space, note: str = "") -> str:
    """Tell the study how trial ``number``'s finished experiment went; the state told."""
    import optuna

    kind, value, epochs = trial_outcome(state, space)
    if epochs is not None:
        set_attr(study, number, ATTR_EPOCHS, epochs)
    if kind == "FAIL":
        fail(study, number, note or f"{paths.TRAIN_SUMMARY} has no {space.summary_key}")
    elif kind == "PRUNED":
        study.tell(number, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(number, value)
    return kind


def all_experiment_states(show: Sequence[Mapping[str, Any]]) -> dict[str, ExperimentState]:
    """name -> state of every experiment `dvc exp show` lists, on any baseline (a resumed study may span commits)."""
    states: dict[str, ExperimentState] = {}
    for entry in show:
        if entry.get("rev") and entry.get("experiments"):
            states.update(runner.experiment_states(show, entry["rev"]))
    return states


def poll(repo: Path, failures: int) -> tuple[dict[str, ExperimentState] | None, int]:
    """The experiments' states (None when this poll failed), and the count of polls failed in a row."""
    try:
        return all_experiment_states(runner.exp_show(repo, timeout=runner.POLL_CALL_SECONDS)), 0
    except (CommandError, SweepError) as err:
        if failures + 1 >= runner.MAX_POLL_FAILURES:
            raise
        log.warning("polling failed (%d/%d), retrying: %s", failures + 1, runner.MAX_POLL_FAILURES, err)
        return None, failures + 1


# ------------------------------------------------------------------ the loop


@dataclass(frozen=True)
class TuneRequest:
    """One `signflow tune` run: where, what, how many trials in the study, how many at once."""

    repo: Path
    space: Space
    study: str
    storage: str
    trials: int
    jobs: int
    stage: str | None = None
    timeout: float | None = None
    push: str | None = None  # a git remote each finished trial's experiment is pushed to (`dvc exp push`)


def worker_env(request: TuneRequest) -> dict[str, str]:
    """The environment of the queue's workers: the trial link (the experiment's name comes from DVC)."""
    return {**processes.command_env(), STORAGE_ENV: request.storage, STUDY_ENV: request.study}


def adopt_running(study: Any, clone: str, states: Mapping[str, ExperimentState]) -> dict[str, int]:
    """experiment -> trial of the trials this clone left running: kept when the experiment still exists
    (queued, running or finished: collected by the loop), failed when it is gone."""
    import optuna

    active = {}
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        name = trial.user_attrs.get(ATTR_EXPERIMENT)
        if trial.user_attrs.get(ATTR_CLONE) != clone:
            continue  # another clone's: it collects its own
        if name in states:
            active[name] = trial.number
            log.info("trial %d (%s) from an earlier run is %s: collecting it", trial.number, name, states[name].status)
        else:
            fail(study, trial.number, "its experiment is gone (tune stopped before queueing it); replaced")
    return active


def ask_trial(study: Any, request: TuneRequest, dists: Mapping[str, Any], params_text: str, workdir: Path,
              clone: str) -> Point | None:
    """Ask the study for a trial and turn it into a point ready to queue; None when the study already has its
    requested number (this trial then fails as surplus). Points the workspace refuses fail and are re-asked."""
    for _ in range(MAX_INVALID_IN_A_ROW):
        trial = study.ask(dict(dists))
        if is_surplus(study, trial.number, request.trials):
            fail(study, trial.number, f"surplus: the study already had {request.trials} trials")
            return None
        try:
            point = trial_point(trial, request.study, params_text, workdir)
        except SweepError as err:
            fail(study, trial.number, str(err))
            continue
        trial.set_user_attr(ATTR_EXPERIMENT, point.name)
        trial.set_user_attr(ATTR_CLONE, clone)
        return point
    raise SweepError(f"{MAX_INVALID_IN_A_ROW} sampled points in a row were refused; narrow the search space")


def start_workers(request: TuneRequest) -> None:
    """`dvc queue start -j N` with the trial link in the workers' environment (idempotent: live workers stay)."""
    processes.run(["dvc", "queue", "start", "-j", str(request.jobs)], request.repo, env=worker_env(request),
                  timeout=runner.TOOL_CALL_SECONDS)


def queue_trial(point: Point, request: TuneRequest) -> None:
    runner.queue_points([point], request.repo, request.stage)


def push_experiment(name: str, request: TuneRequest) -> None:
    """`dvc exp push REMOTE NAME`: the other clones see the trial after `dvc exp pull` (a failure is a warning:
    the study already has the result, and the push can be repeated by hand)."""
    if request.push is None:
        return
    try:
        runner.dvc(["exp", "push", request.push, name], request.repo)
    except CommandError as err:
        log.warning("could not push %s to %s (%s); push it later with `dvc exp push %s %s`", name, request.push,
                    processes.tail(str(err)), request.push, name)


def run_study(request: TuneRequest, workdir: Path) -> Any:
    """Ask, queue, collect and tell until the study has ``request.trials`` finished trials (across every clone)
    or ``request.timeout`` passed; returns the study. Trials still queued at a timeout stay running in the study:
    the next `signflow tune` collects them."""
    import optuna

    clone = clone_id(request.repo)
    study = open_study(request.storage, request.study, request.space, clone)
    dists = distributions(request.space)
    params_text = (request.repo / paths.PARAMS).read_text()
    load_params(request.repo / paths.PARAMS)  # the workspace's own params must be valid before anything runs
    runner.baseline_commit(request.repo)
    states = all_experiment_states(runner.exp_show(request.repo))
    active = adopt_running(study, clone, states)
    deadline = None if request.timeout is None else time.monotonic() + request.timeout
    failures, finished = 0, (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    while True:
        for name, number in list(active.items()):
            state = states.get(name)
            if state is not None and state.status in FINISHED_STATES:
                failed = state.status == FAILED
                note = runner.failure_notes([name], states, request.repo).get(name, "") if failed else ""
                log.info("trial %d (%s): %s", number, name, tell(study, number, state, request.space, note))
                del active[name]
                if not failed:
                    push_experiment(name, request)
        while len(active) < request.jobs and len(counted(study)) < request.trials:
            point = ask_trial(study, request, dists, params_text, workdir, clone)
            if point is None:
                break
            if point.name in states:
                fail(study, point.index - 1, f"experiment name {point.name} is taken in this repository")
                raise SweepError(f"experiment {point.name} already exists here (from another study of that name?): "
                                 "give another --study or remove it (dvc exp remove)")
            queue_trial(point, request)
            active[point.name] = point.index - 1
        if not active:
            done = len(study.get_trials(deepcopy=False, states=finished))
            log.info("study %s: %d finished trials (%d requested)", request.study, done, request.trials)
            return study
        if any(states.get(name, ExperimentState(QUEUED, {}, {})).status == QUEUED for name in active):
            start_workers(request)  # also restarts workers that left when the queue ran empty between trials
        if deadline is not None and time.monotonic() >= deadline:
            log.error("timed out after %.0f s; still running: %s (`signflow tune` again collects them)",
                      request.timeout, ", ".join(active))
            return study
        time.sleep(runner.POLL_SECONDS)
        polled, failures = poll(request.repo, failures)
        states = polled if polled is not None else states


# ------------------------------------------------------------------ results


def trial_rows(study: Any, keys: Sequence[str]) -> list[dict[str, Any]]:
    """One row per trial of the study (every clone's): number, state, experiment, params, value, epochs, note."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        rows.append({"trial": trial.number, "state": trial.state.name,
                     "experiment": trial.user_attrs.get(ATTR_EXPERIMENT, ""),
                     **{key: trial.params.get(key) for key in keys},
                     "value": trial.value if trial.state.name == "COMPLETE" else None,
                     "epochs_run": trial.user_attrs.get(ATTR_EPOCHS),
                     "note": trial.user_attrs.get(ATTR_NOTE, "")})
    return rows


def best_trial(study: Any) -> Any | None:
    """The best complete trial, or None when no trial completed."""
    import optuna

    return study.best_trial if study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) else None


def write_plots(study: Any, out_dir: Path, name: str, n_params: int) -> list[Path]:
    """Optimisation history and (two params or more, two complete trials or more) parameter importances as PNGs;
    a plot Optuna cannot draw is one warning."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as plots

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    wanted = {"history": plots.plot_optimization_history}
    if n_params >= 2 and len(complete) >= 2:
        wanted["importance"] = plots.plot_param_importances
    written = []
    for kind, draw in wanted.items():
        path = out_dir / f"{name}-{kind}.png"
        try:
            with warnings.catch_warnings():  # "experimental" since Optuna 2.2: nothing a user can act on
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = draw(study)
            axes.figure.savefig(path, bbox_inches="tight")
            plt.close(axes.figure)
        except Exception as err:  # a plot is a convenience: the table is the result
            log.warning("could not draw the %s plot: %s", kind, processes.tail(str(err)))
            continue
        written.append(path)
    return written


def outcome_metrics(study: Any, space: Space) -> dict[str, float]:
    """What the MLflow parent run logs: each complete trial's value and the best."""
    metrics = {f"{trial.user_attrs.get(ATTR_EXPERIMENT, trial.number)}/{space.metric}": trial.value
               for trial in study.get_trials(deepcopy=False) if trial.state.name == "COMPLETE"}
    best = best_trial(study)
    if best is not None:
        metrics[f"best/{space.metric}"] = best.value
    return metrics


def is_done(study: Any, wanted: int, clone: str) -> bool:
    """Whether the study has its ``wanted`` trials and none of this clone's is still running; another clone's
    running trials count (that clone collects them), and are named in the log."""
    running = [trial for trial in counted(study) if trial.state.name == "RUNNING"]
    own = [trial.number for trial in running if trial.user_attrs.get(ATTR_CLONE) == clone]
    others = [trial.number for trial in running if trial.user_attrs.get(ATTR_CLONE) != clone]
    if others and not own:
        log.info("trials %s run in other clones; their results reach the study when those clones tell them",
                 ", ".join(map(str, others)))
    return len(counted(study)) >= wanted and not own


def own_experiments(study: Any, clone: str) -> list[str]:
    return [trial.user_attrs[ATTR_EXPERIMENT] for trial in study.get_trials(deepcopy=False)
            if trial.user_attrs.get(ATTR_CLONE) == clone and ATTR_EXPERIMENT in trial.user_attrs]

