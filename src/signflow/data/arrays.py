"""The decode-once image arrays every stage after ``add_unknown`` reads.

Beside each split's manifest (``{split}.csv``) lies a uint8 array
(N, S, S, 3), ``{split}.npy``, of its images decoded and resized once;
training, evaluation, the report and benchmarks memory-map it, so no image
file is decoded twice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.format import open_memmap

from signflow.data.manifest import MANIFEST_COLUMNS, DataError, read_manifest
from signflow.io import atomic_path


def write_split(out_dir: Path, name: str, frame: pd.DataFrame, images: np.ndarray) -> None:
    with atomic_path(out_dir / f"{name}.npy") as tmp:
        np.save(tmp, images)
    with atomic_path(out_dir / f"{name}.csv") as tmp:
        frame.to_csv(tmp, index=False, columns=MANIFEST_COLUMNS)


def write_split_streamed(
    out_dir: Path, name: str, frame: pd.DataFrame, size: int, fill: Callable[[np.ndarray], None]
) -> None:
    """Like :func:`write_split`, but ``fill`` writes the images straight into the memory-mapped ``.npy``.

    The (N, size, size, 3) array is never held in RAM; the file's bytes are
    those ``np.save`` writes for the same images (same header, same layout).
    """
    shape = (len(frame), int(size), int(size), 3)  # plain ints: the header is their repr
    with atomic_path(out_dir / f"{name}.npy") as tmp:
        images = open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        fill(images)
        images.flush()
        del images  # unmapped before the rename
    with atomic_path(out_dir / f"{name}.csv") as tmp:
        frame.to_csv(tmp, index=False, columns=MANIFEST_COLUMNS)


def load_split(dataset_dir: Path, name: str, mmap: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
    """The manifest and its decoded images (memory-mapped: no copy in RAM)."""
    frame = read_manifest(dataset_dir / f"{name}.csv")
    images = np.load(dataset_dir / f"{name}.npy", mmap_mode="r" if mmap else None)
    if len(frame) != len(images):
        raise DataError(f"{dataset_dir}/{name}: manifest has {len(frame)} rows, array {len(images)}")
    return frame, images
