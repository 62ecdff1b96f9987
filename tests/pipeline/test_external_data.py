"""End to end under real DVC: a user's image folder is a dependency of the pipeline.

A tiny project copy whose source is a folder outside it (``data.source: folder``),
reproduced up to ``add_unknown``: an unchanged folder re-runs nothing after the
``fingerprint`` stage; an added image, an image fixed in place, re-run ``download``
and the data stages after it; a touched file re-runs ``download`` only (its shards
come out byte-identical); a folder absent on this machine keeps the last fingerprint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import pandas as pd
import pytest

from conftest import write_image_folder
from project_copy import Project, stages_run
from tiny_project import tiny_copy

pytestmark = pytest.mark.slow

TARGET = "add_unknown"  # the data stages only: seconds per repro
DATA_STAGES = ["download", "split", "add_unknown"]
FINGERPRINT = "data/source_fingerprint.json"
INDEX = "data/raw/index.csv"
# The tiny project's four targets, two other signs for "unknown" and one held-out sign, as a user's folders.
FOLDERS = ("12", "13", "14", "17", "1", "2", "15")
TRACK_PATTERN = r"^(\d+)_"
SECOND_NS = 1_000_000_000


@pytest.fixture(scope="module")
def signs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("user") / "signs", classes=FOLDERS, tracks=3, frames=2)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, repo_root: Path, signs: Path) -> Project:
    proj = tiny_copy(repo_root, tmp_path_factory.mktemp("external-data"))
    params = proj.params()
    params["data"].update(source="folder", folder={"path": str(signs), "track_pattern": TRACK_PATTERN})
    params["unknown"]["heldout"] = [15]
    proj.set_params(params)
    proj.run("git", "add", "-A")
    proj.run("git", "commit", "-q", "-m", "a folder source")
    first = proj.dvc("repro", TARGET)
    assert stages_run(first.stdout) == ["fingerprint", *DATA_STAGES], first.stdout
    return proj


def _index_paths(project: Project) -> set[str]:
    return set(pd.read_csv(project.root / INDEX, dtype=str)["path"])


def _later(path: Path) -> None:
    """An edit a second later, whatever the file system's clock resolution."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + SECOND_NS))


def test_the_fingerprint_lists_the_folder(project: Project, signs: Path) -> None:
    fingerprint = json.loads((project.root / FINGERPRINT).read_text())
    assert fingerprint["source"] == "folder"
    (entry,) = fingerprint["inputs"]
    assert entry["path"] == str(signs) and entry["files"] == len(list(signs.rglob("*.png")))
    assert _index_paths(project) == {p.relative_to(signs).as_posix() for p in signs.rglob("*.png")}


def test_an_unchanged_folder_reruns_nothing(project: Project) -> None:
    outputs = [project.root / FINGERPRINT, project.root / INDEX, project.root / "data" / "dataset" / "train.npy"]
    before = {p: p.stat().st_mtime_ns for p in outputs}
    again = project.dvc("repro", TARGET)
    assert stages_run(again.stdout) == ["fingerprint"], again.stdout
    for stage in DATA_STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in again.stdout, again.stdout
    assert {p: p.stat().st_mtime_ns for p in outputs} == before
    assert project.status(TARGET) == {}  # "always changed" fingerprint aside


def test_an_added_image_reruns_download_and_the_stages_after_it(project: Project, signs: Path) -> None:
    added = signs / "12" / "00009_00000.png"
    shutil.copy2(signs / "13" / "00000_00000.png", added)  # another sign, as a user drops a photo in
    # DVC cannot look into the folder: until the fingerprint runs, only "always changed" shows.
    assert json.loads(project.dvc("status", "--json", "--with-deps", TARGET).stdout) == {
        "fingerprint": ["always changed"]}
    project.dvc("repro", "fingerprint")
    changes = project.status(TARGET)
    assert changes == {"download": [{"changed deps": {FINGERPRINT: "modified"}}]}, changes

    rerun = project.dvc("repro", TARGET)
    assert stages_run(rerun.stdout) == ["fingerprint", *DATA_STAGES], rerun.stdout
    assert "12/00009_00000.png" in _index_paths(project)
    assert project.status(TARGET) == {}


def test_an_image_fixed_in_place_reruns_them(project: Project, signs: Path) -> None:
    image = signs / "14" / "00001_00000.png"
    assert cv2.imwrite(str(image), 255 - cv2.imread(str(image)))
    _later(image)
    rerun = project.dvc("repro", TARGET)
    assert stages_run(rerun.stdout) == ["fingerprint", *DATA_STAGES], rerun.stdout


def test_a_touched_image_reruns_download_only(project: Project, signs: Path) -> None:
    """mtime's false alarm costs one download: the same images make byte-identical shards."""
    _later(signs / "17" / "00000_00001.png")
    rerun = project.dvc("repro", TARGET)
    assert stages_run(rerun.stdout) == ["fingerprint", "download"], rerun.stdout
    assert "Stage 'split' didn't change, skipping" in rerun.stdout


def test_a_folder_absent_here_keeps_the_last_fingerprint(project: Project, signs: Path) -> None:
    """A teammate's clone or CI without the user's folder: the pulled data/raw stays in use."""
    fingerprint = (project.root / FINGERPRINT).read_bytes()
    moved = signs.with_name("signs-elsewhere")
    signs.rename(moved)
    try:
        rerun = project.dvc("repro", TARGET)
    finally:
        moved.rename(signs)
    assert stages_run(rerun.stdout) == ["fingerprint"], rerun.stdout
    assert "kept the previous" in rerun.stderr + rerun.stdout
    assert (project.root / FINGERPRINT).read_bytes() == fingerprint
