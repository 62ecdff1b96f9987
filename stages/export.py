"""DVC stage `export`: models/onnx/ (ONNX + sidecar, int8 optionally), verified against PyTorch, logged to MLflow."""

import logging
from pathlib import Path

from signflow import paths
from signflow.config import load_config
from signflow.data.arrays import load_split
from signflow.evaluation.openset import AUTO, resolve_threshold, threshold_policy_from_metrics
from signflow.files import write_json
from signflow.logs import run_stage, setup_logging
from signflow.model.inference import load_model
from signflow.provenance import collect_lineage
from signflow.runtime import configure_runtime
from signflow.serving.card_inputs import CardPaths, read_card_inputs
from signflow.serving.export import ExportPaths, export_verified
from signflow.serving.mlflow_model import log_signflow_model
from signflow.serving.model_card import card_description, model_card_markdown, write_model_card
from signflow.tracking import tracked_run

CARD_INPUTS = CardPaths(
    sidecar=paths.ONNX_DIR / "model.json", data_summary=paths.DATA_SUMMARY, data_tracks=paths.DATA_TRACKS,
    metrics=paths.EVALUATE_METRICS, per_class=paths.PER_CLASS, predictions=paths.PREDICTIONS,
    test_manifest=paths.DATASET_DIR / "test.csv", export_metrics=paths.EXPORT_METRICS,
    model_files=(paths.ONNX_MODEL, paths.INT8_MODEL),
)


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
        threshold_policy=threshold_policy_from_metrics(paths.EVALUATE_METRICS),  # how evaluate chose it
        batch_size=cfg.evaluate.batch_size,
    )
    write_json(paths.EXPORT_METRICS, result.metrics)
    write_json(paths.EXPORT_TIMINGS, result.timings)
    lineage = collect_lineage(Path.cwd(), ("train", "test"))  # train: int8 calibration; test: verification
    registry = cfg.export.registry_name
    with tracked_run(paths.RUN_FILE, "export", {}, reuse=True) as tracker:
        tracker.log_lineage(lineage)
        tracker.log_metrics({**result.metrics, **result.timings})
        version = tracker.log_model(
            lambda: log_signflow_model(paths.ONNX_DIR, example_images=test_images[:2], metadata=result.sidecar,
                                       registry_name=registry),
            registry_name=registry, version_tags=lineage.tags)
        card = model_card_markdown(read_card_inputs(CARD_INPUTS, cfg, {
            **lineage.summary(), "registered": f"{registry}/{version}" if version else None,
            "run_id": tracker.run_id}))
        write_model_card(paths.MODEL_CARD, card)
        tracker.log_artifact(paths.MODEL_CARD)
        if version:
            tracker.describe_version(registry, version, card_description(card))
            logging.getLogger("export").info("registered %s version %s with its model card", registry, version)


if __name__ == "__main__":
    run_stage(main)
