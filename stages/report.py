"""DVC stage `report`: reports/pipeline/report.md with its figures, from the metrics and models/best.pt."""

import logging

from signflow import paths
from signflow.config import load_config, load_params
from signflow.evaluation.report import ReportPaths, build_report, load_report_inputs
from signflow.logs import run_stage, setup_logging
from signflow.model.inference import load_model
from signflow.tracking import tracked_run

INPUTS = ReportPaths(
    data_summary=paths.DATA_SUMMARY, train_summary=paths.TRAIN_SUMMARY, history=paths.TRAIN_HISTORY,
    metrics=paths.EVALUATE_METRICS, per_class=paths.PER_CLASS, predictions=paths.PREDICTIONS,
    reliability=paths.RELIABILITY, roc=paths.ROC, tradeoff=paths.THRESHOLD_TRADEOFF,
    report_text=paths.CLASSIFICATION_REPORT,
    dataset_dir=paths.DATASET_DIR,
)


def main() -> None:
    setup_logging()
    cfg = load_config(paths.PARAMS)  # validate; the report shows the file's values as written
    inputs = load_report_inputs(INPUTS, load_params(paths.PARAMS), load_model(paths.BEST_MODEL, expect=cfg))
    report = build_report(inputs, paths.REPORTS_DIR)
    with tracked_run(paths.RUN_FILE, "report", {}, reuse=True) as tracker:
        tracker.log_artifact(paths.REPORTS_DIR, "report")
    logging.getLogger("report").info("report: %s", report)


if __name__ == "__main__":
    run_stage(main)
