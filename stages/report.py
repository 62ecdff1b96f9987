"""DVC stage `report`: reports/report.md with its figures, from the metrics and models/best.pt."""

import logging
from pathlib import Path

from signflow.config import load_params
from signflow.inference import load_model
from signflow.logs import setup_logging
from signflow.report import ReportPaths, build_report, load_report_inputs
from signflow.tracking import tracked_run

PARAMS, MODEL, RUN_FILE = Path("params.yaml"), Path("models/best.pt"), Path("models/run.json")
METRICS, DATASET, OUT = Path("metrics"), Path("data/dataset"), Path("reports")


def main() -> None:
    setup_logging()
    params = load_params(PARAMS)
    inputs = load_report_inputs(ReportPaths.from_dirs(METRICS, DATASET), params, load_model(MODEL))
    report = build_report(inputs, OUT)
    with tracked_run(RUN_FILE, "report", {}, reuse=True) as tracker:
        tracker.log_artifact(OUT, "report")
    logging.getLogger("report").info("report: %s", report)


if __name__ == "__main__":
    main()
