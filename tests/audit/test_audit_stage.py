"""End to end: the `audit` stage under real DVC, in a copy of the tiny project (simple_cnn, no weights).

The shared build's `dvc repro` ran it after add_unknown; here its outputs are
checked against the dataset, then an audit-only param re-runs `dvc repro
audit` and nothing upstream.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from project_copy import Project
from tiny_project import Reproduced, reproduced_copy

pytestmark = pytest.mark.slow

SPLITS = ("train", "val", "test")
UPSTREAM = ("fingerprint", "download", "split", "add_unknown", "train")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, reproduced: Reproduced) -> Project:
    return reproduced_copy(reproduced, tmp_path_factory.mktemp("audit"))


def _check_outputs(root: Path) -> dict:
    metrics = json.loads((root / "metrics" / "audit.json").read_text())
    frames = {s: pd.read_csv(root / "data" / "dataset" / f"{s}.csv", dtype={"class_id": str, "track": str})
              for s in SPLITS}
    labelled = sum(int(f["role"].isin(["target", "unknown"]).sum()) for f in frames.values())
    assert metrics["labels.images"] == labelled
    assert 0 <= metrics["labels.suspects"] <= labelled
    assert sum(metrics[f"labels.suspects.{s}"] for s in SPLITS) == metrics["labels.suspects"]
    assert 0.0 <= metrics["labels.oof_accuracy"] <= 1.0
    assert metrics["duplicates.total"] == sum(metrics[f"duplicates.{a}-{b}"]
                                              for a, b in (("train", "val"), ("train", "test"), ("val", "test")))
    for split, frame in frames.items():
        assert metrics[f"profile.{split}.n"] == len(frame)
        assert 0 <= metrics[f"profile.{split}.brightness.p5"] <= metrics[f"profile.{split}.brightness.p95"] <= 255
        assert metrics[f"profile.{split}.width.p50"] == pytest.approx(frame["width"].median())
    report = root / "reports" / "audit"
    readme = (report / "README.md").read_text()
    for link in re.findall(r"\]\(([^)]+)\)", readme):
        assert link.startswith("../") or (report / link).is_file(), f"README links a missing {link}"
    assert (report / "duplicates.png").is_file() and (report / "suspects.png").is_file()
    return metrics


def test_the_build_ran_the_audit_after_add_unknown(project: Project, reproduced: Reproduced) -> None:
    log = reproduced.log
    assert "Running stage 'audit'" in log
    assert log.index("Running stage 'add_unknown'") < log.index("Running stage 'audit'")
    _check_outputs(project.root)


def test_an_audit_param_reruns_only_the_audit(project: Project) -> None:
    params = project.params()
    params["audit"]["max_suspects"] = 3
    project.set_params(params)
    run = project.dvc("repro", "audit")
    ran = set(re.findall(r"Running stage '([^']+)'", run.stdout + run.stderr))
    assert "audit" in ran and not ran & set(UPSTREAM) - {"fingerprint"}, ran  # fingerprint always runs
    _check_outputs(project.root)
    readme = (project.root / "reports" / "audit" / "README.md").read_text()
    suspects = json.loads((project.root / "metrics" / "audit.json").read_text())["labels.suspects"]
    if suspects > 3:
        assert f"The 3 most suspect of {suspects}" in readme
