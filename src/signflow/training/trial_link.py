"""The link from a training run to its Optuna trial: environment settings, never params.yaml keys.

`signflow tune` starts the DVC queue's workers with the study's storage URL and
name in their environment (``SIGNFLOW_TUNE_STORAGE``, ``SIGNFLOW_TUNE_STUDY``);
DVC gives each queued experiment's stages its name (``DVC_EXP_NAME``), and the
trial carries that name as its ``dvc_experiment`` user attribute. So the train
stage finds its own trial, reports each epoch's validation metric to it and
stops when the study prunes it, while the experiment's params stay exactly what
a run outside a study needs: `dvc exp apply` + `dvc repro` reproduce a trial
without Optuna. Without these variables (any run outside a study) this module
does nothing and imports nothing; Optuna is imported only when they are set.

The study's objective (which validation metric) and pruner are study user
attributes written by `signflow tune`, so the worker builds the same pruner the
tuner chose; the pruners are named here, in the one registry both sides use.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

STORAGE_ENV = "SIGNFLOW_TUNE_STORAGE"
STUDY_ENV = "SIGNFLOW_TUNE_STUDY"
EXPERIMENT_ENV = "DVC_EXP_NAME"  # set by DVC for each queued experiment's stages
ATTR_EXPERIMENT = "dvc_experiment"  # trial user attr: the DVC experiment running the trial
ATTR_METRIC = "signflow.metric"  # study user attr: the per-epoch validation metric (an EpochStats field)
ATTR_PRUNER = "signflow.pruner"  # study user attr: {"name": ..., **keyword arguments}
# Pruner name -> optuna.pruners class name; the keyword arguments are the class's own.
PRUNERS = {"median": "MedianPruner", "successive_halving": "SuccessiveHalvingPruner", "none": "NopPruner"}
# Metric -> whether larger is better: what a study may optimise, per epoch and as the run's best.
METRICS = {"val_accuracy": True, "val_loss": False}
# SQLite: the tuner and every worker write the same file; wait this long (s) for its lock, not SQLite's 5 s.
SQLITE_BUSY_SECONDS = 60
STORAGE_OPEN_ATTEMPTS, STORAGE_RETRY_SECONDS = 3, 1.0  # a new storage opened by two clones at once


@dataclass(frozen=True)
class TrialLink:
    """Where the study is and which experiment this run is."""

    storage: str
    study: str
    experiment: str


def link_from_env(environ: Mapping[str, str] = os.environ) -> TrialLink | None:
    """The link when this process runs as a trial (all three variables set), else None."""
    storage, study, experiment = (environ.get(name, "") for name in (STORAGE_ENV, STUDY_ENV, EXPERIMENT_ENV))
    return TrialLink(storage, study, experiment) if storage and study and experiment else None


def open_storage(url: str) -> Any:
    """Optuna's storage at ``url`` (any SQLAlchemy URL); SQLite waits for a busy file instead of failing.

    Two clones opening a new storage at once both create its schema and one of them fails ("table ... already
    exists", or the UNIQUE alembic_version row): the schema is there then, so opening again succeeds.
    """
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    kwargs = {"connect_args": {"timeout": SQLITE_BUSY_SECONDS}} if url.startswith("sqlite") else {}
    for attempt in range(STORAGE_OPEN_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except (IntegrityError, OperationalError):
            if attempt == STORAGE_OPEN_ATTEMPTS - 1:
                raise
            time.sleep(STORAGE_RETRY_SECONDS)
    raise AssertionError("unreachable")


def create_pruner(spec: Mapping[str, Any]) -> Any:
    """The Optuna pruner ``spec`` names ({"name": "median", "n_startup_trials": 2, ...}); TypeError for a bad
    keyword, KeyError for an unknown name."""
    import optuna

    options = {key: value for key, value in spec.items() if key != "name"}
    return getattr(optuna.pruners, PRUNERS[spec["name"]])(**options)


class TrialReporter:
    """An epoch callback: report the epoch's metric to the trial; True (stop) when the study prunes it."""

    def __init__(self, trial: Any, metric: str):
        self.trial, self.metric = trial, metric

    def __call__(self, stats: Any) -> bool:
        value = float(getattr(stats, self.metric))
        self.trial.report(value if math.isfinite(value) else math.nan, stats.epoch)
        if self.trial.should_prune():
            log.info("trial %d pruned by its study after epoch %d", self.trial.number, stats.epoch + 1)
            return True
        return False


def _find_trial(study: Any, experiment: str) -> Any:
    import optuna

    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if frozen.user_attrs.get(ATTR_EXPERIMENT) == experiment:
            return optuna.trial.Trial(study, frozen._trial_id)  # the ask-and-tell handle of a trial by id
    return None


def trial_callbacks(environ: Mapping[str, str] = os.environ) -> list[Callable[[Any], bool]]:
    """The pruning callback when this run is a trial of a reachable study, else none (warned when linked)."""
    link = link_from_env(environ)
    if link is None:
        return []
    try:
        import optuna
    except ImportError:
        log.warning("%s is set but Optuna is not installed: this trial runs without pruning", STORAGE_ENV)
        return []
    try:
        storage = open_storage(link.storage)
        attrs = optuna.load_study(study_name=link.study, storage=storage).user_attrs
        study = optuna.load_study(study_name=link.study, storage=storage, pruner=create_pruner(attrs[ATTR_PRUNER]))
        trial = _find_trial(study, link.experiment)
    except Exception as err:  # a store that cannot be read must not fail the training run itself
        log.warning("cannot reach study %s at %s (%s): this trial runs without pruning", link.study, link.storage,
                    str(err).splitlines()[0] if str(err) else type(err).__name__)
        return []
    if trial is None:
        log.warning("no running trial of study %s is experiment %s: it runs without pruning", link.study,
                    link.experiment)
        return []
    log.info("experiment %s is trial %d of study %s", link.experiment, trial.number, link.study)
    return [TrialReporter(trial, attrs[ATTR_METRIC])]
