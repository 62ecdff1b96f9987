"""``signflow trace REF --restore DIR``: the recorded state rebuilt in a new clone, and proven.

Clone the recorded repository, check out the recorded commit, bring in the
DVC experiment when the model came from one (``dvc exp pull``: its git ref
from the git remote, its outputs from the DVC remote; then ``dvc exp apply``),
``dvc pull`` every output from the DVC remote, and compare the restored ``models/onnx/`` with the files the registry
serves, byte for byte. A restore that does not match fails, naming each file
that differs: a model whose origin cannot be rebuilt is worth knowing about.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signflow.files import file_digest
from signflow.lineage.refs import Origin
from signflow.processes import GIT_SECONDS, run
from signflow.provenance import TAG_COMMIT, TAG_EXPERIMENT, TAG_REPOSITORY, UNKNOWN, WORKSPACE

log = logging.getLogger(__name__)

ONNX_DIR = Path("models/onnx")  # signflow.paths.ONNX_DIR, the export stage's out
SIDECAR, MODEL_FILE = "model.json", "model.onnx"
CLONE_SECONDS = 600.0
PULL_SECONDS = 3600.0  # a full `dvc pull` of a real dataset over a slow link
HASH = "sha256"


class RestoreError(RuntimeError):
    """The recorded state could not be rebuilt, or it does not reproduce the registered model."""


@dataclass(frozen=True)
class Restored:
    directory: Path
    commit: str
    experiment: str
    files: dict[str, str]  # file name in models/onnx -> sha256, equal in the registry and the restore


def _checked_target(directory: Path) -> Path:
    if directory.exists() and any(directory.iterdir()):
        raise RestoreError(f"{directory} is not empty: --restore needs a new or empty folder")
    return directory


def checkout(origin: Origin, directory: Path, repository: str | None) -> tuple[str, str]:
    """Clone, check out the commit, apply the experiment, pull the data and models; (commit, experiment)."""
    tags = origin.run.data.tags
    commit, experiment = tags.get(TAG_COMMIT, UNKNOWN), tags.get(TAG_EXPERIMENT, WORKSPACE)
    source = repository or tags.get(TAG_REPOSITORY)
    if commit == UNKNOWN or not source:
        raise RestoreError(f"{origin.label} recorded no git commit or repository: there is nothing to restore from")
    _checked_target(directory).parent.mkdir(parents=True, exist_ok=True)
    log.info("cloning %s into %s at %s", source, directory, commit[:12])
    run(["git", "clone", "-q", source, str(directory)], directory.parent, timeout=CLONE_SECONDS)
    run(["git", "checkout", "-q", "--detach", commit], directory, timeout=GIT_SECONDS)
    if experiment != WORKSPACE:
        log.info("bringing in DVC experiment %s", experiment)
        # With its cache from the DVC remote: `exp apply` checks the outputs out.
        run(["dvc", "exp", "pull", "origin", experiment], directory, timeout=PULL_SECONDS)
        run(["dvc", "exp", "apply", experiment], directory, timeout=CLONE_SECONDS)
    log.info("dvc pull from the DVC remote")
    run(["dvc", "pull"], directory, timeout=PULL_SECONDS)
    return commit, experiment


def model_folder(downloaded: Path) -> Path:
    """The folder holding model.onnx and model.json inside a downloaded MLflow model."""
    found = [p.parent for p in sorted(downloaded.rglob(MODEL_FILE)) if (p.parent / SIDECAR).exists()]
    if not found:
        raise RestoreError(f"the registered model at {downloaded} holds no {MODEL_FILE} with its {SIDECAR}")
    return found[0]


def _file_names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file()} if folder.is_dir() else set()


def differences(registered: Path, restored: Path) -> tuple[list[str], dict[str, str]]:
    """Each file that is missing on one side or differs, and the sha256 of those that match."""
    names = sorted(_file_names(registered) | _file_names(restored))
    problems, matching = [], {}
    for name in names:
        ours, theirs = restored / name, registered / name
        if not ours.is_file() or not theirs.is_file():
            problems.append(f"{name}: only in the {'registry' if theirs.is_file() else 'restore'}")
            continue
        a, b = file_digest(theirs, HASH), file_digest(ours, HASH)
        if a != b:
            problems.append(f"{name}: {HASH} {a[:16]} in the registry, {b[:16]} restored "
                            f"({theirs.stat().st_size} vs {ours.stat().st_size} bytes)")
        else:
            matching[name] = a
    return problems, matching


def download_model(origin: Origin, uri: str, into: Path) -> Path:
    """The registered version's files (or, for an unregistered run, its logged model), downloaded."""
    import mlflow

    from signflow.serving.mlflow_model import MODEL_NAME

    mlflow.set_tracking_uri(uri)
    source = (f"models:/{origin.version.name}/{origin.version.version}" if origin.version is not None
              else f"runs:/{origin.run.info.run_id}/{MODEL_NAME}")
    return model_folder(Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(into))))


def restore(origin: Origin, directory: Path, *, repository: str | None, tracking_uri: str) -> Restored:
    """Rebuild ``origin``'s state in ``directory`` and prove its models/onnx/ equals the registered files."""
    commit, experiment = checkout(origin, directory, repository)
    with tempfile.TemporaryDirectory(prefix="signflow-registered-") as tmp:
        registered = download_model(origin, tracking_uri, Path(tmp))
        problems, matching = differences(registered, directory / ONNX_DIR)
    if problems:
        raise RestoreError(f"the restored {ONNX_DIR} in {directory} is not {origin.label}: " + "; ".join(problems))
    return Restored(directory, commit, experiment, matching)


def restored_text(restored: Restored, origin: Any) -> str:
    lines = [f"restored {origin.label} into {restored.directory}: commit {restored.commit[:12]}, "
             f"experiment {restored.experiment}; models/onnx matches the registry byte for byte:"]
    lines += [f"  {name}  {HASH} {digest}" for name, digest in restored.files.items()]
    return "\n".join(lines)
