"""A throw-away copy of the project, with git and DVC run from the test's venv.

Shared by the end-to-end pipeline tests: ``copy_project`` copies the sources DVC
needs into ``base / "project"``, builds the environment the stages run in, and
initialises git and DVC there; ``copy_built`` copies a project that already ran,
git history, DVC cache and outputs included, so DVC re-runs only what a test changes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

# data/source_fingerprint.json: the fingerprint stage's output, in git (the default source's: no inputs)
PROJECT_PATHS = ["params.yaml", "dvc.yaml", "stages", "src", ".dvcignore", ".gitignore",
                 "data/source_fingerprint.json"]
# What `dvc status` says of an `always_changed` stage (fingerprint: the data source's inputs), every time.
ALWAYS_CHANGED = "always changed"
RUNNING_STAGE = re.compile(r"^Running stage '([^']+)':", re.M)
DVC_TIMEOUT = 600
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "signflow tests",
    "GIT_AUTHOR_EMAIL": "tests@signflow.invalid",
    "GIT_COMMITTER_NAME": "signflow tests",
    "GIT_COMMITTER_EMAIL": "tests@signflow.invalid",
}


class Project:
    """A copy of the project under ``root``, with DVC and git run from the test's venv."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            args, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=DVC_TIMEOUT
        )
        if check and proc.returncode:
            pytest.fail(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("dvc", *args, check=check)

    def start_queue(self, jobs: int) -> None:
        """``dvc queue start -j jobs``, its output in a file beside the project, not a pipe.

        The workers it daemonises inherit its output handles: reading a pipe to EOF waits until they
        exit, and a worker that missed its shutdown message never does (seen in CI: 600 s, then a timeout).
        """
        log_path = self.root.parent / "queue-start.log"
        with log_path.open("w") as out:
            proc = subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=self.root, env=self.env,
                                  stdout=out, stderr=subprocess.STDOUT, timeout=DVC_TIMEOUT)
        if proc.returncode:
            pytest.fail(f"dvc queue start failed ({proc.returncode}):\n{log_path.read_text()}")

    def stop_queue(self) -> None:
        """Stop the queue's workers, killing those ``dvc queue stop --kill`` leaves behind.

        A worker whose "empty queue" shutdown came while it still ran a task stays idle for ever, and
        DVC no longer counts it as a worker; its pid file still names it.
        """
        self.dvc("queue", "stop", "--kill", check=False)
        for pid_file in (self.root / ".dvc" / "tmp" / "exps" / "celery").glob("dvc-exp-worker-*.pid"):
            text = pid_file.read_text().strip()
            if text.isdigit() and _is_queue_worker(int(text)):
                os.kill(int(text), signal.SIGKILL)

    def status(self, *targets: str) -> dict[str, Any]:
        """``dvc status --json --with-deps`` of ``targets``: the stale stages, ``{}`` when none.

        A stage that runs on every `dvc repro` is listed as "always changed" whatever happened: it
        counts only with another change.
        """
        status = json.loads(self.dvc("status", "--json", "--with-deps", *targets).stdout or "{}")
        return {name: changes for name, changes in status.items() if changes != [ALWAYS_CHANGED]}

    def always_run(self) -> set[str]:
        """The stages with ``always_changed: true``: they run on every `dvc repro`."""
        stages = yaml.safe_load((self.root / "dvc.yaml").read_text())["stages"]
        return {name for name, stage in stages.items() if stage.get("always_changed")}

    def params(self) -> dict[str, Any]:
        return yaml.safe_load((self.root / "params.yaml").read_text())

    def set_params(self, params: dict[str, Any]) -> None:
        (self.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def stages_run(log: str) -> list[str]:
    """The stages a `dvc repro` log shows running, in order."""
    return RUNNING_STAGE.findall(log)


def _is_queue_worker(pid: int) -> bool:
    """Whether ``pid`` is still a running ``dvc exp queue-worker`` (and not a reused pid)."""
    try:
        return b"queue-worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def location_env(root: Path, base: Path) -> dict[str, str]:
    """The variables that name where the project is: what a copy of it changes."""
    # the stages import the copied package, not the editable install's
    return {"PYTHONPATH": str(root / "src"), "DVC_SITE_CACHE_DIR": str(base / "dvc-site")}


def project_env(
    root: Path, base: Path, extra_env: Mapping[str, str] | None = None, drop_env: Iterable[str] = ()
) -> dict[str, str]:
    """The environment DVC, git and the stages run in for the project at ``root`` (scratch files in ``base``).

    ``extra_env`` is added to it and ``drop_env`` names variables removed from it.
    """
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        **location_env(root, base),
        "DVC_NO_ANALYTICS": "1",
        "SIGNFLOW_LOG": "WARNING",
        "GIT_CONFIG_NOSYSTEM": "1",
        **GIT_IDENTITY,
        **(extra_env or {}),
    }
    for name in drop_env:
        env.pop(name, None)
    return env


def copy_project(
    repo_root: Path,
    base: Path,
    extra_env: Mapping[str, str] | None = None,
    drop_env: Iterable[str] = (),
) -> Project:
    """Copy the project to ``base / "project"`` and ``git init`` + ``dvc init`` it.

    ``extra_env`` is added to the environment the commands run in and ``drop_env``
    names variables removed from it. Skips the test when the venv has no ``dvc``.
    """
    root = base / "project"
    root.mkdir()
    for name in PROJECT_PATHS:
        source = repo_root / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif source.exists():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)

    env = project_env(root, base, extra_env, drop_env)
    if shutil.which("dvc", path=env["PATH"]) is None:
        pytest.skip(f"no dvc executable beside {sys.executable}")
    proj = Project(root, env)
    proj.run("git", "init", "-q")
    proj.dvc("init", "-q")
    shutil.copy2(repo_root / ".dvc" / "config", root / ".dvc" / "config")
    return proj


def copy_built(
    source: Project, base: Path, extra_env: Mapping[str, str] | None = None, drop_env: Iterable[str] = ()
) -> Project:
    """``source`` copied whole to ``base / "project"``: sources, outputs, ``.git`` and the DVC cache.

    Seconds instead of a pipeline run: DVC finds every output as ``dvc.lock`` records it, so
    ``dvc repro`` runs only the stages whose inputs changed since. ``extra_env`` and
    ``drop_env`` as in :func:`copy_project`, on top of ``source``'s environment.
    """
    root = base / "project"
    dvc_dir = source.root / ".dvc"

    def skip_dvc_tmp(folder: str, names: list[str]) -> list[str]:
        # .dvc/tmp holds the source's locks and indexes keyed by its path: DVC rebuilds it.
        return ["tmp"] if Path(folder) == dvc_dir else []

    shutil.copytree(source.root, root, symlinks=True, ignore=skip_dvc_tmp)
    env = {**source.env, **location_env(root, base), **(extra_env or {})}
    for name in drop_env:
        env.pop(name, None)
    return Project(root, env)
