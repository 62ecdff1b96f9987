"""Stand-ins for DVC in the sweep tests: `dvc exp show --json` data shaped like DVC 3's, and a fake `dvc`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from signflow.processes import Result
from signflow.sweep.runner import FAILED, QUEUED, SUCCESS

EVALUATE, TRAIN, TRAIN_TIMINGS = "metrics/evaluate.json", "metrics/train.json", "metrics/timings/train.json"
FAILED_LOG = """\
Running stage 'train':
> python stages/train.py
Traceback (most recent call last):
  File "/tmp/x/src/signflow/model/backbones.py", line 196, in _build_torchvision
signflow.model.backbones.WeightsUnavailableError: ImageNet weights for backbone 'resnet18' are not available offline
  Put the file at: /root/.cache/torch/hub/checkpoints/resnet18-f37072fd.pth
ERROR: failed to reproduce 'train': failed to run: python stages/train.py, exited with 1
ERROR: failed to reproduce 'train': failed to run: python stages/train.py, exited with 1
"""



def exp_group(name: str, state: str | None, metrics: dict[str, dict[str, Any]], error: dict | None = None) -> dict:
    """One experiment group as `dvc exp show --json` lists it under its baseline."""
    rev = {"rev": f"rev-{name}", "name": name, "error": error, "experiments": None,
           "data": {"rev": f"rev-{name}", "params": {"params.yaml": {"data": {"strategy": "full"}}},
                    "metrics": {path: {"data": data} for path, data in metrics.items()}}}
    executor = None if state is None else {"state": state, "name": "dvc-task", "local": {"returncode": 0}}
    return {"revs": [rev], "executor": executor, "name": name}


def exp_show(*experiments: dict, baseline: str = "base") -> list[dict]:
    """`dvc exp show --json`: the workspace, then ``baseline`` with ``experiments``."""
    return [{"rev": "workspace", "name": None, "data": {}, "error": None, "experiments": None},
            {"rev": baseline, "name": "main", "data": {}, "error": None, "experiments": list(experiments)}]


def metrics(accuracy: float, seconds: float = 1.0) -> dict[str, dict[str, Any]]:
    return {EVALUATE: {"test.accuracy": accuracy, "test.macro_f1": accuracy / 2, "openset.auroc": 0.9},
            TRAIN: {"best_val_accuracy": 0.5}, TRAIN_TIMINGS: {"train_seconds": seconds}}


class FakeDvc:
    """Stands in for ``processes.run``: git HEAD, queueing, start, exp show (`*-2` fails), queue logs."""

    def __init__(self, existing: Sequence[str] = ()) -> None:
        self.calls: list[list[str]] = []
        self.timeouts: list[float] = []
        self.queued: list[str] = []
        self.shows = 0
        self.existing = list(existing)

    def __call__(self, argv: Sequence[str], cwd: Path, *, timeout: float, env: Any = None,
                 check: bool = True) -> Result:
        argv = list(argv)
        self.calls.append(argv)
        self.timeouts.append(timeout)
        return Result(argv, 0, self.answer(argv), "")

    def answer(self, argv: list[str]) -> str:
        if argv[:2] == ["git", "rev-parse"]:
            return "base\n"
        if argv[:3] == ["dvc", "exp", "run"]:
            self.queued.append(argv[argv.index("-n") + 1])
        elif argv[:3] == ["dvc", "exp", "show"]:
            self.shows += 1
            return json.dumps(self.show())
        elif argv[:3] == ["dvc", "queue", "logs"]:
            return FAILED_LOG
        return ""

    def show(self) -> list[dict]:
        finished = self.shows > 2  # first the name check, then one poll with everything still queued
        groups = [exp_group(name, SUCCESS, {}) for name in self.existing]
        for index, name in enumerate(self.queued):
            state = (FAILED if name.endswith("-2") else SUCCESS) if finished else QUEUED
            groups.append(exp_group(name, state, metrics(0.5 + index / 10)))
        return exp_show(*groups)

    def dvc_calls(self, *prefix: str) -> list[list[str]]:
        return [call for call in self.calls if call[:len(prefix)] == list(prefix)]
