"""DVC stage `add_unknown`: add the "unknown" class and the held-out set, decode every split once."""

import logging

from signflow import paths
from signflow.config import SPLIT_NAMES, load_config
from signflow.data.manifest import read_manifest
from signflow.data.records import INDEX_FILE, OFFICIAL_TEST_FILE, read_quarantine, read_records, read_records_except
from signflow.data.summary import describe, summarize, track_table, write_track_table
from signflow.data.unknown import build_dataset
from signflow.files import write_json
from signflow.logs import run_stage, setup_logging


def main() -> None:
    setup_logging()
    cfg = load_config(paths.PARAMS)
    official = paths.RAW_DIR / OFFICIAL_TEST_FILE
    # Only non-target records are read (targets come from the split manifests), and the manifests are passed,
    # not kept here: build_dataset releases each once used, so memory stays flat as the data grows.
    index, available = read_records_except(paths.RAW_DIR / INDEX_FILE, cfg.data.classes)
    frames = build_dataset(index, {name: read_manifest(paths.SPLIT_DIR / f"{name}.csv") for name in SPLIT_NAMES},
                           paths.RAW_DIR, paths.DATASET_DIR, cfg.data, cfg.split, cfg.unknown,
                           read_records(official) if official.exists() else [], available)
    summary = summarize(frames, read_quarantine(paths.RAW_DIR))
    write_json(paths.DATA_SUMMARY, summary)
    write_track_table(paths.DATA_TRACKS, track_table(frames))
    logging.getLogger("add_unknown").info("dataset:\n%s", describe(summary))


if __name__ == "__main__":
    run_stage(main)
