"""End to end: the data stages under real DVC, in a copy of the tiny project.

The one `dvc repro` per pytest run (the ``reproduced`` fixture: synthetic source,
a few tiny images per class) ran them; its outputs are checked here, then that
nothing re-runs when nothing changed and that a training-only param leaves the
data stages alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from project_copy import Project, copy_project
from tiny_project import IMAGE_SIZE, Reproduced, reproduced_copy

pytestmark = pytest.mark.slow

DATA_STAGES = ["download", "split", "add_unknown"]
SPLITS = ["train", "val", "test"]


def _stale(project: Project) -> dict[str, Any]:
    """Stale data stages (``add_unknown`` and what it depends on; later stages are not ours)."""
    return project.status(DATA_STAGES[-1])


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, reproduced: Reproduced) -> Project:
    # Behave like a default machine, where Python writes __pycache__ beside the sources (the build did too).
    return reproduced_copy(reproduced, tmp_path_factory.mktemp("pipeline"), drop_env=["PYTHONDONTWRITEBYTECODE"])


def _outputs(root: Path) -> list[Path]:
    paths = [root / "metrics" / "data.json", root / "data" / "raw" / "index.csv"]
    paths += [root / "data" / "split" / f"{name}.csv" for name in SPLITS]
    paths += [root / "data" / "dataset" / f"{name}.{ext}" for name in SPLITS for ext in ("csv", "npy")]
    return paths


def test_outputs_are_complete_and_consistent(project: Project, reproduced: Reproduced) -> None:
    for stage in DATA_STAGES:
        assert f"Running stage '{stage}'" in reproduced.log  # the build's `dvc repro` made them
    root = project.root
    params = project.params()
    targets = [str(c) for c in params["data"]["classes"]]
    heldout = {str(c) for c in params["unknown"]["heldout"]}
    summary = json.loads((root / "metrics" / "data.json").read_text())

    frames = {}
    for name in SPLITS:
        frame = pd.read_csv(root / "data" / "dataset" / f"{name}.csv", dtype={"class_id": str, "track": str})
        images = np.load(root / "data" / "dataset" / f"{name}.npy", mmap_mode="r")
        assert images.shape == (len(frame), IMAGE_SIZE, IMAGE_SIZE, 3) and images.dtype == np.uint8
        assert len(frame) > 0
        assert summary["splits"][name]["images"] == len(frame)
        assert sum(summary["splits"][name]["per_role"].values()) == len(frame)
        frames[name] = frame

    train = frames["train"]
    assert set(train["class_id"]) >= set(targets)
    assert set(train["role"]) == {"target", "unknown"}
    assert (train.loc[train["role"] == "unknown", "label_idx"] == len(targets)).all()
    for name in ("val", "test"):
        held = frames[name][frames[name]["role"] == "heldout"]
        assert set(held["class_id"]) <= heldout and (held["label_idx"] == -1).all()
    assert set(pd.concat(frames.values())["class_id"]) & heldout  # held-out rows exist somewhere

    tracks = {name: set(f["class_id"] + "/" + f["track"]) for name, f in frames.items()}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not tracks[a] & tracks[b], f"tracks shared by {a} and {b}"

    quarantine = pd.read_csv(root / "data" / "raw" / "quarantine.csv")
    assert summary["quarantined"]["count"] == len(quarantine)


def test_second_repro_does_nothing(project: Project) -> None:
    outputs = _outputs(project.root)
    before = {p: p.stat().st_mtime_ns for p in outputs}

    second = project.dvc("repro", DATA_STAGES[-1])

    log = second.stdout + second.stderr
    for stage in DATA_STAGES:
        assert f"'{stage}' didn't change" in log, log
    assert {p: p.stat().st_mtime_ns for p in outputs} == before
    assert _stale(project) == {}


def test_training_params_leave_data_stages_alone(project: Project) -> None:
    original = project.params()
    try:
        changed = project.params()
        changed["strategy"] = "full" if original["strategy"] != "full" else "linear"
        changed["train"]["lr"] = original["train"]["lr"] * 10
        changed["model"]["dropout"] = 0.5
        project.set_params(changed)
        assert _stale(project) == {}

        # Control: a split param does make the split stages stale, and only those.
        changed["split"]["seed"] = original["split"]["seed"] + 1
        project.set_params(changed)
        assert set(_stale(project)) == {"split", "add_unknown"}
    finally:
        project.set_params(original)
    assert _stale(project) == {}


def test_importing_more_modules_keeps_pipeline_clean(project: Project) -> None:
    # Running tests or the CLI writes __pycache__ under src/signflow/sources, a
    # directory dependency of `download`; that must not make the stage stale.
    project.run(sys.executable, "-c", "import signflow.data.sources.gtsrb, signflow.data.sources.folder")
    if not list((project.root / "src" / "signflow" / "data" / "sources").glob("__pycache__/gtsrb*.pyc")):
        pytest.fail("precondition: no bytecode was written, so this test proves nothing")
    assert _stale(project) == {}


def test_misspelled_backbone_fails_the_first_stage_before_any_work(tmp_path: Path, repo_root: Path) -> None:
    """model.backbone is no input of `download`, but a typo in it stops `dvc repro` there, with the valid names."""
    proj = copy_project(repo_root, tmp_path)
    params = proj.params()
    params["model"]["backbone"] = "resnt18"
    proj.set_params(params)
    failed = proj.dvc("repro", check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "model.backbone='resnt18' is invalid" in output and "resnet18" in output, output
    assert "Running stage 'split'" not in output
    assert not (proj.root / "data" / "raw").exists()
