"""DVC stage `add_unknown`: add the "unknown" class and the held-out set, decode every split once."""

import logging
from pathlib import Path

import pandas as pd

from signflow.config import SPLIT_NAMES, load_config
from signflow.dataset import build_open_set, decode_frame, describe, read_manifest, summarize, write_split
from signflow.images import ImageLimits
from signflow.io import atomic_path, write_json
from signflow.logs import setup_logging
from signflow.records import read_records

RAW_DIR = Path("data/raw")
SPLIT_DIR = Path("data/split")
OUT_DIR = Path("data/dataset")
SUMMARY = Path("metrics/data.json")


def main() -> None:
    setup_logging()
    cfg = load_config()
    index = read_records(RAW_DIR / "index.csv")
    u = cfg.unknown
    extra = build_open_set(
        index, cfg.data.class_ids, cfg.split.fractions, cfg.split.seed, enabled=u.enabled,
        unknown_classes=u.classes, heldout=u.heldout, max_images=u.max_images, heldout_max_images=u.heldout_max_images,
    )
    limits = ImageLimits(cfg.data.min_image_side, cfg.data.max_image_side)
    frames = {}
    with atomic_path(OUT_DIR) as tmp:
        for name in SPLIT_NAMES:
            frames[name] = pd.concat([read_manifest(SPLIT_DIR / f"{name}.csv"), extra[name]], ignore_index=True)
            images = decode_frame(frames[name], RAW_DIR / "images", cfg.data.image_size, cfg.data.roi_crop, cfg.data.decode_workers, limits)
            write_split(tmp, name, frames[name], images)
    summary = summarize(frames, pd.read_csv(RAW_DIR / "quarantine.csv", dtype=str))
    write_json(SUMMARY, summary)
    logging.getLogger("add_unknown").info("dataset:\n%s", describe(summary))


if __name__ == "__main__":
    main()
