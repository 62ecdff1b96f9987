"""The download stage's library: materialise a source, validate, quarantine.

Each data source is one registry entry turning the data config into image files
under ``images/`` plus their records. Every image is then decoded once to check
it; bad ones move to ``quarantine/`` and are listed with the reason, so nothing
is silently dropped and nothing downstream can pick them up by accident.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Sequence

import pandas as pd
from tqdm import tqdm

from signflow.config import DataConfig, check_choice
from signflow.data.images import ImageLimits, check_job
from signflow.io import atomic_path
from signflow.parallel import process_pool, resolve_workers
from signflow.data.records import (
    IMAGES_DIR,
    INDEX_FILE,
    QUARANTINE_COLUMNS,
    QUARANTINE_DIR,
    QUARANTINE_FILE,
    RawRecord,
    write_records,
)

log = logging.getLogger(__name__)

VALIDATE_CHUNK = 64

SourceFn = Callable[[DataConfig, Path, Path], list[RawRecord]]


def _synthetic(cfg: DataConfig, images_dir: Path, cache_dir: Path) -> list[RawRecord]:
    from signflow.data.sources.synthetic import SIGN_TYPES, render_dataset

    return render_dataset(images_dir, list(SIGN_TYPES), cfg.synthetic, workers=resolve_workers(cfg.decode_workers))


def _gtsrb(cfg: DataConfig, images_dir: Path, cache_dir: Path) -> list[RawRecord]:
    from signflow.data.sources.gtsrb import materialise_gtsrb

    return materialise_gtsrb(cfg.gtsrb.url, cfg.gtsrb.md5 or None, images_dir, cache_dir)


def _folder(cfg: DataConfig, images_dir: Path, cache_dir: Path) -> list[RawRecord]:
    from signflow.data.sources.folder import read_folder_tree

    root = Path(cfg.folder.path).expanduser()
    records = read_folder_tree(root, cfg.folder.track_pattern)
    # Copy, so data/raw is a self-contained, DVC-versioned snapshot of the user's folder.
    shutil.copytree(root, images_dir)
    return records


# The one list of data.source names. Only this stage reads data.source, so it is
# checked here, as the stage starts (resolve_source), not in config.py.
DATA_SOURCES: MappingProxyType[str, SourceFn] = MappingProxyType(
    {"synthetic": _synthetic, "gtsrb": _gtsrb, "folder": _folder}
)


def resolve_source(name: str) -> SourceFn:
    """The registry entry for ``data.source``; an unknown name fails with the valid ones."""
    check_choice("data.source", name, DATA_SOURCES)
    return DATA_SOURCES[name]


def validate_images(
    root: Path, records: Sequence[RawRecord], limits: ImageLimits, workers: int = 0
) -> tuple[list[RawRecord], pd.DataFrame]:
    """Split records into usable ones and a quarantine table (path, class_id, reason)."""
    jobs = [(str(root / r.path), limits) for r in records]
    with process_pool(workers) as pool:
        reasons = list(tqdm(pool.map(check_job, jobs, chunksize=VALIDATE_CHUNK), total=len(jobs), desc="validate", unit="img", leave=False))
    good = [r for r, why in zip(records, reasons) if why is None]
    bad = pd.DataFrame(
        [(r.path, r.class_id, why) for r, why in zip(records, reasons) if why is not None],
        columns=QUARANTINE_COLUMNS,
    )
    if len(bad):
        log.warning("quarantined %d of %d images (see %s)", len(bad), len(records), QUARANTINE_FILE)
    return good, bad


def _move_to_quarantine(raw_dir: Path, bad: pd.DataFrame) -> None:
    for path in bad["path"]:
        target = raw_dir / QUARANTINE_DIR / path
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(raw_dir / IMAGES_DIR / path, target)


def materialise(cfg: DataConfig, raw_dir: Path, cache_dir: Path) -> tuple[list[RawRecord], pd.DataFrame]:
    """Build ``raw_dir`` (images/, quarantine/, index.csv, quarantine.csv) atomically."""
    source = resolve_source(cfg.source)
    limits = ImageLimits(cfg.min_image_side, cfg.max_image_side)
    with atomic_path(raw_dir) as tmp:
        tmp.mkdir()
        records = source(cfg, tmp / IMAGES_DIR, cache_dir)
        good, bad = validate_images(tmp / IMAGES_DIR, records, limits, cfg.decode_workers)
        _move_to_quarantine(tmp, bad)
        write_records(tmp / INDEX_FILE, good)
        bad.to_csv(tmp / QUARANTINE_FILE, index=False)
    log.info("%s: %d images, %d classes, %d quarantined", cfg.source, len(good), len({r.class_id for r in good}), len(bad))
    return good, bad
