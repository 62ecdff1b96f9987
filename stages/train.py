"""DVC stage `train`: fit the configured backbone with the configured strategy; one MLflow run.

With train.distributed.nproc > 1 (and not already started by torchrun) it starts
itself again as that many torchrun processes (DDP ranks) and returns their exit code.
"""

import logging
from pathlib import Path

from signflow import paths
from signflow.codegraph import import_closure
from signflow.config import load_config
from signflow.logs import run_stage, setup_logging
from signflow.training import distributed

MAIN_LOG_LEVEL, OTHER_RANKS_LOG_LEVEL = None, "WARNING"  # ranks > 0 would repeat every line of rank 0
INTERRUPTED_EXIT = 130  # 128 + SIGINT: what a shell reports for Ctrl-C


def main() -> int:
    setup_logging(MAIN_LOG_LEVEL if distributed.env_rank() == 0 else OTHER_RANKS_LOG_LEVEL)
    cfg = load_config(paths.PARAMS)
    if distributed.needs_launch(cfg.train.distributed.nproc):
        return distributed.relaunch(cfg.train.distributed.nproc, Path(__file__))
    try:
        # Imported only now: a launching parent just waits, and torch alone would hold ~1 GB in it.
        from signflow.training.stage import TrainOutputs, run_training

        outputs = TrainOutputs(paths.MODELS_DIR, paths.RUN_FILE, paths.TRAIN_SUMMARY, paths.TRAIN_HISTORY,
                               paths.TRAIN_TIMINGS, paths.TRAIN_TIMINGS_HISTORY)
        # The resume fingerprint hashes the code this stage runs: the files dvc.yaml lists as its deps.
        result = run_training(cfg, paths.DATASET_DIR, outputs, import_closure(Path(__file__)))
    except KeyboardInterrupt:
        # Ctrl-C: every finished epoch is in last.pt already (written atomically), so one line, no traceback.
        from signflow.training.stage import interrupted_message

        if distributed.env_rank() == 0:
            logging.getLogger("train").warning(interrupted_message(paths.MODELS_DIR))
        return INTERRUPTED_EXIT
    logging.getLogger("train").info("best epoch %d, val accuracy %.4f", result.best_epoch, result.best_val_accuracy)
    return 0


if __name__ == "__main__":
    run_stage(main)
