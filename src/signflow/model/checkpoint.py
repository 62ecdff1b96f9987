"""The one save/load pair for checkpoints.

A checkpoint is a single dict of tensors and plain values (model and optimizer
state, epoch, step, resolved config, class names, normalisation, image size,
backbone), so it loads with ``torch.load(weights_only=True)``: a file that is
not ours, or that carries pickled code, is refused instead of executed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import torch

from signflow.files import atomic_path

FORMAT_VERSION = 1
RETRAIN = "retrain with `dvc repro train`"
REQUIRED_KEYS = frozenset(
    {"format", "model", "epoch", "config", "class_names", "normalization", "image_size", "backbone"}
)


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, not signflow's, tampered with or incompatible."""


class _WriteErrors:
    """A file object for ``torch.save`` that remembers the OSError of a failed write.

    Torch's zip writer turns a failed write (a full disk) into a bare RuntimeError
    ("unexpected pos 704 vs 598"); the remembered error says what really happened.
    """

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._fh.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self._fh.flush()


def save_checkpoint(path: Path | str, state: dict[str, Any]) -> None:
    """Write ``state`` atomically: an interrupted or failed save never touches the previous file.

    A failed write (no space left) raises OSError naming ``path`` (see :func:`signflow.files.atomic_path`).
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        writer = _WriteErrors(fh)
        try:
            torch.save({"format": FORMAT_VERSION, **state}, writer)
        except RuntimeError as err:
            if writer.error is None:
                raise
            raise writer.error from err


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
        raise CheckpointError(
            f"{path} has checkpoint format {state['format']!r}, this signflow reads format {FORMAT_VERSION}: "
            f"{RETRAIN}, or use the signflow version that wrote it"
        )
    return state


def check_compatible(state: dict[str, Any], path: Path | str, class_names: Sequence[str], image_size: int) -> None:
    """Refuse a checkpoint trained for other classes or another image size than the data it is about to see."""
    problems = []
    if list(state["class_names"]) != list(class_names):
        problems.append(f"its classes {list(state['class_names'])} are not params.yaml's {list(class_names)}")
    if int(state["image_size"]) != image_size:
        problems.append(f"its image size {state['image_size']} px is not data.image_size={image_size}")
    if problems:
        raise CheckpointError(f"{path} does not fit this dataset: {'; '.join(problems)}; {RETRAIN}")
