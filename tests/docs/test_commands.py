"""Every command the README and the docs show a user is executed here or marked why it cannot run here.

The ``<!-- run -->`` blocks run in order (README.md, then the docs pages in navigation order) as bash
scripts in one copy of the tiny project (tests/tiny_project.py): the real stages on a few dozen 32 px
images, so the commands and their flags are the real ones and only the data is small. The copy is the
one reproduced build of the run (the ``reproduced`` fixture), so the README's first command, `make run`,
finds the pipeline up to date: that build is the same `dvc repro` of the same fresh tiny project.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from math import prod
from pathlib import Path
from typing import Any

import pytest

from .blocks import RUN, Block, doc_files, shell_blocks
from conftest import write_image_folder
from project_copy import DVC_TIMEOUT, Project
from tiny_project import Reproduced, reproduced_copy

QUEUE_EXAMPLE = "dvc exp run --queue -S train.lr=0.003,0.0003"

# `make run` is `make install` followed by `dvc repro`: the install is the venv this test runs in (the
# same `make install` that `make test` runs first), so the test runs the `dvc repro` half. Activating the
# venv is a no-op here: the project's environment already has the venv's bin/ first on PATH.
TRANSLATIONS = [
    (re.compile(r"^make run\b"), "dvc repro"),
    (re.compile(r"^source \.venv/bin/activate\b"), ":"),
]


def to_script(block: Block) -> str:
    lines = []
    for line in block.commands():
        for pattern, replacement in TRANSLATIONS:
            line = pattern.sub(replacement, line)
        lines.append(line)
    # -x: the failing command is the last one echoed to stderr
    return "set -euxo pipefail\n" + "\n".join(lines) + "\n"


def queued_grid_size(block: Block) -> int | None:
    """Experiments a block's ``dvc exp run --queue`` should queue: the product of its -S value counts."""
    for line in block.commands():
        command = line.split("#", 1)[0].strip()
        if command.startswith("dvc exp run") and "--queue" in command:
            args = shlex.split(command)
            values = [args[i + 1].split("=", 1)[1] for i, arg in enumerate(args[:-1]) if arg == "-S"]
            return prod(len(value.split(",")) for value in values)
    return None


def test_every_shell_block_is_marked(repo_root: Path) -> None:
    blocks, problems = shell_blocks(doc_files(repo_root))
    assert not problems, "\n".join(map(str, problems))
    assert blocks, "no shell block found: is the collector reading the right files?"


def test_the_queue_example_runs_and_is_a_two_point_grid(repo_root: Path) -> None:
    blocks, _ = shell_blocks([repo_root / "README.md"])
    queue = [block for block in blocks if QUEUE_EXAMPLE in block.text]
    assert queue, f"README.md shows no `{QUEUE_EXAMPLE}`"
    assert all(block.marker == RUN for block in queue), [block.where for block in queue]
    assert {queued_grid_size(block) for block in queue} == {2}


def test_not_run_markers_are_not_ticks(repo_root: Path) -> None:
    """A reason says why: more than a word or two."""
    blocks, _ = shell_blocks(doc_files(repo_root))
    short = [block.where for block in blocks if block.marker != RUN and len(block.reason.split()) < 4]
    assert not short, f"not-run reasons too short to say why: {short}"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, reproduced: Reproduced) -> Project:
    """The tiny project as a fresh clone has it after `make run`: committed on ``main``, then reproduced
    (outputs and ``dvc.lock`` not committed), and ``photos/`` (a folder) and ``photo.png`` standing for
    the user's images.

    The build (``reproduced``) is that `dvc repro` from nothing, run once for the whole suite: starting
    here from a copy of it saves the minute this test would spend repeating it.
    """
    proj = reproduced_copy(reproduced, tmp_path_factory.mktemp("docs-commands"))
    proj.run("git", "branch", "-M", "main")
    photos = write_image_folder(proj.root / "photos", classes=("a", "b"), tracks=1, frames=2, sizes=(24, 40))
    shutil.copy2(next(photos.rglob("*.png")), proj.root / "photo.png")
    return proj


@pytest.mark.slow
def test_documented_commands_run(project: Project, repo_root: Path, record_property: Any) -> None:
    blocks, problems = shell_blocks(doc_files(repo_root))
    assert not problems, "\n".join(map(str, problems))
    timings = []
    for block in (block for block in blocks if block.marker == RUN):
        started = time.monotonic()
        proc = subprocess.run(["bash", "-c", to_script(block)], cwd=project.root, env=project.env,
                              capture_output=True, text=True, timeout=DVC_TIMEOUT, check=False)
        timings.append(f"{block.where} {time.monotonic() - started:.1f}s")
        assert proc.returncode == 0, (
            f"{block.where} failed ({proc.returncode}):\n{block.text}\n--- stdout\n{proc.stdout[-3000:]}"
            f"\n--- stderr\n{proc.stderr[-3000:]}")
        expected = queued_grid_size(block)
        if expected is not None:
            status = project.dvc("queue", "status").stdout
            queued = [line for line in status.splitlines() if line.rstrip().endswith("Queued")]
            assert len(queued) == expected, f"{block.where}: expected {expected} queued experiments:\n{status}"
            project.dvc("queue", "remove", "--all")  # queued, not trained: their training path is the sweep test's
    record_property("block_seconds", "; ".join(timings))
