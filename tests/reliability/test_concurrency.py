"""Two `dvc repro` at the same time in one project: each finishes or one refuses with DVC's lock message.

Two queued experiments at once (`dvc queue start -j 2`) are covered by
tests/test_tracking_server.py::test_two_queue_workers_log_one_named_run_each_and_share_the_cores.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reliability.faults import file_md5s, kill_group, start, temporaries
from signflow.model.checkpoint import load_checkpoint

from tiny_project import Reproduced, reproduced_copy

pytestmark = pytest.mark.slow

LOCK_MESSAGES = ("Unable to acquire lock", "is busy")  # DVC's repository lock, its per-stage read/write lock
STAGGER_S = 0.5
TIMEOUT_S = 600.0


def test_two_simultaneous_repros_finish_or_refuse_and_corrupt_nothing(tmp_path: Path, reproduced: Reproduced) -> None:
    proj = reproduced_copy(reproduced, tmp_path, strategy="scratch", epochs=2)  # train and evaluate to run
    first = start(proj, "dvc", "repro", "evaluate")
    time.sleep(STAGGER_S)
    second = start(proj, "dvc", "repro", "evaluate")
    results = []
    for proc in (first, second):
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
        finally:
            if proc.poll() is None:
                kill_group(proc)
        results.append((proc.returncode, out + err))

    for code, output in results:
        assert code == 0 or any(m in output for m in LOCK_MESSAGES), output
    assert any(code == 0 for code, _ in results), results

    final = proj.dvc("repro", "evaluate")  # whatever a refused run left to do
    assert proj.status("evaluate") == {}, final.stdout
    for name in ("best.pt", "last.pt"):
        load_checkpoint(proj.root / "models" / name)
    for split in ("train", "val", "test"):
        frame = pd.read_csv(proj.root / "data" / "dataset" / f"{split}.csv")
        assert len(np.load(proj.root / "data" / "dataset" / f"{split}.npy", mmap_mode="r")) == len(frame)
    for path in (proj.root / "metrics").rglob("*.json"):
        json.loads(path.read_text())
    assert "test.accuracy" in json.loads((proj.root / "metrics" / "evaluate.json").read_text())
    assert temporaries(proj.root / "models") == [] and temporaries(proj.root / "metrics") == []
    assert file_md5s(proj.root, "data")  # the outputs are there (dvc status above: exactly as dvc.lock has them)
