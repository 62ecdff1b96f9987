"""The one training loop, for every backbone and strategy.

Strategies only choose parameter groups, rates and frozen parts
(``strategies.py``). What the loop consumes is abstracted by a *feeder*:
augmented images through the whole model, or, for the linear strategy, features
of augmented views cached once from the frozen backbone through the head only
(an epoch then costs milliseconds). Everything else (schedule, clipping, early
stopping, checkpoints, resume) is shared.

Distributed (torchrun, ``signflow.training.distributed``): each epoch's seeded global
order and its global batches of ``train.batch_size`` are the same on every
rank; each rank trains on its slice ``batch[rank::world]`` of every global
batch through DistributedDataParallel (gradients averaged), evaluates its
slice of the validation set, and the sums are all-reduced, so every rank takes
the same early-stopping decision. Only rank 0 writes checkpoints. With one
process none of this runs: the path is exactly the single-process one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from signflow.config import TrainConfig
from signflow.data.arrays import release_resident
from signflow.model.checkpoint import load_checkpoint, save_checkpoint
from signflow.model.strategies import apply_train_mode, param_groups, resolve_strategy
from signflow.model.transforms import Normalization, eval_transform, train_transform
from signflow.training import distributed

log = logging.getLogger(__name__)

BEST_FILE, LAST_FILE = "best.pt", "last.pt"
FEATURE_BATCH = 64  # frozen-backbone batch for the feature cache: ~20% faster than 256 on CPU (bench_linear)
EPOCH_SEED_STRIDE = 10_007  # epoch randomness is seeded from seed * stride + epoch
# Rank r > 0 draws its augmentation and dropout from epoch seed + r * stride (rank 0 keeps the
# single-process draws), so ranks do not apply the same random draws to different images.
RANK_SEED_STRIDE = 1_000_003
MIN_RANK_BATCH = 2  # batch norm cannot train on one sample: every rank's slice of a batch needs two
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class ArraySet:
    """Decoded images (N, H, W, 3) uint8 and integer labels (N,), read a batch at a time.

    ``source`` may be a whole split's memory map with ``rows`` the N rows of it
    this set is (``experiment.load_labelled``; None: every row, in order). The
    loop reads only each batch's rows (:meth:`batch`), so the split is never
    copied into RAM and memory does not grow with the number of images.
    """

    source: np.ndarray  # (M, H, W, 3) uint8, in memory or memory-mapped
    labels: np.ndarray  # (N,) integer
    rows: np.ndarray | None = None  # (N,) indices into source; None: source is the N images

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def images(self) -> np.ndarray:
        """All N images: ``source`` itself when ``rows`` is None, else a copy of those rows (all in RAM)."""
        return self.source if self.rows is None else self.source[self.rows]

    def batch(self, idx: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The uint8 images (B, H, W, 3) at positions ``idx`` of this set, a contiguous copy of those rows only."""
        idx = np.asarray(idx)
        rows = idx if self.rows is None else self.rows[idx]
        images = np.ascontiguousarray(self.source[rows])
        release_resident(self.source)  # a memory map's pages just read leave RSS: memory stays at one batch
        return torch.from_numpy(images)


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float


@dataclass
class TrainResult:
    history: list[EpochStats] = field(default_factory=list)
    best_epoch: int = -1
    best_val_accuracy: float = 0.0
    best_val_loss: float = math.inf
    train_seconds: float = 0.0
    images_per_second: float = 0.0
    stopped_early: bool = False
    resumed_from_epoch: int | None = None
    pruned: bool = False  # an epoch callback stopped it (a tuning trial its study pruned); never in last.pt

    def summary(self) -> dict[str, Any]:
        """Flat values for metrics/train.json: the results, no timings (the same run gives the same file)."""
        return {
            "best_epoch": self.best_epoch,
            "best_val_accuracy": round(self.best_val_accuracy, 6),
            "best_val_loss": round(self.best_val_loss, 6),
            "epochs_run": len(self.history),
            "stopped_early": self.stopped_early,
            # Only when true: a run that was not pruned writes the same file inside a study as outside.
            **({"pruned": True} if self.pruned else {}),
        }

    def timings(self) -> dict[str, float]:
        """Flat values for metrics/timings/train.json: they change with the machine and its load, not the model."""
        return {
            "train_seconds": round(self.train_seconds, 2),
            "images_per_second": round(self.images_per_second, 1),
        }


# Called after each epoch; returning True asks ``fit`` to stop there (a pruned tuning trial).
EpochCallback = Callable[[EpochStats], bool | None]


class Feeder(Protocol):
    """What the loop trains on: model inputs for a set of indices, and how to run them."""

    def train_batch(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor: ...
    def eval_batch(self, idx: torch.Tensor) -> torch.Tensor: ...
    def forward(self, x: torch.Tensor) -> torch.Tensor: ...


class ImageFeeder:
    """Augments uint8 batches on the fly and runs the whole model (``net``: the model in DDP, when distributed)."""

    def __init__(
        self,
        model: nn.Module,
        data: ArraySet,
        cfg: TrainConfig,
        norm: Normalization,
        device: torch.device,
        net: nn.Module | None = None,
    ):
        self.model, self.cfg, self.norm, self.device = model, cfg, norm, device
        self.data = data  # batches read their rows only: a memory-mapped split is never copied whole
        net = model if net is None else net
        # Compiled or not, the parameters are the model's own: checkpoints are unaffected.
        self.run = torch.compile(net) if cfg.compile else net

    def train_batch(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = train_transform(self.data.batch(idx), self.cfg.augment, self.norm, gen, self.cfg.channels_last)
        return x.to(self.device, non_blocking=True)

    def eval_batch(self, idx: torch.Tensor) -> torch.Tensor:
        x = eval_transform(self.data.batch(idx), self.norm, self.cfg.channels_last)
        return x.to(self.device, non_blocking=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)


class HeadOnly(nn.Module):
    """``model.forward_head`` as a module, so DistributedDataParallel can wrap the linear strategy's forward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(features)


class FeatureFeeder:
    """Serves cached backbone features (V views, N, F) to the head only (``net``: the head in DDP, when distributed)."""

    def __init__(self, model: nn.Module, features: torch.Tensor, net: nn.Module | None = None):
        self.model, self.features = model, features
        self.run: Callable[[torch.Tensor], torch.Tensor] = model.forward_head if net is None else net

    def train_batch(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        views = torch.randint(self.features.shape[0], (len(idx),), generator=gen)
        return self.features[views, idx]

    def eval_batch(self, idx: torch.Tensor) -> torch.Tensor:
        return self.features[0, idx]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)


@torch.inference_mode()
def extract_features(
    model: nn.Module,
    data: ArraySet,
    norm: Normalization,
    device: torch.device,
    *,
    views: int = 1,
    augment: TrainConfig | None = None,
    seed: int = 0,
    channels_last: bool = False,
) -> torch.Tensor:
    """Run the frozen backbone once per image and view: (views, N, F) on the CPU.

    View 0 is the clean eval transform; further views are augmented with a
    generator seeded per view, so the cache is reproducible.
    """
    model.eval()
    out = []
    for view in range(views):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + view)
        chunks = []
        for idx in torch.arange(len(data)).split(FEATURE_BATCH):
            batch = data.batch(idx)  # only these rows are read
            if view == 0 or augment is None:
                x = eval_transform(batch, norm, channels_last)
            else:
                x = train_transform(batch, augment.augment, norm, gen, channels_last)
            chunks.append(model.forward_features(x.to(device)).float().cpu())
        out.append(torch.cat(chunks))
    return torch.stack(out)


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, mean 1 over present classes (GTSRB is unbalanced)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max(1, (counts > 0).sum()), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def epoch_order(labels: np.ndarray, balance: str, gen: torch.Generator) -> torch.Tensor:
    """Sample order for one epoch: a permutation, or class-balanced draws for ``sampler``."""
    n = len(labels)
    if balance != "sampler":
        return torch.randperm(n, generator=gen)
    weights = 1.0 / np.bincount(labels)[labels]
    return torch.multinomial(torch.tensor(weights), n, replacement=True, generator=gen)


def make_optimizer(groups: list[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def global_batches(order: torch.Tensor, batch_size: int, world: int = 1) -> Iterator[torch.Tensor]:
    """The epoch's batches of ``batch_size`` (the global batch), the same on every rank.

    A last batch too small to give each of ``world`` ranks two samples is
    dropped: batch norm cannot train on one. With one process that is only a
    last batch of one (a whole training set of one image is kept).
    """
    for idx in order.split(batch_size):
        if len(idx) >= MIN_RANK_BATCH * world or (world == 1 and len(order) == 1):
            yield idx


def rank_slice(idx: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This rank's share of a global batch: every ``world``-th index from ``rank``; the batch itself for one rank."""
    return idx if world == 1 else idx[rank::world]


@torch.inference_mode()
def evaluate_loss(feeder: Feeder, model: nn.Module, labels: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (unsmoothed, unweighted) on a labelled set.

    Distributed, each rank evaluates its slice and the sums are all-reduced:
    every rank returns the same two numbers.
    """
    model.eval()
    total_loss, correct = 0.0, 0
    order = rank_slice(torch.arange(len(labels)), distributed.rank(), distributed.world_size())
    for idx in order.split(batch_size):
        logits = feeder.forward(feeder.eval_batch(idx)).float().cpu()
        total_loss += F.cross_entropy(logits, labels[idx], reduction="sum").item()
        correct += (logits.argmax(1) == labels[idx]).sum().item()
    total_loss, correct = distributed.all_reduce_sum([total_loss, correct])
    return total_loss / max(1, len(labels)), correct / max(1, len(labels))


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` on ``device``; None when off. CPU runs ignore it with one log line."""
    if amp == "none":
        return None
    if device.type != "cuda":
        log.info("train.amp=%s is ignored on %s: mixed precision runs on CUDA only", amp, device.type)
        return None
    return AMP_DTYPES[amp]


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _shared_features(compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The frozen-backbone features computed on rank 0 only and broadcast: once, not once per rank."""
    return distributed.broadcast_tensor(compute() if distributed.is_main() else None)


@dataclass
class _LoopState:
    epoch: int = 0
    step: int = 0
    stale_epochs: int = 0
    result: TrainResult = field(default_factory=TrainResult)


def _is_better(stats: EpochStats, result: TrainResult, monitor: str) -> bool:
    if monitor == "val_loss":
        return stats.val_loss < result.best_val_loss
    return stats.val_accuracy > result.best_val_accuracy or (
        stats.val_accuracy == result.best_val_accuracy and stats.val_loss < result.best_val_loss
    )


def _resume(
    checkpoint_dir: Path, fingerprint: str, model: nn.Module, optimizer: torch.optim.Optimizer
) -> _LoopState | None:
    path = checkpoint_dir / LAST_FILE
    if not path.exists():
        return None
    state = load_checkpoint(path)
    if state.get("fingerprint") != fingerprint:
        log.info("%s is from another config or dataset: training from the start", path)
        return None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    loop = _LoopState(epoch=state["epoch"] + 1, step=state["scheduler"]["step"], stale_epochs=state["stale_epochs"])
    loop.result = TrainResult(**{**state["result"], "history": [EpochStats(**h) for h in state["result"]["history"]]})
    loop.result.resumed_from_epoch = state["epoch"]
    log.info("resuming from %s after epoch %d", path, state["epoch"])
    return loop


@dataclass(frozen=True)
class Checkpoints:
    """Where ``fit`` writes best.pt and last.pt, and what each of them carries."""

    directory: Path
    meta: dict[str, Any]  # config, class names, backbone, image size...: stored in every checkpoint
    fingerprint: str  # config + data + code: last.pt is resumed only when it matches


@dataclass
class _Run:
    """What every epoch of one ``fit`` call shares (torchvision's reference passes these one by one)."""

    model: nn.Module
    strategy: str
    cfg: TrainConfig
    device: torch.device
    optimizer: torch.optim.Optimizer
    base_lrs: list[float]
    feeder: Feeder
    val_feeder: Feeder
    train_labels: torch.Tensor
    val_labels: torch.Tensor
    weight: torch.Tensor | None  # class weights of the loss (train.balance: loss), else None
    total_steps: int
    warmup_steps: int
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    loop: _LoopState


@dataclass(frozen=True)
class _EpochTotals:
    loss_sum: float  # summed over images, all ranks
    correct: int
    seen: int
    started: float  # perf_counter() when the epoch began
    step_seconds: float  # its training steps only, this rank


def build_feeders(model: nn.Module, train: ArraySet, val: ArraySet, *, frozen_backbone: bool, cfg: TrainConfig,
                  device: torch.device) -> tuple[Feeder, Feeder]:
    """Train and validation feeders: cached backbone features for a frozen backbone, else augmented images."""
    norm, world = model.normalization, distributed.world_size()
    if not frozen_backbone:
        train_feeder = ImageFeeder(model, train, cfg, norm, device, net=distributed.wrap_model(model, device))
        return train_feeder, ImageFeeder(model, val, cfg, norm, device)
    start = time.perf_counter()
    features = _shared_features(lambda: extract_features(
        model, train, norm, device,
        views=cfg.feature_views, augment=cfg, seed=cfg.seed, channels_last=cfg.channels_last,
    )).to(device)
    head = distributed.wrap_model(HeadOnly(model), device) if world > 1 else None
    val_features = _shared_features(lambda: extract_features(model, val, norm, device,
                                                             channels_last=cfg.channels_last))
    log.info("cached frozen-backbone features %s in %.1fs", tuple(features.shape), time.perf_counter() - start)
    return FeatureFeeder(model, features, net=head), FeatureFeeder(model, val_features.to(device))


def _start(model: nn.Module, train: ArraySet, val: ArraySet, strategy: str, cfg: TrainConfig,
           device: torch.device, checkpoints: Checkpoints) -> _Run:
    """Optimiser, resume state, feeders and schedule: everything before the first epoch, in this order."""
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    groups = param_groups(model, strategy, cfg.lr, cfg.backbone_lr_mult, cfg.unfreeze)
    optimizer = make_optimizer(groups, cfg)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    loop = _resume(checkpoints.directory, checkpoints.fingerprint, model, optimizer) or _LoopState()
    torch.manual_seed(cfg.seed)
    feeder, val_feeder = build_feeders(model, train, val, frozen_backbone=resolve_strategy(strategy).frozen_backbone,
                                       cfg=cfg, device=device)
    num_classes = int(checkpoints.meta["num_classes"])
    steps_per_epoch = max(1, sum(1 for _ in global_batches(torch.arange(len(train)), cfg.batch_size,
                                                            distributed.world_size())))
    amp_dtype = resolve_amp(cfg.amp, device)
    return _Run(
        model=model, strategy=strategy, cfg=cfg, device=device, optimizer=optimizer, base_lrs=base_lrs,
        feeder=feeder, val_feeder=val_feeder,
        train_labels=torch.from_numpy(train.labels.astype(np.int64)),
        val_labels=torch.from_numpy(val.labels.astype(np.int64)),
        weight=class_weights(train.labels, num_classes).to(device) if cfg.balance == "loss" else None,
        total_steps=steps_per_epoch * cfg.epochs, warmup_steps=int(cfg.warmup_epochs * steps_per_epoch),
        amp_dtype=amp_dtype,
        # fp16 needs loss scaling against gradient underflow; disabled, the scaler passes everything through.
        scaler=torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16),
        loop=loop,
    )


def train_one_epoch(run: _Run, labels: np.ndarray, epoch: int) -> _EpochTotals:
    """One pass over the training set in this epoch's seeded order; returns the totals over every rank."""
    cfg, rank, world = run.cfg, distributed.rank(), distributed.world_size()
    # Randomness derived from (seed, epoch, rank): a resumed run continues exactly.
    epoch_seed = cfg.seed * EPOCH_SEED_STRIDE + epoch
    gen = torch.Generator().manual_seed(epoch_seed)
    torch.manual_seed(epoch_seed + rank * RANK_SEED_STRIDE)
    apply_train_mode(run.model, run.strategy, cfg.unfreeze)
    epoch_start = time.perf_counter()
    total_loss, correct, seen = 0.0, 0, 0
    order = epoch_order(labels, cfg.balance, gen)  # the same global order on every rank
    augment_gen = gen if rank == 0 else torch.Generator().manual_seed(epoch_seed + rank * RANK_SEED_STRIDE)
    batches = list(global_batches(order, cfg.batch_size, world))
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
               disable=not distributed.is_main())
    for batch in bar:
        idx = rank_slice(batch, rank, world)
        loss, logits, y = _train_step(run, idx, augment_gen)
        total_loss += loss.item() * len(idx)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(idx)
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
    step_seconds = time.perf_counter() - epoch_start
    total_loss, correct, seen = distributed.all_reduce_sum([total_loss, correct, seen])
    return _EpochTotals(total_loss, int(correct), int(seen), epoch_start, step_seconds)


def _train_step(run: _Run, idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimiser step on the rows ``idx``: the scheduled rate, the loss, clipping; returns loss, logits, labels."""
    for group, base in zip(run.optimizer.param_groups, run.base_lrs, strict=True):
        group["lr"] = base * lr_factor(run.loop.step, run.total_steps, run.warmup_steps)
    y = run.train_labels[idx].to(run.device)
    with _autocast(run.device, run.amp_dtype):
        logits = run.feeder.forward(run.feeder.train_batch(idx, gen))
        loss = F.cross_entropy(logits, y, weight=run.weight, label_smoothing=run.cfg.label_smoothing)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()  # distributed: DDP averages the gradients over ranks here
    if run.cfg.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_([p for g in run.optimizer.param_groups for p in g["params"]], run.cfg.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.loop.step += 1
    return loss, logits, y


def _record_epoch(run: _Run, stats: EpochStats) -> bool:
    """Add ``stats`` to the result, track the best epoch and patience; True when this epoch is the new best."""
    result, cfg = run.loop.result, run.cfg
    result.history.append(stats)
    improved = _is_better(stats, result, cfg.monitor)
    if improved:
        result.best_epoch, result.best_val_accuracy, result.best_val_loss = (
            stats.epoch, stats.val_accuracy, stats.val_loss)
        run.loop.stale_epochs = 0
    else:
        run.loop.stale_epochs += 1
    # Early only if epochs were left: patience running out on the last epoch is a full run.
    result.stopped_early = 0 < cfg.patience <= run.loop.stale_epochs and stats.epoch < cfg.epochs - 1
    return improved


def _save(run: _Run, epoch: int, improved: bool, checkpoints: Checkpoints) -> None:
    """Rank 0 writes last.pt (and best.pt when improved); every rank waits for it before the next epoch."""
    if distributed.is_main():
        state = _checkpoint_state(run.model, run.optimizer, run.loop, epoch, run.total_steps, checkpoints.meta,
                                  checkpoints.fingerprint)
        if improved:
            save_checkpoint(checkpoints.directory / BEST_FILE, state)
        save_checkpoint(checkpoints.directory / LAST_FILE, state)
    distributed.barrier()


def fit(
    model: nn.Module,
    train: ArraySet,
    val: ArraySet,
    *,
    strategy: str,
    cfg: TrainConfig,
    device: torch.device,
    checkpoints: Checkpoints,
    callbacks: Sequence[EpochCallback] = (),
) -> TrainResult:
    """Train ``model`` (normalised by its own ``model.normalization``), writing best/last checkpoints.

    Resumes from last.pt when its fingerprint matches. In a process group
    (``signflow.training.distributed``) every rank calls this with the same
    arguments: every rank resumes from last.pt, only rank 0 writes, and
    ``callbacks`` run on every rank (the caller gives rank 0 its tracker). They
    run after each epoch, once its checkpoints are written; a resumed run first
    replays its earlier epochs to them, in order.
    """
    start = time.perf_counter()
    run = _start(model, train, val, strategy, cfg, device, checkpoints)
    loop = run.loop
    # Replayed: a resumed run's callbacks (this process's tracker run, the per-epoch history file,
    # which DVC deleted before re-running the stage) get the whole history, not only the epochs run now.
    for stats in loop.result.history:
        for callback in callbacks:
            callback(stats)
    prior_seconds, prior_rate = loop.result.train_seconds, loop.result.images_per_second
    step_seconds, step_images = 0.0, 0
    last_epoch = loop.epoch if loop.result.stopped_early else cfg.epochs  # a finished run stays finished
    for epoch in range(loop.epoch, last_epoch):
        totals = train_one_epoch(run, train.labels, epoch)
        step_seconds, step_images = step_seconds + totals.step_seconds, step_images + totals.seen
        # Validation and last.pt use rank 0's batch-norm running statistics, on every rank.
        distributed.broadcast_buffers(model)
        val_loss, val_acc = evaluate_loss(run.val_feeder, model, run.val_labels, cfg.batch_size)
        seen = max(1, totals.seen)
        stats = EpochStats(epoch, totals.loss_sum / seen, totals.correct / seen, val_loss, val_acc,
                           run.optimizer.param_groups[-1]["lr"], time.perf_counter() - totals.started)
        log.info("epoch %d/%d train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.1fs",
                 epoch + 1, cfg.epochs, stats.train_loss, stats.train_accuracy, val_loss, val_acc, stats.seconds)
        loop.result.train_seconds = prior_seconds + time.perf_counter() - start
        loop.result.images_per_second = step_images / step_seconds if step_seconds else prior_rate
        improved = _record_epoch(run, stats)
        _save(run, epoch, improved, checkpoints)
        stop = _callbacks_stop(callbacks, stats)
        if loop.result.stopped_early:
            log.info("early stop: %s did not improve for %d epochs", cfg.monitor, cfg.patience)
            break
        if stop:
            # Pruned only if epochs were left, as for early stopping.
            loop.result.pruned = epoch < cfg.epochs - 1
            log.info("stopped after epoch %d: an epoch callback asked to (a pruned tuning trial)", epoch + 1)
            break
    # A resumed run adds to the time already spent; with no new step, its rate stands.
    loop.result.train_seconds = prior_seconds + time.perf_counter() - start
    loop.result.images_per_second = step_images / step_seconds if step_seconds else prior_rate
    return loop.result


def _callbacks_stop(callbacks: Sequence[EpochCallback], stats: EpochStats) -> bool:
    """Run every callback; whether one asked to stop, as rank 0 decided (every rank must leave the loop together)."""
    stop = any([bool(callback(stats)) for callback in callbacks])  # a list: every callback runs
    if distributed.world_size() == 1:
        return stop
    flag = torch.tensor([stop], dtype=torch.uint8) if distributed.is_main() else None
    return bool(distributed.broadcast_tensor(flag).item())


def _checkpoint_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loop: _LoopState,
    epoch: int,
    total_steps: int,
    meta: dict[str, Any],
    fingerprint: str,
) -> dict[str, Any]:
    result = asdict(loop.result)
    return {
        **meta,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": {"step": loop.step, "total_steps": total_steps},
        "epoch": epoch,
        "stale_epochs": loop.stale_epochs,
        "result": result,
        "fingerprint": fingerprint,
    }
