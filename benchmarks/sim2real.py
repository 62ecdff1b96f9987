"""Synthetic to real: a model trained on the built-in synthetic signs, judged on real GTSRB photos.

Takes a checkpoint (default ``models/best.pt``, e.g. from ``dvc exp run -S
strategy=full`` on the synthetic default) and its open-set threshold
(``openset.threshold`` of ``metrics/evaluate.json``, chosen on *synthetic*
validation), and classifies every real image of the target classes in the
shared GTSRB subset, exactly as ``signflow predict`` answers: a class, or
"unknown". Prints one JSON line with three groups:

- ``dev``: the real train and validation tracks of the real-data recipe's
  split (``presets/gtsrb.yaml``, ``split.seed``): what renderer changes are
  judged on;
- ``test``: that split's test tracks, never looked at while developing: the figure to quote;
- ``all``: every real image of the four classes (3,903), comparable with earlier figures.

Each has ``accuracy`` (the right sign), ``rejected`` (answered "unknown"),
``wrong_sign`` (another known sign) and ``per_class`` accuracy.
Usage: ``python benchmarks/sim2real.py [--model PATH] [--metrics PATH]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from signflow.catalog import UNKNOWN_NAME
from signflow.config import Config
from signflow.data.decode import decode_frame
from signflow.data.images import ImageLimits
from signflow.data.sources.gtsrb import read_gtsrb_tree
from signflow.data.split import split_targets
from signflow.evaluation.openset import decide, resolve_threshold
from signflow.model.inference import load_model, predict_probs

import common

REAL_PRESET = common.REPO / "presets" / "gtsrb.yaml"  # the real-data recipe's split


def real_targets(cfg: Config) -> pd.DataFrame:
    """Every real image of the configured target classes, with the split the real-data recipe gives it."""
    split = yaml.safe_load(REAL_PRESET.read_text())["split"]
    frames = split_targets(read_gtsrb_tree(common.gtsrb_root()), cfg.data.classes, split, cfg.split.seed, True)
    return pd.concat([frame.assign(split=name) for name, frame in frames.items()], ignore_index=True)


def outcome(decisions: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Right sign, rejected as unknown, wrong sign: overall and per class."""
    right, rejected = decisions == labels, decisions == UNKNOWN_NAME
    return {
        "n": int(len(labels)),
        "accuracy": round(float(right.mean()), 4),
        "rejected": round(float(rejected.mean()), 4),
        "wrong_sign": round(float((~right & ~rejected).mean()), 4),
        "per_class": {name: round(float(right[labels == name].mean()), 4) for name in sorted(set(labels))},
    }


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=common.REPO / "models" / "best.pt")
    p.add_argument("--metrics", type=Path, default=common.REPO / "metrics" / "evaluate.json",
                   help="evaluate.json of the same run: its openset.threshold")
    args = p.parse_args()
    cfg = common.start(args)
    loaded = load_model(args.model)
    threshold = resolve_threshold("auto", args.metrics)
    frame = real_targets(cfg)
    limits = ImageLimits(cfg.data.min_image_side, cfg.data.max_image_side)
    images = decode_frame(frame, common.gtsrb_root(), loaded.image_size, False, 0, limits)
    decisions = np.array(decide(predict_probs(loaded, images), loaded.class_names, threshold))
    labels = frame["label"].to_numpy()
    test = (frame["split"] == "test").to_numpy()
    common.emit({"benchmark": "sim2real", "model": str(args.model), "threshold": threshold,
                 "dev": outcome(decisions[~test], labels[~test]), "test": outcome(decisions[test], labels[test]),
                 "all": outcome(decisions, labels)})


if __name__ == "__main__":
    main()
