"""MLflow tracking that never costs a training run.

One MLflow run per train-stage execution; evaluate and report reopen it by the
id stored in ``models/run.json``. The store defaults to ``sqlite:///mlflow.db``
at the *main* repository root (``DVC_ROOT``, which DVC points at the parent
repo when running queued experiments in temporary copies), so every experiment
lands in one store. If the tracking server is down, a warning says so, local
metrics are still written, and ``signflow log-run`` re-logs them later.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signflow.files import write_json
from signflow.logs import first_line
from signflow.provenance import INPUT_FILES_TAG, SPLIT_CONTEXTS, Lineage, collect_lineage

log = logging.getLogger(__name__)

EXPERIMENT = "signflow"
STORE_FILE = "mlflow.db"
# Fail fast instead of MLflow's default minutes of retries against a dead server.
FAST_FAIL_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
RELOG_HINT = "re-log this run later with `signflow log-run` once the tracking server is reachable"
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH)


def resolve_tracking_uri(cwd: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI, else sqlite at the main repo root (shared by queued experiments)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    root = Path(os.environ.get("DVC_ROOT") or cwd or Path.cwd()).resolve()
    return f"sqlite:///{root / STORE_FILE}"


def param_text(value: Any) -> str:
    """A param's MLflow value: its text, cut to MLflow's limit (a long ``split.exclude``; params.yaml has it all).

    A longer value fails the whole ``log_params`` batch, which would turn tracking off for the stage.
    """
    text = str(value)
    if len(text) <= MAX_PARAM_CHARS:
        return text
    marker = f"... ({len(text)} characters in all)"
    return text[:MAX_PARAM_CHARS - len(marker)] + marker


class Tracker:
    """A guarded MLflow run: the first failure disables tracking with one warning."""

    def __init__(self, uri: str, run_id: str | None = None):
        self.uri, self.run_id, self.enabled = uri, run_id, True
        for key, value in FAST_FAIL_ENV.items():
            os.environ.setdefault(key, value)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # any MLflow/network error: the run itself must go on
            self.enabled = False
            log.warning("MLflow %s failed at %s (%s); tracking is off for this stage, local metrics are kept; %s",
                        what, self.uri, first_line(err), RELOG_HINT)
            return None

    def start(self, run_name: str, tags: Mapping[str, str]) -> str | None:
        import mlflow

        def _start() -> str:
            mlflow.set_tracking_uri(self.uri)
            mlflow.set_experiment(EXPERIMENT)
            # System metrics (CPU, memory, disk; GPU where one is) every 10 s while the stage runs.
            run = mlflow.start_run(run_id=self.run_id, run_name=None if self.run_id else run_name, tags=dict(tags),
                                   log_system_metrics=True)
            return run.info.run_id

        self.run_id = self._call("start_run", _start)
        return self.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        import mlflow

        self._call("log_params", mlflow.log_params, {k: param_text(v) for k, v in params.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import mlflow

        numeric = {k.replace("@", "_at_"): float(v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self._call("log_metrics", mlflow.log_metrics, numeric, step=step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        import mlflow

        if path.is_dir():
            self._call("log_artifacts", mlflow.log_artifacts, str(path), artifact_path)
        elif path.exists():
            self._call("log_artifact", mlflow.log_artifact, str(path), artifact_path)

    def log_lineage(self, lineage: Lineage) -> None:
        """The run's origin (signflow.provenance): its tags, and each split as a dataset input.

        MLflow keeps one input per dataset name and digest, so the stages that
        reopen the run add only the splits not yet there.
        """
        import mlflow
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        self._call("set_tags", mlflow.set_tags, lineage.tags)
        if lineage.inputs:
            with warnings.catch_warnings():  # "can be interpreted in multiple ways": the local path, either way
                warnings.simplefilter("ignore", UserWarning)
                datasets = [MetaDataset(resolve_dataset_source(i.source), name=i.name, digest=i.digest)
                            for i in lineage.inputs]
            self._call("log_inputs", mlflow.log_inputs, datasets, [i.context for i in lineage.inputs],
                       [{INPUT_FILES_TAG: i.files} if i.files else None for i in lineage.inputs])

    def log_model(
        self, log: Callable[[], Any], *, registry_name: str, version_tags: Mapping[str, str]
    ) -> str | None:
        """Run ``log`` (it logs a model into the active run and returns MLflow's ModelInfo), guarded, and tag
        the registered version (its lineage). Returns the version, or None when not registered."""

        def _log() -> str | None:
            import mlflow

            version = log().registered_model_version
            if version is None:
                return None
            client = mlflow.MlflowClient()
            for key, value in version_tags.items():
                client.set_model_version_tag(registry_name, str(version), key, value)
            return str(version)

        return self._call("log_model", _log)

    def describe_version(self, registry_name: str, version: str, description: str) -> None:
        """The registered version's description, shown on its page in the MLflow UI."""
        import mlflow

        self._call("update_model_version", lambda: mlflow.MlflowClient().update_model_version(
            registry_name, version, description=description))

    def end(self, status: str = "FINISHED") -> None:
        import mlflow

        self._call("end_run", mlflow.end_run, status=status)


@contextmanager
def tracked_run(
    run_file: Path, run_name: str, tags: Mapping[str, str], *, reuse: bool, uri: str | None = None
) -> Iterator[Tracker]:
    """Open (or, with ``reuse``, reopen from ``run_file``) a run; mark it KILLED on error.

    With ``reuse`` and no ``run_file`` (no train run was ever recorded) a new run
    is opened; a ``run_file`` without an id (the server was down when training
    started) means logging nothing, so `signflow log-run` later makes one whole run.
    """
    run_id = read_run_id(run_file) if reuse else None
    tracker = Tracker(uri or resolve_tracking_uri(), run_id)
    if reuse and run_id is None and run_file.exists():
        # The train run never reached the server: a stray run here would split the results.
        tracker.enabled = False
        log.warning("no MLflow run id in %s, so this stage logs nothing; %s", run_file, RELOG_HINT)
    tracker.start(run_name, tags)
    if not reuse:
        write_json(run_file, {"run_id": tracker.run_id, "tracking_uri": tracker.uri, "run_name": run_name})
    try:
        yield tracker
    except BaseException:
        tracker.end("KILLED")
        raise
    tracker.end()


def read_run_id(run_file: Path) -> str | None:
    """The run id the train stage recorded, or None (no file, or its server was down)."""
    if not run_file.exists():
        return None
    return json.loads(run_file.read_text()).get("run_id")


def run_name_for(backbone: str, strategy: str) -> str:
    """DVC's experiment name when queued/run by `dvc exp run`, else backbone-strategy."""
    return os.environ.get("DVC_EXP_NAME") or f"{backbone}-{strategy}"


# ---- `signflow log-run`: re-log a run from the files the stages wrote ------------------


@dataclass(frozen=True)
class RunFiles:
    """The local outputs a run is re-logged from; the CLI fills them in from ``signflow.paths``."""

    params: Path
    history: Path
    summaries: tuple[Path, ...]  # flat JSON metrics files (train, evaluate, export, their timings); absent: skipped
    model: Path
    reports: Path
    run_file: Path  # where the new run id is recorded for later stages
    root: Path  # the repository, for the git commit and the default store


def relog_outputs(files: RunFiles, uri: str | None = None) -> str | None:
    """Complete the run in ``files.run_file`` from the local outputs, or log them as a new run.

    After a tracking-server outage the train stage's run holds what was logged
    before the server went away. Re-logging into it (not a new run) adds only
    what is missing: params not yet set, per-epoch points whose step is absent,
    summary metrics not yet there; artifacts are uploaded to the same paths.
    So running it twice, or after a complete run, duplicates nothing. The run
    ends FINISHED. Returns the run id, or None when the server is unreachable.
    """
    from mlflow.tracking import MlflowClient

    from signflow.catalog import flatten
    from signflow.config import load_config

    tracker = Tracker(uri or resolve_tracking_uri(files.root))
    client = MlflowClient(tracking_uri=tracker.uri)
    cfg = load_config(files.params)
    name = run_name_for(cfg.model.backbone, cfg.strategy)
    existing = _reachable_run(client, read_run_id(files.run_file), tracker.uri)
    if existing is False:
        return None
    tracker.run_id = existing.info.run_id if existing else None
    lineage = collect_lineage(files.root, tuple(SPLIT_CONTEXTS))
    if tracker.start(name, {"relogged": "true", **lineage.tags}) is None:
        return None
    tracker.log_lineage(lineage)
    logged = existing.data if existing else None
    tracker.log_params({k: v for k, v in flatten(cfg.to_dict()).items() if not logged or k not in logged.params})
    _relog_history(tracker, client, files.history)
    for summary in files.summaries:
        if summary.exists():
            values = json.loads(summary.read_text())
            tracker.log_metrics({k: v for k, v in values.items() if not logged or _metric_key(k) not in logged.metrics})
    tracker.log_artifact(files.history)
    tracker.log_artifact(files.model, "model")
    tracker.log_artifact(files.reports, "report")
    tracker.end()
    if not tracker.enabled:
        return None
    write_json(files.run_file, {"run_id": tracker.run_id, "tracking_uri": tracker.uri, "run_name": name})
    return tracker.run_id


def _metric_key(name: str) -> str:
    """How Tracker.log_metrics names a metric in MLflow (no '@' allowed there)."""
    return name.replace("@", "_at_")


def _reachable_run(client: Any, run_id: str | None, uri: str) -> Any:
    """The recorded run if the server has it; None to start a new run; False if the server is unreachable."""
    from mlflow.exceptions import MlflowException

    try:
        client.search_experiments(max_results=1)  # is the server there at all?
    except Exception as err:  # any MLflow/network error
        log.warning("MLflow at %s is unreachable (%s)", uri, first_line(err))
        return False
    if run_id is None:
        return None
    try:
        run = client.get_run(run_id)
    except MlflowException:
        log.warning("run %s is not on %s (deleted, or another server): logging a new run", run_id, uri)
        return None
    if run.info.lifecycle_stage == "deleted":  # deleted in the UI, not yet garbage-collected: cannot be reopened
        log.warning("run %s was deleted on %s: logging a new run", run_id, uri)
        return None
    return run


def _relog_history(tracker: Tracker, client: Any, history: Path) -> None:
    """Per-epoch metrics whose step the run does not have yet (step = epoch)."""
    import pandas as pd

    if not history.exists() or tracker.run_id is None:
        return
    rows = pd.read_csv(history).to_dict(orient="records")
    keys = [k for k in (rows[0] if rows else {}) if k != "epoch"]
    have = {k: {m.step for m in client.get_metric_history(tracker.run_id, _metric_key(k))} for k in keys}
    for row in rows:
        step = int(row["epoch"])
        missing = {k: row[k] for k in keys if step not in have[k]}
        if missing:
            tracker.log_metrics(missing, step=step)
