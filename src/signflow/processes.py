"""The one runner for the dvc and git commands signflow calls (sweep, pr-report, remote, tracking).

Every call finds its executable on PATH with this interpreter's bin folder first
(``command_env``), is bounded by a timeout (killed when it outlives it), keeps its
output in temporary files, and fails as one ``CommandError`` naming the command,
its folder, its exit code and the tail of its stderr. The standard library only:
``tracking`` imports this module in every stage.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

TAIL_CHARS = 2000  # of a failed command's stderr (or stdout) kept in the one-line error
GIT_SECONDS = 30.0  # `git rev-parse` answers in milliseconds; a hung one must not stall a stage


class CommandError(RuntimeError):
    """A command is missing, failed or outlived its timeout; the one-line message says which and why."""

    def __init__(self, message: str, argv: Sequence[str], returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.argv, self.returncode, self.stderr = list(argv), returncode, stderr


@dataclass(frozen=True)
class Result:
    """A finished command: its exit code and captured output (stderr kept: DVC warns there)."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def command_env() -> dict[str, str]:
    """The environment with this interpreter's bin folder first on PATH.

    Why: CI and `make` call `.venv/bin/signflow` without activating the venv, so
    a bare `dvc` (and the `python` in stage commands) must resolve to the venv's
    pinned copies, not whatever the runner has installed.
    """
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def tail(text: str, limit: int = TAIL_CHARS) -> str:
    """``text`` on one line (whitespace runs become one space), its last ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else "..." + flat[-limit:]


def run(
    argv: Sequence[str], cwd: Path, *, timeout: float, env: Mapping[str, str] | None = None, check: bool = True
) -> Result:
    """Run ``argv`` in ``cwd`` (``env`` defaults to :func:`command_env`); CommandError when it cannot run,
    outlives ``timeout`` seconds (it is killed) or, with ``check``, exits non-zero."""
    env = dict(env) if env is not None else command_env()
    shown = " ".join(argv)
    executable = shutil.which(argv[0], path=env.get("PATH"))
    if executable is None:
        raise CommandError(f"`{shown}`: {argv[0]} not found on PATH; install the project (`make install`) "
                           "or activate its .venv", argv)
    log.debug("running %s in %s", shown, cwd)
    # Files, not pipes: `dvc queue start` daemonises workers that inherit its output handles, and reading
    # a pipe to EOF would wait until those workers exit, i.e. until the whole queue has run.
    with tempfile.TemporaryFile("w+", errors="replace") as out, tempfile.TemporaryFile("w+", errors="replace") as err:
        try:
            proc = subprocess.run([executable, *argv[1:]], cwd=cwd, env=env, stdout=out, stderr=err,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:  # subprocess.run has killed and reaped it
            raise CommandError(f"`{shown}` in {cwd} did not finish within {timeout:.0f} s; killed it", argv) from None
        result = Result(list(argv), proc.returncode, _read_all(out), _read_all(err))
    if check and result.returncode != 0:
        detail = tail(result.stderr.strip() or result.stdout.strip() or "(no output)")
        raise CommandError(f"`{shown}` in {cwd} failed (exit {result.returncode}): {detail}", argv,
                           result.returncode, result.stderr)
    return result


def _read_all(handle: IO[str]) -> str:
    handle.seek(0)
    return handle.read()


def git_head(cwd: Path | None = None) -> str | None:
    """HEAD's commit in ``cwd`` (default: the current folder); None outside a repository, before the first
    commit, or without git."""
    try:
        result = run(["git", "rev-parse", "--verify", "--quiet", "HEAD"], cwd or Path.cwd(), timeout=GIT_SECONDS,
                     check=False)
    except CommandError:
        return None
    return (result.stdout.strip() or None) if result.returncode == 0 else None
