"""DVC stage `evaluate`: test-split metrics, open-set results and per-image predictions of models/best.pt."""

import logging
from pathlib import Path

from signflow import paths
from signflow.config import OFFICIAL_TEST_SPLIT, load_config
from signflow.data.arrays import load_split
from signflow.evaluation.evaluate import evaluate, score_split
from signflow.files import atomic_path, write_json, write_text
from signflow.logs import run_stage, setup_logging
from signflow.model.inference import load_model
from signflow.provenance import collect_lineage
from signflow.runtime import configure_runtime
from signflow.tracking import tracked_run


def main() -> None:
    setup_logging()
    cfg = load_config(paths.PARAMS)
    loaded = load_model(paths.BEST_MODEL, configure_runtime(cfg.train), expect=cfg)
    val, test = (score_split(loaded, *load_split(paths.DATASET_DIR, name), cfg.evaluate.batch_size)
                 for name in ("val", "test"))
    official = None
    if (paths.DATASET_DIR / f"{OFFICIAL_TEST_SPLIT}.npy").exists():  # data.gtsrb.official_test was on
        official = score_split(loaded, *load_split(paths.DATASET_DIR, OFFICIAL_TEST_SPLIT), cfg.evaluate.batch_size)
    result = evaluate(loaded, val, test, cfg.evaluate, official)
    tables = {paths.PER_CLASS: result.per_class, paths.CONFUSION: result.confusion,
              paths.PREDICTIONS: result.predictions, paths.ROC: result.roc, paths.RELIABILITY: result.reliability,
              paths.THRESHOLD_TRADEOFF: result.tradeoff}
    write_json(paths.EVALUATE_METRICS, result.metrics)
    for path, table in tables.items():
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=False)
    write_text(paths.CLASSIFICATION_REPORT, result.report_text)
    with tracked_run(paths.RUN_FILE, "evaluate", {}, reuse=True) as tracker:
        tracker.log_lineage(collect_lineage(Path.cwd(), ("val", "test")))  # val: the threshold is chosen there
        tracker.log_metrics(result.metrics)
        for path in [*tables, paths.CLASSIFICATION_REPORT]:
            tracker.log_artifact(path, "evaluate")
    logging.getLogger("evaluate").info("%s\n%s", result.report_text, result.metrics)


if __name__ == "__main__":
    run_stage(main)
