"""Training throughput: signflow's real epoch vs the model's limit vs the tutorials' data pipeline.

All in one process, same model (params.yaml backbone, ImageNet weights,
strategy ``full``), batch size, image size, threads and memory format:

- ``model_img_s``: the training step (forward, backward, clipping, AdamW) on
  random tensors already in memory: what any data pipeline can at best reach;
- ``pipeline_img_s``: ``signflow.training.loop.fit`` for one epoch over the decoded
  GTSRB arrays (batched augmentation on uint8 tensors), its own
  ``images_per_second`` (training batches only, validation excluded);
- ``naive_img_s``: the original tutorials' way: ``torchvision.datasets.ImageFolder``
  over the same PPM files, PIL decode and a per-sample
  ``Compose([Resize, RandomRotation, ColorJitter, ToTensor, Normalize])`` every
  epoch, default ``DataLoader`` (``num_workers=0``), the same step;
- ``channels_last_speedup`` (model step with / without channels_last) and
  ``compile_speedup`` (``torch.compile`` vs eager model step).

Usage: ``python benchmarks/bench_train.py [--quick] [--no-compile]``; one JSON line on stdout.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from signflow.config import Config
from signflow.model.backbones import resolve_backbone
from signflow.runtime import configure_runtime
from signflow.training.loop import Checkpoints, fit, train_transform
from signflow.training.stage import build_model, checkpoint_meta

import common

STRATEGY = "full"  # every layer trains: the step the whole pipeline is sized for
# Model-limit passes: batches of random tensors per timed pass, and untimed warm-up steps
# (the first steps of a process pay oneDNN primitive creation and allocator growth).
N_LIMIT_BATCHES = 6
WARMUP_STEPS = 3
# Data-only passes of the two input pipelines (no model step), to show where the time goes.
DATA_BATCHES, DATA_BATCHES_QUICK = 20, 3
# torch.compile: its first steps compile (about a minute on 2 cores, cold); these many steps are untimed.
COMPILE_WARMUP_STEPS = 2
INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"

log = logging.getLogger("bench.train")


def limit_step(cfg: Config, channels_last: bool, compile_model: bool = False) -> tuple[Any, list]:
    """A fresh model's training step and random in-memory batches in the given memory format."""
    model = build_model(cfg)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compile_model else None
    step = common.make_train_step(model, STRATEGY, cfg.train, net)
    batches = common.random_batches(N_LIMIT_BATCHES, cfg.train.batch_size, cfg.data.image_size,
                                    len(cfg.class_names), channels_last)
    return step, batches


def warm_up(step: Any, batches: list, steps: int) -> float:
    """Untimed steps (primitive creation, allocator growth, compilation); their seconds."""
    begin = time.perf_counter()
    for i in range(steps):
        step(*batches[i % len(batches)])
    return time.perf_counter() - begin


def interleaved_throughput(cases: dict[str, tuple[Any, list]], reps: int) -> dict[str, tuple[float, list[float]]]:
    """Median images/s per case, passes alternating between cases so load drift hits all alike."""
    per_case: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            step, batches = cases[name]
            per_case[name].append(common.step_throughput(step, batches, 0, 1)[0])
    return {name: (statistics.median(v), [round(x, 1) for x in v]) for name, v in per_case.items()}


def pipeline_throughput(cfg: Config, train: Any, val: Any, device: torch.device) -> dict[str, float]:
    """One real epoch of ``fit`` (strategy full) over the decoded arrays."""
    model = build_model(cfg)
    one_epoch = dataclasses.replace(cfg.train, epochs=1)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as ckpt:
        result = fit(model, train, val, strategy=STRATEGY, cfg=one_epoch, device=device,
                     checkpoints=Checkpoints(Path(ckpt), checkpoint_meta(cfg, model), "bench"))
    return {"img_s": result.images_per_second, "epoch_s": result.history[0].seconds}


def augment_throughput(cfg: Config, train: Any, n_batches: int) -> float:
    """signflow's batched augmentation alone (ImageFeeder.train_batch without the model)."""
    images = torch.from_numpy(train.images)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(train), generator=gen).split(cfg.train.batch_size)[:n_batches]
    norm = resolve_backbone(cfg.model.backbone).normalization
    begin = time.perf_counter()
    for idx in order:
        train_transform(images[idx], cfg.train.augment, norm, gen, cfg.train.channels_last)
    return sum(len(i) for i in order) / (time.perf_counter() - begin)


def imagefolder_tree(root: Path, frame: Any, out: Path) -> int:
    """An ImageFolder tree of symlinks to the same files: ``out/<label_idx>/<class>_<file>``."""
    for row in frame.itertuples():
        target = out / f"{row.label_idx:02d}" / f"{row.class_id}_{Path(row.path).name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(root / row.path)
    return len(frame)


def naive_loader(cfg: Config, folder: Path) -> DataLoader:
    """The tutorials' pipeline: PIL per file, per-sample torchvision transforms, no workers."""
    aug, norm = cfg.train.augment, resolve_backbone(cfg.model.backbone).normalization
    size = cfg.data.image_size
    transform = transforms.Compose([
        transforms.Resize((size, size)),
        transforms.RandomRotation(aug.rotate_degrees),
        transforms.ColorJitter(aug.brightness, aug.contrast, aug.saturation, aug.hue),
        transforms.ToTensor(),
        transforms.Normalize(norm.mean, norm.std),
    ])
    dataset = datasets.ImageFolder(folder, transform=transform)
    return DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=True, num_workers=0)


def naive_throughput(cfg: Config, loader: DataLoader, data_batches: int) -> dict[str, float]:
    """One epoch of the tutorials' loader through the same training step; and the loader alone."""
    begin, seen = time.perf_counter(), 0
    for i, (x, _) in enumerate(loader):
        seen += len(x)
        if i + 1 >= data_batches:
            break
    data_img_s = seen / (time.perf_counter() - begin)

    model = build_model(cfg)
    fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    step = common.make_train_step(model, STRATEGY, cfg.train)
    begin, seen = time.perf_counter(), 0
    for x, y in loader:
        if len(y) < 2:  # fit drops a last batch of one too (batch norm)
            continue
        step(x.contiguous(memory_format=fmt), y)
        seen += len(y)
    return {"img_s": seen / (time.perf_counter() - begin), "data_img_s": data_img_s}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--no-compile", action="store_true",
                   help="skip the torch.compile measurement (it compiles for minutes)")
    args = p.parse_args()
    cfg = dataclasses.replace(common.start(args), strategy=STRATEGY)
    device = configure_runtime(cfg.train)
    n_data = DATA_BATCHES_QUICK if args.quick else DATA_BATCHES
    dataset, train_frame, train, val = common.labelled_sets(cfg, args.quick)
    rss_at_start = common.current_rss_mb()  # after imports and loading the arrays: the baseline
    idle_before = common.wait_for_idle(args.wait_idle)
    watch = common.CpuWatch()

    log.info("model step limit, channels_last and contiguous, interleaved")
    cases = {fmt: limit_step(cfg, fmt == "channels_last") for fmt in ("channels_last", "contiguous")}
    for step, batches in cases.values():
        warm_up(step, batches, WARMUP_STEPS)
    limits = interleaved_throughput(cases, args.reps)
    del cases
    configured = "channels_last" if cfg.train.channels_last else "contiguous"
    model_img_s, model_reps = limits[configured]

    log.info("signflow augmentation alone")
    augment_img_s = augment_throughput(cfg, train, n_data)
    log.info("signflow pipeline: fit, 1 epoch, %d images", len(train))
    pipeline = pipeline_throughput(cfg, train, val, device)
    rss_after_pipeline = common.peak_rss_mb()

    log.info("naive pipeline: ImageFolder + PIL transforms, %d images", len(train))
    with tempfile.TemporaryDirectory(prefix="bench-imagefolder-") as folder:
        imagefolder_tree(common.gtsrb_root(), train_frame, Path(folder))
        naive = naive_throughput(cfg, naive_loader(cfg, Path(folder)), n_data)
    others_cores = watch.others_cores()

    compiled = measure_compile(cfg, model_img_s, args) if not args.no_compile else {
        "compile_speedup": None, "compile_s": None, "compile_note": "skipped (--no-compile)"}

    common.emit({
        "benchmark": "train",
        "model": cfg.model.backbone, "weights": cfg.model.weights, "strategy": STRATEGY,
        "image_size": cfg.data.image_size, "batch_size": cfg.train.batch_size, "threads": torch.get_num_threads(),
        "available_cores": common.available_cores(), "channels_last": cfg.train.channels_last,
        "n_images": len(train), "n_val_images": len(val), "quick": args.quick, "reps": args.reps,
        "model_img_s": round(model_img_s, 1), "model_img_s_reps": model_reps,
        "pipeline_img_s": round(pipeline["img_s"], 1), "pipeline_epoch_s": round(pipeline["epoch_s"], 2),
        "naive_img_s": round(naive["img_s"], 1),
        "ratio_to_limit": round(pipeline["img_s"] / model_img_s, 3),
        "speedup_vs_naive": round(pipeline["img_s"] / naive["img_s"], 3),
        "augment_only_img_s": round(augment_img_s, 1), "naive_loader_only_img_s": round(naive["data_img_s"], 1),
        "channels_last_speedup": round(limits["channels_last"][0] / limits["contiguous"][0], 3),
        "channels_last_img_s": limits["channels_last"][1], "contiguous_img_s": limits["contiguous"][1],
        **compiled,
        "peak_rss_mb": common.peak_rss_mb(), "peak_rss_mb_after_pipeline": rss_after_pipeline,
        "rss_mb_at_start": rss_at_start,
        "others_cores_busy_before": idle_before, "others_cores_busy": others_cores,
        "dataset": str(dataset),
    })


def measure_compile(cfg: Config, eager_img_s: float, args: Any) -> dict[str, Any]:
    """torch.compile'd model step vs the eager one measured above; None with the reason if it fails."""
    log.info("torch.compile of the model step (the first steps compile, with an empty inductor cache)")
    previous = os.environ.get(INDUCTOR_CACHE_ENV)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-inductor-") as cache:
            # A cold cache: what a first run pays (a warm one in /tmp makes compile_s a few seconds).
            os.environ[INDUCTOR_CACHE_ENV] = cache
            step, batches = limit_step(cfg, cfg.train.channels_last, compile_model=True)
            compile_s = warm_up(step, batches, COMPILE_WARMUP_STEPS)
            img_s, reps = common.step_throughput(step, batches, 0, args.reps)
    except Exception as err:  # noqa: BLE001 - inductor needs a C++ toolchain; report why instead of failing
        return {"compile_speedup": None, "compile_s": None,
                "compile_note": f"torch.compile failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"}
    finally:
        if previous is None:
            os.environ.pop(INDUCTOR_CACHE_ENV, None)
        else:
            os.environ[INDUCTOR_CACHE_ENV] = previous
    return {"compile_speedup": round(img_s / eager_img_s, 3), "compile_s": round(compile_s, 1),
            "compiled_img_s": round(img_s, 1), "compiled_img_s_reps": reps,
            "compile_note": "default mode, inductor CPU backend, cold cache; compile_s = first steps incl. compilation"}


if __name__ == "__main__":
    main()
