"""Manifests and the decode-once image arrays every later stage reads.

A manifest is a CSV with one row per image (raw record fields plus ``label``,
``label_idx`` and ``role``). Beside each manifest lies a uint8 array
(N, S, S, 3) of the images decoded and resized once, memory-mapped by training,
evaluation and benchmarks, so no image file is decoded twice.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from signflow.config import SPLIT_NAMES, UNKNOWN_NAME
from signflow.images import ImageLimits, decode_job
from signflow.io import atomic_path
from signflow.parallel import process_pool, resolve_workers
from signflow.records import RECORD_FIELDS, RawRecord
from signflow.split import group_split
from signflow.unknown import resolve_unknown_classes, sample_balanced

log = logging.getLogger(__name__)

ROLE_TARGET, ROLE_UNKNOWN, ROLE_HELDOUT = "target", "unknown", "heldout"
HELDOUT_LABEL_IDX = -1  # never a training target
MANIFEST_COLUMNS = [*RECORD_FIELDS, "label", "label_idx", "role"]
DECODE_CHUNK = 256


class DataError(ValueError):
    """The data does not match what params.yaml asks for."""


def check_classes(index: Sequence[RawRecord], class_ids: Sequence[str]) -> None:
    available = {r.class_id for r in index}
    missing = [c for c in class_ids if c not in available]
    if missing:
        raise DataError(
            f"params.yaml: data.classes has ids {missing} not in the data; available: "
            f"{sorted(available, key=lambda c: (len(c), c))}"
        )


def split_records(
    records: Sequence[RawRecord], fractions: Mapping[str, float], seed: int, by_track: bool = True
) -> dict[str, list[RawRecord]]:
    """Split records stratified by class, keeping each track in one split."""
    groups = [r.group if by_track else r.path for r in records]
    names = group_split(groups, [r.class_id for r in records], fractions, seed)
    out: dict[str, list[RawRecord]] = {name: [] for name in fractions}
    for record, name in zip(records, names):
        out[name].append(record)
    return out


def to_frame(records: Sequence[RawRecord], label: str, label_idx: int, role: str) -> pd.DataFrame:
    frame = pd.DataFrame([asdict(r) for r in records], columns=RECORD_FIELDS)
    return frame.assign(label=label, label_idx=label_idx, role=role)


def target_frame(records: Sequence[RawRecord], classes: Mapping[str, str]) -> pd.DataFrame:
    ids = list(classes)
    frame = pd.DataFrame([asdict(r) for r in records], columns=RECORD_FIELDS)
    return frame.assign(
        label=frame["class_id"].map(classes),
        label_idx=frame["class_id"].map({c: i for i, c in enumerate(ids)}).astype(int),
        role=ROLE_TARGET,
    )


def build_open_set(
    index: Sequence[RawRecord],
    target_ids: Sequence[str],
    fractions: Mapping[str, float],
    seed: int,
    *,
    enabled: bool,
    unknown_classes: Sequence[str],
    heldout: Sequence[str],
    max_images: int,
    heldout_max_images: int,
) -> dict[str, pd.DataFrame]:
    """Frames per split for the "unknown" class (when enabled) and the held-out set."""
    available = sorted({r.class_id for r in index})
    missing = sorted(set(heldout) - set(available))
    if missing:
        raise DataError(f"params.yaml: unknown.heldout has ids {missing} not in the data; available: {available}")
    frames = {name: [] for name in fractions}
    if enabled:
        sources = resolve_unknown_classes(available, target_ids, unknown_classes, heldout)
        picked = sample_balanced(index, sources, max_images, seed)
        for name, recs in split_records(picked, fractions, seed).items():
            frames[name].append(to_frame(recs, UNKNOWN_NAME, len(target_ids), ROLE_UNKNOWN))
    if heldout:
        picked = sample_balanced(index, list(heldout), heldout_max_images, seed + 1)
        evaluation = {"val": fractions["val"], "test": fractions["test"]}
        for name, recs in split_records(picked, evaluation, seed).items():
            frames[name].append(to_frame(recs, UNKNOWN_NAME, HELDOUT_LABEL_IDX, ROLE_HELDOUT))
    return {name: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=MANIFEST_COLUMNS)
            for name, parts in frames.items()}


def decode_frame(
    frame: pd.DataFrame, raw_root: Path, size: int, roi_crop: bool, workers: int, limits: ImageLimits
) -> np.ndarray:
    """Decode and resize every image of ``frame`` into (N, size, size, 3) uint8, in parallel."""
    jobs = [
        (str(raw_root / row.path), (row.x1, row.y1, row.x2, row.y2) if roi_crop and row.x2 > row.x1 else None, size, limits)
        for row in frame.itertuples()
    ]
    out = np.empty((len(jobs), size, size, 3), dtype=np.uint8)
    workers = resolve_workers(workers)
    with tqdm(total=len(jobs), desc="decode", unit="img", leave=False) as progress:
        if workers == 1 or len(jobs) < DECODE_CHUNK:
            _fill(out, map(decode_job, jobs), progress)
        else:
            with process_pool(workers) as pool:
                _fill(out, pool.map(decode_job, jobs, chunksize=max(1, DECODE_CHUNK // workers)), progress)
    return out


def _fill(out: np.ndarray, images: Iterable[np.ndarray], progress: tqdm) -> None:
    for i, image in enumerate(images):
        out[i] = image
        progress.update()


def write_split(out_dir: Path, name: str, frame: pd.DataFrame, images: np.ndarray) -> None:
    with atomic_path(out_dir / f"{name}.npy") as tmp:
        np.save(tmp, images)
    with atomic_path(out_dir / f"{name}.csv") as tmp:
        frame.to_csv(tmp, index=False, columns=MANIFEST_COLUMNS)


def read_manifest(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"class_id": str, "track": str, "path": str})


def load_split(dataset_dir: Path, name: str, mmap: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
    """The manifest and its decoded images (memory-mapped: no copy in RAM)."""
    frame = read_manifest(dataset_dir / f"{name}.csv")
    images = np.load(dataset_dir / f"{name}.npy", mmap_mode="r" if mmap else None)
    if len(frame) != len(images):
        raise DataError(f"{dataset_dir}/{name}: manifest has {len(frame)} rows, array {len(images)}")
    return frame, images


def _groups(frame: pd.DataFrame) -> set[str]:
    return set(frame["class_id"].astype(str) + "/" + frame["track"].astype(str))


def summarize(frames: Mapping[str, pd.DataFrame], quarantine: pd.DataFrame) -> dict:
    """Counts per split, role and label, target tracks and leaks, for metrics/data.json."""
    targets = pd.concat([frames[n][frames[n]["role"] == ROLE_TARGET] for n in SPLIT_NAMES])
    groups = {name: _groups(frames[name]) for name in SPLIT_NAMES}
    shared = sum(len(groups[a] & groups[b]) for i, a in enumerate(SPLIT_NAMES) for b in SPLIT_NAMES[i + 1:])
    summary: dict = {
        "targets": {"images": int(len(targets)), "tracks": len(_groups(targets))},
        "tracks_shared_between_splits": shared,
        "splits": {},
        "quarantined": {"count": int(len(quarantine))},
    }
    for name in SPLIT_NAMES:
        frame = frames[name]
        summary["splits"][name] = {
            "images": int(len(frame)),
            "tracks": len(groups[name]),
            "per_label": {k: int(v) for k, v in frame.groupby("label").size().items()},
            "per_role": {k: int(v) for k, v in frame.groupby("role").size().items()},
        }
    if len(quarantine):
        summary["quarantined"]["files"] = quarantine.to_dict(orient="records")
        summary["quarantined"]["per_class"] = {str(k): int(v) for k, v in quarantine.groupby("class_id").size().items()}
    return summary


def describe(summary: Mapping) -> str:
    """A few human lines of the summary for the stage log."""
    lines = [
        f"targets: {summary['targets']['images']} images in {summary['targets']['tracks']} tracks; "
        f"tracks shared between splits: {summary['tracks_shared_between_splits']}; "
        f"quarantined: {summary['quarantined']['count']}"
    ]
    for name, split in summary["splits"].items():
        labels = ", ".join(f"{k} {v}" for k, v in split["per_label"].items())
        lines.append(f"{name}: {split['images']} images, {split['tracks']} tracks ({labels}; roles {split['per_role']})")
    return "\n".join(lines)
