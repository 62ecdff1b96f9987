"""The torch runtime a stage runs in: seed, threads, deterministic kernels, device.

Shared by the stages that run a model (train, evaluate) and by ``signflow
predict``, so a device name means the same everywhere.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping

import psutil
import torch

from signflow.catalog import DEVICES
from signflow.config import TrainConfig
from signflow.parallel import available_cores

log = logging.getLogger(__name__)

# How DVC names its experiment-queue workers: `dvc exp queue-worker dvc-exp-<hash>-<n>@localhost`,
# <hash> = the first 6 hex digits of sha256 of the queue's folder (dvc/repo/experiments/queue/celery.py).
QUEUE_WORKER_ARG = "queue-worker"
QUEUE_DIR = (".dvc", "tmp", "exps", "celery")
QUEUE_HASH_DIGITS = 6
CUBLAS_WORKSPACE = ":4096:8"  # what torch.use_deterministic_algorithms asks for on CUDA >= 10.2


class DeviceUnavailableError(RuntimeError):
    """The configured device does not exist on this machine."""


def resolve_device(name: str, key: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; ``cuda`` without a GPU fails naming ``key``."""
    if name not in DEVICES:  # config and argparse check first; this guards direct callers
        raise ValueError(f"{key}={name!r} is invalid; allowed: {' | '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"{key}=cuda but no CUDA device is available; use auto or cpu")
    use_cuda = name == "cuda" or (name == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if use_cuda else "cpu")


def configure_runtime(cfg: TrainConfig, ranks: int = 1) -> torch.device:
    """Seed, threads from the available cores, deterministic kernels, the device.

    Call it before building the model: the new head's initial weights come from
    the global generator, so seeding later made every run start differently.
    ``ranks`` is the number of training processes on this node (torchrun's
    LOCAL_WORLD_SIZE), which share its cores.
    """
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(resolve_threads(cfg.threads, ranks))
    # cuBLAS is deterministic only with a fixed workspace, read when CUDA initialises (not yet, here):
    # https://docs.nvidia.com/cuda/cublas/#results-reproducibility. No effect on CPU.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return resolve_device(cfg.device, "params.yaml: train.device")


def queue_workers(environ: Mapping[str, str] = os.environ) -> int:
    """Live DVC queue workers of this repository when running as a queued experiment, else 1.

    DVC runs each queued experiment with DVC_EXP_NAME and DVC_ROOT (the main
    repository) set; its workers are processes named after that repository's
    queue folder, so counting them tells how many trainings share the cores.
    """
    root = environ.get("DVC_ROOT")
    if not root or not environ.get("DVC_EXP_NAME"):
        return 1
    digest = hashlib.sha256(os.path.join(root, *QUEUE_DIR).encode()).hexdigest()[:QUEUE_HASH_DIGITS]
    prefix = f"dvc-exp-{digest}-"
    count = 0
    for process in psutil.process_iter(["cmdline"]):
        args = process.info.get("cmdline") or []
        if QUEUE_WORKER_ARG in args and any(arg.startswith(prefix) for arg in args):
            count += 1
    return max(1, count)


def resolve_threads(threads: int, ranks: int = 1) -> int:
    """``train.threads``, where 0 means this process's share of the cores.

    The share is cores / (concurrent DVC queue workers x training processes of
    this run on this node), at least 1: two queue workers each running two DDP
    ranks on 8 cores give 2 threads per rank.
    """
    if threads > 0:
        return threads
    workers = queue_workers()
    share = max(1, available_cores() // (workers * ranks))
    if workers > 1 or ranks > 1:
        log.info("%d DVC queue worker(s) x %d training process(es) share %d cores: %d torch threads each",
                 workers, ranks, available_cores(), share)
    return share
