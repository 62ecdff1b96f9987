"""The one save/load pair for checkpoints.

A checkpoint is a single dict of tensors and plain values (model and optimizer
state, epoch, step, resolved config, class names, normalisation, image size,
backbone), so it loads with ``torch.load(weights_only=True)``: a file that is
not ours, or that carries pickled code, is refused instead of executed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from signflow.io import atomic_path

FORMAT_VERSION = 1
REQUIRED_KEYS = frozenset(
    {"format", "model", "epoch", "config", "class_names", "normalization", "image_size", "backbone"}
)


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, not signflow's, tampered with or incompatible."""


def save_checkpoint(path: Path | str, state: dict[str, Any]) -> None:
    """Write ``state`` atomically: an interrupted save never corrupts the previous file."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT_VERSION, **state}, tmp)


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; run `dvc repro train` first")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for foreign or corrupt files
        # Torch's own text advises weights_only=False, exactly what must not be done with
        # an untrusted file: keep only its last line, the reason.
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"refusing to load {path}: not a signflow checkpoint or tampered with "
            f"(only tensors and plain values are accepted): {reason}"
        ) from err
    if not isinstance(state, dict) or not REQUIRED_KEYS <= state.keys():
        missing = sorted(REQUIRED_KEYS - state.keys()) if isinstance(state, dict) else "everything"
        raise CheckpointError(f"{path} is not a signflow checkpoint (missing {missing})")
    if state["format"] != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format {state['format']}, this signflow reads {FORMAT_VERSION}")
    return state
