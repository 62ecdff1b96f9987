"""Helpers of the fault-injection tests: start a command in its own process group, stall it, kill it, compare.

The stall is ``hooks/sitecustomize.py`` (see its docstring): with :func:`stall_env` a stage stops at a
chosen write and creates a marker file, so a test kills it exactly there instead of guessing with sleeps.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from project_copy import Project

HOOKS_DIR = Path(__file__).resolve().parent / "hooks"
STALL_TIMEOUT_S = 300.0
POLL_S = 0.05


def stall_env(proj: Project, spec: str, marker: Path) -> dict[str, str]:
    """``proj``'s environment with the stall hook first on PYTHONPATH, stalling at ``spec`` (``name:n:mode``)."""
    return {**proj.env, "PYTHONPATH": os.pathsep.join([str(HOOKS_DIR), proj.env["PYTHONPATH"]]),
            "SIGNFLOW_TEST_STALL": spec, "SIGNFLOW_TEST_STALL_MARKER": str(marker)}


def start(proj: Project, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``args`` in ``proj`` in a new session (its own process group, as a terminal's foreground job)."""
    return subprocess.Popen(args, cwd=proj.root, env=env or proj.env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(marker: Path, proc: subprocess.Popen[str]) -> None:
    """Until ``marker`` exists; fails with the process's output if it ended first."""
    deadline = time.monotonic() + STALL_TIMEOUT_S
    while not marker.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"{proc.args} ended ({proc.returncode}) before stalling:\n{out}\n{err}")
        if time.monotonic() > deadline:
            kill_group(proc)
            pytest.fail(f"{proc.args} did not stall within {STALL_TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)


def kill_group(proc: subprocess.Popen[str], signum: int = signal.SIGKILL) -> tuple[str, str]:
    """Send ``signum`` to ``proc``'s whole group (DVC and the stage it runs); its output once it has ended."""
    if proc.poll() is None:
        os.killpg(proc.pid, signum)
    return proc.communicate(timeout=STALL_TIMEOUT_S)


def file_md5s(root: Path, *relative: str) -> dict[str, str]:
    """md5 of every file under each of ``relative`` (files or folders), keyed by path relative to ``root``."""
    digests = {}
    for rel in relative:
        top = root / rel
        for path in sorted([top] if top.is_file() else top.rglob("*")):
            if path.is_file():
                digests[str(path.relative_to(root))] = hashlib.md5(path.read_bytes()).hexdigest()
    return digests


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def assert_same_weights(actual: Path, expected: dict[str, torch.Tensor]) -> None:
    got = state_dict(actual)
    assert got.keys() == expected.keys()
    different = [k for k in got if not torch.equal(got[k], expected[k])]
    assert not different, f"{actual}: tensors differ from the uninterrupted run: {different}"


def temporaries(folder: Path) -> list[Path]:
    """The atomic writers' temporaries (``.<name>.<random>.tmp``) left in ``folder``."""
    return sorted(folder.glob(".*.tmp"))


def lock_outs(proj: Project) -> dict[str, Any]:
    """``{stage: {out path: md5}}`` from ``proj``'s dvc.lock."""
    import yaml

    lock = yaml.safe_load((proj.root / "dvc.lock").read_text())
    return {name: {out["path"]: out["md5"] for out in stage.get("outs", [])} for name, stage in lock["stages"].items()}
