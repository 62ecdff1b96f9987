"""DVC stage `train`: fit the configured backbone with the configured strategy; one MLflow run."""

import logging
from pathlib import Path

from signflow import paths
from signflow.codegraph import import_closure
from signflow.config import load_config
from signflow.experiment import TrainOutputs, run_training
from signflow.logs import setup_logging

OUTPUTS = TrainOutputs(paths.MODELS_DIR, paths.RUN_FILE, paths.TRAIN_SUMMARY, paths.TRAIN_HISTORY)


def main() -> None:
    setup_logging()
    cfg = load_config(paths.PARAMS)
    # The resume fingerprint hashes the code this stage runs: the files dvc.yaml lists as its deps.
    result = run_training(cfg, paths.DATASET_DIR, OUTPUTS, import_closure(Path(__file__)))
    logging.getLogger("train").info("best epoch %d, val accuracy %.4f", result.best_epoch, result.best_val_accuracy)


if __name__ == "__main__":
    main()
