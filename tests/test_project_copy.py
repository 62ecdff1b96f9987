"""The test helper that stops DVC queue workers: no worker outlives a test, and nothing else is killed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from project_copy import Project

SLEEP = "import time; time.sleep(120)"


def test_stop_queue_kills_a_leftover_worker_and_spares_other_processes(tmp_path: Path) -> None:
    celery = tmp_path / "project" / ".dvc" / "tmp" / "exps" / "celery"
    celery.mkdir(parents=True)
    # argv like a stuck `dvc exp queue-worker NAME` that `dvc queue stop --kill` no longer sees
    worker = subprocess.Popen([sys.executable, "-c", SLEEP, "exp", "queue-worker", "dvc-exp-1@localhost"])
    bystander = subprocess.Popen([sys.executable, "-c", SLEEP])  # a reused pid: not a worker
    try:
        (celery / "dvc-exp-worker-1.pid").write_text(str(worker.pid))
        (celery / "dvc-exp-worker-2.pid").write_text(str(bystander.pid))
        Project(tmp_path / "project", dict(os.environ)).stop_queue()
        assert worker.wait(timeout=30) == -9
        assert bystander.poll() is None
    finally:
        for proc in (worker, bystander):
            proc.kill()
            proc.wait()
