"""Transfer-learning strategies: which parameters train, at what rate, what stays frozen.

There is one training loop; a strategy only chooses parameter groups and rates
and which modules stay in eval mode. The strategies themselves are pure data in
``catalog.STRATEGIES`` (so config validates names without torch); this module
adds the code:

- ``linear``: frozen pretrained backbone, only the head trains (features can be cached);
- ``partial``: the last ``train.unfreeze`` backbone blocks and the head train;
- ``full``: everything trains, the backbone at ``lr * backbone_lr_mult``
  (discriminative rates: pretrained weights need smaller steps than a fresh head);
- ``scratch``: random initialisation, everything at ``lr``.

Frozen blocks are kept in eval mode (``apply_train_mode``) so their batch-norm
running statistics stay the pretrained ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from torch import nn

from signflow.catalog import STRATEGIES, TRAINS_ALL, TRAINS_HEAD_ONLY, TRAINS_LAST_BLOCKS, StrategySpec
from signflow.config import ConfigError, check_choice
from signflow.model.backbones import SignModel

log = logging.getLogger(__name__)

UNFREEZE_KEY = "train.unfreeze"


def _head_only(model: SignModel, unfreeze: int) -> list[nn.Module]:
    return []


def _last_blocks(model: SignModel, unfreeze: int) -> list[nn.Module]:
    if not 1 <= unfreeze <= len(model.blocks):
        raise ConfigError(
            f"params.yaml: {UNFREEZE_KEY}={unfreeze} is invalid for strategy 'partial' with backbone "
            f"'{model.name}'; allowed: 1 <= value <= {len(model.blocks)} (its number of blocks)"
        )
    return model.blocks[-unfreeze:]


def _whole_backbone(model: SignModel, unfreeze: int) -> list[nn.Module]:
    return [model.backbone]


# The code behind catalog.StrategySpec.trains: backbone modules that train, given train.unfreeze.
TRAINABLE: Mapping[str, Callable[[SignModel, int], list[nn.Module]]] = MappingProxyType(
    {TRAINS_HEAD_ONLY: _head_only, TRAINS_LAST_BLOCKS: _last_blocks, TRAINS_ALL: _whole_backbone}
)


def resolve_strategy(name: str) -> StrategySpec:
    """The registry entry (catalog.STRATEGIES) for ``name``; unknown names fail with the valid ones."""
    check_choice("strategy", name, STRATEGIES)
    return STRATEGIES[name]


def _trainable(model: SignModel, strategy: str, unfreeze: int) -> list[nn.Module]:
    return TRAINABLE[resolve_strategy(strategy).trains](model, unfreeze)


def resolve_weights(strategy: str, weights: str) -> str:
    """The weights to build the model with: ``scratch`` always starts from random ("none")."""
    if resolve_strategy(strategy).pretrained:
        return weights
    if weights != "none":
        log.info("strategy %s trains from random initialisation: ignoring model.weights=%s", strategy, weights)
    return "none"


def is_backbone_frozen(strategy: str) -> bool:
    """True when the backbone never changes during training, so its features may be cached."""
    return resolve_strategy(strategy).frozen_backbone


def frozen_modules(model: SignModel, strategy: str, unfreeze: int) -> list[nn.Module]:
    """Backbone modules that do not train and must stay in eval mode (batch-norm stats untouched)."""
    trainable = _trainable(model, strategy, unfreeze)
    if not trainable:
        return [model.backbone]
    if any(module is model.backbone for module in trainable):
        return []
    return [block for block in model.blocks if not any(block is module for module in trainable)]


def apply_train_mode(model: SignModel, strategy: str, unfreeze: int) -> None:
    """``model.train()``, then eval mode for frozen parts; call at the start of every epoch."""
    model.train()
    for module in frozen_modules(model, strategy, unfreeze):
        module.eval()


def param_groups(
    model: SignModel, strategy: str, lr: float, backbone_lr_mult: float, unfreeze: int
) -> list[dict[str, Any]]:
    """Set ``requires_grad`` for ``strategy`` and return optimizer parameter groups.

    Groups carry a ``"name"`` key ("backbone", "head") for logging; the
    backbone group is omitted when nothing in the backbone trains.
    """
    spec = resolve_strategy(strategy)
    if not spec.pretrained and model.weights != "none":
        raise ValueError(
            f"strategy {strategy!r} trains from random initialisation but model {model.name!r} was built "
            f"with weights {model.weights!r}; build it with weights=resolve_weights({strategy!r}, ...)"
        )
    trainable = _trainable(model, strategy, unfreeze)
    model.requires_grad_(False)
    for module in trainable:
        module.requires_grad_(True)
    model.head.requires_grad_(True)
    backbone_lr = lr * backbone_lr_mult if spec.scaled_backbone_lr else lr
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    groups = [{"name": "backbone", "params": backbone, "lr": backbone_lr}] if backbone else []
    groups.append({"name": "head", "params": list(model.head.parameters()), "lr": lr})
    log.info(
        "strategy %s: %d backbone tensors at lr %.3g, %d head tensors at lr %.3g",
        strategy, len(backbone), backbone_lr, len(groups[-1]["params"]), lr,
    )
    return groups
