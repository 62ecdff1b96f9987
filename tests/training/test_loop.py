"""The training loop: what each strategy changes, checkpoints, exact resume, schedule and the fast path.

Every run is tiny: 32 px coloured squares (4 classes, a few dozen images), one
to three epochs, one thread. Configs start from the real ``params.yaml`` and
are shrunk with ``dataclasses.replace``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from signflow.config import AugmentConfig, Config, load_config
from signflow.model.backbones import SignModel, create_model
from signflow.model.checkpoint import CheckpointError, load_checkpoint
from signflow.model.transforms import Normalization, eval_transform, random_homographies, train_transform
from signflow.runtime import configure_runtime
from signflow.training.loop import (
    BEST_FILE,
    LAST_FILE,
    ArraySet,
    Checkpoints,
    EpochStats,
    FeatureFeeder,
    ImageFeeder,
    TrainResult,
    class_weights,
    epoch_order,
    extract_features,
    fit,
    lr_factor,
)
from signflow.training.stage import (
    HISTORY_COLUMNS,
    TIMINGS_HISTORY_COLUMNS,
    TrainOutputs,
    build_model,
    checkpoint_meta,
    epoch_callbacks,
    fingerprint,
)

SIZE = 32
COLOURS = ((230, 30, 30), (30, 200, 40), (40, 60, 230), (240, 230, 40))  # one per class
PER_CLASS_TRAIN, PER_CLASS_VAL = 10, 3
LITE0 = "efficientnet_lite0"
META_KEYS = {"class_names", "normalization", "image_size", "backbone", "config"}
NORM = Normalization(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # maps [0, 1] to [-1, 1]
NO_AUGMENT = AugmentConfig(
    hflip=False, scale_min=1.0, rotate_degrees=0.0, perspective=0.0,
    brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, blur_prob=0.0,
)

State = dict[str, torch.Tensor]


# ---- tiny data, config and runtime -----------------------------------------------------------


def _squares(per_class: int, seed: int) -> ArraySet:
    """A coloured square at a random place and size on dark noise; label = colour."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, colour in enumerate(COLOURS):
        for _ in range(per_class):
            image = rng.integers(0, 50, size=(SIZE, SIZE, 3))
            side = int(rng.integers(SIZE // 3, SIZE // 2 + 1))
            y, x = rng.integers(0, SIZE - side, size=2)
            image[y : y + side, x : x + side] = colour
            images.append(image)
            labels.append(label)
    return ArraySet(np.asarray(images, dtype=np.uint8), np.asarray(labels))


@pytest.fixture(scope="module")
def train_set() -> ArraySet:
    return _squares(PER_CLASS_TRAIN, seed=0)


@pytest.fixture(scope="module")
def val_set() -> ArraySet:
    return _squares(PER_CLASS_VAL, seed=1)


@pytest.fixture(scope="module")
def base_cfg(repo_root: Path) -> Config:
    """The real params.yaml shrunk: 4 known classes, 32 px, one epoch, small batches, one thread."""
    cfg = load_config(repo_root / "params.yaml")
    classes = dict(zip([str(i) for i in range(len(COLOURS))], ["red", "green", "blue", "yellow"], strict=True))
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, classes=classes, image_size=SIZE),
        unknown=dataclasses.replace(cfg.unknown, enabled=False, classes=(), heldout=()),
        train=dataclasses.replace(
            cfg.train, epochs=1, batch_size=8, threads=1, device="cpu", feature_views=2, unfreeze=1, patience=0
        ),
    )


def _cfg(base: Config, strategy: str, backbone: str = LITE0, weights: str = "imagenet", **train: Any) -> Config:
    return dataclasses.replace(
        base,
        strategy=strategy,
        model=dataclasses.replace(base.model, backbone=backbone, weights=weights),
        train=dataclasses.replace(base.train, **train),
    )


@pytest.fixture(scope="module", autouse=True)
def device(base_cfg: Config) -> torch.device:
    """One thread, deterministic kernels, CPU; the process-wide settings are restored afterwards."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    dev = configure_runtime(base_cfg.train)
    yield dev
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def _fit(
    model: SignModel,
    cfg: Config,
    train_set: ArraySet,
    val_set: ArraySet,
    checkpoint_dir: Path,
    device: torch.device,
    *,
    fingerprint: str = "fingerprint-a",
    callbacks: tuple[Callable[[EpochStats], None], ...] = (),
) -> TrainResult:
    return fit(
        model, train_set, val_set, strategy=cfg.strategy, cfg=cfg.train, device=device,
        checkpoints=Checkpoints(checkpoint_dir, checkpoint_meta(cfg, model), fingerprint), callbacks=callbacks,
    )


def _snapshot(module: nn.Module) -> State:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(module: nn.Module, before: State) -> list[str]:
    """Names of parameters and buffers (batch-norm running stats included) that differ from ``before``."""
    return [k for k, v in module.state_dict().items() if not torch.equal(v, before[k])]


def _params_not_changed(module: nn.Module, before: State) -> list[str]:
    return [k for k, p in module.named_parameters() if torch.equal(p.detach(), before[k])]


def _without_seconds(history: list[EpochStats]) -> list[dict[str, float]]:
    return [{k: v for k, v in dataclasses.asdict(h).items() if k != "seconds"} for h in history]


# ---- runtime --------------------------------------------------------------------------------


def test_configure_runtime_sets_threads_determinism_and_device(base_cfg: Config) -> None:
    torch.set_num_threads(2)
    assert configure_runtime(base_cfg.train) == torch.device("cpu")
    assert torch.get_num_threads() == 1
    assert torch.are_deterministic_algorithms_enabled()
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="train.device=cuda"):
            configure_runtime(dataclasses.replace(base_cfg.train, device="cuda"))
        assert configure_runtime(dataclasses.replace(base_cfg.train, device="auto")) == torch.device("cpu")


# ---- what each strategy changes, through the real loop --------------------------------------


def test_linear_changes_only_the_head(base_cfg, train_set, val_set, tmp_path, device) -> None:
    cfg = _cfg(base_cfg, "linear")
    model = build_model(cfg)
    assert model.weights == "imagenet"
    backbone, head = _snapshot(model.backbone), _snapshot(model.head)

    result = _fit(model, cfg, train_set, val_set, tmp_path, device)

    assert len(result.history) == 1
    assert _changed(model.backbone, backbone) == []  # parameters AND running stats
    assert any("running_mean" in k for k in backbone)  # so the line above did check BN statistics
    assert _params_not_changed(model.head, head) == []


def test_full_changes_every_backbone_parameter(base_cfg, train_set, val_set, tmp_path, device) -> None:
    cfg = _cfg(base_cfg, "full")
    model = build_model(cfg)
    backbone, head = _snapshot(model.backbone), _snapshot(model.head)

    _fit(model, cfg, train_set, val_set, tmp_path, device)

    assert _params_not_changed(model.backbone, backbone) == []
    assert _params_not_changed(model.head, head) == []


def test_partial_changes_only_the_last_block_and_head(base_cfg, train_set, val_set, tmp_path, device) -> None:
    cfg = _cfg(base_cfg, "partial", unfreeze=1)
    model = build_model(cfg)
    # Precondition: the blocks hold the whole backbone, so checking them checks everything.
    assert sum(len(b.state_dict()) for b in model.blocks) == len(model.backbone.state_dict())
    frozen = [_snapshot(block) for block in model.blocks[:-1]]
    last, head = _snapshot(model.blocks[-1]), _snapshot(model.head)

    _fit(model, cfg, train_set, val_set, tmp_path, device)

    for index, (block, before) in enumerate(zip(model.blocks[:-1], frozen, strict=True)):
        assert _changed(block, before) == [], f"frozen block {index} changed"
    assert _params_not_changed(model.blocks[-1], last) == []
    assert _params_not_changed(model.head, head) == []


def test_scratch_builds_random_weights_and_trains_them(base_cfg, train_set, val_set, tmp_path, device) -> None:
    cfg = _cfg(base_cfg, "scratch", weights="imagenet")  # scratch must ignore model.weights
    model = build_model(cfg)
    pretrained = build_model(_cfg(base_cfg, "full")).backbone.state_dict()
    assert model.weights == "none"
    assert _changed(model.backbone, pretrained)  # differs from the pretrained init
    before = _snapshot(model)

    _fit(model, cfg, train_set, val_set, tmp_path, device)

    assert _params_not_changed(model, before) == []


def test_scratch_refuses_a_pretrained_model(base_cfg, train_set, val_set, tmp_path, device) -> None:
    model = build_model(_cfg(base_cfg, "full"))
    with pytest.raises(ValueError, match="random initialisation"):
        _fit(model, _cfg(base_cfg, "scratch"), train_set, val_set, tmp_path, device)
    assert not (tmp_path / LAST_FILE).exists()


# ---- checkpoints ----------------------------------------------------------------------------


class _Payload:
    """Pickles as a call to ``Path.touch``: loading it unsafely would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoints_are_written_loadable_and_guarded(base_cfg, train_set, val_set, tmp_path, device) -> None:
    cfg = _cfg(base_cfg, "full", backbone="simple_cnn", weights="none")
    torch.manual_seed(0)
    model = build_model(cfg)
    out = tmp_path / "models"

    result = _fit(model, cfg, train_set, val_set, out, device)

    for name in (BEST_FILE, LAST_FILE):
        state = load_checkpoint(out / name)
        assert META_KEYS <= state.keys()
        assert state["class_names"] == cfg.class_names
        assert state["image_size"] == SIZE and state["backbone"] == "simple_cnn"
        assert state["normalization"] == {"mean": list(model.normalization.mean), "std": list(model.normalization.std)}
        assert state["config"]["train"]["batch_size"] == cfg.train.batch_size
        assert state["epoch"] == result.history[-1].epoch
        # one epoch: best == last == the trained model; a fresh model restores it exactly
        fresh = build_model(cfg)
        fresh.load_state_dict(state["model"])
        assert _changed(fresh, _snapshot(model)) == []

    evil = tmp_path / "evil.pt"
    marker = tmp_path / "pwned"
    torch.save({"model": _Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match="refusing"):
        load_checkpoint(evil)
    assert not marker.exists()

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((out / LAST_FILE).read_bytes()[:2000])
    with pytest.raises(CheckpointError):
        load_checkpoint(truncated)

    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}, "epoch": 0}, foreign)
    with pytest.raises(CheckpointError, match="not a signflow checkpoint"):
        load_checkpoint(foreign)


# ---- exact resume ---------------------------------------------------------------------------


class _Interrupt:
    """Callback raising KeyboardInterrupt after the given epoch, like Ctrl-C between epochs."""

    def __init__(self, after_epoch: int) -> None:
        self.after_epoch = after_epoch

    def __call__(self, stats: EpochStats) -> None:
        if stats.epoch == self.after_epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("strategy", ["full", "linear"], ids=["image-path", "cached-feature-path"])
def test_interrupted_run_resumes_exactly(base_cfg, train_set, val_set, tmp_path, device, strategy) -> None:
    cfg = _cfg(base_cfg, strategy, backbone="simple_cnn", weights="none", epochs=3)

    torch.manual_seed(0)
    model_a = build_model(cfg)
    result_a = _fit(model_a, cfg, train_set, val_set, tmp_path / "a", device)

    out_b = tmp_path / "b"
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        _fit(build_model(cfg), cfg, train_set, val_set, out_b, device, callbacks=(_Interrupt(1),))
    assert load_checkpoint(out_b / LAST_FILE)["epoch"] == 1
    torch.manual_seed(123)  # a new process: different init, everything must come from last.pt
    model_b = build_model(cfg)
    result_b = _fit(model_b, cfg, train_set, val_set, out_b, device)

    assert result_a.resumed_from_epoch is None and result_b.resumed_from_epoch == 1
    assert [h.epoch for h in result_b.history] == [0, 1, 2]
    assert _without_seconds(result_b.history) == _without_seconds(result_a.history)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    assert result_b.best_epoch == result_a.best_epoch


def test_last_checkpoint_of_another_fingerprint_is_not_resumed(base_cfg, train_set, val_set, tmp_path, device) -> None:
    cfg = _cfg(base_cfg, "linear", backbone="simple_cnn", weights="none", epochs=3)
    with pytest.raises(KeyboardInterrupt):
        _fit(build_model(cfg), cfg, train_set, val_set, tmp_path, device, callbacks=(_Interrupt(1),))

    result = _fit(build_model(cfg), cfg, train_set, val_set, tmp_path, device, fingerprint="fingerprint-b")

    assert result.resumed_from_epoch is None
    assert [h.epoch for h in result.history] == [0, 1, 2]
    assert load_checkpoint(tmp_path / LAST_FILE)["fingerprint"] == "fingerprint-b"


# ---- live history: the files grow while the run trains ---------------------------------------


class _StepLog:
    """Stands in for the MLflow tracker: the steps logged, in order."""

    def __init__(self) -> None:
        self.steps: list[int | None] = []

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.steps.append(step)


def test_history_files_grow_every_epoch_and_a_resume_keeps_the_start(
    base_cfg, train_set, val_set, tmp_path, device
) -> None:
    """The train stage's per-epoch callbacks: after each epoch both CSVs hold every epoch so far.

    An observer running after them reads the files as `dvc plots show` would mid-run. Interrupted
    and resumed (DVC deletes the non-persistent outputs first), the files start again from epoch 0.
    """
    cfg = _cfg(base_cfg, "linear", backbone="simple_cnn", weights="none", epochs=3)
    metrics = tmp_path / "metrics"
    out = TrainOutputs(tmp_path / "models", tmp_path / "models" / "run.json", metrics / "train.json",
                       metrics / "train_history.csv", metrics / "timings" / "train.json",
                       metrics / "timings" / "train_history.csv")
    seen: list[tuple[int, list[int], list[int]]] = []

    def observe(stats: EpochStats) -> None:
        history, timings = pd.read_csv(out.history), pd.read_csv(out.timings_history)
        assert list(history.columns) == HISTORY_COLUMNS and "seconds" not in history.columns
        assert list(timings.columns) == TIMINGS_HISTORY_COLUMNS and (timings["seconds"] > 0).all()
        seen.append((stats.epoch, history["epoch"].tolist(), timings["epoch"].tolist()))

    first = _StepLog()
    with pytest.raises(KeyboardInterrupt):
        _fit(build_model(cfg), cfg, train_set, val_set, out.models_dir, device,
             callbacks=(*epoch_callbacks(first, out), observe, _Interrupt(1)))
    assert seen == [(0, [0], [0]), (1, [0, 1], [0, 1])] and first.steps == [0, 1]

    out.history.unlink()
    out.timings_history.unlink()
    seen.clear()
    resumed = _StepLog()
    result = _fit(build_model(cfg), cfg, train_set, val_set, out.models_dir, device,
                  callbacks=(*epoch_callbacks(resumed, out), observe))
    assert result.resumed_from_epoch == 1
    # Epochs 0 and 1 replayed from last.pt (the new tracker run gets them too), then epoch 2 trained.
    assert seen == [(0, [0], [0]), (1, [0, 1], [0, 1]), (2, [0, 1, 2], [0, 1, 2])]
    assert resumed.steps == [0, 1, 2]
    assert pd.read_csv(out.history)["val_loss"].tolist() == pytest.approx([h.val_loss for h in result.history])


# ---- early stopping -------------------------------------------------------------------------


def test_early_stopping_when_the_monitor_cannot_improve(base_cfg, train_set, val_set, tmp_path, device) -> None:
    # lr at the smallest allowed value: weights (hence val metrics) cannot move in float32.
    cfg = _cfg(base_cfg, "linear", backbone="simple_cnn", weights="none", epochs=5, lr=1e-12, patience=1)
    model = build_model(cfg)

    result = _fit(model, cfg, train_set, val_set, tmp_path, device)

    assert result.stopped_early and result.summary()["stopped_early"] is True
    assert len(result.history) == 2 < cfg.train.epochs
    assert result.best_epoch == 0
    # A finished run stays finished: fitting again on the same directory trains no more epochs.
    again = _fit(build_model(cfg), cfg, train_set, val_set, tmp_path, device)
    assert len(again.history) == 2 and again.stopped_early
    # ...and keeps its measured cost instead of reporting a run of 0 s at 0 img/s.
    assert again.images_per_second == result.images_per_second > 0
    assert again.train_seconds >= result.train_seconds > 0

    # Control: patience 0 never stops early, whatever the monitor does.
    never = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, patience=0, epochs=3))
    control = _fit(build_model(never), never, train_set, val_set, tmp_path / "control", device)
    assert len(control.history) == 3 and not control.stopped_early


# ---- schedule, class weights, sampling ------------------------------------------------------


def test_lr_factor_warms_up_linearly_then_decays_by_cosine() -> None:
    total, warmup = 10, 2
    assert lr_factor(0, total, warmup) == pytest.approx(0.5)
    assert lr_factor(1, total, warmup) == pytest.approx(1.0)
    assert lr_factor(2, total, warmup) == pytest.approx(1.0)  # cosine starts at its top
    assert lr_factor(4, total, warmup) == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 8)))
    assert lr_factor(6, total, warmup) == pytest.approx(0.5)  # half-way through the decay
    assert lr_factor(10, total, warmup) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(15, total, warmup) == pytest.approx(0.0, abs=1e-12)  # clamped past the end
    decay = [lr_factor(s, total, warmup) for s in range(warmup, total + 1)]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))
    assert lr_factor(0, total, 0) == pytest.approx(1.0)  # no warm-up


def test_class_weights_are_inverse_frequency_with_mean_one() -> None:
    labels = np.array([0, 0, 0, 1])
    weights = class_weights(labels, num_classes=3)
    # counts 3, 1, 0 over 4 samples and 2 present classes: N / (K * count) = 4 / 6, 4 / 2; absent 0
    assert weights.tolist() == pytest.approx([2 / 3, 2.0, 0.0])
    assert weights[labels].mean().item() == pytest.approx(1.0)  # the loss keeps its scale
    assert weights.dtype == torch.float32


def test_balance_sampler_draws_classes_evenly() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    counts = np.zeros(2)
    for epoch in range(50):
        order = epoch_order(labels, "sampler", torch.Generator().manual_seed(epoch))
        assert len(order) == len(labels)
        counts += np.bincount(labels[order.numpy()], minlength=2)
    assert counts[1] / counts.sum() == pytest.approx(0.5, abs=0.05)

    plain = epoch_order(labels, "none", torch.Generator().manual_seed(0))
    assert sorted(plain.tolist()) == list(range(len(labels)))  # a permutation: the imbalance stays


# ---- the cached-feature fast path -----------------------------------------------------------


def test_extract_features_view0_is_the_plain_eval_forward(base_cfg, train_set, device) -> None:
    cfg = _cfg(base_cfg, "linear")
    model = build_model(cfg)
    data = ArraySet(train_set.images[::4], train_set.labels[::4])

    features = extract_features(model, data, model.normalization, device, views=2, augment=cfg.train, seed=3)

    with torch.no_grad():
        direct = model.forward_features(eval_transform(torch.from_numpy(data.images), model.normalization))
    assert features.shape == (2, len(data), model.num_features)
    assert torch.allclose(features[0], direct, rtol=0, atol=1e-6)
    assert not torch.allclose(features[1], features[0], atol=1e-3)  # view 1 is augmented
    again = extract_features(model, data, model.normalization, device, views=2, augment=cfg.train, seed=3)
    assert torch.equal(again, features)  # the cache is reproducible
    other = extract_features(model, data, model.normalization, device, views=2, augment=cfg.train, seed=4)
    assert torch.equal(other[0], features[0]) and not torch.equal(other[1], features[1])


def test_feature_feeder_serves_cached_rows_of_random_views() -> None:
    model = create_model("simple_cnn", num_classes=2, weights="none").eval()
    width = model.num_features
    features = torch.randn(3, 10, width, generator=torch.Generator().manual_seed(0))
    feeder = FeatureFeeder(model, features)
    idx = torch.tensor([7, 2, 2, 9, 0, 4])

    used_views = set()
    gen = torch.Generator().manual_seed(1)
    for _ in range(10):
        batch = feeder.train_batch(idx, gen)
        assert batch.shape == (len(idx), width)
        for row, i in zip(batch, idx.tolist(), strict=True):
            matches = [v for v in range(3) if torch.equal(row, features[v, i])]
            assert len(matches) == 1
            used_views.add(matches[0])
    assert used_views == {0, 1, 2}
    assert torch.equal(feeder.eval_batch(idx), features[0, idx])
    with torch.no_grad():
        assert torch.equal(feeder.forward(features[0, idx]), model.forward_head(features[0, idx]))


def test_image_feeder_eval_batch_is_the_eval_transform(base_cfg, train_set) -> None:
    model = build_model(_cfg(base_cfg, "full", backbone="simple_cnn", weights="none"))
    feeder = ImageFeeder(model, train_set, base_cfg.train, NORM, torch.device("cpu"))
    idx = torch.tensor([3, 1, 8])
    expected = eval_transform(torch.from_numpy(train_set.images[[3, 1, 8]]), NORM)
    assert torch.equal(feeder.eval_batch(idx), expected)
    batch = feeder.train_batch(idx, torch.Generator().manual_seed(0))
    assert batch.shape == expected.shape and not torch.allclose(batch, expected, atol=1e-3)


# ---- transforms -----------------------------------------------------------------------------


def _random_u8(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, size=(n, SIZE, SIZE, 3), dtype=np.uint8))


def test_train_transform_shape_dtype_and_range(base_cfg) -> None:
    batch = _random_u8(6)
    out = train_transform(batch, base_cfg.train.augment, NORM, torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, SIZE, SIZE) and out.dtype == torch.float32
    # colour jitter clamps to [0, 1] before normalising, so (x - 0.5) / 0.5 stays in [-1, 1]
    assert out.min() >= -1 - 1e-6 and out.max() <= 1 + 1e-6
    assert out.std() > 0.1  # not collapsed to a constant
    last = train_transform(batch, base_cfg.train.augment, NORM, torch.Generator().manual_seed(0), channels_last=True)
    assert last.is_contiguous(memory_format=torch.channels_last)


def test_train_transform_is_deterministic_per_generator_seed(base_cfg) -> None:
    batch, augment = _random_u8(4), base_cfg.train.augment
    first = train_transform(batch, augment, NORM, torch.Generator().manual_seed(7))
    second = train_transform(batch, augment, NORM, torch.Generator().manual_seed(7))
    other = train_transform(batch, augment, NORM, torch.Generator().manual_seed(8))
    assert torch.equal(first, second)
    assert not torch.allclose(first, other, atol=1e-3)


def test_identity_augmentation_reproduces_the_input() -> None:
    homographies = random_homographies(5, NO_AUGMENT, torch.Generator().manual_seed(0))
    assert torch.allclose(homographies, torch.eye(3).expand(5, 3, 3), atol=1e-5)
    batch = _random_u8(5)
    out = train_transform(batch, NO_AUGMENT, NORM, torch.Generator().manual_seed(0))
    assert torch.allclose(out, eval_transform(batch, NORM), atol=1e-4)


def _left_minus_right(out: torch.Tensor) -> torch.Tensor:
    half = out.shape[-1] // 2
    return out[..., :half].mean(dim=(1, 2, 3)) - out[..., half:].mean(dim=(1, 2, 3))


@pytest.mark.parametrize("hflip", [False, True])
def test_hflip_false_never_mirrors(base_cfg, hflip: bool) -> None:
    image = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    image[:, : SIZE // 2] = 255  # bright left half, dark right half
    batch = torch.from_numpy(np.repeat(image[None], 200, axis=0))
    augment = dataclasses.replace(base_cfg.train.augment, hflip=hflip)

    diff = _left_minus_right(train_transform(batch, augment, NORM, torch.Generator().manual_seed(0)))

    mirrored = (diff < 0).float().mean().item()
    if hflip:
        assert 0.3 < mirrored < 0.7  # control: flipping does show up in this measure
    else:
        assert mirrored == 0.0 and diff.mean() > 0.5


def test_fingerprint_changes_with_config_manifest_pixels_and_code(base_cfg, tmp_path) -> None:
    # last.pt must not be resumed after a code change: DVC re-runs train for it.
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    for split in ("train", "val"):
        (dataset / f"{split}.csv").write_text("path,label\n")
        np.save(dataset / f"{split}.npy", np.zeros((1, 4, 4, 3), np.uint8))
    script = tmp_path / "train_stage.py"
    script.write_text("v1")
    base = fingerprint(base_cfg, dataset, [script])
    assert fingerprint(base_cfg, dataset, [script]) == base
    script.write_text("v2")
    assert fingerprint(base_cfg, dataset, [script]) != base
    script.write_text("v1")
    (dataset / "val.csv").write_text("path,label\nx.png,stop\n")
    assert fingerprint(base_cfg, dataset, [script]) != base
    (dataset / "val.csv").write_text("path,label\n")
    assert fingerprint(base_cfg, dataset, [script]) == base
    # Same manifest, other pixels (e.g. a renderer change that keeps every name and box): a new training.
    np.save(dataset / "train.npy", np.ones((1, 4, 4, 3), np.uint8))
    assert fingerprint(base_cfg, dataset, [script]) != base
    np.save(dataset / "train.npy", np.zeros((1, 4, 4, 3), np.uint8))
    other = dataclasses.replace(base_cfg, train=dataclasses.replace(base_cfg.train, lr=base_cfg.train.lr * 2))
    assert fingerprint(other, dataset, [script]) != base


def test_configure_runtime_seeds_the_model_initialisation(base_cfg) -> None:
    # Two stage runs with one config must build the same model, head included.
    cfg = _cfg(base_cfg, "full", backbone="simple_cnn", weights="none")
    configure_runtime(cfg.train)
    first = build_model(cfg).state_dict()
    torch.rand(3)  # whatever ran before in the process
    configure_runtime(cfg.train)
    second = build_model(cfg).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=cfg.train.seed + 1))
    configure_runtime(other.train)
    assert not torch.equal(build_model(other).head.fc.weight, first["head.fc.weight"])


def test_patience_running_out_on_the_last_epoch_is_not_an_early_stop(
    base_cfg, train_set, val_set, tmp_path, device
) -> None:
    cfg = _cfg(base_cfg, "linear", backbone="simple_cnn", weights="none", epochs=2, lr=1e-12, patience=1)
    result = _fit(build_model(cfg), cfg, train_set, val_set, tmp_path, device)
    assert len(result.history) == 2 and not result.stopped_early


# ---- stopping on a callback's request (a pruned tuning trial) ---------------------------------


def test_a_callback_returning_true_stops_the_run_as_pruned_and_a_rerun_outside_the_study_trains_on(
    base_cfg, train_set, val_set, tmp_path, device
) -> None:
    cfg = _cfg(base_cfg, "linear", backbone="simple_cnn", weights="none", epochs=4, patience=0)
    seen: list[int] = []

    def prune_after_second_epoch(stats: EpochStats) -> bool:
        seen.append(stats.epoch)
        return stats.epoch == 1

    result = _fit(build_model(cfg), cfg, train_set, val_set, tmp_path, device, callbacks=(prune_after_second_epoch,))

    assert seen == [0, 1] and len(result.history) == 2 and result.pruned
    assert result.summary()["pruned"] is True and result.summary()["epochs_run"] == 2
    assert (tmp_path / BEST_FILE).exists()
    # Outside the study (no callback asks to stop) the same directory resumes and trains every epoch.
    again = _fit(build_model(cfg), cfg, train_set, val_set, tmp_path, device)
    assert len(again.history) == 4 and not again.pruned and "pruned" not in again.summary()


def test_a_stop_asked_on_the_last_epoch_is_a_full_run_not_a_pruned_one(
    base_cfg, train_set, val_set, tmp_path, device
) -> None:
    cfg = _cfg(base_cfg, "linear", backbone="simple_cnn", weights="none", epochs=2, patience=0)
    full = _fit(build_model(cfg), cfg, train_set, val_set, tmp_path, device,
                callbacks=(lambda stats: stats.epoch == 1,))
    assert len(full.history) == 2 and not full.pruned and "pruned" not in full.summary()
