"""Glue between the validated config, the decoded dataset and the training loop.

Kept apart from ``train.py`` so the loop stays free of file layout and config
shapes; stages and benchmarks build their runs through these few functions.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from signflow.config import Config
from signflow.dataset import load_split
from signflow.models import SignModel, create_model
from signflow.strategies import resolve_strategy
from signflow.train import ArraySet

LIBRARY_DIR = Path(__file__).resolve().parent
HISTORY_COLUMNS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"]


def load_labelled(dataset_dir: Path, split: str) -> tuple[pd.DataFrame, ArraySet]:
    """The split's trainable rows (held-out open-set images excluded) as arrays."""
    frame, images = load_split(dataset_dir, split)
    keep = (frame["label_idx"] >= 0).to_numpy()
    return frame[keep].reset_index(drop=True), ArraySet(np.asarray(images[keep]), frame["label_idx"].to_numpy()[keep])


def build_model(cfg: Config) -> SignModel:
    """The configured backbone with a head for the configured classes (scratch: no weights)."""
    weights = cfg.model.weights if resolve_strategy(cfg.strategy).pretrained else "none"
    return create_model(cfg.model.backbone, len(cfg.class_names), weights, cfg.model.dropout)


def checkpoint_meta(cfg: Config, model: SignModel) -> dict[str, Any]:
    """What predict/evaluate need to rebuild and feed the model, stored in every checkpoint."""
    return {
        "config": json.loads(json.dumps(cfg.to_dict())),
        "class_names": list(cfg.class_names),
        "num_classes": len(cfg.class_names),
        "backbone": cfg.model.backbone,
        "strategy": cfg.strategy,
        "dropout": cfg.model.dropout,
        "normalization": {"mean": list(model.normalization.mean), "std": list(model.normalization.std)},
        "image_size": cfg.data.image_size,
    }


def fingerprint(cfg: Config, dataset_dir: Path, code_files: Sequence[Path] = ()) -> str:
    """Config + training data + code identity: last.pt is resumed only when this matches.

    Code counts too: when DVC re-runs `train` because a script or library module
    changed, the user wants a new training, not the finished run resumed.
    """
    digest = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode())
    for split in ("train", "val"):
        digest.update((dataset_dir / f"{split}.csv").read_bytes())
    for path in sorted({*LIBRARY_DIR.glob("*.py"), *code_files}):
        digest.update(path.read_bytes())
    return digest.hexdigest()
