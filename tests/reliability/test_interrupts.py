"""Interrupted stages: Ctrl-C and SIGKILL mid-training, mid-checkpoint-write and mid-way through each data stage.

Each case runs the real stage through ``dvc repro`` in a copy of the reproduced tiny project, stops it at an exact
point (``hooks/sitecustomize.py``) and interrupts it there. Rerunning must give exactly the outputs
of the uninterrupted run (the same weights, the same data bytes), and no output is ever half-written.
Already covered elsewhere: exact in-process resume (tests/training/test_loop.py), a killed two-process DDP
run resuming exactly (tests/training/test_distributed.py).
"""

from __future__ import annotations

import json
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch

from reliability.faults import (
    assert_same_weights,
    file_md5s,
    kill_group,
    lock_outs,
    stall_env,
    start,
    state_dict,
    temporaries,
    wait_for,
)
from signflow.model.checkpoint import load_checkpoint

from project_copy import Project
from tiny_project import Reproduced, reproduced_copy

pytestmark = pytest.mark.slow

EPOCHS = 4
DATA_OUTS = ("data/raw", "data/split", "data/dataset", "metrics/data.json", "metrics/data_tracks.csv")
TRAIN_FILES = ("metrics/train.json", "metrics/train_history.csv")  # what the run learned: no timings
RESUME_HINT = "`dvc repro` resumes from it"


@dataclass
class Reference:
    """A tiny project trained once without interruption, and what that run wrote."""

    proj: Project
    best: dict[str, torch.Tensor]
    last: dict[str, torch.Tensor]
    train_files: dict[str, str]  # md5 by path
    data_files: dict[str, str]
    data_lock: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, reproduced: Reproduced) -> Reference:
    proj = reproduced_copy(reproduced, tmp_path_factory.mktemp("interrupts"), strategy="scratch", epochs=EPOCHS)
    params = proj.params()
    params["train"]["patience"] = 0  # every epoch runs, whatever the validation curve
    proj.set_params(params)
    proj.dvc("repro", "train")
    models = proj.root / "models"
    lock = lock_outs(proj)
    return Reference(proj, state_dict(models / "best.pt"), state_dict(models / "last.pt"),
                     file_md5s(proj.root, *TRAIN_FILES), file_md5s(proj.root, *DATA_OUTS),
                     {stage: lock[stage] for stage in ("download", "split", "add_unknown")})


def _fresh_training(proj: Project) -> None:
    """Forget the trained model, so the next `dvc repro train` starts from epoch 0."""
    shutil.rmtree(proj.root / "models")


def _assert_outputs_whole(proj: Project) -> None:
    """Every train output present now is complete: checkpoints load, JSON and CSV parse."""
    for name in ("best.pt", "last.pt"):
        path = proj.root / "models" / name
        if path.exists():
            load_checkpoint(path)
    for path in [proj.root / "models" / "run.json", *(proj.root / "metrics").rglob("*.json")]:
        if path.exists():
            json.loads(path.read_text())
    for path in (proj.root / "metrics").rglob("*.csv"):
        pd.read_csv(path)


def _assert_resumed_to_the_reference(ref: Reference, after_epoch: int) -> None:
    proj = ref.proj
    rerun = proj.dvc("repro", "train")
    models = proj.root / "models"
    last = load_checkpoint(models / "last.pt")
    assert last["result"]["resumed_from_epoch"] == after_epoch, rerun.stdout + rerun.stderr  # resumed, not restarted
    assert last["epoch"] == EPOCHS - 1
    assert_same_weights(models / "last.pt", ref.last)
    assert_same_weights(models / "best.pt", ref.best)
    assert file_md5s(proj.root, *TRAIN_FILES) == ref.train_files
    assert temporaries(models) == [] and temporaries(proj.root / "metrics") == []
    assert proj.status("train") == {}


def test_ctrl_c_mid_training_exits_cleanly_keeps_last_pt_and_says_how_to_resume(
    reference: Reference, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    proj = reference.proj
    _fresh_training(proj)
    marker = tmp_path / "stalled"
    # Stalled after one step of the third epoch (epochs 1-2 are in last.pt); SIGINT to the whole
    # foreground group, as a terminal's Ctrl-C does.
    stage = start(proj, "dvc", "repro", "train", env=stall_env(proj, "last.pt:2:next-step", marker))
    wait_for(marker, stage)
    out, err = kill_group(stage, signal.SIGINT)

    assert stage.returncode != 0
    output = out + err
    assert "Traceback" not in output, output
    hints = [line for line in output.splitlines() if RESUME_HINT in line]
    assert len(hints) == 1 and "models/last.pt keeps epoch 2" in hints[0], output
    assert load_checkpoint(proj.root / "models" / "last.pt")["epoch"] == 1
    _assert_outputs_whole(proj)
    assert temporaries(proj.root / "models") == []  # Ctrl-C lets atomic_path clean up
    run = json.loads((proj.root / "models" / "run.json").read_text())
    assert MlflowClient(tracking_uri=run["tracking_uri"]).get_run(run["run_id"]).info.status == "KILLED"

    _assert_resumed_to_the_reference(reference, after_epoch=1)


@pytest.mark.parametrize(
    ("stall", "resumes_after"),
    [
        pytest.param("last.pt:2:next-step", 1, id="mid-epoch"),
        # The third epoch's last.pt cut to half its bytes in its temporary, killed before the rename.
        pytest.param("last.pt:3:truncate", 1, id="mid-checkpoint-write"),
    ],
)
def test_sigkill_then_rerun_resumes_to_the_uninterrupted_weights(
    reference: Reference, tmp_path: Path, stall: str, resumes_after: int
) -> None:
    proj = reference.proj
    _fresh_training(proj)
    marker = tmp_path / "stalled"
    stage = start(proj, "dvc", "repro", "train", env=stall_env(proj, stall, marker))
    wait_for(marker, stage)
    kill_group(stage, signal.SIGKILL)

    _assert_outputs_whole(proj)
    assert load_checkpoint(proj.root / "models" / "last.pt")["epoch"] == resumes_after
    _assert_resumed_to_the_reference(reference, after_epoch=resumes_after)  # the temporary is gone too


@pytest.mark.parametrize(
    ("stage_name", "stall"),
    [
        pytest.param("download", "index.csv:1:truncate", id="download"),  # the raw tree built, its index half-written
        pytest.param("split", "split:1:write", id="split"),  # the manifests written, not yet renamed into place
        pytest.param("add_unknown", "train.npy:1:truncate", id="add_unknown"),  # the decoded array half-written
    ],
)
def test_killed_data_stage_reruns_to_the_same_bytes(
    reference: Reference, tmp_path: Path, stage_name: str, stall: str
) -> None:
    proj = reference.proj
    marker = tmp_path / "stalled"
    stage = start(proj, "dvc", "repro", "--force", "--single-item", stage_name,
                  env=stall_env(proj, stall, marker))
    wait_for(marker, stage)
    kill_group(stage, signal.SIGKILL)

    # --no-run-cache: the stage really runs again (DVC may not restore the outputs from its run cache).
    proj.dvc("repro", "--no-run-cache", "add_unknown")
    assert file_md5s(proj.root, *DATA_OUTS) == reference.data_files
    lock = lock_outs(proj)
    assert {stage: lock[stage] for stage in reference.data_lock} == reference.data_lock
    assert proj.status("add_unknown") == {}
