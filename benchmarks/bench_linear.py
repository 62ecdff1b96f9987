"""Linear strategy: cached backbone features vs running the frozen backbone every epoch.

Both runs are ``signflow.training.loop.fit`` with ``strategy: linear`` on the decoded
GTSRB arrays, same seed (same initial head), same epochs, in one process:

- cached (what signflow does): the frozen backbone runs once over
  ``train.feature_views`` views per image (``extract_features``), then every
  epoch trains the head on the cached features (``FeatureFeeder``);
- plain (the usual way): every epoch augments the images and runs them through
  the frozen backbone (``ImageFeeder``); forced by telling ``fit`` the linear
  strategy's backbone is not frozen, so parameter groups, frozen batch norm and
  the rest of the loop stay exactly those of ``linear``.

How the two see augmentation differs (the accuracy gap measures the cost):
cached draws, per image and epoch, one of ``feature_views`` fixed views
(view 0 clean, the others augmented once at cache time); plain draws a fresh
augmentation every epoch and never shows the clean image. Validation is the
same in both (clean images through the frozen backbone).

Reports ``cached_epoch_s``, ``plain_epoch_s`` (median epoch wall time,
validation included), ``speedup``, ``feature_cache_s`` (one-off), the
break-even epoch count and both final validation accuracies.
Usage: ``python benchmarks/bench_linear.py [--quick] [--epochs N]``.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

import signflow.training.loop as train_module
from signflow.config import Config
from signflow.runtime import configure_runtime
from signflow.training.loop import ArraySet, Checkpoints, TrainResult, fit
from signflow.training.stage import build_model, checkpoint_meta

import common

STRATEGY = "linear"
EPOCHS, EPOCHS_QUICK = 5, 2
ACCURACY_TARGET_POINTS = 0.5  # cached vs plain validation accuracy, in percentage points

log = logging.getLogger("bench.linear")


@contextmanager
def timed_feature_cache() -> Iterator[list[float]]:
    """Record the seconds of every ``extract_features`` call ``fit`` makes (timing only)."""
    original: Callable[..., torch.Tensor] = train_module.extract_features
    seconds: list[float] = []

    def wrapper(*args: Any, **kwargs: Any) -> torch.Tensor:
        begin = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - begin)

    train_module.extract_features = wrapper
    try:
        yield seconds
    finally:
        train_module.extract_features = original


@contextmanager
def backbone_not_cached() -> Iterator[None]:
    """Make ``fit`` take its ImageFeeder path for the linear strategy (backbone still frozen)."""
    original = train_module.resolve_strategy

    def resolve(name: str) -> Any:
        spec = original(name)
        return dataclasses.replace(spec, frozen_backbone=False) if name == STRATEGY else spec

    train_module.resolve_strategy = resolve
    try:
        yield
    finally:
        train_module.resolve_strategy = original


def run_fit(cfg: Config, train: ArraySet, val: ArraySet, device: torch.device, epochs: int) -> TrainResult:
    torch.manual_seed(cfg.train.seed)  # same initial head in both runs
    model = build_model(cfg)
    train_cfg = dataclasses.replace(cfg.train, epochs=epochs, patience=0)  # every epoch runs: same count in both
    with tempfile.TemporaryDirectory(prefix="bench-linear-") as ckpt:
        return fit(model, train, val, strategy=STRATEGY, cfg=train_cfg, device=device,
                   checkpoints=Checkpoints(Path(ckpt), checkpoint_meta(cfg, model), "bench"))


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs of each run (default: {EPOCHS}, {EPOCHS_QUICK} with --quick)")
    args = p.parse_args()
    cfg = dataclasses.replace(common.start(args), strategy=STRATEGY)
    epochs = args.epochs or (EPOCHS_QUICK if args.quick else EPOCHS)
    device = configure_runtime(cfg.train)
    dataset, _, train, val = common.labelled_sets(cfg, args.quick)
    idle_before = common.wait_for_idle(args.wait_idle)
    watch = common.CpuWatch()

    log.info("cached: features of %d views, then %d head-only epochs", cfg.train.feature_views, epochs)
    with timed_feature_cache() as cache_seconds:
        cached = run_fit(cfg, train, val, device, epochs)
    log.info("plain: frozen backbone run every epoch, %d epochs", epochs)
    with backbone_not_cached():
        plain = run_fit(cfg, train, val, device, epochs)

    cached_epoch_s = statistics.median(h.seconds for h in cached.history)
    plain_epoch_s = statistics.median(h.seconds for h in plain.history)
    feature_cache_s = sum(cache_seconds)
    saved_per_epoch = plain_epoch_s - cached_epoch_s
    cached_acc, plain_acc = cached.history[-1].val_accuracy, plain.history[-1].val_accuracy
    common.emit({
        "benchmark": "linear",
        "model": cfg.model.backbone, "weights": cfg.model.weights, "strategy": STRATEGY,
        "image_size": cfg.data.image_size, "batch_size": cfg.train.batch_size, "threads": torch.get_num_threads(),
        "channels_last": cfg.train.channels_last, "feature_views": cfg.train.feature_views,
        "n_images": len(train), "n_val_images": len(val), "epochs": epochs, "quick": args.quick,
        "cached_epoch_s": round(cached_epoch_s, 4), "plain_epoch_s": round(plain_epoch_s, 3),
        "speedup": round(plain_epoch_s / cached_epoch_s, 1),
        "feature_cache_s": round(feature_cache_s, 2),
        "feature_cache_s_per_call": [round(s, 2) for s in cache_seconds],  # train views, then val
        "break_even_epochs": round(feature_cache_s / saved_per_epoch, 2) if saved_per_epoch > 0 else None,
        "cached_total_s": round(feature_cache_s + sum(h.seconds for h in cached.history), 2),
        "plain_total_s": round(sum(h.seconds for h in plain.history), 2),
        "cached_val_acc": round(cached_acc, 4), "plain_val_acc": round(plain_acc, 4),
        "val_acc_gap_points": round(100 * (cached_acc - plain_acc), 2),
        "val_acc_within_target": abs(100 * (cached_acc - plain_acc)) <= ACCURACY_TARGET_POINTS,
        "cached_val_acc_per_epoch": [round(h.val_accuracy, 4) for h in cached.history],
        "plain_val_acc_per_epoch": [round(h.val_accuracy, 4) for h in plain.history],
        "peak_rss_mb": common.peak_rss_mb(),
        "others_cores_busy_before": idle_before, "others_cores_busy": watch.others_cores(),
        "dataset": str(dataset),
    })


if __name__ == "__main__":
    main()
