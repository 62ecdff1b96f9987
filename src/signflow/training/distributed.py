"""Multi-process training with torchrun and DistributedDataParallel: launch, ranks, collectives.

With ``train.distributed.nproc`` above 1 the train stage starts itself again
under ``torchrun --standalone`` (one node, N processes, :func:`relaunch`).
Started by torchrun, or by any launcher that sets torchrun's environment
(``LOCAL_RANK``, ``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``...: several nodes,
Slurm), the stage runs as one rank of that group (:func:`process_group`).

The training loop talks to the other ranks only through the helpers here, and
each is a no-op without a process group of more than one process, so a
one-process run executes exactly the code it always did (bit-identical weights).

torch is imported inside the functions that need it, not at the top: the
launching parent only waits for torchrun, and importing torch alone would cost
it about 1 GB of memory for the whole training.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from signflow.parallel import available_cores

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

# torchrun sets these for every process it starts; both present means "I am one rank of a group".
LAUNCHER_ENV = ("LOCAL_RANK", "WORLD_SIZE")
TORCHRUN_MODULE = "torch.distributed.run"
CPU_BACKEND, CUDA_BACKEND = "gloo", "nccl"
NPROC_KEY = "params.yaml: train.distributed.nproc"
MAIN_RANK = 0
# torchrun starts each rank in a session of its own, so killing torchrun (kill -9, or its process
# group) would leave the ranks training on, writing last.pt beside the next run. Each rank checks
# this often that its launcher is still its parent, and exits when it is not.
LAUNCHER_POLL_S = 0.5
LAUNCHER_GONE_EXIT = 1


# ---- launching ----------------------------------------------------------------------------


def launched(environ: Mapping[str, str] = os.environ) -> bool:
    """True in a process started by torchrun (or a launcher that sets the same variables)."""
    return all(name in environ for name in LAUNCHER_ENV)


def needs_launch(nproc: int, environ: Mapping[str, str] = os.environ) -> bool:
    """True when this process should start ``nproc`` ranks instead of training itself."""
    return nproc > 1 and not launched(environ)


def env_rank(environ: Mapping[str, str] = os.environ) -> int:
    """This process's global rank from the launcher's environment (0 when not launched), before any group exists."""
    return int(environ.get("RANK", MAIN_RANK))


def local_world_size(environ: Mapping[str, str] = os.environ) -> int:
    """Training processes on this node, which share its cores (torchrun's LOCAL_WORLD_SIZE; 1 when not launched)."""
    return int(environ.get("LOCAL_WORLD_SIZE", 1))


def launch_command(nproc: int, script: Path) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N script``: this interpreter's torchrun."""
    return [sys.executable, "-m", TORCHRUN_MODULE, "--standalone", "--nproc_per_node", str(nproc), str(script)]


def warn_if_oversubscribed(nproc: int, cores: int | None = None) -> bool:
    """Log a warning when more processes than cores would train; True if it did."""
    cores = available_cores() if cores is None else cores
    if nproc <= cores:
        return False
    log.warning("%s=%d is more than the %d available cores: the processes will time-share them and train "
                "slower, not faster; use at most %d on this machine", NPROC_KEY, nproc, cores, cores)
    return True


def relaunch(nproc: int, script: Path) -> int:
    """Run ``script`` as ``nproc`` ranks under torchrun on this node and wait; torchrun's exit code.

    A terminal's Ctrl-C reaches the whole foreground process group, torchrun
    included, which stops its ranks: this parent ignores SIGINT and waits for
    that. A SIGTERM sent to this process alone (a job manager) is passed on.
    """
    warn_if_oversubscribed(nproc)
    command = launch_command(nproc, script)
    log.info("starting %d training processes: %s", nproc, " ".join(command))
    # Without it torchrun sets 1 and prints a banner about it; each rank sets its real count (train.threads).
    env = {**os.environ}
    env.setdefault("OMP_NUM_THREADS", str(max(1, available_cores() // nproc)))
    child = subprocess.Popen(command, env=env)

    def forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signum)

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
                signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN)}
    try:
        return child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# ---- the process group --------------------------------------------------------------------


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def initialized() -> bool:
    dist = _dist()
    return bool(dist.is_available() and dist.is_initialized())


def world_size() -> int:
    """Processes training together (1 without a process group)."""
    return _dist().get_world_size() if initialized() else 1


def rank() -> int:
    """This process's rank in the group (0 without a process group)."""
    return _dist().get_rank() if initialized() else MAIN_RANK


def is_main() -> bool:
    """The rank that writes checkpoints, metrics and the MLflow run."""
    return rank() == MAIN_RANK


@contextmanager
def process_group(device: torch.device, environ: Mapping[str, str] = os.environ) -> Iterator[torch.device]:
    """Join the launcher's process group for the duration (gloo on CPU, nccl on CUDA); yield this rank's device.

    Not launched: nothing to join, ``device`` comes back as is. On CUDA each
    rank takes the GPU of its local rank.
    """
    if not launched(environ):
        yield device
        return
    import torch

    _exit_with_launcher()

    if device.type == "cuda":
        device = torch.device("cuda", int(environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist = _dist()
    dist.init_process_group(backend=CUDA_BACKEND if device.type == "cuda" else CPU_BACKEND)
    log.info("rank %d of %d (%s backend) on %s", dist.get_rank(), dist.get_world_size(), dist.get_backend(), device)
    try:
        yield device
    finally:
        dist.destroy_process_group()


def _exit_with_launcher() -> None:
    """Stop this rank as soon as the process that launched it (torchrun) is gone."""
    launcher = os.getppid()

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(LAUNCHER_POLL_S)
        log.error("the launcher of this rank (pid %d) is gone: stopping rank %s", launcher, os.environ.get("RANK"))
        os._exit(LAUNCHER_GONE_EXIT)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def _comm_device() -> torch.device:
    """Where collective tensors must live: the rank's GPU for nccl, the CPU for gloo."""
    import torch

    if _dist().get_backend() == CUDA_BACKEND:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---- collectives (no-ops with one process) -------------------------------------------------


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sums of ``values`` over the ranks (float64); returned unchanged with one process."""
    if world_size() == 1:
        return list(values)
    import torch

    total = torch.tensor(list(values), dtype=torch.float64, device=_comm_device())
    _dist().all_reduce(total)
    return total.tolist()


def broadcast_tensor(tensor: torch.Tensor | None, src: int = MAIN_RANK) -> torch.Tensor:
    """Rank ``src``'s tensor on every rank (the others pass None): its shape and dtype first, then the data.

    The result is on the CPU (gloo) or the rank's GPU (nccl); with one process
    ``tensor`` comes back as is.
    """
    if world_size() == 1:
        assert tensor is not None, "one process: the caller is rank 0 and must pass its tensor"
        return tensor
    import torch

    dist, device = _dist(), _comm_device()
    header = [(tuple(tensor.shape), tensor.dtype) if rank() == src else None]
    dist.broadcast_object_list(header, src=src)
    shape, dtype = header[0]
    buffer = tensor.to(device).contiguous() if rank() == src else torch.empty(shape, dtype=dtype, device=device)
    dist.broadcast(buffer, src=src)
    return buffer


def broadcast_buffers(module: nn.Module, src: int = MAIN_RANK) -> None:
    """Copy rank ``src``'s buffers (batch-norm running statistics) into every rank's ``module``."""
    if world_size() == 1:
        return
    dist = _dist()
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=src)


def barrier() -> None:
    """Wait until every rank gets here."""
    if world_size() > 1:
        _dist().barrier()


def wrap_model(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel (gradients averaged over ranks); ``module`` itself with one process.

    Buffers are not broadcast at every forward: each rank normalises with its
    own batch statistics, and the loop copies rank 0's running statistics to
    the others once per epoch (:func:`broadcast_buffers`), before validation.
    """
    if world_size() == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    # forward_sync_buffers (torch >= 2.14; formerly broadcast_buffers) still syncs them once at init.
    return DistributedDataParallel(module, device_ids=device_ids, forward_sync_buffers=False)
