"""What a user names a model by, resolved to its MLflow run and registered version.

``signflow trace`` and ``signflow promote`` accept the names people use:
``models:/signflow/3`` and ``models:/signflow@champion`` (MLflow's model URIs),
a bare version number or alias of the project's registered model (``3``,
``champion``, ``previous``), a run id, or a DVC experiment name (the run whose
``dvc_experiment`` tag holds it, the latest if several do).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from signflow.provenance import TAG_EXPERIMENT
from signflow.tracking import EXPERIMENT

MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
ALIAS = re.compile(r"^[A-Za-z][\w-]*$")


class ModelReferenceError(LookupError):
    """A reference that names no registered version, run or experiment; the message says what was tried."""


@dataclass(frozen=True)
class Origin:
    """A resolved reference: the MLflow run, and the registered version when there is one."""

    reference: str
    run: Any  # mlflow.entities.Run
    version: Any | None  # mlflow.entities.model_registry.ModelVersion

    @property
    def label(self) -> str:
        if self.version is not None:
            return f"models:/{self.version.name}/{self.version.version}"
        return f"run {self.run.info.run_id}"


def _version(client: Any, name: str, version: str | None, alias: str | None) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, version) if version else client.get_model_version_by_alias(name, alias)
    except MlflowException as err:
        what = f"version {version}" if version else f"alias @{alias}"
        raise ModelReferenceError(f"registered model {name!r} has no {what} ({err.message.splitlines()[0]})") from None


def version_of_run(client: Any, name: str, run_id: str) -> Any | None:
    """The newest version of ``name`` registered from ``run_id``, or None."""
    versions = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    return max(versions, key=lambda v: int(v.version)) if versions else None


def resolve(client: Any, reference: str, registry_name: str) -> Origin:
    """The run and version ``reference`` names; :class:`ModelReferenceError` when it names nothing."""
    from mlflow.exceptions import MlflowException

    match = MODELS_URI.match(reference)
    if match:
        version = _version(client, match["name"], match["version"], match["alias"])
        return Origin(reference, client.get_run(version.run_id), version)
    if reference.isdigit() or (ALIAS.match(reference) and _has_alias(client, registry_name, reference)):
        version = _version(client, registry_name, reference if reference.isdigit() else None,
                           None if reference.isdigit() else reference)
        return Origin(reference, client.get_run(version.run_id), version)
    if RUN_ID.match(reference):
        try:
            run = client.get_run(reference)
        except MlflowException:
            raise ModelReferenceError(f"no MLflow run {reference} on this tracking server") from None
        return Origin(reference, run, version_of_run(client, registry_name, reference))
    return _experiment(client, reference, registry_name)


def _has_alias(client: Any, name: str, alias: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        return alias in client.get_registered_model(name).aliases
    except MlflowException:
        return False


def _experiment(client: Any, name: str, registry_name: str) -> Origin:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = [] if experiment is None else client.search_runs(
        [experiment.experiment_id], f"tags.{TAG_EXPERIMENT} = '{name}'", order_by=["attributes.start_time DESC"],
        max_results=1)
    if not runs:
        raise ModelReferenceError(
            f"{name!r} is not a model URI (models:/NAME/VERSION, models:/NAME@ALIAS), a version or alias of "
            f"{registry_name!r}, a run id, or a DVC experiment with an MLflow run")
    return Origin(name, runs[0], version_of_run(client, registry_name, runs[0].info.run_id))
