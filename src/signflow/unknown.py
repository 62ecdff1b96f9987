"""The extra "unknown" class and the held-out open-set classes.

The originals retrained with an "unknown" class built from other signs. Two
things are kept apart here: ``unknown`` sources are trained on; ``heldout``
classes are never trained on and appear only in val/test, so evaluation can
measure how the model treats sign types it has truly never seen.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Sequence

import numpy as np

from signflow.records import RawRecord

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
    for class_id, quota in zip(class_ids, quotas):
        chosen.extend(_interleave_tracks(by_class[class_id], rng)[:quota])
    log.info("sampled %d images from %d classes (budget %d)", len(chosen), len(class_ids), max_images)
    return chosen
