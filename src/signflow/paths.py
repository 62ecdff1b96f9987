"""The project layout: where each stage reads and writes, relative to the repository root.

The one place that knows ``data/``, ``models/``, ``metrics/`` and ``reports/``:
stage scripts and the CLI's defaults take their paths from here and hand them
to library functions, which never assume a layout. ``dvc.yaml`` declares the
same paths as deps and outs.
"""

from __future__ import annotations

from pathlib import Path

PARAMS = Path("params.yaml")

# fingerprint -> download -> split -> add_unknown
# The data source's external inputs (a folder's files, a mirror file): in git, a dependency of download.
SOURCE_FINGERPRINT = Path("data/source_fingerprint.json")
RAW_DIR = Path("data/raw")  # shards/, quarantine/, index.csv, official_test.csv, quarantine.csv (data.records)
DOWNLOAD_CACHE = Path("data/downloads")  # git-ignored; keeps the archive so a re-run does not fetch again
SPLIT_DIR = Path("data/split")  # {train,val,test}.csv: target manifests
DATASET_DIR = Path("data/dataset")  # {split}.csv + {split}.npy: every image decoded once

# audit (after add_unknown): what the data holds, reported, never changed
AUDIT_METRICS = Path("metrics/audit.json")
AUDIT_DIR = Path("reports") / "audit"  # README.md, its PNGs and CSVs, in git (renders on GitHub)

# train
MODELS_DIR = Path("models")
BEST_MODEL = MODELS_DIR / "best.pt"
RUN_FILE = MODELS_DIR / "run.json"  # the MLflow run evaluate and report log into

# metrics/ (in git: a pull request shows their diff)
METRICS_DIR = Path("metrics")
DATA_SUMMARY = METRICS_DIR / "data.json"
DATA_TRACKS = METRICS_DIR / "data_tracks.csv"  # a row per split and track: the data diff a PR report shows
TRAIN_SUMMARY = METRICS_DIR / "train.json"
TRAIN_HISTORY = METRICS_DIR / "train_history.csv"
EVALUATE_METRICS = METRICS_DIR / "evaluate.json"
PER_CLASS = METRICS_DIR / "per_class.csv"
CONFUSION = METRICS_DIR / "confusion.csv"
PREDICTIONS = METRICS_DIR / "predictions.csv"
ROC = METRICS_DIR / "roc.csv"
THRESHOLD_TRADEOFF = METRICS_DIR / "threshold_tradeoff.csv"  # validation: known kept vs held-out rejected per threshold
RELIABILITY = METRICS_DIR / "reliability.csv"
CLASSIFICATION_REPORT = METRICS_DIR / "classification_report.txt"
# Speeds and durations, one file per stage (train.json, export.json...): still metrics (`dvc exp show`),
# kept apart so a change of machine or load is not a change of results (left out of `signflow pr-report`'s
# metrics diff, never printed in the report).
TIMINGS_DIR = METRICS_DIR / "timings"
TRAIN_TIMINGS = TIMINGS_DIR / "train.json"  # train_seconds, images_per_second
TRAIN_TIMINGS_HISTORY = TIMINGS_DIR / "train_history.csv"  # epoch, seconds

# report.md and its PNGs, in git (renders on GitHub); the report stage replaces this folder whole, so
# reports/ beside it keeps what other tools write (results.md of benchmarks/results_table.py, pr.md).
REPORTS_DIR = Path("reports") / "pipeline"
MODEL_CARD = Path("reports") / "model_card.md"  # written by export with every model, logged with its version

# export: the shippable model, one folder (model + sidecar belong together; DVC artifact "signflow")
ONNX_DIR = MODELS_DIR / "onnx"
ONNX_MODEL = ONNX_DIR / "model.onnx"  # sidecar: model.json beside it (signflow.serving.export.sidecar_path)
INT8_MODEL = ONNX_DIR / "model.int8.onnx"
EXPORT_METRICS = METRICS_DIR / "export.json"
EXPORT_TIMINGS = TIMINGS_DIR / "export.json"  # onnxruntime, int8 and PyTorch images/s
