"""Shared fixtures: tiny records and image folders, the repo and shared data, the reproduced tiny project."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import ImageFile

from signflow.data.records import RawRecord

from tiny_project import Reproduced, reproduce_once

REPO_ROOT = Path(__file__).resolve().parents[1]
SUBSET_ZIP_NAME = "GTSRB-Training_subset.zip"

RecordsFactory = Callable[[Mapping[str, Sequence[int]]], list[RawRecord]]
FolderFactory = Callable[..., Path]


def _records(spec: Mapping[str, Sequence[int]]) -> list[RawRecord]:
    """``{class_id: [frames of track 0, frames of track 1, ...]}`` -> records, GTSRB-style names."""
    return [
        RawRecord(path=f"{class_id}/{track:05d}_{frame:05d}.png", class_id=str(class_id), track=f"{track:05d}")
        for class_id, sizes in spec.items()
        for track, n_frames in enumerate(sizes)
        for frame in range(n_frames)
    ]


# `make test` runs pytest-xdist with --dist loadfile, whose own order is "most tests first": the end-to-end
# files (one to six tests of a minute or more in all) came last, and the last to start ran alone while the
# other worker idled. These files go first, longest first (seconds: a quiet `make test` on 2 cores), except
# that the second does not use the `reproduced` build, so it keeps the other worker busy while the first
# builds it; the many short files after them fill in whichever worker frees up first. Only the order changes
# (each file still runs whole on one worker); a file not listed keeps xdist's place, a stale list costs time.
LONGEST_FILES_FIRST = (
    "tests/lineage/test_lineage_pipeline.py",  # 205: three experiments, restore, promotions, a served model
    "tests/test_tracking_server.py",  # 190, the build included
    "tests/sweep/test_tune_pipeline.py",  # 250-400 (load): six trials, a resumed study, two clones
    "tests/training/test_distributed.py",  # 70
    "tests/review/test_review_pipeline.py",  # 115
    "tests/docs/test_commands.py",  # 105
    "tests/commands/test_remote.py",  # 70
    "tests/pipeline/test_exclude_stage.py",  # 60-150, the shared build aside
    "tests/pipeline/test_external_data.py",  # 60
    "tests/audit/test_planted_noise.py",  # 30-60: real efficientnet_lite0 features
    "tests/sweep/test_sweep_seeds_pipeline.py",  # 110 under load, the shared build aside
    "tests/reliability/test_interrupts.py",  # 70
    "tests/reliability/test_mlflow_faults.py",  # 50
    "tests/reliability/test_determinism.py",  # 40
    "tests/data/test_official_test.py",  # 35
    "tests/serving/test_registry.py",  # 30
    "tests/serving/test_mlflow_model.py",  # 20
    "tests/reliability/test_params.py",  # 25
)


def _file_rank(scope: str) -> int:
    """A file's turn (xdist's loadfile scope is the file's node id): its place in LONGEST_FILES_FIRST, or after."""
    return LONGEST_FILES_FIRST.index(scope) if scope in LONGEST_FILES_FIRST else len(LONGEST_FILES_FIRST)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: unknown to a run without xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """For ``--dist loadfile``: xdist's scheduler, handing out LONGEST_FILES_FIRST before the other files."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling  # only the xdist controller gets here

    class LongestFilesFirst(LoadFileScheduling):
        def _assign_work_unit(self, node: Any) -> None:
            # xdist hands out the first file of its queue: bring the next one by rank to the front.
            scope = min(self.workqueue, key=_file_rank)  # min keeps xdist's order among equal ranks
            self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return LongestFilesFirst(config, log)


@pytest.fixture
def make_records() -> RecordsFactory:
    """Factory: ``make_records({"12": [3, 2]})`` gives class 12 with tracks of 3 and 2 frames."""
    return _records


def write_image_folder(
    root: Path,
    classes: Sequence[str] = ("0", "1", "2"),
    tracks: int = 3,
    frames: int = 2,
    sizes: tuple[int, int] = (20, 40),
    seed: int = 0,
) -> Path:
    """ImageFolder tree ``root/<class>/TTTTT_FFFFF.png``: one random side per track, noisy colour per class."""
    rng = np.random.default_rng(seed)
    for class_id in classes:
        colour = rng.integers(0, 256, size=3)
        class_dir = root / str(class_id)
        class_dir.mkdir(parents=True, exist_ok=True)
        for track in range(tracks):
            side = int(rng.integers(sizes[0], sizes[1] + 1))
            for frame in range(frames):
                noise = rng.integers(-20, 21, size=(side, side, 3))
                image = np.clip(colour + noise, 0, 255).astype(np.uint8)
                assert cv2.imwrite(str(class_dir / f"{track:05d}_{frame:05d}.png"), image)
    return root


@pytest.fixture
def make_image_folder(tmp_path: Path) -> FolderFactory:
    """Factory writing an image folder under ``tmp_path/name`` (keyword arguments as write_image_folder)."""

    def make(name: str = "folder", **kwargs) -> Path:
        return write_image_folder(tmp_path / name, **kwargs)

    return make


@pytest.fixture
def image_folder(make_image_folder: FolderFactory) -> Path:
    """Three classes ("0", "1", "2"), three tracks of two 20-40 px PNG frames each."""
    return make_image_folder()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Reproduced:
    """The tiny project after one full `dvc repro`, built once per pytest run: take a ``reproduced_copy``."""
    base = tmp_path_factory.getbasetemp()
    # pytest-xdist gives each worker a base folder in one folder per run: the build goes there, for all of them.
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    return reproduce_once(repo_root, shared)


@pytest.fixture(scope="session")
def shared_gtsrb_zip() -> Path:
    """The shared real-GTSRB subset; skipped (with the reason) when this machine lacks it."""
    shared = os.environ.get("SIGNFLOW_SHARED")
    folder = Path(shared) / "data" / "gtsrb" if shared else REPO_ROOT.parent / "shared" / "data" / "gtsrb"
    path = folder / SUBSET_ZIP_NAME
    if not path.is_file():
        pytest.skip(f"{SUBSET_ZIP_NAME} not found at {path}; set SIGNFLOW_SHARED to the shared folder")
    return path


@pytest.fixture
def no_decode(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every attempt to decode pixels (Pillow's ImageFile.load)."""
    calls: list[str] = []
    original = ImageFile.ImageFile.load

    def load(self):  # type: ignore[no-untyped-def]
        calls.append(str(getattr(self, "filename", "")))
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return calls
