"""The split stage's library: stratified, track-grouped train/val/test manifests of the targets.

GTSRB images come in tracks of up to 30 near-identical frames of one physical
sign; an image-level split leaks them across train and test (why tutorials
report 100%). Here whole tracks go to one split, greedily, largest tracks first,
each to the split furthest below its target, so every class lands within one
track of the requested proportions.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict

import numpy as np
import pandas as pd

from signflow.data.manifest import ROLE_TARGET, DataError
from signflow.data.records import RECORD_FIELDS, RawRecord


def _stratum_rng(seed: int, stratum: str) -> np.random.Generator:
    # crc32, not hash(): Python salts str hashes per process.
    return np.random.default_rng([seed, zlib.crc32(stratum.encode())])


def _assign_groups(
    sizes: Mapping[str, int], fractions: Mapping[str, float], rng: np.random.Generator
) -> dict[str, str]:
    names = list(sizes)
    order = rng.permutation(len(names))
    # Stable sort by size, largest first; ties keep the random order.
    ordered = sorted((names[i] for i in order), key=lambda g: -sizes[g])
    total = sum(sizes.values())
    targets = {split: frac * total for split, frac in fractions.items()}
    counts = dict.fromkeys(fractions, 0)
    assignment: dict[str, str] = {}
    for group in ordered:
        split = max(fractions, key=lambda s: targets[s] - counts[s])
        assignment[group] = split
        counts[split] += sizes[group]
    return assignment


def group_split(
    groups: Sequence[str],
    strata: Sequence[str],
    fractions: Mapping[str, float],
    seed: int,
) -> list[str]:
    """Return the split name of each item; items of one group share a split.

    ``groups`` (track keys) and ``strata`` (class ids) are per item. A group must
    not span strata. Deterministic per ``seed`` and independent of item order.
    """
    if len(groups) != len(strata):
        raise ValueError(f"groups ({len(groups)}) and strata ({len(strata)}) differ in length")
    sizes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    stratum_of: dict[str, str] = {}
    for group, stratum in zip(groups, strata, strict=True):
        if stratum_of.setdefault(group, stratum) != stratum:
            raise ValueError(f"group {group!r} spans strata {stratum_of[group]!r} and {stratum!r}")
        sizes[stratum][group] += 1
    active = {name: frac for name, frac in fractions.items() if frac > 0}
    # Normalise: callers may pass a subset (the held-out set uses only val/test).
    total = sum(active.values())
    active = {name: frac / total for name, frac in active.items()}
    assignment: dict[str, str] = {}
    for stratum in sorted(sizes):
        assignment.update(_assign_groups(dict(sorted(sizes[stratum].items())), active, _stratum_rng(seed, stratum)))
    return [assignment[group] for group in groups]


def check_classes(index: Sequence[RawRecord], class_ids: Sequence[str]) -> None:
    """Fail, listing what the data has, when a configured target class is absent."""
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
    for record, name in zip(records, names, strict=True):
        out[name].append(record)
    return out


def target_frame(records: Sequence[RawRecord], classes: Mapping[str, str]) -> pd.DataFrame:
    """Manifest rows of target images: label and label index follow ``data.classes`` order."""
    ids = list(classes)
    frame = pd.DataFrame([asdict(r) for r in records], columns=RECORD_FIELDS)
    return frame.assign(
        label=frame["class_id"].map(classes),
        label_idx=frame["class_id"].map({c: i for i, c in enumerate(ids)}).astype(int),
        role=ROLE_TARGET,
    )


def split_targets(
    index: Sequence[RawRecord], classes: Mapping[str, str], fractions: Mapping[str, float], seed: int,
    by_track: bool = True,
) -> dict[str, pd.DataFrame]:
    """The split stage in one call: check the classes exist, split their images, one manifest per split."""
    check_classes(index, list(classes))
    targets = [r for r in index if r.class_id in classes]
    parts = split_records(targets, fractions, seed, by_track)
    return {name: target_frame(records, classes) for name, records in parts.items()}
