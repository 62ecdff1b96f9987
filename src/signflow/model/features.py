"""Pooled features of a frozen backbone for decoded uint8 arrays: one batched pass, no head.

The data audit's label check (``signflow.audit.labels``) fits a linear model
on these; it needs neither a checkpoint nor the training loop's augmented,
multi-view cache (``signflow.training.loop.extract_features``), only the
clean eval transform and ``SignModel.forward_features``.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from signflow.data.arrays import release_resident
from signflow.model.backbones import SignModel
from signflow.model.transforms import eval_transform


@torch.inference_mode()
def pooled_features(model: SignModel, images: np.ndarray, batch_size: int, rows: np.ndarray | None = None,
                    device: torch.device | str = "cpu", channels_last: bool = True,
                    desc: str = "features") -> np.ndarray:
    """(N, S, S, 3) uint8 images -> (len(rows), model.num_features) float32, the backbone in eval mode.

    ``rows``: the positions in ``images`` to run, in that order (None: all).
    ``images`` may be a memory map: only a batch of it is resident at a time.
    ``channels_last``: 1.5-2x faster convolutions on CPU (measured at 64 px,
    batches of 64-256), as ``train.channels_last`` is for training.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (N, S, S, 3) uint8 images, got shape {images.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    rows = np.arange(len(images)) if rows is None else np.asarray(rows, dtype=np.int64)
    device = torch.device(device)
    model.eval().to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    out = np.empty((len(rows), model.num_features), dtype=np.float32)
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch", leave=False):
        batch = torch.from_numpy(np.asarray(images[rows[start:start + batch_size]]))  # fancy indexing copies
        release_resident(images)
        x = eval_transform(batch, model.normalization, channels_last).to(device)
        out[start:start + len(batch)] = model.forward_features(x).float().cpu().numpy()
    return out
