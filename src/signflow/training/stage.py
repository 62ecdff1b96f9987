"""The train stage's library: glue between the validated config, the decoded dataset and the loop.

Kept apart from ``train.py`` so the loop stays free of file layout and config
shapes; the stage (:func:`run_training`) and the benchmarks build their runs
through these few functions. Under torchrun every rank runs
:func:`run_training`; only rank 0 opens the MLflow run and writes files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from signflow.catalog import flatten
from signflow.config import Config
from signflow.data.arrays import load_split
from signflow.files import atomic_path, file_digest, write_json
from signflow.model.backbones import FeatureSpec, SignModel, create_model
from signflow.model.calibration import Calibration, fit_temperature
from signflow.model.checkpoint import load_checkpoint, save_checkpoint
from signflow.model.inference import load_model, predict_logits
from signflow.model.strategies import is_backbone_frozen, resolve_weights
from signflow.provenance import collect_lineage
from signflow.runtime import configure_runtime
from signflow.tracking import Tracker, run_name_for, tracked_run
from signflow.training import distributed
from signflow.training.loop import (
    BEST_FILE,
    LAST_FILE,
    ArraySet,
    Checkpoints,
    EpochCallback,
    EpochStats,
    TrainResult,
    fit,
)
from signflow.training.trial_link import trial_callbacks

# metrics/train_history.csv: what the run learned, identical for the same run on any machine;
# each epoch's duration goes to the timings history beside it (paths.TRAIN_TIMINGS_HISTORY).
HISTORY_COLUMNS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"]
TIMINGS_HISTORY_COLUMNS = ["epoch", "seconds"]
FINGERPRINT_HASH = "sha256"  # of the training and validation manifests and arrays, for resume


def load_labelled(dataset_dir: Path, split: str) -> tuple[pd.DataFrame, ArraySet]:
    """The split's trainable rows (held-out open-set images excluded), over the memory-mapped array.

    No copy: the set keeps the memory map and the kept row numbers (none when
    every row is kept); training reads one batch of rows at a time.
    """
    frame, images = load_split(dataset_dir, split)
    keep = (frame["label_idx"] >= 0).to_numpy()
    rows = None if keep.all() else np.flatnonzero(keep)
    return frame[keep].reset_index(drop=True), ArraySet(images, frame["label_idx"].to_numpy()[keep], rows)


def feature_spec(cfg: Config) -> FeatureSpec:
    """``model.linear``'s richer features for the frozen backbone; every other strategy takes the plain ones."""
    if not is_backbone_frozen(cfg.strategy):
        return FeatureSpec()
    return FeatureSpec(cfg.model.linear.input_size, cfg.model.linear.pooled_blocks)


def build_model(cfg: Config) -> SignModel:
    """The configured backbone with a head for the configured classes (scratch: no weights)."""
    weights = resolve_weights(cfg.strategy, cfg.model.weights)
    return create_model(cfg.model.backbone, len(cfg.class_names), weights, cfg.model.dropout, feature_spec(cfg))


def checkpoint_meta(cfg: Config, model: SignModel) -> dict[str, Any]:
    """What predict/evaluate need to rebuild and feed the model, stored in every checkpoint."""
    return {
        "config": json.loads(json.dumps(cfg.to_dict())),
        "class_names": list(cfg.class_names),
        "num_classes": len(cfg.class_names),
        "backbone": cfg.model.backbone,
        "strategy": cfg.strategy,
        "dropout": cfg.model.dropout,
        "features": asdict(model.features),
        "normalization": {"mean": list(model.normalization.mean), "std": list(model.normalization.std)},
        "image_size": cfg.data.image_size,
    }


def fingerprint(cfg: Config, dataset_dir: Path, code_files: Sequence[Path] = ()) -> str:
    """Config + training data + code identity: last.pt is resumed only when this matches.

    Code counts too: when DVC re-runs `train` because a module it runs changed,
    the user wants a new training, not the finished run resumed. ``code_files``
    is the stage's import closure (``codegraph.import_closure``), the same files
    dvc.yaml lists as its deps, so editing e.g. the report never restarts training.
    """
    digest = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode())
    for split in ("train", "val"):
        # The pixels count, not only the manifest: a renderer or decoder change keeps every file name.
        for suffix in (".csv", ".npy"):
            digest.update(file_digest(dataset_dir / f"{split}{suffix}", FINGERPRINT_HASH).encode())
    for path in sorted(set(code_files)):
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class TrainOutputs:
    """Where the train stage writes: checkpoints and run id, the summary, the per-epoch history, their timings."""

    models_dir: Path
    run_file: Path
    summary: Path
    history: Path
    timings: Path  # train_seconds, images_per_second
    timings_history: Path  # seconds per epoch


def write_history(history: Sequence[EpochStats], out: TrainOutputs) -> None:
    """The per-epoch history and its timings as two CSVs, each replaced atomically (a reader never sees half)."""
    rows = pd.DataFrame([asdict(h) for h in history], columns=[*HISTORY_COLUMNS, "seconds"])
    for path, columns in ((out.history, HISTORY_COLUMNS), (out.timings_history, TIMINGS_HISTORY_COLUMNS)):
        with atomic_path(path) as tmp:
            rows[columns].to_csv(tmp, index=False)


class HistoryWriter:
    """An epoch callback rewriting the history files after every epoch.

    So the run is visible while it trains: `dvc plots show` (or the DVC editor
    extension, which re-reads the workspace) draws the epochs done so far. An
    epoch seen again (a resumed run replays its history) replaces its row.
    """

    def __init__(self, out: TrainOutputs):
        self.out = out
        self.history: list[EpochStats] = []

    def __call__(self, stats: EpochStats) -> None:
        self.history = [h for h in self.history if h.epoch < stats.epoch] + [stats]
        write_history(self.history, self.out)


def epoch_callbacks(tracker: Tracker, out: TrainOutputs) -> list[EpochCallback]:
    """What rank 0 does after each epoch: log it to MLflow, rewrite the history files and, when the run is a
    tuning trial (``signflow.training.trial_link``), report it to the study, which may stop the run."""

    def log_epoch(stats: EpochStats) -> None:
        tracker.log_metrics({k: v for k, v in asdict(stats).items() if k != "epoch"}, step=stats.epoch)

    return [log_epoch, HistoryWriter(out), *trial_callbacks()]


def _tags(cfg: Config, train_set: ArraySet, val_set: ArraySet) -> dict[str, str]:
    """What the run's name does not say; its origin (commit, experiment, data) is signflow.provenance's."""
    return {"strategy": cfg.strategy, "backbone": cfg.model.backbone, "data.source": cfg.data.source,
            "train_images": str(len(train_set)), "val_images": str(len(val_set)),
            "torch_threads": str(torch.get_num_threads()), "world_size": str(distributed.world_size())}


def run_training(cfg: Config, dataset_dir: Path, out: TrainOutputs, code_files: Sequence[Path]) -> TrainResult:
    """The train stage: fit the configured model in one MLflow run, write its summary and history.

    Started by torchrun, this process is one rank: it joins the process group,
    and only rank 0 has a tracker and writes the summary and history.
    """
    # Seeds first (the new head's weights depend on it); the node's ranks share its cores.
    device = configure_runtime(cfg.train, ranks=distributed.local_world_size())
    with distributed.process_group(device) as device:
        _, train_set = load_labelled(dataset_dir, "train")
        _, val_set = load_labelled(dataset_dir, "val")
        model = build_model(cfg)
        checkpoints = Checkpoints(out.models_dir, checkpoint_meta(cfg, model),
                                  fingerprint(cfg, dataset_dir, code_files))
        if not distributed.is_main():
            return fit(model, train_set, val_set, strategy=cfg.strategy, cfg=cfg.train, device=device,
                       checkpoints=checkpoints)
        return _tracked_fit(cfg, model, train_set, val_set, out, device, checkpoints)


def interrupted_message(models_dir: Path) -> str:
    """What an interrupted (Ctrl-C) training says: what it kept and how to go on."""
    last = models_dir / LAST_FILE
    if not last.exists():
        return "training interrupted before its first epoch finished; `dvc repro` starts it again"
    epoch = load_checkpoint(last)["epoch"]
    return (f"training interrupted; {last} keeps epoch {epoch + 1}, the last one finished: "
            f"`dvc repro` resumes from it (same params, data and code)")


def calibrate_checkpoint(path: Path, val: ArraySet, batch_size: int, device: torch.device) -> Calibration:
    """Fit the temperature of ``path``'s model on validation and store it in the checkpoint.

    Part of ``train``, not ``evaluate``: the temperature belongs to the model
    (predict applies it too), and evaluate may not write into train's outputs.
    Refitting is idempotent, so a resumed finished run gives the same file.
    """
    logits = predict_logits(load_model(path, device), val.images, batch_size)
    calibration = fit_temperature(logits, val.labels)
    save_checkpoint(path, {**load_checkpoint(path), "temperature": calibration.temperature})
    return calibration


def calibration_summary(calibration: Calibration) -> dict[str, float]:
    """The temperature and the validation log-loss before/after, for metrics/train.json."""
    return {"temperature": round(calibration.temperature, 6), "val_nll_uncalibrated": round(calibration.nll_before, 6),
            "val_nll_calibrated": round(calibration.nll_after, 6)}


def _tracked_fit(
    cfg: Config, model: SignModel, train_set: ArraySet, val_set: ArraySet, out: TrainOutputs, device: torch.device,
    checkpoints: Checkpoints,
) -> TrainResult:
    """Rank 0 (or the only process): ``fit`` inside the MLflow run, then the summary and history files."""
    name = run_name_for(cfg.model.backbone, cfg.strategy)
    with tracked_run(out.run_file, name, _tags(cfg, train_set, val_set), reuse=False) as tracker:
        tracker.log_params(flatten(cfg.to_dict()))
        tracker.log_lineage(collect_lineage(Path.cwd(), ("train", "val")))
        result = fit(model, train_set, val_set, strategy=cfg.strategy, cfg=cfg.train, device=device,
                     checkpoints=checkpoints, callbacks=epoch_callbacks(tracker, out))
        best = out.models_dir / BEST_FILE
        calibration = calibrate_checkpoint(best, val_set, cfg.train.batch_size, device)
        summary = {**result.summary(), **calibration_summary(calibration)}
        write_json(out.summary, summary)
        write_json(out.timings, result.timings())
        write_history(result.history, out)  # already written per epoch; this makes it exactly the result's
        tracker.log_metrics({**summary, **result.timings()})
        tracker.log_artifact(out.history)
        tracker.log_artifact(out.models_dir / BEST_FILE, "model")
    return result
