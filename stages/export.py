"""DVC stage `export`: models/onnx/ (ONNX + sidecar, int8 optionally), verified against PyTorch, logged to MLflow."""

import logging
import os

from signflow import paths
from signflow.config import load_config
from signflow.data.arrays import load_split
from signflow.evaluation.openset import AUTO, resolve_threshold
from signflow.files import write_json
from signflow.logs import run_stage, setup_logging
from signflow.model.inference import load_model
from signflow.runtime import configure_runtime
from signflow.serving.export import ExportPaths, export_verified
from signflow.serving.predictor import load_predictor
from signflow.tracking import git_commit, tracked_run


def main() -> None:
    setup_logging()
    cfg = load_config(paths.PARAMS)
    configure_runtime(cfg.train)  # seed and threads; export runs on the CPU, where the model will be deployed
    loaded = load_model(paths.BEST_MODEL, "cpu", expect=cfg)
    test, test_images = load_split(paths.DATASET_DIR, "test")
    _, train_images = load_split(paths.DATASET_DIR, "train")
    threshold = resolve_threshold(AUTO, paths.EVALUATE_METRICS)  # the evaluate stage's, carried in the sidecar
    result = export_verified(
        loaded, cfg.export, ExportPaths(paths.ONNX_MODEL, paths.INT8_MODEL, paths.BEST_MODEL),
        test_images=test_images, test_labels=test["label_idx"].to_numpy(),  # held-out rows: -1, skipped
        train_images=train_images, threshold=threshold,
        batch_size=cfg.evaluate.batch_size,
    )
    write_json(paths.EXPORT_METRICS, result.metrics)
    write_json(paths.EXPORT_TIMINGS, result.timings)
    with tracked_run(paths.RUN_FILE, "export", {}, reuse=True) as tracker:
        tracker.log_metrics({**result.metrics, **result.timings})
        example = test_images[:2]  # two images: the signature's batch axis is then variable
        version = tracker.log_onnx_model(
            paths.ONNX_MODEL, example, load_predictor(paths.ONNX_MODEL).predict_images(example),
            registry_name=cfg.export.registry_name, metadata=result.sidecar,
            version_tags={"dvc_experiment": os.environ.get("DVC_EXP_NAME", "workspace"), "git_commit": git_commit()},
        )
    if version:
        logging.getLogger("export").info("registered %s version %s", cfg.export.registry_name, version)


if __name__ == "__main__":
    run_stage(main)
