"""Shared helpers for the benchmarks: the cached real-GTSRB dataset, timing, one JSON line.

Every benchmark measures on the real GTSRB subset in ``$SIGNFLOW_SHARED``
(default ``<repo>/../shared``), prepared exactly as the ``download``, ``split``
and ``add_unknown`` stages do (same library functions, same ``params.yaml``
values) but once per machine: the archive is extracted and the splits decoded
into ``$SIGNFLOW_BENCH_CACHE`` (default ``/tmp/signflow-bench``), a directory
laid out like ``data/dataset`` so ``signflow.training.stage.load_labelled`` reads it.

A benchmark prints exactly one JSON line on stdout (its settings and numbers);
logs and progress bars go to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from signflow.config import SPLIT_NAMES, Config, TrainConfig, load_config
from signflow.data.archive import safe_extract_zip
from signflow.data.sources.gtsrb import read_gtsrb_tree
from signflow.data.split import split_targets
from signflow.data.unknown import build_dataset
from signflow.logs import setup_logging
from signflow.model.strategies import apply_train_mode, param_groups
from signflow.parallel import available_cores  # noqa: F401 (used by the bench scripts)
from signflow.training.loop import ArraySet, make_optimizer
from signflow.training.stage import load_labelled

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
SHARED = Path(os.environ.get("SIGNFLOW_SHARED", REPO.parent / "shared"))
ARCHIVE = SHARED / "data" / "gtsrb" / "GTSRB-Training_subset.zip"
CACHE_DIR = Path(os.environ.get("SIGNFLOW_BENCH_CACHE", "/tmp/signflow-bench"))
EXTRACT_DIR = CACHE_DIR / "gtsrb"  # the archive's tree: GTSRB/Training/000NN/*.ppm
# --quick: "a few hundred images", one repetition; enough to check a script end to end.
QUICK_TRAIN_IMAGES = 384
QUICK_VAL_IMAGES = 128
SUBSAMPLE_SEED = 0
DEFAULT_WAIT_IDLE_S = 300.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # /proc CPU times are in these per second

log = logging.getLogger("bench")


# ------------------------------------------------------------------ command line and output


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark has."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help=f"tiny run to check the script: {QUICK_TRAIN_IMAGES} train images, 1 repetition")
    p.add_argument("--reps", type=int, default=3,
                   help="repetitions of each timed part, median reported (default: %(default)s)")
    p.add_argument("--wait-idle", type=float, default=None, metavar="SECONDS",
                   help="wait up to this long for other processes to leave the CPU before measuring "
                        "(default: 300, 0 with --quick)")
    p.add_argument("--params", type=Path, default=PARAMS,
                   help="params file to take the settings from (default: the repository's params.yaml)")
    return p


def start(args: argparse.Namespace) -> Config:
    """Configure logging (stderr) and return the project's validated config."""
    setup_logging(os.environ.get("SIGNFLOW_LOG", "INFO"))
    if args.quick:
        args.reps = 1
    if args.wait_idle is None:
        args.wait_idle = 0.0 if args.quick else DEFAULT_WAIT_IDLE_S
    return load_config(args.params)


def emit(payload: dict[str, Any]) -> None:
    """The benchmark's one line of stdout."""
    sys.stdout.write(json.dumps(payload, sort_keys=False) + "\n")
    sys.stdout.flush()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def current_rss_mb() -> float | None:
    """Resident memory of this process now (Linux /proc), e.g. the baseline after imports."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def median_seconds(fn: Callable[[], Any], reps: int) -> tuple[float, list[float]]:
    """Median wall time of ``reps`` calls, and every time (rounded) for the record."""
    times = []
    for _ in range(reps):
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    return statistics.median(times), [round(t, 4) for t in times]


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores since boot, from /proc/stat; None off Linux."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def _proc_stat(pid: str) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its reaped children) from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After "pid (comm)": state ppid ... utime(11) stime(12) cutime(13) cstime(14), in clock ticks.
    return int(fields[1]), sum(int(v) for v in fields[11:15]) / CLOCK_TICKS


def _own_cpu_seconds() -> float:
    """CPU of this process, its reaped children and every live descendant.

    Live descendants matter: a forkserver (the library's process pools) is a
    child that outlives each pool, and reaps the workers itself.
    """
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    total = sum(u.ru_utime + u.ru_stime for u in usage)
    stats = {pid: _proc_stat(pid) for pid in os.listdir("/proc") if pid.isdigit()}
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        if stat is not None:
            children.setdefault(stat[0], []).append(int(pid))
    pending = list(children.get(os.getpid(), []))
    while pending:
        pid = pending.pop()
        stat = stats.get(str(pid))
        if stat is not None:
            total += stat[1]
        pending.extend(children.get(pid, []))
    return total


class CpuWatch:
    """How many cores *other* processes kept busy while a benchmark ran.

    On a shared 2-core machine another job's threads make every number here
    meaningless (OpenMP threads wait at barriers for a descheduled sibling), so
    each benchmark reports this beside its numbers: near 0 is a clean run.
    """

    def __init__(self) -> None:
        self.start_jiffies, self.start_own, self.start_wall = _cpu_jiffies(), _own_cpu_seconds(), time.perf_counter()

    def others_cores(self) -> float | None:
        now = _cpu_jiffies()
        if now is None or self.start_jiffies is None:
            return None
        busy = (now[0] - self.start_jiffies[0]) / CLOCK_TICKS
        own = _own_cpu_seconds() - self.start_own
        wall = time.perf_counter() - self.start_wall
        return round(max(0.0, busy - own) / max(wall, 1e-9), 2)


def wait_for_idle(max_wait_s: float, busy_cores: float = 0.3, sample_s: float = 2.0) -> float | None:
    """Wait (up to ``max_wait_s``) until other processes use under ``busy_cores`` cores; returns the last sample."""
    deadline = time.monotonic() + max_wait_s
    while True:
        watch = CpuWatch()
        time.sleep(sample_s)
        busy = watch.others_cores()
        if busy is None or busy < busy_cores or time.monotonic() >= deadline:
            if busy is not None and busy >= busy_cores:
                log.warning("other processes keep %.1f cores busy; measuring anyway (numbers will be noisy)", busy)
            return busy
        log.info("other processes keep %.1f cores busy; waiting for an idle machine", busy)


# ------------------------------------------------------------------ data


def gtsrb_root() -> Path:
    """The extracted GTSRB subset, extracted (safely, atomically) on first use."""
    if not ARCHIVE.is_file():
        raise FileNotFoundError(f"{ARCHIVE} not found; set SIGNFLOW_SHARED to the folder holding data/gtsrb/")
    if not EXTRACT_DIR.is_dir():
        log.info("extracting %s into %s (once)", ARCHIVE, EXTRACT_DIR)
        safe_extract_zip(ARCHIVE, EXTRACT_DIR)
    return EXTRACT_DIR


def _dataset_key(cfg: Config) -> str:
    """What the decoded arrays depend on: a changed param or archive gets a new cache entry."""
    stat = ARCHIVE.stat()
    data_keys = ("classes", "image_size", "roi_crop", "min_image_side", "max_image_side")
    parts = {"data": {k: v for k, v in dataclasses.asdict(cfg.data).items() if k in data_keys},
             "split": dataclasses.asdict(cfg.split), "unknown": dataclasses.asdict(cfg.unknown),
             "archive": [ARCHIVE.name, stat.st_size]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def prepare_dataset(cfg: Config) -> Path:
    """``data/dataset`` of the GTSRB subset for ``cfg``: {train,val,test}.{csv,npy}, cached.

    The same steps as the split and add_unknown stages: track-grouped split of
    the target classes, then the "unknown" class (balanced over the other
    classes) and the held-out open-set classes, each split decoded once.
    """
    out = CACHE_DIR / f"dataset-{cfg.data.image_size}px-{_dataset_key(cfg)}"
    if all((out / f"{name}.npy").is_file() for name in SPLIT_NAMES):
        return out
    root = gtsrb_root()
    begin = time.perf_counter()
    index = read_gtsrb_tree(root)
    targets = split_targets(index, cfg.data.classes, cfg.split.fractions, cfg.split.seed, cfg.split.group_by == "track")
    build_dataset(index, targets, root, out, cfg.data, cfg.split, cfg.unknown)
    log.info("prepared %s in %.1fs", out, time.perf_counter() - begin)
    return out


def subsample(data: ArraySet, n: int | None, seed: int = SUBSAMPLE_SEED) -> ArraySet:
    """``n`` images drawn without replacement (all of them for None), copied into RAM."""
    if n is None or n >= len(data):
        return ArraySet(np.ascontiguousarray(data.images), data.labels)
    keep = np.sort(np.random.default_rng(seed).permutation(len(data))[:n])
    return ArraySet(np.ascontiguousarray(data.images[keep]), data.labels[keep])


def labelled_sets(cfg: Config, quick: bool) -> tuple[Path, pd.DataFrame, ArraySet, ArraySet]:
    """Dataset dir, train manifest and the train/val arrays (held-out rows dropped), as the train stage loads them."""
    dataset = prepare_dataset(cfg)
    train_frame, train = load_labelled(dataset, "train")
    _, val = load_labelled(dataset, "val")
    if quick:
        keep = np.sort(np.random.default_rng(SUBSAMPLE_SEED).permutation(len(train))[:QUICK_TRAIN_IMAGES])
        train_frame = train_frame.iloc[keep].reset_index(drop=True)
        train = ArraySet(np.ascontiguousarray(train.images[keep]), train.labels[keep])
        val = subsample(val, QUICK_VAL_IMAGES)
    else:
        train, val = subsample(train, None), subsample(val, None)
    return dataset, train_frame, train, val


# ------------------------------------------------------------------ the training step


def make_train_step(
    model: nn.Module, strategy: str, cfg: TrainConfig, net: nn.Module | None = None
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One optimisation step exactly as ``signflow.training.loop.fit`` does it, minus the data.

    Same parameter groups, optimizer, loss (label smoothing), gradient clipping
    and per-step host syncs (``loss.item()``, accuracy), so a throughput
    measured with it is the limit ``fit`` could reach with free data. ``net``
    (default ``model``) is what runs forward, e.g. ``torch.compile(model)``.
    """
    net = model if net is None else net
    groups = param_groups(model, strategy, cfg.lr, cfg.backbone_lr_mult, cfg.unfreeze)
    optimizer = make_optimizer(groups, cfg)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    apply_train_mode(model, strategy, cfg.unfreeze)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        logits = net(x)
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        loss.item()
        (logits.argmax(1) == y).sum().item()

    return step


def random_batches(
    n_batches: int, batch_size: int, image_size: int, num_classes: int, channels_last: bool, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised-looking inputs (N, 3, S, S) and labels, already in memory: no data cost at all."""
    gen = torch.Generator().manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [
        (torch.randn(batch_size, 3, image_size, image_size, generator=gen).contiguous(memory_format=fmt),
         torch.randint(num_classes, (batch_size,), generator=gen))
        for _ in range(n_batches)
    ]


def step_throughput(
    step: Callable[[torch.Tensor, torch.Tensor], None],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    warmup: int,
    reps: int,
) -> tuple[float, list[float]]:
    """Images per second of ``step`` over ``batches`` (median of ``reps`` passes) after ``warmup`` steps."""
    for i in range(warmup):
        step(*batches[i % len(batches)])
    images = sum(len(y) for _, y in batches)

    def one_pass() -> None:
        for x, y in batches:
            step(x, y)

    seconds, times = median_seconds(one_pass, reps)
    return images / seconds, [round(images / t, 1) for t in times]
