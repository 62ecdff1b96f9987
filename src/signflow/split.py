"""Stratified, track-grouped splitting.

GTSRB images come in tracks of up to 30 near-identical frames of one physical
sign; an image-level split leaks them across train and test (why tutorials
report 100%). Here whole tracks go to one split, greedily, largest tracks first,
each to the split furthest below its target, so every class lands within one
track of the requested proportions.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from typing import Mapping, Sequence

import numpy as np


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
    for group, stratum in zip(groups, strata):
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
