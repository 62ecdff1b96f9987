"""torchrun + DistributedDataParallel: sharding, config, launch, and real multi-process runs of the train stage.

Fast tests check the pieces: the ranks' slices of a global batch, config
validation, launch detection, thread shares, the no-op collectives. The slow
tests start processes: the real stage (``python stages/train.py``) in a tiny
project (4 classes x 40 random-colour 32 px train images, 4 x 50 val, simple_cnn from
scratch, CPU, gloo), where ``train.distributed.nproc=2`` makes it relaunch
itself under torchrun; and torchrun with more processes than cores.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pytest
import torch
import yaml

from signflow import runtime
from signflow.config import Config, ConfigError, from_mapping, load_params
from signflow.data.arrays import write_split
from signflow.data.manifest import MANIFEST_COLUMNS, ROLE_TARGET
from signflow.model.checkpoint import load_checkpoint
from signflow.training import distributed
from signflow.training.loop import global_batches, rank_slice, resolve_amp

REPO = Path(__file__).resolve().parents[2]
STAGE = REPO / "stages" / "train.py"
SIZE = 32
CLASSES = {"0": "red", "1": "green", "2": "blue", "3": "yellow"}
COLOURS = ((220, 40, 40), (40, 190, 60), (50, 70, 220), (230, 210, 50))
PER_CLASS_TRAIN, PER_CLASS_VAL = 40, 50
COLOUR_JITTER, NOISE = 110, 90  # per-image colour shift and pixel noise: classes overlap (val accuracy ~0.84)
# 1 vs 2 processes with the same global batch and seed differ like two seeds (per-rank batch norm,
# other augmentation draws, per-rank averaging of the class-weighted loss). Measured on this task,
# 8 seeds: mean difference +0.25 points, largest 6.5, seed-to-seed std 2.6 points; 10 points is
# about 3 standard deviations of the difference of two seeds.
VAL_ACCURACY_TOLERANCE = 0.10
EPOCHS = 8  # of the stage runs: enough for the killed run to be killed well before its end
STAGE_TIMEOUT_S = 180
POLL_S = 0.02
RANK_EXIT_TIMEOUT_S = 10  # ranks poll for their launcher every distributed.LAUNCHER_POLL_S
LAUNCHER_VARS = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "DVC_ROOT", "DVC_EXP_NAME", "MLFLOW_TRACKING_URI")


# ---- sharding --------------------------------------------------------------------------------


def _old_batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """The single-process rule before distributed training: drop only a last batch of one."""
    return [idx for idx in order.split(batch_size) if len(idx) > 1 or len(order) == 1]


@pytest.mark.parametrize("n", [1, 2, 17, 64, 101])
def test_one_process_gets_todays_batches(n: int) -> None:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    batches = list(global_batches(order, 16))
    expected = _old_batches(order, 16)
    assert len(batches) == len(expected)
    for got, want in zip(batches, expected, strict=True):
        assert torch.equal(got, want)
        assert rank_slice(got, 0, 1) is got  # the very tensor: nothing sliced, nothing copied


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("batch_size", [8, 13, 64])
def test_rank_slices_cover_each_global_batch_exactly_once(world: int, batch_size: int) -> None:
    order = torch.randperm(203, generator=torch.Generator().manual_seed(world))
    for batch in global_batches(order, batch_size, world):
        slices = [rank_slice(batch, rank, world) for rank in range(world)]
        assert sorted(torch.cat(slices).tolist()) == sorted(batch.tolist())  # each index once, none lost
        sizes = [len(s) for s in slices]
        assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 2  # balanced; batch norm gets two samples


def test_a_last_batch_too_small_for_every_rank_is_dropped() -> None:
    order = torch.arange(21)
    assert [len(b) for b in global_batches(order, 8, 2)] == [8, 8, 5]  # 3 + 2: both ranks can train
    assert [len(b) for b in global_batches(order[:19], 8, 2)] == [8, 8]  # 3 = 2 + 1: one rank would get one
    assert [len(b) for b in global_batches(order[:19], 8, 1)] == [8, 8, 3]  # one process keeps it


# ---- config ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_params() -> dict[str, Any]:
    return load_params(REPO / "params.yaml")


def _with_train(params: dict[str, Any], **values: Any) -> dict[str, Any]:
    out = copy.deepcopy(params)
    out["train"].update(values)
    return out


def test_defaults_are_one_process_without_amp(real_params: dict[str, Any]) -> None:
    cfg = from_mapping(Config, real_params)
    assert cfg.train.distributed.nproc == 1 == Config().train.distributed.nproc
    assert cfg.train.amp == "none" == Config().train.amp


@pytest.mark.parametrize(
    ("values", "key", "allowed"),
    [
        ({"distributed": {"nproc": 0}}, "train.distributed.nproc", "1 <= value"),
        ({"distributed": {"nproc": "two"}}, "train.distributed.nproc", "an integer"),
        ({"distributed": {"nprocs": 2}}, "train.distributed.nprocs", "known keys are nproc"),
        ({"amp": "fp8"}, "train.amp", "none | bf16 | fp16"),
    ],
)
def test_bad_distributed_values_name_the_key(real_params, values, key, allowed) -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping(Config, _with_train(real_params, **values))
    assert key in str(info.value) and allowed in str(info.value)


def test_valid_distributed_values_load(real_params: dict[str, Any]) -> None:
    cfg = from_mapping(Config, _with_train(real_params, amp="bf16", distributed={"nproc": 4}))
    assert cfg.train.distributed.nproc == 4 and cfg.train.amp == "bf16"


# ---- launch, threads, no-op collectives ------------------------------------------------------


def test_launch_is_needed_only_above_one_process_outside_torchrun() -> None:
    under_torchrun = {"LOCAL_RANK": "1", "WORLD_SIZE": "2", "RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert not distributed.launched({}) and distributed.launched(under_torchrun)
    assert distributed.needs_launch(2, {}) and not distributed.needs_launch(2, under_torchrun)
    assert not distributed.needs_launch(1, {})
    assert distributed.env_rank(under_torchrun) == 1 and distributed.env_rank({}) == 0
    assert distributed.local_world_size(under_torchrun) == 2 and distributed.local_world_size({}) == 1
    command = distributed.launch_command(3, STAGE)
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert command[3:] == ["--standalone", "--nproc_per_node", "3", str(STAGE)]


def test_oversubscription_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="signflow.training.distributed"):
        assert not distributed.warn_if_oversubscribed(2, cores=2)
        assert distributed.warn_if_oversubscribed(3, cores=2)
    assert "train.distributed.nproc=3 is more than the 2 available cores" in caplog.text


def test_thread_share_divides_the_cores_by_ranks_and_queue_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "available_cores", lambda: 8)
    monkeypatch.setattr(runtime, "queue_workers", lambda: 1)
    assert [runtime.resolve_threads(0, ranks) for ranks in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    assert runtime.resolve_threads(0) == 8  # one process: every core, as before
    assert runtime.resolve_threads(3, ranks=4) == 3  # an explicit count is kept
    monkeypatch.setattr(runtime, "queue_workers", lambda: 2)
    assert runtime.resolve_threads(0, ranks=2) == 2


def test_collectives_are_no_ops_without_a_process_group() -> None:
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    values = [1.5, 3]
    assert distributed.all_reduce_sum(values) == values and isinstance(distributed.all_reduce_sum(values)[1], int)
    tensor = torch.ones(2, 3)
    assert distributed.broadcast_tensor(tensor) is tensor
    module = torch.nn.Linear(2, 2)
    assert distributed.wrap_model(module, torch.device("cpu")) is module
    distributed.barrier()
    distributed.broadcast_buffers(module)
    with distributed.process_group(torch.device("cpu"), environ={}) as device:
        assert device == torch.device("cpu") and not distributed.initialized()


def test_amp_is_ignored_on_cpu(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="signflow.training.loop"):
        assert resolve_amp("bf16", torch.device("cpu")) is None
    assert "train.amp=bf16 is ignored on cpu" in caplog.text
    assert resolve_amp("none", torch.device("cpu")) is None


def test_the_launching_parent_does_not_import_torch() -> None:
    code = (f"import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('stage', {str(STAGE)!r})\n"
            f"spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            f"assert 'torch' not in sys.modules, 'the stage imports torch before deciding to relaunch'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---- real processes --------------------------------------------------------------------------


def _images(per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random-colour images: the class colour shifted per image, plus pixel noise."""
    images, labels = [], []
    for label, colour in enumerate(COLOURS):
        shift = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=(per_class, 1, 1, 3))
        noise = rng.integers(-NOISE, NOISE + 1, size=(per_class, SIZE, SIZE, 3))
        images.append(np.clip(np.asarray(colour) + shift + noise, 0, 255))
        labels += [label] * per_class
    return np.concatenate(images).astype(np.uint8), np.asarray(labels)


def _write_split(dataset: Path, name: str, per_class: int, seed: int) -> None:
    images, labels = _images(per_class, np.random.default_rng(seed))
    ids = list(CLASSES)
    frame = pd.DataFrame({
        "path": [f"{ids[y]}/{name}_{i:05d}.png" for i, y in enumerate(labels)],
        "class_id": [ids[y] for y in labels], "track": [f"{i:05d}" for i in range(len(labels))],
        "width": SIZE, "height": SIZE, "x1": 0, "y1": 0, "x2": SIZE, "y2": SIZE,
        "label": [CLASSES[ids[y]] for y in labels], "label_idx": labels, "role": ROLE_TARGET,
    }, columns=MANIFEST_COLUMNS)
    write_split(dataset, name, frame, images)


def _project(root: Path, nproc: int, epochs: int) -> Path:
    """A directory the train stage runs in: params.yaml (the real one, shrunk) and data/dataset."""
    params = load_params(REPO / "params.yaml")
    params["strategy"] = "scratch"
    params["data"].update(classes=dict(CLASSES), image_size=SIZE)
    params["unknown"].update(enabled=False, classes=[], heldout=[])
    params["model"].update(backbone="simple_cnn", weights="none")
    params["train"].update(epochs=epochs, batch_size=16, threads=1, device="cpu", patience=0,
                           distributed={"nproc": nproc})
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _write_split(root / "data" / "dataset", "train", PER_CLASS_TRAIN, seed=0)
    _write_split(root / "data" / "dataset", "val", PER_CLASS_VAL, seed=1)
    return root


def _env() -> dict[str, str]:
    """This environment without any launcher, DVC or MLflow settings (the store is the project's sqlite)."""
    return {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}


def _run_stage(project: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, str(STAGE)], cwd=project, env=_env(), capture_output=True, text=True,
                          timeout=STAGE_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _summary(project: Path) -> dict[str, Any]:
    return json.loads((project / "metrics" / "train.json").read_text())


def _history(project: Path) -> pd.DataFrame:
    return pd.read_csv(project / "metrics" / "train_history.csv")


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An uninterrupted run of the stage with nproc=2: its project and stderr."""
    project = _project(tmp_path_factory.mktemp("ddp") / "two", 2, EPOCHS)
    return project, _run_stage(project).stderr


@pytest.mark.slow
def test_two_processes_reach_the_accuracy_of_one(tmp_path: Path, two_processes: tuple[Path, str]) -> None:
    two, double_stderr = two_processes
    one = _project(tmp_path / "one", 1, EPOCHS)

    single = _run_stage(one)

    assert "starting" not in single.stderr and "rank 0 of 2 (gloo backend)" in double_stderr
    assert "torch.distributed.run --standalone --nproc_per_node 2" in double_stderr
    for project in (one, two):
        assert len(_history(project)) == EPOCHS and _summary(project)["epochs_run"] == EPOCHS
        assert sorted(p.name for p in (project / "models").iterdir()) == ["best.pt", "last.pt", "run.json"]
    acc_one, acc_two = _history(one)["val_accuracy"].iloc[-1], _history(two)["val_accuracy"].iloc[-1]
    assert abs(acc_one - acc_two) <= VAL_ACCURACY_TOLERANCE, (acc_one, acc_two)
    best_one, best_two = _summary(one)["best_val_accuracy"], _summary(two)["best_val_accuracy"]
    assert abs(best_one - best_two) <= VAL_ACCURACY_TOLERANCE, (best_one, best_two)
    assert min(acc_one, acc_two) > 1 / len(CLASSES)  # both learnt something: the comparison means something
    # One MLflow run (rank 0's), tagged with the world size; nproc is in the checkpoint's config.
    with sqlite3.connect(two / "mlflow.db") as db:
        assert db.execute("select status from runs").fetchall() == [("FINISHED",)]
        assert db.execute("select value from tags where key = 'world_size'").fetchall() == [("2",)]
    assert load_checkpoint(two / "models" / "last.pt")["config"]["train"]["distributed"]["nproc"] == 2


@pytest.mark.slow
def test_killed_two_process_run_resumes_exactly(tmp_path: Path, two_processes: tuple[Path, str]) -> None:
    epochs = EPOCHS
    project = _project(tmp_path / "kill", 2, epochs)
    last = project / "models" / "last.pt"
    # Its own session: the stage and torchrun form one process group to kill at once. torchrun
    # starts each rank in a session of its own: they must notice their launcher is gone and stop.
    proc = subprocess.Popen([sys.executable, str(STAGE)], cwd=project, env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + STAGE_TIMEOUT_S
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(POLL_S)
    processes = psutil.Process(proc.pid).children(recursive=True)  # torchrun and the ranks
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=STAGE_TIMEOUT_S)
    _, alive = psutil.wait_procs(processes, timeout=RANK_EXIT_TIMEOUT_S)
    assert not alive, f"processes of the killed run still running: {alive}"
    assert len(processes) == 3, processes  # torchrun and two ranks were running
    assert last.exists(), "no last.pt before the deadline"
    killed_after = load_checkpoint(last)["epoch"]
    assert killed_after < epochs - 1 and not (project / "metrics" / "train.json").exists()

    rerun = _run_stage(project)

    state = load_checkpoint(last)
    assert state["result"]["resumed_from_epoch"] is not None
    assert state["result"]["resumed_from_epoch"] >= killed_after
    assert f"resuming from models/last.pt after epoch {state['result']['resumed_from_epoch']}" in rerun.stderr
    assert _summary(project)["epochs_run"] == epochs and state["epoch"] == epochs - 1
    assert _history(project)["epoch"].tolist() == list(range(epochs))
    # Randomness comes from (seed, epoch, rank): the same weights and history as the run never killed.
    uninterrupted = load_checkpoint(two_processes[0] / "models" / "last.pt")
    assert all(torch.equal(state["model"][k], uninterrupted["model"][k]) for k in uninterrupted["model"])
    # Timings live in metrics/timings/: the history itself is exactly the uninterrupted run's.
    assert _history(project).equals(_history(two_processes[0]))


@pytest.mark.slow
def test_more_processes_than_cores_warns_then_launches(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    nproc = distributed.available_cores() + 1
    script = tmp_path / "rank.py"
    script.write_text(f"import os, sys\nsys.exit(0 if os.environ['WORLD_SIZE'] == '{nproc}' else 3)\n")
    failing = tmp_path / "fail.py"
    failing.write_text("import sys\nsys.exit(3)\n")
    with caplog.at_level(logging.WARNING, logger="signflow.training.distributed"):
        assert distributed.relaunch(nproc, script) == 0
    assert f"train.distributed.nproc={nproc} is more than the {nproc - 1} available cores" in caplog.text
    assert distributed.relaunch(2, failing) != 0  # a failing rank fails the stage


# Run under torchrun by the next test: every rank fits both paths of the loop and reports what it saw.
RANK_SCRIPT = """
import dataclasses, hashlib, json, sys
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, {tests!r})
from training import test_distributed as t
import signflow.training.loop as train_module
from signflow.training import distributed
from signflow.config import Config
from signflow.training.stage import build_model, checkpoint_meta
from signflow.runtime import configure_runtime

out = Path(sys.argv[1])
calls = []
extract = train_module.extract_features
train_module.extract_features = lambda *a, **k: calls.append(1) or extract(*a, **k)
train = train_module.ArraySet(*t._images(10, np.random.default_rng(0)))
val = train_module.ArraySet(*t._images(5, np.random.default_rng(1)))
base = Config()
report = {{}}
device = configure_runtime(dataclasses.replace(base.train, threads=1, device="cpu"))
with distributed.process_group(device) as device:
    for strategy in ("scratch", "linear"):
        calls.clear()
        cfg = dataclasses.replace(
            base, strategy=strategy, data=dataclasses.replace(base.data, classes=dict(t.CLASSES), image_size=t.SIZE),
            unknown=dataclasses.replace(base.unknown, enabled=False, classes=(), heldout=()),
            model=dataclasses.replace(base.model, backbone="simple_cnn", weights="none"),
            train=dataclasses.replace(base.train, epochs=2, batch_size=8, threads=1, device="cpu", feature_views=2))
        torch.manual_seed(0)
        model = build_model(cfg)
        checkpoints = train_module.Checkpoints(out / strategy, checkpoint_meta(cfg, model), "f")
        result = train_module.fit(model, train, val, strategy=strategy, cfg=cfg.train, device=device,
                                  checkpoints=checkpoints)
        digest = hashlib.sha256(b"".join(v.contiguous().numpy().tobytes() for v in model.state_dict().values()))
        report[strategy] = {{"features_computed": len(calls), "weights": digest.hexdigest(),
                            "history": [[h.train_loss, h.val_loss, h.val_accuracy] for h in result.history]}}
(out / f"rank{{distributed.env_rank()}}.json").write_text(json.dumps(report))
"""


@pytest.mark.slow
def test_ranks_stay_identical_and_share_one_feature_cache(tmp_path: Path) -> None:
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT.format(tests=str(Path(__file__).parents[1])))
    command = [*distributed.launch_command(2, script), str(tmp_path)]
    proc = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=STAGE_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    for strategy in ("scratch", "linear"):
        first, second = ranks[0][strategy], ranks[1][strategy]
        # Same weights (DDP-averaged gradients, rank 0's batch-norm statistics) and the same
        # all-reduced train and validation numbers on both ranks: the same early-stopping decision.
        assert first["weights"] == second["weights"]
        assert first["history"] == second["history"] and len(first["history"]) == 2
    # The frozen-backbone features (train, then val) are computed on rank 0 only, then broadcast.
    assert [r["linear"]["features_computed"] for r in ranks] == [2, 0]
    assert [r["scratch"]["features_computed"] for r in ranks] == [0, 0]
