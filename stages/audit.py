"""DVC stage `audit`: near-duplicates across splits, suspect labels and the data's profile; reports, never edits."""

import logging
import time

from signflow import paths
from signflow.audit.run import run_audit, write_report
from signflow.config import load_config
from signflow.files import write_json
from signflow.logs import run_stage, setup_logging


def main() -> None:
    setup_logging()
    start = time.perf_counter()
    cfg = load_config(paths.PARAMS)
    result = run_audit(paths.DATASET_DIR, cfg)
    write_json(paths.AUDIT_METRICS, result.metrics)
    readme = write_report(result, paths.DATASET_DIR, paths.AUDIT_DIR, cfg.audit)
    m = result.metrics
    logging.getLogger("audit").info(
        "audit in %.1fs: %d near-duplicate pair(s) across splits, %d suspect label(s); see %s",
        time.perf_counter() - start, m["duplicates.total"], m["labels.suspects"], readme)


if __name__ == "__main__":
    run_stage(main)
