"""The add_unknown stage's library: the extra "unknown" class, the held-out set, the decoded splits.

The originals retrained with an "unknown" class built from other signs. Two
things are kept apart here: ``unknown`` sources are trained on; ``heldout``
classes are never trained on and appear only in val/test, so evaluation can
measure how the model treats sign types it has truly never seen. Then every
split (targets from the split stage plus these) is decoded once into arrays,
and so is a source's official test set when there is one (``official_test``),
labelled by the same rules.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from signflow.catalog import UNKNOWN_NAME
from signflow.config import OFFICIAL_TEST_SPLIT, SPLIT_NAMES, DataConfig, SplitConfig, UnknownConfig
from signflow.data.arrays import write_split_streamed
from signflow.data.decode import decode_into
from signflow.data.images import ImageLimits
from signflow.data.manifest import HELDOUT_LABEL_IDX, MANIFEST_COLUMNS, ROLE_HELDOUT, ROLE_UNKNOWN, DataError, to_frame
from signflow.data.records import RawRecord
from signflow.data.split import Grouping, apply_exclude, resolve_grouping, split_records, target_frame
from signflow.files import atomic_path

log = logging.getLogger(__name__)


def resolve_unknown_classes(
    available: Sequence[str], targets: Sequence[str], requested: Sequence[str], heldout: Sequence[str]
) -> list[str]:
    """The classes feeding "unknown": ``requested``, or every non-target, non-held-out class."""
    missing = sorted(set(requested) - set(available))
    if missing:
        raise ValueError(f"unknown.classes: {missing} not in the data; available: {sorted(available, key=_id_key)}")
    if requested:
        return list(requested)
    excluded = set(targets) | set(heldout)
    return sorted((c for c in set(available) if c not in excluded), key=_id_key)


def _id_key(class_id: str) -> tuple[int, str]:
    return (int(class_id), "") if class_id.isdigit() else (1 << 30, class_id)


def water_fill(available: Sequence[int], budget: int) -> list[int]:
    """Split ``budget`` as evenly as possible, capped by what each class has."""
    quotas = [0] * len(available)
    remaining = budget
    open_classes = [i for i, n in enumerate(available) if n > 0]
    while remaining > 0 and open_classes:
        share, extra = divmod(remaining, len(open_classes))
        for rank, i in enumerate(list(open_classes)):
            take = min(share + (1 if rank < extra else 0), available[i] - quotas[i])
            quotas[i] += take
            remaining -= take
        open_classes = [i for i in open_classes if quotas[i] < available[i]]
    return quotas


def _interleave_tracks(records: list[RawRecord], rng: np.random.Generator) -> list[RawRecord]:
    """Order a class's images so that any prefix spreads over as many tracks as possible."""
    tracks: dict[str, list[RawRecord]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r.path):
        tracks[record.group].append(record)
    names = sorted(tracks)
    names = [names[i] for i in rng.permutation(len(names))]
    shuffled = [[tracks[n][i] for i in rng.permutation(len(tracks[n]))] for n in names]
    longest = max((len(t) for t in shuffled), default=0)
    return [t[k] for k in range(longest) for t in shuffled if k < len(t)]


def sample_balanced(
    records: Sequence[RawRecord], class_ids: Sequence[str], max_images: int, seed: int
) -> list[RawRecord]:
    """Pick up to ``max_images`` of ``class_ids``, balanced across classes, spread over tracks."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[RawRecord]] = defaultdict(list)
    for record in records:
        by_class[record.class_id].append(record)
    quotas = water_fill([len(by_class[c]) for c in class_ids], max_images)
    chosen: list[RawRecord] = []
    for class_id, quota in zip(class_ids, quotas, strict=True):
        chosen.extend(_interleave_tracks(by_class[class_id], rng)[:quota])
    log.info("sampled %d images from %d classes (budget %d)", len(chosen), len(class_ids), max_images)
    return chosen


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
    available: Sequence[str] | None = None,
    grouping: Grouping | None = None,
) -> dict[str, pd.DataFrame]:
    """Frames per split for the "unknown" class (when enabled) and the held-out set.

    ``index`` needs only the non-target classes' records (targets never feed
    either), with ``available`` then every class id of the data; by default it
    is the index's classes. ``grouping`` keeps groups of the sampled images
    in one split (default: tracks).
    """
    available = sorted(available if available is not None else {r.class_id for r in index})
    missing = sorted(set(heldout) - set(available))
    if missing:
        raise DataError(f"params.yaml: unknown.heldout has ids {missing} not in the data; available: {available}")
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in fractions}
    if enabled:
        sources = resolve_unknown_classes(available, target_ids, unknown_classes, heldout)
        picked = sample_balanced(index, sources, max_images, seed)
        for name, recs in split_records(picked, fractions, seed, grouping=grouping).items():
            frames[name].append(to_frame(recs, UNKNOWN_NAME, len(target_ids), ROLE_UNKNOWN))
    if heldout:
        picked = sample_balanced(index, list(heldout), heldout_max_images, seed + 1)
        evaluation = {"val": fractions["val"], "test": fractions["test"]}
        for name, recs in split_records(picked, evaluation, seed, grouping=grouping).items():
            frames[name].append(to_frame(recs, UNKNOWN_NAME, HELDOUT_LABEL_IDX, ROLE_HELDOUT))
    return {name: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=MANIFEST_COLUMNS)
            for name, parts in frames.items()}


def official_test_frame(
    records: Sequence[RawRecord], available: Sequence[str], data: DataConfig, unknown: UnknownConfig
) -> pd.DataFrame:
    """The official test set labelled like the splits; images of classes that play no role are left out.

    Targets keep their label; with ``unknown.enabled`` the classes feeding
    "unknown" are labelled unknown; held-out classes are held out. ``available``
    is the training data's classes, which decide the "unknown" sources.
    """
    heldout = set(unknown.heldout)
    sources = set(resolve_unknown_classes(available, data.class_ids, unknown.classes, unknown.heldout)
                  if unknown.enabled else ())
    frame = pd.concat([
        target_frame([r for r in records if r.class_id in data.classes], data.classes),
        to_frame([r for r in records if r.class_id in sources], UNKNOWN_NAME, len(data.classes), ROLE_UNKNOWN),
        to_frame([r for r in records if r.class_id in heldout], UNKNOWN_NAME, HELDOUT_LABEL_IDX, ROLE_HELDOUT),
    ], ignore_index=True)
    log.info("official test set: %d of %d images have a role here", len(frame), len(records))
    return frame


def _open_set_grouping(split: SplitConfig, raw_dir: Path, limits: ImageLimits, workers: int) -> Grouping | None:
    """Hash clusters for ``group_by: hash`` (a folder's other signs leak like its targets), else tracks.

    ``group_by: image`` is a leaky comparison of the targets only: the open set keeps its tracks then, as always.
    """
    if split.group_by != "hash":
        return None
    return resolve_grouping(split.group_by, raw_root=raw_dir, hash_distance=split.hash_distance, limits=limits,
                            workers=workers)


def _with_open_set(targets: pd.DataFrame, extra: pd.DataFrame) -> pd.DataFrame:
    """A split's rows: its targets, then its open-set rows (no copy when there are none)."""
    return targets.reset_index(drop=True) if extra.empty else pd.concat([targets, extra], ignore_index=True)


def build_dataset(
    index: Sequence[RawRecord],
    targets: Mapping[str, pd.DataFrame],
    raw_dir: Path,
    out_dir: Path,
    data: DataConfig,
    split: SplitConfig,
    unknown: UnknownConfig,
    official_test: Sequence[RawRecord] = (),
    available: Sequence[str] | None = None,
) -> dict[str, pd.DataFrame]:
    """The add_unknown stage in one call: per split, targets + open-set rows, decoded into ``out_dir``.

    ``targets`` are the split stage's manifests; ``raw_dir`` is the raw dataset
    their shards (or loose paths) are relative to. A non-empty ``official_test``
    adds that split. ``index`` and ``available`` are as in :func:`build_open_set`;
    images ``split.exclude`` names are left out of ``index`` as the split stage
    left them out of the targets. ``out_dir`` is replaced atomically. Returns the
    manifests written.

    Memory: the index and each split stage manifest are dropped as soon as they
    are used, so a caller that passes them without keeping a reference (as the
    stage does) holds one copy of the manifests while decoding.
    """
    available = sorted(available if available is not None else {r.class_id for r in index})
    index = apply_exclude(index, split.exclude_reasons)
    limits = ImageLimits(data.min_image_side, data.max_image_side)
    extra = build_open_set(
        index, data.class_ids, split.fractions, split.seed, enabled=unknown.enabled,
        unknown_classes=unknown.classes, heldout=unknown.heldout, max_images=unknown.max_images,
        heldout_max_images=unknown.heldout_max_images, available=available,
        grouping=_open_set_grouping(split, raw_dir, limits, data.decode_workers),
    )
    del index  # see "Memory" above
    targets = dict(targets)  # popped split by split below: each manifest is released once its frame exists
    frames = {name: _with_open_set(targets.pop(name), extra[name]) for name in SPLIT_NAMES}
    if official_test:
        frames[OFFICIAL_TEST_SPLIT] = official_test_frame(official_test, available, data, unknown)
    with atomic_path(out_dir) as tmp:
        for name, frame in frames.items():
            # Decoded straight into the memory-mapped .npy: memory stays flat as the split grows.
            fill = partial(decode_into, frame=frame, raw_root=raw_dir, roi_crop=data.roi_crop,
                           workers=data.decode_workers, limits=limits)
            write_split_streamed(tmp, name, frame, data.image_size, fill)
    return frames
