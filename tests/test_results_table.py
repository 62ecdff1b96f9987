"""benchmarks/results_table.py: each run starts from the committed params (not the last run's) and stops at evaluate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import results_table  # noqa: E402

DVC_YAML = """stages:
  evaluate:
    cmd: python -c "import shutil; shutil.copy('params.yaml', 'seen.yaml')"
    params: [train.lr, train.seed, strategy]
    outs: [seen.yaml]
  export:
    cmd: python -c "import shutil; shutil.copy('seen.yaml', 'exported.yaml')"
    deps: [seen.yaml]
    outs: [exported.yaml]
"""


@pytest.fixture()
def dvc_repo(tmp_path: Path) -> Path:
    """A git+DVC repository with one stage that records the params it ran with."""
    (tmp_path / "params.yaml").write_text("strategy: linear\ntrain:\n  lr: 0.001\n  seed: 0\n")
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", "base"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    return tmp_path


def test_a_run_does_not_inherit_the_previous_runs_overrides(dvc_repo: Path) -> None:
    results_table.run_experiment(dvc_repo, ["strategy=scratch", "train.lr=0.003"])
    assert yaml.safe_load((dvc_repo / "seen.yaml").read_text())["train"]["lr"] == 0.003
    results_table.run_experiment(dvc_repo, ["strategy=full", "train.seed=1"])
    seen = yaml.safe_load((dvc_repo / "seen.yaml").read_text())
    assert seen == {"strategy": "full", "train": {"lr": 0.001, "seed": 1}}


def test_a_run_stops_at_evaluate(dvc_repo: Path) -> None:
    results_table.run_experiment(dvc_repo, ["strategy=full"])
    assert (dvc_repo / "seen.yaml").exists()
    assert not (dvc_repo / "exported.yaml").exists()
