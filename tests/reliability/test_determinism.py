"""The same params and seed twice, in two project copies: byte-identical data and identical results on CPU.

One copy's data comes from the one `dvc repro` per pytest run (the ``reproduced`` fixture), the other's
from its own from-scratch run; both train and evaluate here.

What can still differ across CPUs (instruction set, oneDNN kernels) and on GPU:
benchmarks/bench_determinism.py and the README's "Reliability" section.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reliability.faults import file_md5s, lock_outs, state_dict

from tiny_project import Reproduced, reproduced_copy, tiny_copy

pytestmark = pytest.mark.slow

# manifests, shards, decoded arrays, the data summaries
DATA = ("data/raw", "data/split", "data/dataset", "metrics/data.json", "metrics/data_tracks.csv")
RESULTS = ("metrics/train.json", "metrics/train_history.csv", "metrics/evaluate.json", "metrics/per_class.csv",
           "metrics/predictions.csv", "metrics/confusion.csv")


def test_same_params_and_seed_give_identical_data_and_metrics(
    tmp_path: Path, repo_root: Path, reproduced: Reproduced
) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    projects = [reproduced_copy(reproduced, tmp_path / "a", strategy="scratch", epochs=2),
                tiny_copy(repo_root, tmp_path / "b", strategy="scratch", epochs=2)]
    for proj in projects:
        proj.dvc("repro", "evaluate")
    first, second = projects

    assert file_md5s(first.root, *DATA) == file_md5s(second.root, *DATA)
    assert file_md5s(first.root, *RESULTS) == file_md5s(second.root, *RESULTS)
    locks = [lock_outs(proj) for proj in projects]
    for stage in ("download", "split", "add_unknown", "evaluate"):
        assert locks[0][stage] == locks[1][stage], stage
    weights = [state_dict(proj.root / "models" / "best.pt") for proj in projects]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
