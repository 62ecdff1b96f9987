"""Small decoded datasets for the audit's tests: smooth random images, manifests, planted copies."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from signflow.data.arrays import write_split
from signflow.data.manifest import MANIFEST_COLUMNS, ROLE_HELDOUT, ROLE_TARGET, ROLE_UNKNOWN

SIZE = 64
GRID = 8  # random colour cells per side, upsampled: low-frequency images whose pHash is stable under re-encoding


def smooth_images(n: int, seed: int, size: int = SIZE) -> np.ndarray:
    """``n`` unrelated (N, size, size, 3) uint8 images: random colour grids, smoothly upsampled."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, size=(n, GRID, GRID, 3), dtype=np.uint8)
    return np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_CUBIC) for c in cells])


def reencoded(image: np.ndarray, shrink: int = 3, quality: int = 85) -> np.ndarray:
    """``image`` shrunk by ``shrink`` px, saved as a JPEG, decoded and resized back: a re-encoded copy."""
    side = image.shape[0]
    small = cv2.resize(image, (side - shrink, side - shrink), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.resize(cv2.imdecode(data, cv2.IMREAD_COLOR), (side, side), interpolation=cv2.INTER_AREA)


def manifest(paths: Sequence[str], labels: Sequence[str], class_names: Sequence[str], tracks: Sequence[str],
             roles: Sequence[str] | None = None, sizes: Sequence[int] | None = None) -> pd.DataFrame:
    """A manifest frame (MANIFEST_COLUMNS): class ids are the class names, held-out rows get index -1."""
    roles = list(roles) if roles is not None else [ROLE_TARGET] * len(paths)
    sizes = list(sizes) if sizes is not None else [SIZE] * len(paths)
    index = {name: k for k, name in enumerate(class_names)}
    return pd.DataFrame({
        "path": list(paths), "class_id": list(labels), "track": list(tracks),
        "width": sizes, "height": sizes, "x1": 0, "y1": 0, "x2": sizes, "y2": sizes, "shard": "",
        "label": list(labels), "label_idx": [index[lab] if r != ROLE_HELDOUT else -1 for lab, r in zip(labels, roles,
                                                                                                       strict=True)],
        "role": roles,
    })[MANIFEST_COLUMNS]


def write_dataset(out: Path, splits: dict[str, tuple[pd.DataFrame, np.ndarray]]) -> Path:
    """``out`` holding each split's manifest and array, as the add_unknown stage writes them."""
    out.mkdir(parents=True, exist_ok=True)
    for name, (frame, images) in splits.items():
        write_split(out, name, frame, images)
    return out


__all__ = ["ROLE_HELDOUT", "ROLE_TARGET", "ROLE_UNKNOWN", "manifest", "reencoded", "smooth_images", "write_dataset"]
