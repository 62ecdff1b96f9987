"""Loading a trained checkpoint and running it: shared by evaluate, report and predict."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from signflow.catalog import unknown_index
from signflow.data.arrays import release_resident
from signflow.logs import first_line
from signflow.model.backbones import FeatureSpec, SignModel, create_model
from signflow.model.calibration import softmax
from signflow.model.checkpoint import RETRAIN, CheckpointError, check_compatible, load_checkpoint
from signflow.model.transforms import Normalization, eval_transform

if TYPE_CHECKING:
    from signflow.config import Config


@dataclass(frozen=True)
class LoadedModel:
    model: SignModel
    class_names: list[str]
    normalization: Normalization
    image_size: int
    device: torch.device
    channels_last: bool
    temperature: float = 1.0  # fitted on validation at the end of training (signflow.model.calibration)

    @property
    def unknown_index(self) -> int | None:
        """Column of the trained "unknown" class, if the model has one."""
        return unknown_index(self.class_names)


def load_model(path: Path | str, device: str | torch.device = "cpu", *, expect: Config | None = None) -> LoadedModel:
    """Rebuild the model from a checkpoint (weights_only) and put it in eval mode.

    ``expect``: the config of the data the model will see (the stages'); a checkpoint trained for other
    classes or another image size is then refused (CheckpointError) instead of scoring the wrong columns.
    """
    state = load_checkpoint(path)
    if expect is not None:
        check_compatible(state, path, expect.class_names, expect.data.image_size)
    features = FeatureSpec(**state.get("features", {}))  # absent: a checkpoint from before feature options
    num_classes = state.get("num_classes", len(state["class_names"]))  # absent in the earliest checkpoints
    model = create_model(state["backbone"], num_classes, "none", state.get("dropout", 0.0), features)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:  # names or shapes that do not fit the backbone it names: tampered or foreign
        raise CheckpointError(f"{path}: its weights do not fit a {state['backbone']} with {num_classes} classes "
                              f"({first_line(err)}); {RETRAIN}") from err
    channels_last = bool(state["config"].get("train", {}).get("channels_last", False))
    device = torch.device(device)
    model.to(device).eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    norm = Normalization(tuple(state["normalization"]["mean"]), tuple(state["normalization"]["std"]))
    # A checkpoint from before calibration existed has no temperature: its probabilities stay raw.
    temperature = float(state.get("temperature", 1.0))
    return LoadedModel(model, list(state["class_names"]), norm, int(state["image_size"]), device, channels_last,
                       temperature)


def predict_probs(loaded: LoadedModel, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Calibrated probabilities (N, K): ``softmax(logits / temperature)`` of :func:`predict_logits`."""
    return softmax(predict_logits(loaded, images, batch_size), loaded.temperature).astype(np.float32)


@torch.inference_mode()
def predict_logits(loaded: LoadedModel, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Raw logits (N, K) for uint8 images (N, S, S, 3) already at the model's size."""
    if images.ndim != 4 or images.shape[1:] != (loaded.image_size, loaded.image_size, 3):
        raise ValueError(f"expected (N, {loaded.image_size}, {loaded.image_size}, 3) images, got {images.shape}")
    out = np.empty((len(images), len(loaded.class_names)), dtype=np.float32)
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.array(images[start:start + batch_size]))  # a copy: memmaps are read-only
        release_resident(images)  # a memory map's pages just read leave RSS
        x = eval_transform(batch, loaded.normalization, loaded.channels_last).to(loaded.device)
        out[start:start + len(batch)] = loaded.model(x).float().cpu().numpy()
    return out
