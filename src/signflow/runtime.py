"""The torch runtime a stage runs in: seed, threads, deterministic kernels, device.

Shared by the stages that run a model (train, evaluate) and by ``signflow
predict``, so a device name means the same everywhere.
"""

from __future__ import annotations

import torch

from signflow.config import DEVICES, TrainConfig
from signflow.parallel import resolve_workers


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


def configure_runtime(cfg: TrainConfig) -> torch.device:
    """Seed, threads from the available cores, deterministic kernels, the device.

    Call it before building the model: the new head's initial weights come from
    the global generator, so seeding later made every run start differently.
    """
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(resolve_workers(cfg.threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    return resolve_device(cfg.device, "params.yaml: train.device")
