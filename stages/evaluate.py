"""DVC stage `evaluate`: test-split metrics, open-set results and per-image predictions of models/best.pt."""

import logging
from pathlib import Path

from signflow.config import load_config
from signflow.dataset import load_split
from signflow.evaluation import evaluate, score_split
from signflow.inference import load_model
from signflow.io import atomic_path, write_json, write_text
from signflow.logs import setup_logging
from signflow.tracking import tracked_run
from signflow.train import configure_runtime

DATASET, MODEL, RUN_FILE = Path("data/dataset"), Path("models/best.pt"), Path("models/run.json")
OUT = Path("metrics")
TABLES = {"per_class": "per_class.csv", "confusion": "confusion.csv", "predictions": "predictions.csv",
          "roc": "roc.csv", "reliability": "reliability.csv"}


def main() -> None:
    setup_logging()
    cfg = load_config()
    loaded = load_model(MODEL, configure_runtime(cfg.train))
    val, test = (score_split(loaded, *load_split(DATASET, name), cfg.evaluate.batch_size) for name in ("val", "test"))
    result = evaluate(loaded, val, test, cfg.evaluate)
    write_json(OUT / "evaluate.json", result.metrics)
    for attr, name in TABLES.items():
        with atomic_path(OUT / name) as tmp:
            getattr(result, attr).to_csv(tmp, index=False)
    write_text(OUT / "classification_report.txt", result.report_text)
    with tracked_run(RUN_FILE, "evaluate", {}, reuse=True) as tracker:
        tracker.log_metrics(result.metrics)
        for name in [*TABLES.values(), "classification_report.txt"]:
            tracker.log_artifact(OUT / name, "evaluate")
    logging.getLogger("evaluate").info("%s\n%s", result.report_text, result.metrics)


if __name__ == "__main__":
    main()
