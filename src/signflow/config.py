"""Typed, validated configuration built once from ``params.yaml``.

Every section is a frozen dataclass. ``from_mapping`` refuses unknown keys and
wrong types, and each ``validate`` checks ranges and names, so a bad value stops
a stage before any heavy work with one message naming the key, the value and
what is allowed. Every stage validates the whole file, so a misspelled
``model.backbone`` fails in the first stage that runs.

This module is the ground floor: it imports nothing heavy and no project module
but ``catalog`` (the strategy and backbone names, pure data), so every other
module may import it.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# UNKNOWN_NAME, DEVICES and flatten live in catalog (the torch- and yaml-free predict path uses them).
from signflow.catalog import BACKBONE_ENTRIES, DEVICES, STRATEGIES, UNKNOWN_NAME

# The official training archive, with the URL and md5 torchvision.datasets.GTSRB uses.
GTSRB_ARCHIVES = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"
GTSRB_TRAINING_URL = f"{GTSRB_ARCHIVES}GTSRB-Training_fixed.zip"
GTSRB_TRAINING_MD5 = "513f3c79a4c5141765e10e952eaa2478"
# The official test set: images (no labels) and the ground-truth CSV, as torchvision has them.
GTSRB_TEST_IMAGES_URL = f"{GTSRB_ARCHIVES}GTSRB_Final_Test_Images.zip"
GTSRB_TEST_IMAGES_MD5 = "c7e4e6327067d32654124b0fe9e82185"
GTSRB_TEST_GT_URL = f"{GTSRB_ARCHIVES}GTSRB_Final_Test_GT.zip"
GTSRB_TEST_GT_MD5 = "fe31e9c9270bbcd7b84b7f21a9d9d9e5"
WEIGHTS = ("imagenet", "none")
OPTIMIZERS = ("adamw", "sgd")
BALANCE_MODES = ("none", "loss", "sampler")
MONITORS = ("val_accuracy", "val_loss")
AMP_MODES = ("none", "bf16", "fp16")  # torch.autocast dtypes, CUDA only
SPLIT_NAMES = ("train", "val", "test")
OFFICIAL_TEST_SPLIT = "official_test"  # a source's own test set (data.gtsrb.official_test), beside the three
# split.group_by: what keeps images together in one split (signflow.data.split.resolve_grouping has the code).
GROUP_BY = ("track", "image", "hash")
HASH_BITS = 64  # split.hash_distance's ceiling: a pHash has 64 bits (signflow.data.hashes.HASH_BITS)
# evaluate.threshold.policy: how the open-set threshold is chosen (signflow.evaluation.threshold.POLICIES).
THRESHOLD_POLICIES = ("se_rule", "known_kept", "heldout_rejected")
# Synthetic renderer bounds: below MIN_SYNTHETIC_SIDE px a sign is a few pixels and
# the GTSRB margin rule breaks down.
MIN_SYNTHETIC_SIDE = 8
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 8, 1024  # image sides (px) a model may be fed
FRACTION_TOLERANCE = 1e-6
# YAML 1.1 (PyYAML) reads `1e-5` (an exponent without a dot) as a string; YAML 1.2 (DVC's ruamel.yaml, Hydra's
# `-S` grammar) reads a float, and `dvc exp run -S train.lr=1e-5` writes `lr: 1e-05`. YamlLoader reads it as 1.2.
EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class ConfigError(ValueError):
    """A params.yaml value is wrong; the message names the key and what is allowed."""


def _fail(key: str, value: Any, allowed: str) -> typing.NoReturn:
    raise ConfigError(f"params.yaml: {key}={value!r} is invalid; allowed: {allowed}")


def check_choice(key: str, value: Any, choices: typing.Iterable[str]) -> None:
    """Fail naming ``key`` unless ``value`` is one of ``choices`` (also used by registries)."""
    choices = list(choices)
    if value not in choices:
        _fail(key, value, " | ".join(choices))


def _check_range(key: str, value: float, low: float | None = None, high: float | None = None) -> None:
    # NaN compares false with every bound, so it is refused explicitly.
    if value != value or (low is not None and value < low) or (high is not None and value > high):
        bounds = f"{'-inf' if low is None else low} <= value <= {'inf' if high is None else high}"
        _fail(key, value, bounds)


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Convert a YAML value to the annotated type, failing with the key's name."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            _fail(key, value, f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(annotation))}")
        return from_mapping(annotation, value, key)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _coerce(key, value, options[0])
    if origin is tuple:
        (item_type, _) = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            _fail(key, value, "a list")
        return tuple(_coerce(f"{key}[{i}]", v, item_type) for i, v in enumerate(value))
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            _fail(key, value, "a mapping")
        for k, v in value.items():
            if v is None or isinstance(v, (Mapping, list)):
                _fail(f"{key}.{k}", v, "a name (a string)")
        return {str(k): str(v) for k, v in value.items()}
    if annotation is bool:
        if not isinstance(value, bool):
            _fail(key, value, "true | false")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(key, value, "an integer")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(key, value, "a number")
        return float(value)
    if annotation is str:
        if isinstance(value, (dict, list)):
            _fail(key, value, "a string")
        return "" if value is None else str(value)
    return value


def from_mapping(cls: type, mapping: Mapping[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``mapping``; unknown keys fail at once."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in mapping:
        if str(key) not in names:
            _fail(f"{prefix}{'.' if prefix else ''}{key}", mapping[key], f"known keys are {', '.join(sorted(names))}")
    kwargs = {
        name: _coerce(f"{prefix}{'.' if prefix else ''}{name}", mapping[name], hints[name])
        for name in names
        if name in mapping
    }
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(prefix)
    return obj


@dataclass(frozen=True)
class GtsrbConfig:
    url: str = GTSRB_TRAINING_URL
    md5: str = GTSRB_TRAINING_MD5
    # Also fetch the official test set; the evaluate stage then reports official_test.* metrics.
    official_test: bool = False
    test_images_url: str = GTSRB_TEST_IMAGES_URL
    test_images_md5: str = GTSRB_TEST_IMAGES_MD5
    test_gt_url: str = GTSRB_TEST_GT_URL
    test_gt_md5: str = GTSRB_TEST_GT_MD5

    @property
    def archive_keys(self) -> list[tuple[str, str]]:
        """(url key, md5 key) of each archive the source fetches: training, and the official test set if asked."""
        archives = [("url", "md5")]
        if self.official_test:
            archives += [("test_images_url", "test_images_md5"), ("test_gt_url", "test_gt_md5")]
        return archives

    def validate(self, prefix: str) -> None:
        for url_key, md5_key in self.archive_keys:
            if not getattr(self, url_key):
                _fail(f"{prefix}.{url_key}", "", "an http(s):// or file:// URL or a local path")
            md5 = getattr(self, md5_key)
            if md5 and (len(md5) != 32 or any(c not in "0123456789abcdef" for c in md5.lower())):
                _fail(f"{prefix}.{md5_key}", md5, "32 hex digits, or empty to skip the check")


@dataclass(frozen=True)
class FolderConfig:
    path: str = ""
    # Regex whose first group is the track id in a file name; empty: each image its own track.
    track_pattern: str = ""


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int = 0
    tracks_per_class: int = 300
    frames_per_track: int = 6
    # Non-target sign types feed only "unknown" and the held-out set, both capped (unknown.max_images),
    # so rendering them at the targets' count would be wasted work.
    max_other_tracks: int = 60
    min_size: int = 24
    max_size: int = 96

    def validate(self, prefix: str) -> None:
        for name in ("tracks_per_class", "frames_per_track", "max_other_tracks"):
            _check_range(f"{prefix}.{name}", getattr(self, name), 1)
        _check_range(f"{prefix}.min_size", self.min_size, MIN_SYNTHETIC_SIDE)
        _check_range(f"{prefix}.max_size", self.max_size, self.min_size)

    def tracks_for(self, is_target: bool) -> int:
        """Tracks to render for one sign type: the full count for a target, at most ``max_other_tracks`` else."""
        return self.tracks_per_class if is_target else min(self.tracks_per_class, self.max_other_tracks)


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"
    classes: dict[str, str] = field(
        default_factory=lambda: {"12": "priority_road", "13": "give_way", "14": "stop", "17": "no_entry"}
    )
    image_size: int = 64
    roi_crop: bool = False
    min_image_side: int = 8
    max_image_side: int = 4096
    decode_workers: int = 0
    gtsrb: GtsrbConfig = GtsrbConfig()
    folder: FolderConfig = FolderConfig()
    synthetic: SyntheticConfig = SyntheticConfig()

    def validate(self, prefix: str) -> None:
        if not self.classes:
            _fail(f"{prefix}.classes", self.classes, "a mapping of at least one class id to a name")
        names = list(self.classes.values())
        if len(set(names)) != len(names) or UNKNOWN_NAME in names:
            _fail(f"{prefix}.classes", self.classes, f"unique names, none of them {UNKNOWN_NAME!r}")
        _check_range(f"{prefix}.image_size", self.image_size, MIN_INPUT_SIZE, MAX_INPUT_SIZE)
        _check_range(f"{prefix}.min_image_side", self.min_image_side, 1)
        _check_range(f"{prefix}.max_image_side", self.max_image_side, self.min_image_side)
        _check_range(f"{prefix}.decode_workers", self.decode_workers, 0)
        if self.source == "folder" and not self.folder.path:
            _fail(f"{prefix}.folder.path", self.folder.path, "a directory with one sub-folder per class")

    @property
    def class_ids(self) -> list[str]:
        return list(self.classes)

    @property
    def class_names(self) -> list[str]:
        return list(self.classes.values())


@dataclass(frozen=True)
class ExcludeEntry:
    """One image left out of the splits: its ``path`` as in data/raw/index.csv, and why (kept with the data)."""

    path: str = ""  # defaults only so that a missing key fails in validate, naming it
    reason: str = ""

    def validate(self, prefix: str) -> None:
        if not self.path.strip():
            _fail(f"{prefix}.path", self.path, "an image's path as in data/raw/index.csv")
        if not self.reason.strip():
            _fail(f"{prefix}.reason", self.reason, "a non-empty note saying why the image is excluded")


@dataclass(frozen=True)
class SplitConfig:
    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    seed: int = 42
    group_by: str = "track"
    # group_by hash: images within this many bits of each other's pHash (transitively) share a split.
    hash_distance: int = 6
    exclude: tuple[ExcludeEntry, ...] = ()  # images left out of every split, each with its reason

    def validate(self, prefix: str) -> None:
        for name in SPLIT_NAMES:
            _check_range(f"{prefix}.{name}", getattr(self, name), 0.0, 1.0)
        total = self.train + self.val + self.test
        if abs(total - 1.0) > FRACTION_TOLERANCE:
            _fail(f"{prefix}.train/val/test", (self.train, self.val, self.test), "fractions summing to 1")
        check_choice(f"{prefix}.group_by", self.group_by, GROUP_BY)
        _check_range(f"{prefix}.hash_distance", self.hash_distance, 0, HASH_BITS)
        seen: set[str] = set()
        for i, entry in enumerate(self.exclude):
            if entry.path in seen:
                _fail(f"{prefix}.exclude[{i}].path", entry.path, "each image once (it is listed earlier)")
            seen.add(entry.path)

    @property
    def exclude_reasons(self) -> dict[str, str]:
        """``split.exclude`` as {record path: reason}."""
        return {entry.path: entry.reason for entry in self.exclude}

    @property
    def fractions(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in SPLIT_NAMES}


@dataclass(frozen=True)
class UnknownConfig:
    enabled: bool = True
    # Class ids feeding the "unknown" class; empty: every non-target class not held out.
    classes: tuple[str, ...] = ()
    heldout: tuple[str, ...] = ("15", "32", "38")
    max_images: int = 1000
    heldout_max_images: int = 600

    def validate(self, prefix: str) -> None:
        _check_range(f"{prefix}.max_images", self.max_images, 0)
        _check_range(f"{prefix}.heldout_max_images", self.heldout_max_images, 0)
        both = set(self.classes) & set(self.heldout)
        if both:
            _fail(f"{prefix}.heldout", list(self.heldout), f"classes not also in unknown.classes ({sorted(both)})")


@dataclass(frozen=True)
class LinearFeaturesConfig:
    """The linear strategy's frozen features: computed once and cached, so richer ones cost once, not per epoch."""

    input_size: int = 128  # side (px) the frozen backbone sees, images upsampled to it; 0 = data.image_size
    pooled_blocks: int = 3  # also pool this many stages before the last (multi-scale features); 0 = last only

    def validate(self, prefix: str) -> None:
        if self.input_size:
            _check_range(f"{prefix}.input_size", self.input_size, MIN_INPUT_SIZE, MAX_INPUT_SIZE)
        _check_range(f"{prefix}.pooled_blocks", self.pooled_blocks, 0)


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    dropout: float = 0.2
    linear: LinearFeaturesConfig = LinearFeaturesConfig()

    def validate(self, prefix: str) -> None:
        check_choice(f"{prefix}.backbone", self.backbone, BACKBONE_ENTRIES)
        check_choice(f"{prefix}.weights", self.weights, WEIGHTS)
        _check_range(f"{prefix}.dropout", self.dropout, 0.0, 0.99)


@dataclass(frozen=True)
class AugmentConfig:
    hflip: bool = False  # mirrored signs are different signs (keep right vs keep left)
    scale_min: float = 0.7
    rotate_degrees: float = 12.0
    perspective: float = 0.15
    brightness: float = 0.35
    contrast: float = 0.35
    saturation: float = 0.35
    hue: float = 0.03
    blur_prob: float = 0.25

    def validate(self, prefix: str) -> None:
        _check_range(f"{prefix}.scale_min", self.scale_min, 0.05, 1.0)
        _check_range(f"{prefix}.perspective", self.perspective, 0.0, 1.0)
        _check_range(f"{prefix}.hue", self.hue, 0.0, 0.5)
        _check_range(f"{prefix}.blur_prob", self.blur_prob, 0.0, 1.0)
        for name in ("rotate_degrees", "brightness", "contrast", "saturation"):
            _check_range(f"{prefix}.{name}", getattr(self, name), 0.0)


@dataclass(frozen=True)
class DistributedConfig:
    # DDP processes (ranks) on this node; above 1 the train stage relaunches itself under torchrun.
    nproc: int = 1

    def validate(self, prefix: str) -> None:
        _check_range(f"{prefix}.nproc", self.nproc, 1)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 1e-3
    backbone_lr_mult: float = 0.3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    balance: str = "loss"
    monitor: str = "val_accuracy"
    patience: int = 5
    grad_clip: float = 1.0
    unfreeze: int = 2
    seed: int = 0
    threads: int = 0  # 0: available cores / running DVC queue workers
    device: str = "auto"
    channels_last: bool = True
    compile: bool = False
    feature_views: int = 4  # augmented views cached per image for the linear strategy
    amp: str = "none"  # mixed precision on CUDA (none | bf16 | fp16); ignored on CPU
    augment: AugmentConfig = AugmentConfig()
    distributed: DistributedConfig = DistributedConfig()

    def validate(self, prefix: str) -> None:
        for name in ("epochs", "batch_size", "feature_views"):
            _check_range(f"{prefix}.{name}", getattr(self, name), 1)
        for name in ("lr", "backbone_lr_mult"):
            _check_range(f"{prefix}.{name}", getattr(self, name), 1e-12)
        for name in ("weight_decay", "warmup_epochs", "grad_clip", "momentum", "threads", "patience"):
            _check_range(f"{prefix}.{name}", getattr(self, name), 0)
        _check_range(f"{prefix}.label_smoothing", self.label_smoothing, 0.0, 0.99)
        _check_range(f"{prefix}.unfreeze", self.unfreeze, 1)
        check_choice(f"{prefix}.optimizer", self.optimizer, OPTIMIZERS)
        check_choice(f"{prefix}.balance", self.balance, BALANCE_MODES)
        check_choice(f"{prefix}.monitor", self.monitor, MONITORS)
        check_choice(f"{prefix}.device", self.device, DEVICES)
        check_choice(f"{prefix}.amp", self.amp, AMP_MODES)


@dataclass(frozen=True)
class ThresholdConfig:
    """How evaluate chooses the open-set rejection threshold on validation: a policy and each policy's setting.

    The code of each policy is ``signflow.evaluation.threshold.POLICIES``
    (tests check both list the same names); the names are here so a
    misspelled policy fails before any stage works, without numpy.
    """

    policy: str = "se_rule"  # se_rule | known_kept | heldout_rejected
    tolerance_se: float = 1.0  # se_rule: lowest threshold within this many standard errors of the best
    known_kept: float = 0.995  # known_kept: share of known-class validation images accepted
    heldout_rejected: float = 0.95  # heldout_rejected: share of held-out validation images rejected

    def validate(self, prefix: str) -> None:
        check_choice(f"{prefix}.policy", self.policy, THRESHOLD_POLICIES)
        _check_range(f"{prefix}.tolerance_se", self.tolerance_se, 0.0)
        _check_range(f"{prefix}.known_kept", self.known_kept, 0.0, 1.0)
        _check_range(f"{prefix}.heldout_rejected", self.heldout_rejected, 0.0, 1.0)


@dataclass(frozen=True)
class SlicesConfig:
    """The test-split slices evaluate reports accuracy and rejection for (``signflow.evaluation.slices``)."""

    # Lower edges (px) of the bins of the original image's shorter side; a bin holds [edge, next edge), the last
    # is open. A subset of metrics/data_tracks.csv's bins, so the two line up.
    size_bins: tuple[int, ...] = (0, 32, 48, 64, 96)

    def validate(self, prefix: str) -> None:
        edges = list(self.size_bins)
        if not edges or edges[0] < 0 or any(high <= low for low, high in zip(edges, edges[1:], strict=False)):
            _fail(f"{prefix}.size_bins", edges, "increasing edges in px from 0 up, e.g. [0, 32, 48, 64, 96]")


@dataclass(frozen=True)
class EvaluateConfig:
    batch_size: int = 256
    ece_bins: int = 15
    threshold: ThresholdConfig = ThresholdConfig()
    slices: SlicesConfig = SlicesConfig()

    def validate(self, prefix: str) -> None:
        _check_range(f"{prefix}.batch_size", self.batch_size, 1)
        _check_range(f"{prefix}.ece_bins", self.ece_bins, 2)


MIN_ONNX_OPSET = 17  # the first opset with LayerNormalization and the ops torch.onnx's dynamo exporter emits


@dataclass(frozen=True)
class ExportConfig:
    opset: int = 18
    tolerance: float = 1e-4  # largest allowed |p_onnx - p_torch| on the test split
    quantize: bool = True  # also write an int8 model (onnxruntime static quantisation)
    calibration_images: int = 256  # training images the int8 activation ranges are calibrated on
    # Test-accuracy points int8 may lose on this CPU; more: the int8 copy is refused (not shipped, recorded in
    # metrics/export.json), the float model still is. Negative: int8 must gain that much (-100: always refused).
    max_int8_drop: float = 0.5
    benchmark_images: int = 256  # test images the speed figures are measured on
    registry_name: str = "signflow"  # MLflow registered model; '' = log the model without registering

    def validate(self, prefix: str) -> None:
        _check_range(f"{prefix}.opset", self.opset, MIN_ONNX_OPSET)
        _check_range(f"{prefix}.tolerance", self.tolerance, 1e-12)
        _check_range(f"{prefix}.max_int8_drop", self.max_int8_drop, -100.0, 100.0)
        for name in ("calibration_images", "benchmark_images"):
            _check_range(f"{prefix}.{name}", getattr(self, name), 1)


@dataclass(frozen=True)
class GuardsConfig:
    """The gate of `signflow pr-report --gate`: each margin is non-inferiority, in the metric's own unit.

    A guard passes when head's interval of ``head - base`` lies above ``-margin``
    (at ``review.confidence``): the data show that head is not worse by more
    than the margin. ``None`` turns a guard off.
    """

    accuracy: float | None = 0.005  # test.accuracy
    known_accuracy: float | None = 0.01  # openset.known_accuracy
    heldout_rejected: float | None = 0.05  # openset.heldout_rejected
    auroc: float | None = 0.01  # openset.auroc
    classes: bool = True  # no class significantly worse (per-class intervals, Bonferroni across classes)
    max_ece: float | None = 0.05  # head's test.ece may not rise above this (above it and above base's)

    def validate(self, prefix: str) -> None:
        for name in ("accuracy", "known_accuracy", "heldout_rejected", "auroc", "max_ece"):
            value = getattr(self, name)
            if value is not None:
                _check_range(f"{prefix}.{name}", value, 0.0, 1.0)


@dataclass(frozen=True)
class ReviewConfig:
    """`signflow pr-report`: the statistics of the base-vs-head comparison and its gate."""

    confidence: float = 0.95  # level of every interval and verdict
    bootstrap_resamples: int = 2000  # AUROC, ECE and macro F1 intervals
    seed: int = 0  # bootstrap: the same report for the same predictions
    flips_shown: int = 24  # images per direction in the flip gallery
    guards: GuardsConfig = GuardsConfig()

    def validate(self, prefix: str) -> None:
        _check_range(f"{prefix}.confidence", self.confidence, 0.5, 0.9999)
        _check_range(f"{prefix}.bootstrap_resamples", self.bootstrap_resamples, 100)
        _check_range(f"{prefix}.flips_shown", self.flips_shown, 0)


AUDIT_HASH_SIZES = (8,)  # pHash sides signflow.data.hashes supports: 8 x 8 bits fill one uint64


@dataclass(frozen=True)
class AuditConfig:
    """The ``audit`` stage (``signflow.audit``): near-duplicates across splits, suspect labels, the data's profile."""

    hash_size: int = 8  # pHash side: hash_size ** 2 bits per image
    hash_distance: int = 4  # near-duplicates: pHashes at most this many bits apart (docs/audit.md: how it was chosen)
    folds: int = 5  # label check: cross-validation folds, grouped by track
    logistic_c: float = 0.003  # label check: inverse L2 strength of the logistic regression (scikit-learn's C)
    max_suspects: int = 24  # suspects in the report's table and gallery (suspects.csv has every one)
    gallery_pairs: int = 12  # closest cross-split pairs in the report's table and gallery (duplicates.csv: all)
    batch_size: int = 256  # images per frozen-backbone batch

    def validate(self, prefix: str) -> None:
        if self.hash_size not in AUDIT_HASH_SIZES:
            _fail(f"{prefix}.hash_size", self.hash_size, " | ".join(map(str, AUDIT_HASH_SIZES)))
        _check_range(f"{prefix}.hash_distance", self.hash_distance, 0, self.hash_size ** 2)
        _check_range(f"{prefix}.folds", self.folds, 2)
        _check_range(f"{prefix}.logistic_c", self.logistic_c, 1e-12)
        for name in ("max_suspects", "gallery_pairs"):
            _check_range(f"{prefix}.{name}", getattr(self, name), 0)
        _check_range(f"{prefix}.batch_size", self.batch_size, 1)


@dataclass(frozen=True)
class Config:
    strategy: str = "linear"
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    unknown: UnknownConfig = UnknownConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    export: ExportConfig = ExportConfig()
    review: ReviewConfig = ReviewConfig()
    audit: AuditConfig = AuditConfig()

    def validate(self, prefix: str) -> None:
        check_choice("strategy", self.strategy, STRATEGIES)
        targets = set(self.data.class_ids)
        for key, ids in (("unknown.classes", self.unknown.classes), ("unknown.heldout", self.unknown.heldout)):
            clash = sorted(targets & set(ids))
            if clash:
                _fail(key, list(ids), f"class ids that are not targets in data.classes (clash: {clash})")

    @property
    def class_names(self) -> list[str]:
        """Model output names: the targets, then ``unknown`` when it is enabled."""
        return self.data.class_names + ([UNKNOWN_NAME] if self.unknown.enabled else [])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class YamlLoader(yaml.SafeLoader):
    """The loader of every YAML signflow reads as params (params.yaml, sweep grids): plain data only, a key
    given twice refused (PyYAML silently keeps the last), ``1e-5`` a float (see EXPONENT_FLOAT)."""


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping gives one key twice; ``problem`` says which and where."""


def _construct_unique_mapping(loader: YamlLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` keys are overridden on purpose
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            if key in seen:
                raise _DuplicateKeyError(
                    None, None, f"key {key!r} is given twice (first on line {seen[key]}); keep one",
                    key_node.start_mark,
                )
            seen[key] = line
        except TypeError:  # an unhashable key: the base constructor reports it
            break
    return loader.construct_mapping(node, deep=deep)


YamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(f"^(?:{EXPONENT_FLOAT.pattern})$"), list("-+0123456789.")
)


def load_yaml(stream: str | typing.IO[str]) -> Any:
    """The data in ``stream`` read by :class:`YamlLoader`; yaml.YAMLError when it is not valid YAML."""
    return yaml.load(stream, Loader=YamlLoader)  # a SafeLoader: plain data only


def load_params(path: Path | str = "params.yaml") -> dict[str, Any]:
    """The raw mapping in ``path``; ConfigError for a file that is unreadable, not YAML, empty or not a mapping."""
    try:
        with open(path) as fh:
            params = load_yaml(fh)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read it ({err.strerror}); run from the project root") from err
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f", line {mark.line + 1}" if mark else ""
        advice = "" if isinstance(err, _DuplicateKeyError) else "; fix the YAML syntax there"
        raise ConfigError(f"{path}{where}: {err.problem or err.context}{advice}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err}); fix the YAML") from err
    if params is None:  # an empty file (or comments only): not "all defaults", a lost file
        raise ConfigError(f"{path} is empty; it must hold the pipeline's settings (restore it from git)")
    if not isinstance(params, Mapping):
        raise ConfigError(
            f"{path}: expected a mapping of keys (strategy, data, train, ...) at the top level, "
            f"got {type(params).__name__}"
        )
    return dict(params)


def load_config(path: Path | str = "params.yaml") -> Config:
    """Read and validate the whole of ``params.yaml`` into a :class:`Config`."""
    return from_mapping(Config, load_params(path))
