"""DVC stage `add_unknown`: add the "unknown" class and the held-out set, decode every split once."""

import logging

from signflow import paths
from signflow.config import SPLIT_NAMES, load_config
from signflow.data.manifest import read_manifest
from signflow.data.records import IMAGES_DIR, INDEX_FILE, read_quarantine, read_records
from signflow.data.summary import describe, summarize
from signflow.data.unknown import build_dataset
from signflow.io import write_json
from signflow.logs import setup_logging


def main() -> None:
    setup_logging()
    cfg = load_config(paths.PARAMS)
    index = read_records(paths.RAW_DIR / INDEX_FILE)
    targets = {name: read_manifest(paths.SPLIT_DIR / f"{name}.csv") for name in SPLIT_NAMES}
    images = paths.RAW_DIR / IMAGES_DIR
    frames = build_dataset(index, targets, images, paths.DATASET_DIR, cfg.data, cfg.split, cfg.unknown)
    summary = summarize(frames, read_quarantine(paths.RAW_DIR))
    write_json(paths.DATA_SUMMARY, summary)
    logging.getLogger("add_unknown").info("dataset:\n%s", describe(summary))


if __name__ == "__main__":
    main()
