"""signflow.processes: the one runner for dvc/git commands (bounded, named on failure) and git HEAD."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from signflow import processes
from signflow.processes import CommandError


def test_output_and_exit_code_are_captured(tmp_path: Path) -> None:
    code = "import sys; print('out'); print('warned', file=sys.stderr); sys.exit(3)"
    result = processes.run([sys.executable, "-c", code], tmp_path, timeout=60, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "warned\n")


def test_a_failure_names_the_command_its_exit_and_its_stderr_on_one_line(tmp_path: Path) -> None:
    code = "import sys; print('first\\nboom: remote unreachable', file=sys.stderr); sys.exit(3)"
    with pytest.raises(CommandError) as err:
        processes.run([sys.executable, "-c", code], tmp_path, timeout=60)
    message = str(err.value)
    assert "exit 3" in message and str(tmp_path) in message and message.endswith("first boom: remote unreachable")
    assert err.value.returncode == 3 and "boom" in err.value.stderr and "\n" not in message


def test_a_missing_executable_is_named(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="not-a-dvc not found on PATH"):
        processes.run(["not-a-dvc", "status"], tmp_path, timeout=60)


def test_a_command_that_outlives_its_timeout_is_killed_and_named(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    hang = f"import os, pathlib, time; pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid())); time.sleep(600)"
    with pytest.raises(CommandError, match=r"did not finish within 2 s; killed it"):
        processes.run([sys.executable, "-c", hang], tmp_path, timeout=2)
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left running
        os.kill(pid, 0)


def test_the_venv_comes_first_on_path() -> None:
    assert processes.command_env()["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_git_head(tmp_path: Path) -> None:
    assert processes.git_head(tmp_path) is None  # not a repository
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    assert processes.git_head(tmp_path) is None  # no commit yet
    identity = ["-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run(["git", *identity, "commit", "-q", "--allow-empty", "-m", "x"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert processes.git_head(tmp_path) == head and len(head) == 40
