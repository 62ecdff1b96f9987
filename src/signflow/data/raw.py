"""The download stage's library: materialise a source, validate, quarantine, pack.

Each data source is one registry entry turning the data config into image files
under a root plus their records (and, for a source that has one and was asked
for it, an official test set). Every image is then decoded once to check it;
bad ones are copied to ``quarantine/`` and listed with the reason, so nothing is
silently dropped and nothing downstream can pick them up by accident. The good
ones are packed into per-class shards (``signflow.data.shards``), which is what
DVC tracks.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import pandas as pd
from tqdm import tqdm

from signflow.config import DataConfig, check_choice
from signflow.data.images import ImageLimits, check_job
from signflow.data.records import (
    INDEX_FILE,
    OFFICIAL_TEST_FILE,
    QUARANTINE_COLUMNS,
    QUARANTINE_DIR,
    QUARANTINE_FILE,
    RawRecord,
    write_records,
)
from signflow.data.shards import pack_shards
from signflow.files import atomic_path
from signflow.parallel import bounded_map, process_pool, resolve_workers

log = logging.getLogger(__name__)

VALIDATE_CHUNK = 64
STAGING_DIR = "staging"  # loose images of a downloaded or rendered source, removed once packed


@dataclass(frozen=True)
class SourceImages:
    """What a source produced: image files under ``root`` and their records (paths relative to it)."""

    root: Path
    records: list[RawRecord]
    official_test: list[RawRecord] = field(default_factory=list)  # the source's own test set, if asked for


SourceFn = Callable[[DataConfig, Path, Path], SourceImages]  # (config, staging dir, download cache)


def _synthetic(cfg: DataConfig, staging: Path, cache_dir: Path) -> SourceImages:
    from signflow.data.sources.synthetic import SIGN_TYPES, render_dataset

    workers = resolve_workers(cfg.decode_workers)
    records = render_dataset(staging, list(SIGN_TYPES), cfg.synthetic, workers=workers, targets=list(cfg.classes))
    return SourceImages(staging, records)


def _gtsrb(cfg: DataConfig, staging: Path, cache_dir: Path) -> SourceImages:
    from signflow.data.sources.gtsrb import materialise_gtsrb, materialise_gtsrb_test

    g = cfg.gtsrb
    # Training first: its extraction replaces the staging directory.
    records = materialise_gtsrb(g.url, g.md5 or None, staging, cache_dir)
    if not g.official_test:
        return SourceImages(staging, records)
    official = materialise_gtsrb_test(g.test_images_url, g.test_images_md5 or None, g.test_gt_url,
                                      g.test_gt_md5 or None, staging, cache_dir)
    return SourceImages(staging, records, official)


def _folder(cfg: DataConfig, staging: Path, cache_dir: Path) -> SourceImages:
    from signflow.data.sources.folder import read_folder_tree

    # Read in place: the shards become data/raw's self-contained, DVC-versioned snapshot of the folder.
    root = Path(cfg.folder.path).expanduser()
    return SourceImages(root, read_folder_tree(root, cfg.folder.track_pattern, classes=cfg.classes))


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
        checked = bounded_map(pool, check_job, jobs, chunksize=VALIDATE_CHUNK)
        reasons = list(tqdm(checked, total=len(jobs), desc="validate", unit="img", leave=False))
    good = [r for r, why in zip(records, reasons, strict=True) if why is None]
    bad = pd.DataFrame(
        [(r.path, r.class_id, why) for r, why in zip(records, reasons, strict=True) if why is not None],
        columns=QUARANTINE_COLUMNS,
    )
    if len(bad):
        log.warning("quarantined %d of %d images (see %s)", len(bad), len(records), QUARANTINE_FILE)
    return good, bad


def _copy_to_quarantine(root: Path, raw_dir: Path, bad: pd.DataFrame) -> None:
    """Copy, not move: the root may be the user's own folder, which the stage never changes."""
    for path in bad["path"]:
        target = raw_dir / QUARANTINE_DIR / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / path, target)


def materialise(cfg: DataConfig, raw_dir: Path, cache_dir: Path) -> tuple[list[RawRecord], pd.DataFrame]:
    """Build ``raw_dir`` (shards/, quarantine/, index.csv, official_test.csv, quarantine.csv) atomically.

    Returns the usable training records (as written to index.csv) and the quarantine table.
    """
    source = resolve_source(cfg.source)
    limits = ImageLimits(cfg.min_image_side, cfg.max_image_side)
    with atomic_path(raw_dir) as tmp:
        tmp.mkdir()
        found = source(cfg, tmp / STAGING_DIR, cache_dir)
        good, bad = validate_images(found.root, [*found.records, *found.official_test], limits, cfg.decode_workers)
        _copy_to_quarantine(found.root, tmp, bad)
        packed = {r.path: r for r in pack_shards(found.root, tmp, good)}
        if (tmp / STAGING_DIR).exists():  # absent when the source reads the user's folder in place
            shutil.rmtree(tmp / STAGING_DIR)
        training = [packed[r.path] for r in found.records if r.path in packed]
        write_records(tmp / INDEX_FILE, training)
        if found.official_test:
            write_records(tmp / OFFICIAL_TEST_FILE, [packed[r.path] for r in found.official_test if r.path in packed])
        bad.to_csv(tmp / QUARANTINE_FILE, index=False)
    n_classes = len({r.class_id for r in training})
    log.info("%s: %d images, %d classes, %d official test images, %d quarantined",
             cfg.source, len(training), n_classes, len(packed) - len(training), len(bad))
    return training, bad
