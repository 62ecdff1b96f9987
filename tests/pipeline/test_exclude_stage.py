"""End to end: split.exclude in a copy of the tiny project under real DVC.

An entry makes the split stale (DVC sees the param), `dvc repro` drops exactly
the named images (a training image and an "unknown" one) from data/split and
data/dataset, and data/split/excluded.csv keeps the reason. A path that names no
image, and an entry without a reason, fail with one line and exit code 2.
"""

from __future__ import annotations

import sys
from typing import Any

import pandas as pd
import pytest

from signflow.logs import EXIT_USER_ERROR

from project_copy import Project
from tiny_project import Reproduced, reproduced_copy

pytestmark = pytest.mark.slow

SPLITS = ["train", "val", "test"]
TARGET_REASON = "a lorry hides half the sign"
OTHER_REASON = "not a sign: a billboard"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, reproduced: Reproduced) -> Project:
    return reproduced_copy(reproduced, tmp_path_factory.mktemp("exclude"))


def _read(project: Project, folder: str) -> dict[str, pd.DataFrame]:
    return {name: pd.read_csv(project.root / "data" / folder / f"{name}.csv", dtype=str) for name in SPLITS}


def _with_exclude(project: Project, entries: list[dict[str, Any]]) -> None:
    params = project.params()
    params["split"]["exclude"] = entries
    project.set_params(params)


def _run_split(project: Project) -> tuple[int, str]:
    """The split stage's script run as DVC runs it: its exit code and stderr."""
    run = project.run(sys.executable, "stages/split.py", check=False)
    return run.returncode, run.stderr


def test_exclude_drops_the_named_images_and_keeps_the_reason(project: Project) -> None:
    before_split, before_dataset = _read(project, "split"), _read(project, "dataset")
    target = before_split["train"]["path"].iloc[0]
    train = before_dataset["train"]
    other = train.loc[train["role"] == "unknown", "path"].iloc[0]
    original = project.params()
    try:
        _check_exclude_run(project, before_split, before_dataset, target, other)
    finally:
        project.set_params(original)
    project.dvc("repro", "add_unknown")  # the list emptied: the first split comes back, byte for byte
    restored = _read(project, "split")
    for name in SPLITS:
        pd.testing.assert_frame_equal(restored[name], before_split[name])
    assert pd.read_csv(project.root / "data" / "split" / "excluded.csv").empty


def _check_exclude_run(project: Project, before_split: dict[str, pd.DataFrame], before_dataset: dict[str, pd.DataFrame],
                       target: str, other: str) -> None:
    _with_exclude(project, [{"path": target, "reason": TARGET_REASON}, {"path": other, "reason": OTHER_REASON}])
    assert {"split", "add_unknown"} <= set(project.status("add_unknown"))  # DVC sees the param change
    log = project.dvc("repro", "add_unknown")
    assert "Running stage 'split'" in log.stdout and "Running stage 'add_unknown'" in log.stdout

    after_split, after_dataset = _read(project, "split"), _read(project, "dataset")
    paths_before = {p for f in before_split.values() for p in f["path"]}
    paths_after = {p for f in after_split.values() for p in f["path"]}
    assert paths_after == paths_before - {target}  # exactly that image left the targets
    for frames in (after_split, after_dataset):
        assert not {target, other} & {p for f in frames.values() for p in f["path"]}
    excluded = pd.read_csv(project.root / "data" / "split" / "excluded.csv", dtype=str)
    target_class = before_split["train"]["class_id"].iloc[0]
    train = before_dataset["train"]
    other_class = train.loc[train["role"] == "unknown", "class_id"].iloc[0]
    assert excluded.values.tolist() == [[target, target_class, TARGET_REASON], [other, other_class, OTHER_REASON]]
    assert project.status("add_unknown") == {}


def test_a_path_not_in_the_data_fails_with_one_line(project: Project) -> None:
    original = project.params()
    try:
        _with_exclude(project, [{"path": "14/no_such_image.png", "reason": "typo"}])
        code, stderr = _run_split(project)
        assert code == EXIT_USER_ERROR
        assert stderr.strip().splitlines()[-1].startswith("signflow: error: params.yaml: split.exclude names images")
        assert "'14/no_such_image.png'" in stderr and "Traceback" not in stderr
        repro = project.dvc("repro", "split", check=False)
        assert repro.returncode != 0 and "no_such_image.png" in repro.stdout + repro.stderr
    finally:
        project.set_params(original)
    project.dvc("repro", "add_unknown")  # DVC removed data/split before the failed run: the fixed list restores it
    assert project.status("add_unknown") == {}


def test_an_empty_reason_fails_at_config_validation(project: Project) -> None:
    original = project.params()
    path = pd.read_csv(project.root / "data" / "raw" / "index.csv", dtype=str)["path"].iloc[0]
    try:
        _with_exclude(project, [{"path": path, "reason": ""}])
        code, stderr = _run_split(project)
        assert code == EXIT_USER_ERROR and "Traceback" not in stderr
        assert stderr.strip().splitlines()[-1].startswith("signflow: error: params.yaml: split.exclude[0].reason=''")
    finally:
        project.set_params(original)
    assert project.status("add_unknown") == {}
