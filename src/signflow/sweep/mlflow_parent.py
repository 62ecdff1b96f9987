"""A finished sweep as one MLflow parent run, its experiments' runs nested under it.

The link is made after the experiments finish, from outside them: each
experiment's run is found by its tags (``dvc_experiment`` = the DVC experiment
name, ``dvc_baseline`` = the commit the sweep ran on; ``signflow.provenance``
sets both) and given MLflow's ``mlflow.parentRunId`` and ``signflow.sweep`` tags.
So the stages and ``signflow.tracking`` need no sweep logic, queued runs in
DVC's temporary workspaces are linked like any other, and a run logged later by
``signflow log-run`` (after a tracking-server outage) has the same tags. The
parent holds the results table (Markdown and CSV) and the aggregated metrics.
Tracking is a record, not the result: any MLflow failure is one warning, and the
sweep's table is written regardless.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from signflow.logs import first_line
from signflow.provenance import TAG_BASELINE, TAG_EXPERIMENT
from signflow.tracking import EXPERIMENT, FAST_FAIL_ENV

log = logging.getLogger(__name__)

TAG_SWEEP = "signflow.sweep"
TAG_PARENT = "mlflow.parentRunId"  # MLflow's own nesting tag (what mlflow.start_run(nested=True) sets)
ARTIFACT_DIR = "sweep"
MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit


@dataclass(frozen=True)
class Linked:
    """The parent run's id, and the experiments whose runs were found and nested under it."""

    parent_id: str
    children: dict[str, str] = field(default_factory=dict)  # experiment name -> run id
    missing: list[str] = field(default_factory=list)  # experiments with no run (e.g. a point equal to the baseline)


def find_run(client: Any, experiment_id: str, name: str, baseline: str) -> str | None:
    """The newest run of DVC experiment ``name`` on ``baseline``, by the tags every stage's run carries."""
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.{TAG_EXPERIMENT} = '{name}' and tags.{TAG_BASELINE} = '{baseline}'",
        order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def _log_metrics(client: Any, run_id: str, metrics: Mapping[str, float]) -> None:
    from mlflow.entities import Metric

    items = [Metric(key, float(value), 0, 0) for key, value in metrics.items()]
    for start in range(0, len(items), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=items[start:start + MAX_METRICS_PER_BATCH])


def link_sweep(
    uri: str, name: str, baseline: str, experiments: Sequence[str], artifacts: Sequence[Path] = (),
    metrics: Mapping[str, float] | None = None,
) -> Linked:
    """Create the sweep's parent run ``name`` in experiment "signflow" at ``uri`` (tagged ``signflow.sweep``),
    log ``artifacts`` and ``metrics`` to it, and nest each experiment's run under it. Raises MLflow's errors."""
    from mlflow.tracking import MlflowClient

    for key, value in FAST_FAIL_ENV.items():
        os.environ.setdefault(key, value)
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = found.experiment_id if found else client.create_experiment(EXPERIMENT)
    parent = client.create_run(experiment_id, run_name=name, tags={TAG_SWEEP: name, TAG_BASELINE: baseline})
    parent_id = parent.info.run_id
    linked = Linked(parent_id)
    try:
        for path in artifacts:
            client.log_artifact(parent_id, str(path), ARTIFACT_DIR)
        _log_metrics(client, parent_id, metrics or {})
        for experiment in experiments:
            run_id = find_run(client, experiment_id, experiment, baseline)
            if run_id is None:
                linked.missing.append(experiment)
                continue
            client.set_tag(run_id, TAG_PARENT, parent_id)
            client.set_tag(run_id, TAG_SWEEP, name)
            linked.children[experiment] = run_id
    except Exception:
        client.set_terminated(parent_id, "FAILED")
        raise
    client.set_terminated(parent_id, "FINISHED")
    return linked


def record_sweep(
    uri: str, name: str, baseline: str, experiments: Sequence[str], artifacts: Sequence[Path] = (),
    metrics: Mapping[str, float] | None = None,
) -> Linked | None:
    """``link_sweep``, guarded: an unreachable or failing store is one warning (the table is written anyway)."""
    try:
        linked = link_sweep(uri, name, baseline, experiments, artifacts, metrics)
    except Exception as err:  # any MLflow/network error: the sweep's results are its table, not this record
        log.warning("MLflow: could not record sweep %s at %s (%s); the table is written, the runs stay unlinked",
                    name, uri, first_line(err))
        return None
    if linked.missing:
        log.warning("MLflow: no run found for %s (a point equal to the baseline trains nothing; a run cut off by a "
                    "server outage appears after `signflow log-run`)", ", ".join(linked.missing))
    log.info("MLflow: sweep %s is run %s with %d nested runs", name, linked.parent_id, len(linked.children))
    return linked
