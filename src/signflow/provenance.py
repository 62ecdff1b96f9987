"""What a run records about its origin: git, DVC and the data it read.

MLflow knows a run's params and metrics; DVC knows which data each stage read.
This module ties them: every split a stage uses becomes an MLflow dataset
input whose digest is the hash ``dvc.lock`` holds for ``data/dataset`` and
whose source is where DVC keeps that hash (the default remote, else the local
cache), so ``dvc pull`` of the recorded commit or experiment brings back the
very bytes. The per-file hashes of the split inside that folder ride along as
an input tag, so a change to the test split alone is visible too. Tags name
the commit, whether the workspace had uncommitted changes, the DVC experiment
and its baseline commit, and the hash of ``dvc.lock`` as the stage saw it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from signflow.files import file_digest
from signflow.processes import GIT_SECONDS, CommandError, git_head, run

log = logging.getLogger(__name__)

LOCK_FILE = Path("dvc.lock")
PIPELINE_FILE = Path("dvc.yaml")
OUTPUT_KEYS = ("outs", "metrics", "plots")  # a dvc.yaml stage's entries that DVC writes
DATASET_OUT = "data/dataset"  # the add_unknown stage's out: every split, decoded (signflow.paths.DATASET_DIR)
DATASET_STAGE = "add_unknown"
# MLflow's dataset contexts, and the files of each split inside data/dataset (signflow.data.arrays).
SPLIT_CONTEXTS = {"train": "train", "val": "validation", "test": "test"}
SPLIT_SUFFIXES = (".csv", ".npy")
UNKNOWN = "unknown"
WORKSPACE = "workspace"  # the DVC experiment name of a plain `dvc repro`

# Tag names, shared by the runs and the registered versions (and read back by `signflow trace`).
TAG_COMMIT = "git_commit"
TAG_DIRTY = "git_dirty"
TAG_EXPERIMENT = "dvc_experiment"
TAG_BASELINE = "dvc_baseline"
TAG_LOCK = "dvc_lock_md5"
TAG_REPOSITORY = "git_repository"
TAG_DATASET = "dvc.data/dataset"
INPUT_FILES_TAG = "dvc.files"  # an input tag: "train.csv=<md5> train.npy=<md5>"


@dataclass(frozen=True)
class DataInput:
    """One split as an MLflow dataset input."""

    context: str  # train | validation | test (MLflow's mlflow.data.context)
    name: str  # data/dataset:train
    digest: str  # DVC's hash of data/dataset, as dvc.lock holds it ("<md5>.dir", 36 characters)
    source: str  # where DVC keeps that hash: the default remote's URL and path, else the local cache
    files: str = ""  # the split's files inside the folder with their DVC md5s, when the listing is in the cache


@dataclass(frozen=True)
class Lineage:
    """A run's origin: tags for the run and its registered version, and its data inputs."""

    tags: dict[str, str] = field(default_factory=dict)
    inputs: tuple[DataInput, ...] = ()

    def summary(self) -> dict[str, Any]:
        """The tags, with the inputs by context: what the model card prints."""
        datasets = {i.context: {"name": i.name, "digest": i.digest, "source": i.source, "files": i.files}
                    for i in self.inputs}
        return {**self.tags, "datasets": datasets}


def read_lock(root: Path) -> dict:
    """``dvc.lock`` parsed, or {} when there is none (a stage run by hand before any `dvc repro`)."""
    import yaml

    path = root / LOCK_FILE
    return yaml.safe_load(path.read_text()) or {} if path.exists() else {}


def out_hash(lock: Mapping, stage: str, path: str) -> str | None:
    """The md5 ``dvc.lock`` records for ``stage``'s out ``path``, or None."""
    outs = lock.get("stages", {}).get(stage, {}).get("outs", [])
    return next((out.get("md5") for out in outs if out.get("path") == path), None)


def _dvc_config(root: Path) -> dict:
    """DVC's merged configuration of the repository at ``root`` (system, global, repo, local)."""
    from dvc.config import Config

    return Config(dvc_dir=str(root / ".dvc"))


def _object_path(md5: str) -> str:
    """DVC 3's layout of an object in a cache or remote: ``files/md5/<first two hex digits>/<the rest>``."""
    return f"files/md5/{md5[:2]}/{md5[2:]}"


def cache_object(root: Path, md5: str) -> Path:
    """The object's path in the local cache (where a folder's listing can be read)."""
    cache = _dvc_config(root)["cache"].get("dir") or root / ".dvc" / "cache"
    return Path(cache).resolve() / _object_path(md5)


def storage_location(root: Path, md5: str) -> str:
    """Where DVC keeps the object ``md5``: under the default remote's URL, else in the local cache."""
    config = _dvc_config(root)
    name = config["core"].get("remote")
    if name and name in config["remote"]:
        return f"{str(config['remote'][name]['url']).rstrip('/')}/{_object_path(md5)}"
    return str(cache_object(root, md5))


def split_files(listing: Path, split: str) -> str:
    """"train.csv=<md5> train.npy=<md5>" from DVC's listing of the folder, or "" when it is not in the cache."""
    if not listing.exists():
        return ""
    entries = json.loads(listing.read_text())
    names = {f"{split}{suffix}" for suffix in SPLIT_SUFFIXES}
    return " ".join(f"{e['relpath']}={e['md5']}" for e in sorted(entries, key=lambda e: e["relpath"])
                    if e["relpath"] in names)


def data_inputs(root: Path, lock: Mapping, splits: Sequence[str]) -> tuple[DataInput, ...]:
    """``splits`` (train, val, test) of data/dataset as dataset inputs; () when dvc.lock has no hash for it."""
    digest = out_hash(lock, DATASET_STAGE, DATASET_OUT)
    if not digest:
        log.warning("dvc.lock has no hash for %s: the run records no data inputs (run the stages with `dvc repro`)",
                    DATASET_OUT)
        return ()
    try:
        source, listing = storage_location(root, digest), cache_object(root, digest)
    except Exception as err:  # any DVC config error: recording lineage must never cost a training run
        log.warning("cannot read DVC's configuration in %s (%s): the run records no data inputs", root, err)
        return ()
    return tuple(DataInput(SPLIT_CONTEXTS[split], f"{DATASET_OUT}:{split}", digest, source,
                           split_files(listing, split)) for split in splits)


def pipeline_outputs(root: Path) -> list[str]:
    """What ``dvc.yaml`` says the stages write (outs, metrics, plots), as paths."""
    import yaml

    path = root / PIPELINE_FILE
    stages = (yaml.safe_load(path.read_text()) or {}).get("stages", {}) if path.exists() else {}
    return [entry if isinstance(entry, str) else next(iter(entry))
            for stage in stages.values() for key in OUTPUT_KEYS for entry in stage.get(key) or []]


def workspace_dirty(root: Path) -> bool | None:
    """Whether git sees uncommitted changes in ``root`` besides what DVC writes (None outside git).

    A `dvc repro` rewrites ``dvc.lock`` and the outputs kept in git
    (``metrics/``, ``reports/``) as it goes, so they never count: the flag
    says whether the code, params or pipeline differ from the commit.
    """
    excluded = [f":(exclude){p}" for p in (LOCK_FILE.as_posix(), *pipeline_outputs(root))]
    try:
        result = run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded], root,
                     timeout=GIT_SECONDS, check=False)
    except CommandError:
        return None
    return bool(result.stdout.strip()) if result.returncode == 0 else None


def repository_url(root: Path) -> str:
    """Where `signflow trace --restore` clones from: the ``origin`` remote, else the main repository's folder.

    In a queued DVC experiment the stage runs in a temporary copy; ``DVC_ROOT``
    names the repository that holds the experiment refs.
    """
    main = Path(os.environ.get("DVC_ROOT") or root).resolve()
    try:
        result = run(["git", "remote", "get-url", "origin"], main, timeout=GIT_SECONDS, check=False)
    except CommandError:
        return str(main)
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else str(main)


def collect_lineage(root: Path, splits: Sequence[str]) -> Lineage:
    """The tags and data inputs of a stage in ``root`` that reads ``splits`` of data/dataset."""
    lock = read_lock(root)
    dirty = workspace_dirty(root)
    experiment = os.environ.get("DVC_EXP_NAME") or WORKSPACE
    tags = {
        TAG_COMMIT: git_head(root) or UNKNOWN,
        TAG_DIRTY: UNKNOWN if dirty is None else str(dirty).lower(),
        TAG_EXPERIMENT: experiment,
        TAG_BASELINE: os.environ.get("DVC_EXP_BASELINE_REV") or git_head(root) or UNKNOWN,
        TAG_LOCK: file_digest(root / LOCK_FILE, "md5") if (root / LOCK_FILE).exists() else UNKNOWN,
        TAG_REPOSITORY: repository_url(root),
    }
    inputs = data_inputs(root, lock, splits)
    if inputs:
        tags[TAG_DATASET] = inputs[0].digest
    return Lineage(tags, inputs)
