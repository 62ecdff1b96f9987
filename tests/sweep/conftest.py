"""Fixtures of the sweep tests: a params.yaml to plan against, and a fake `dvc` answering the sweep's commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from signflow import processes

from .fakes import FakeDvc
from http_server import free_port


@pytest.fixture
def params(repo_root: Path) -> dict[str, Any]:
    """The real params.yaml, on simple_cnn from scratch (the baseline the skip rules are checked against)."""
    loaded = yaml.safe_load((repo_root / "params.yaml").read_text())
    loaded["strategy"] = "scratch"
    loaded["model"].update(backbone="simple_cnn", weights="none")
    return loaded


@pytest.fixture
def params_file(tmp_path: Path, params: dict[str, Any]) -> Path:
    """``params`` written to ``tmp_path/params.yaml`` (a sweep plans against the file, as DVC applies to it)."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture
def fake_dvc(monkeypatch: pytest.MonkeyPatch) -> FakeDvc:
    """A FakeDvc in place of every dvc/git call (``signflow.processes.run``), with no pause between polls; the
    tracking server is down (the parent run is tested against a real store in test_mlflow_parent.py)."""
    from signflow.sweep import runner

    fake = FakeDvc()
    monkeypatch.setattr(processes, "run", fake)
    monkeypatch.setattr(runner, "POLL_SECONDS", 0)
    monkeypatch.setenv("TQDM_MININTERVAL", "10")  # setup_logging sets it off a terminal
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    return fake
