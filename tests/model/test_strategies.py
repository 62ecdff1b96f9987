"""Strategies: a couple of real optimizer steps show exactly what trains and what stays frozen."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from signflow.catalog import STRATEGIES, list_strategies
from signflow.model.backbones import SignModel, create_model
from signflow.model.strategies import (
    TRAINABLE,
    apply_train_mode,
    frozen_modules,
    is_backbone_frozen,
    param_groups,
    resolve_strategy,
    resolve_weights,
)

NUM_CLASSES = 3
BATCH = 2
SIZE = 64
STEPS = 2
LR = 0.1
MULT = 0.1
UNFREEZE = 2
BACKBONES = ["simple_cnn", "efficientnet_lite0"]

State = dict[str, torch.Tensor]


def _snapshot(module: nn.Module) -> State:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _train(model: SignModel, strategy: str, unfreeze: int = UNFREEZE) -> list[dict]:
    """A few plain-SGD steps: no momentum or weight decay, so only a gradient can move a weight."""
    groups = param_groups(model, strategy, LR, MULT, unfreeze)
    optimizer = torch.optim.SGD(groups, lr=LR)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=generator)
    y = torch.arange(BATCH) % NUM_CLASSES
    for _ in range(STEPS):
        apply_train_mode(model, strategy, unfreeze)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return optimizer.param_groups


def _same_state(module: nn.Module, before: State) -> bool:
    """Parameters and buffers (batch-norm running stats) bit-identical to ``before``."""
    return all(torch.equal(v, before[k]) for k, v in module.state_dict().items())


def _all_params_changed(module: nn.Module, before: State) -> bool:
    return all(not torch.equal(p, before[k]) for k, p in module.named_parameters())


def _block_states(model: SignModel) -> list[State]:
    return [_snapshot(block) for block in model.blocks]


@pytest.mark.parametrize("name", BACKBONES)
def test_linear_trains_only_the_head(name: str) -> None:
    model = create_model(name, NUM_CLASSES, weights="imagenet")  # simple_cnn falls back to none
    backbone, head = _snapshot(model.backbone), _snapshot(model.head)
    groups = _train(model, "linear")
    assert [g["name"] for g in groups] == ["head"]
    assert _same_state(model.backbone, backbone)  # includes BN running stats
    assert _all_params_changed(model.head, head)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert frozen_modules(model, "linear", UNFREEZE) == [model.backbone]


@pytest.mark.parametrize("name", BACKBONES)
def test_full_trains_everything_with_discriminative_rates(name: str) -> None:
    model = create_model(name, NUM_CLASSES, weights="none")
    before = _snapshot(model)
    groups = _train(model, "full")
    assert {g["name"]: g["lr"] for g in groups} == {"backbone": pytest.approx(LR * MULT), "head": LR}
    assert _all_params_changed(model, before)
    assert frozen_modules(model, "full", UNFREEZE) == []


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("unfreeze", [1, 2])
def test_partial_trains_last_blocks_and_head(name: str, unfreeze: int) -> None:
    model = create_model(name, NUM_CLASSES, weights="none")
    blocks, head = _block_states(model), _snapshot(model.head)
    _train(model, "partial", unfreeze)
    split = len(model.blocks) - unfreeze
    for block, before in zip(model.blocks[:split], blocks[:split], strict=True):
        assert _same_state(block, before)
    for block, before in zip(model.blocks[split:], blocks[split:], strict=True):
        assert _all_params_changed(block, before)
    assert _all_params_changed(model.head, head)
    assert len(frozen_modules(model, "partial", unfreeze)) == split


@pytest.mark.parametrize("name", BACKBONES)
def test_scratch_starts_random_and_trains_everything_at_lr(name: str) -> None:
    pretrained = create_model(name, NUM_CLASSES, weights="imagenet")
    model = create_model(name, NUM_CLASSES, weights=resolve_weights("scratch", "imagenet"))
    assert model.weights == "none"
    if pretrained.weights == "imagenet":
        reference = pretrained.backbone.state_dict()
        assert not all(torch.equal(v, reference[k]) for k, v in model.backbone.state_dict().items())
    before = _snapshot(model)
    groups = _train(model, "scratch")
    assert all(g["lr"] == LR for g in groups)
    assert _all_params_changed(model, before)


def test_scratch_refuses_a_pretrained_model() -> None:
    model = create_model("efficientnet_lite0", NUM_CLASSES, weights="imagenet")
    with pytest.raises(ValueError, match="resolve_weights"):
        param_groups(model, "scratch", LR, MULT, UNFREEZE)


def test_partial_unfreeze_out_of_range_names_the_key() -> None:
    model = create_model("simple_cnn", NUM_CLASSES, weights="none")
    for unfreeze in (0, -1, len(model.blocks) + 1):
        with pytest.raises(ValueError, match=rf"train.unfreeze={unfreeze} .*1 <= value <= {len(model.blocks)}"):
            param_groups(model, "partial", LR, MULT, unfreeze)


def test_param_groups_hold_exactly_the_trainable_parameters() -> None:
    model = create_model("efficientnet_lite0", NUM_CLASSES, weights="none")
    for strategy in list_strategies():
        groups = param_groups(model, strategy, LR, MULT, UNFREEZE)
        grouped = [id(p) for g in groups for p in g["params"]]
        assert len(grouped) == len(set(grouped))
        assert set(grouped) == {id(p) for p in model.parameters() if p.requires_grad}


def test_registry_helpers() -> None:
    assert list_strategies() == sorted(["linear", "partial", "full", "scratch"])
    assert {spec.trains for spec in STRATEGIES.values()} <= set(TRAINABLE)  # every kind has its code
    with pytest.raises(TypeError):
        STRATEGIES["new"] = STRATEGIES["full"]  # type: ignore[index]
    with pytest.raises(ValueError, match="strategy='finetune'.*linear \\| partial \\| full \\| scratch"):
        resolve_strategy("finetune")
    assert [is_backbone_frozen(s) for s in ("linear", "partial", "full", "scratch")] == [True, False, False, False]
    assert resolve_weights("full", "imagenet") == "imagenet"
    assert resolve_weights("linear", "none") == "none"
    assert resolve_weights("scratch", "imagenet") == "none"
