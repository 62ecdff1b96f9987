"""Distributed training throughput: 1 process x 2 threads vs 2 DDP processes x 1 thread on this machine.

Both are ``signflow.training.loop.fit`` for the same epochs on the real GTSRB subset
(``strategy: full``, params.yaml backbone and weights, global batch size, image
size, channels_last), same seed:

- ``one_process_img_s``: one process with ``--threads`` (default 2) torch threads;
- ``two_processes_img_s``: two ranks under torchrun (gloo), one thread each,
  each training on its half of every global batch (DistributedDataParallel
  averages the gradients);
- ``ratio``: two processes / one process.

A rate is ``fit``'s own ``images_per_second`` (training batches only,
validation excluded; for two processes: the global batches, timed on rank 0),
median over ``--reps`` runs whose order alternates. Each run is a fresh child
process (a torchrun group for the two ranks), so both pay the same start-up,
outside the timing; unlike the other benchmarks, the numbers of this line come
from several processes. ``others_cores_busy`` counts the children as this
benchmark's own work; it is also given per run, since a 2-thread process
suffers far more from another job's load than two 1-thread processes.

Usage: ``python benchmarks/bench_ddp.py [--quick] [--epochs N] [--reps N]``; one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from signflow.config import Config
from signflow.runtime import configure_runtime
from signflow.training import distributed
from signflow.training.loop import Checkpoints, fit
from signflow.training.stage import build_model, checkpoint_meta

import common

STRATEGY = "full"  # every layer trains: the most gradient to all-reduce
RANKS = 2
CORES_USED = 2  # one process x 2 threads vs 2 processes x 1 thread
EPOCHS = 1  # the first steps (oneDNN set-up, DDP buckets) are part of a run's cost, as in bench_train
WORKER_TIMEOUT_S = 1200

log = logging.getLogger("bench.ddp")


def run_worker(args: argparse.Namespace) -> None:
    """One training run (or one rank of it, under torchrun): fit; rank 0 writes its numbers to ``args.worker``."""
    base = common.start(args)
    cfg = dataclasses.replace(base, strategy=STRATEGY, train=dataclasses.replace(
        base.train, epochs=args.epochs, threads=args.threads, patience=0, device="cpu"))
    device = configure_runtime(cfg.train, ranks=distributed.local_world_size())
    _, _, train, val = common.labelled_sets(cfg, args.quick)  # prepared by the parent: loads the cache
    with distributed.process_group(device) as device:
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg)
        # The parent's fresh folder, the same for every rank: nothing to resume from.
        result = fit(model, train, val, strategy=STRATEGY, cfg=cfg.train, device=device,
                     checkpoints=Checkpoints(Path(args.checkpoints), checkpoint_meta(cfg, model), "bench"))
        if distributed.is_main():
            Path(args.worker).write_text(json.dumps({
                "img_s": result.images_per_second, "world_size": distributed.world_size(),
                "threads": torch.get_num_threads(), "val_accuracy": result.history[-1].val_accuracy}))


def child_command(args: argparse.Namespace, out: Path, ranks: int, threads: int, checkpoints: Path) -> list[str]:
    script = Path(__file__).resolve()
    launcher = distributed.launch_command(ranks, script) if ranks > 1 else [sys.executable, str(script)]
    options = ["--worker", str(out), "--threads", str(threads), "--epochs", str(args.epochs),
               "--checkpoints", str(checkpoints), "--params", str(args.params), "--wait-idle", "0"]
    return launcher + options + (["--quick"] if args.quick else [])


def measure(args: argparse.Namespace, ranks: int, threads: int) -> dict[str, Any]:
    """One child run of ``ranks`` processes x ``threads`` threads; its rank 0's numbers and the others' load."""
    with tempfile.TemporaryDirectory(prefix="bench-ddp-run-") as folder:
        out = Path(folder) / "result.json"
        command = child_command(args, out, ranks, threads, Path(folder) / "models")
        log.info("%d process(es) x %d thread(s): %s", ranks, threads, " ".join(command))
        watch = common.CpuWatch()
        subprocess.run(command, check=True, timeout=WORKER_TIMEOUT_S)
        return {**json.loads(out.read_text()), "others_cores_busy": watch.others_cores()}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=EPOCHS, help="epochs of each run (default: %(default)s)")
    p.add_argument("--threads", type=int, default=CORES_USED,
                   help="torch threads of the one-process run (default: %(default)s); each rank has one")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run one training, write here
    p.add_argument("--checkpoints", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        run_worker(args)
        return
    cfg: Config = dataclasses.replace(common.start(args), strategy=STRATEGY)
    dataset, _, train, val = common.labelled_sets(cfg, args.quick)  # decode once, before any timing
    idle_before = common.wait_for_idle(args.wait_idle)
    watch = common.CpuWatch()
    one: list[dict[str, Any]] = []
    two: list[dict[str, Any]] = []
    for rep in range(args.reps):
        runs = [(one, 1, args.threads), (two, RANKS, 1)]
        for results, ranks, threads in runs if rep % 2 == 0 else runs[::-1]:  # alternate: drift hits both
            results.append(measure(args, ranks, threads))
    one_img_s = statistics.median(r["img_s"] for r in one)
    two_img_s = statistics.median(r["img_s"] for r in two)
    common.emit({
        "benchmark": "ddp",
        "model": cfg.model.backbone, "weights": cfg.model.weights, "strategy": STRATEGY,
        "image_size": cfg.data.image_size, "global_batch_size": cfg.train.batch_size,
        "channels_last": cfg.train.channels_last, "available_cores": common.available_cores(),
        "n_images": len(train), "n_val_images": len(val), "epochs": args.epochs, "quick": args.quick,
        "reps": args.reps, "backend": distributed.CPU_BACKEND,
        "one_process_threads": args.threads, "one_process_img_s": round(one_img_s, 1),
        "two_processes_threads_each": 1, "two_processes_img_s": round(two_img_s, 1),
        "ratio": round(two_img_s / one_img_s, 3),
        "one_process_img_s_reps": [round(r["img_s"], 1) for r in one],
        "two_processes_img_s_reps": [round(r["img_s"], 1) for r in two],
        "one_process_others_cores_busy": [r["others_cores_busy"] for r in one],
        "two_processes_others_cores_busy": [r["others_cores_busy"] for r in two],
        "one_process_val_acc": [round(r["val_accuracy"], 4) for r in one],
        "two_processes_val_acc": [round(r["val_accuracy"], 4) for r in two],
        "others_cores_busy_before": idle_before, "others_cores_busy": watch.others_cores(),
        "dataset": str(dataset),
    })


if __name__ == "__main__":
    main()
