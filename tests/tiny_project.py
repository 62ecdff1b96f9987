"""The tiny pipeline the end-to-end tests run: the real stages on a few dozen 32 px synthetic images.

Shared by every test that needs a trained project (DVC remotes, the MLflow
server, queued experiments, sweeps): seconds per `dvc repro`, same code paths.
A test that needs it reproduced takes a ``reproduced_copy`` of the one build per
pytest run (the ``reproduced`` fixture) and re-runs only the stages it changes.
"""

from __future__ import annotations

import fcntl
import shutil
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from project_copy import Project, copy_built, copy_project, project_env

IMAGE_SIZE = 32
STORE = "mlflow.db"  # a project's MLflow store: sqlite beside the project, in its base folder
DROP_ENV = ("DVC_EXP_NAME",)
# Stages write __pycache__ beside the sources, as on a user's machine (tests/pipeline/test_data_stages.py).
BUILD_DROP_ENV = ("PYTHONDONTWRITEBYTECODE",)


def shrink_params(
    params: dict[str, Any], *, strategy: str = "linear", epochs: int = 1, backbone: str = "simple_cnn",
    weights: str = "none",
) -> dict[str, Any]:
    """``params`` (the real params.yaml) made tiny: 3 tracks x 3 frames per class, simple_cnn, no weights."""
    params["strategy"] = strategy
    params["data"].update(source="synthetic", image_size=IMAGE_SIZE, decode_workers=1)
    params["data"]["synthetic"].update(tracks_per_class=3, frames_per_track=3)
    # With 3 tracks per class, these fractions give each split one whole track.
    params["split"].update(train=0.4, val=0.3, test=0.3)
    params["unknown"].update(max_images=12, heldout_max_images=6)
    params["model"].update(backbone=backbone, weights=weights)
    params["model"]["linear"]["input_size"] = 0  # no upsampling: seconds matter here; pooled stages stay on
    params["train"].update(epochs=epochs, batch_size=16, threads=1, device="cpu", feature_views=1)
    params["evaluate"].update(batch_size=16)
    # About 12 test images from a one-epoch model: one int8 flip is 8 points, so the tiny project
    # always ships its int8 copy (refused: tests/pipeline/test_export_stage.py); the
    # ONNX-vs-PyTorch check stays strict.
    params["export"].update(calibration_images=16, benchmark_images=8, max_int8_drop=100.0)
    return params


def store_uri(base: Path) -> str:
    return f"sqlite:///{base / STORE}"


def tiny_copy(
    repo_root: Path, base: Path, *, tracking_uri: str | None = None, drop_env: Iterable[str] = (), **shrink: Any
) -> Project:
    """A project copy under ``base`` with tiny params and its own MLflow store (sqlite in ``base``)."""
    uri = tracking_uri or store_uri(base)
    proj = copy_project(repo_root, base, extra_env={"MLFLOW_TRACKING_URI": uri}, drop_env=[*DROP_ENV, *drop_env])
    proj.set_params(shrink_params(proj.params(), **shrink))
    return proj


@dataclass(frozen=True)
class Reproduced:
    """The tiny project (``shrink_params`` defaults) committed, then fully reproduced; nothing committed since."""

    project: Project
    log: str  # the `dvc repro`'s stdout and stderr: which stages ran


@contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
        yield


def reproduce_once(repo_root: Path, shared: Path) -> Reproduced:
    """The tiny project reproduced under ``shared / "tiny-pipeline"``: built by the first caller, then reused.

    pytest-xdist's workers pass the same ``shared`` folder: the lock makes the others
    wait for the first build instead of repeating it.
    """
    base = shared / "tiny-pipeline"
    log = base / "repro.log"  # written last: the build is complete
    with _exclusive(shared / "tiny-pipeline.lock"):
        if not log.exists():
            shutil.rmtree(base, ignore_errors=True)  # what a failed build left
            base.mkdir()
            proj = tiny_copy(repo_root, base, drop_env=BUILD_DROP_ENV)
            proj.run("git", "add", "-A")
            proj.run("git", "commit", "-q", "-m", "tiny project")  # the registered model is tagged with it
            run = proj.dvc("repro")
            log.write_text(run.stdout + run.stderr)
    root = base / "project"
    env = project_env(root, base, {"MLFLOW_TRACKING_URI": store_uri(base)}, [*DROP_ENV, *BUILD_DROP_ENV])
    return Reproduced(Project(root, env), log.read_text())


def reproduced_copy(
    reproduced: Reproduced, base: Path, *, tracking_uri: str | None = None, drop_env: Iterable[str] = (),
    **shrink: Any,
) -> Project:
    """A copy of the reproduced project under ``base``; with ``shrink``, its params as ``tiny_copy`` sets them.

    Without ``tracking_uri`` the copy has its own copy of the MLflow store (the
    build's run and registered model); with one, its stages log there.
    """
    source = reproduced.project
    proj = copy_built(source, base, extra_env={"MLFLOW_TRACKING_URI": tracking_uri or store_uri(base)},
                      drop_env=drop_env)
    if tracking_uri is None:
        _copy_store(source.root.parent / STORE, base / STORE, source.root, proj.root)
    if shrink:
        proj.set_params(shrink_params(proj.params(), **shrink))
    return proj


def _copy_store(source: Path, target: Path, old_root: Path, new_root: Path) -> None:
    """Copy an MLflow sqlite store, moving its artifact locations from ``old_root`` to ``new_root``.

    The store holds absolute paths into the project (``mlruns/``): left alone, a copy's
    runs would read and write the build's artifacts.
    """
    shutil.copy2(source, target)
    old, new = str(old_root), str(new_root)
    with closing(sqlite3.connect(target)) as db, db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for _, column, kind, *_ in db.execute(f'PRAGMA table_info("{table}")').fetchall():
                if "CHAR" in kind.upper() or "TEXT" in kind.upper():
                    db.execute(f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) WHERE "{column}" LIKE ?',
                               (old, new, f"%{old}%"))
