"""DVC stage `train`: fit the configured backbone with the configured strategy; one MLflow run."""

import logging
import os
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from signflow.config import flatten, load_config
from signflow.experiment import HISTORY_COLUMNS, build_model, checkpoint_meta, fingerprint, load_labelled
from signflow.io import atomic_path, write_json
from signflow.logs import setup_logging
from signflow.tracking import git_commit, run_name_for, tracked_run
from signflow.train import BEST_FILE, configure_runtime, fit

DATASET = Path("data/dataset")
MODELS = Path("models")
RUN_FILE = MODELS / "run.json"
METRICS, HISTORY = Path("metrics/train.json"), Path("metrics/train_history.csv")


def main() -> None:
    setup_logging()
    cfg = load_config()
    device = configure_runtime(cfg.train)
    _, train_set = load_labelled(DATASET, "train")
    _, val_set = load_labelled(DATASET, "val")
    model = build_model(cfg)
    tags = {"strategy": cfg.strategy, "backbone": cfg.model.backbone, "git_commit": git_commit(),
            "data.source": cfg.data.source, "train_images": str(len(train_set)), "val_images": str(len(val_set)),
            "dvc_experiment": os.environ.get("DVC_EXP_NAME", "")}
    with tracked_run(RUN_FILE, run_name_for(cfg.model.backbone, cfg.strategy), tags, reuse=False) as tracker:
        tracker.log_params(flatten(cfg.to_dict()))
        result = fit(
            model, train_set, val_set, strategy=cfg.strategy, cfg=cfg.train,
            norm=model.normalization,
            device=device, checkpoint_dir=MODELS, checkpoint_meta=checkpoint_meta(cfg, model),
            fingerprint=fingerprint(cfg, DATASET, [Path(__file__).resolve()]),
            callbacks=[lambda s: tracker.log_metrics({k: v for k, v in asdict(s).items() if k != "epoch"}, step=s.epoch)],
        )
        write_json(METRICS, result.summary())
        with atomic_path(HISTORY) as tmp:
            pd.DataFrame([asdict(h) for h in result.history], columns=HISTORY_COLUMNS).to_csv(tmp, index=False)
        tracker.log_metrics(result.summary())
        tracker.log_artifact(HISTORY)
        tracker.log_artifact(MODELS / BEST_FILE, "model")
    logging.getLogger("train").info("best epoch %d, val accuracy %.4f", result.best_epoch, result.best_val_accuracy)


if __name__ == "__main__":
    main()
