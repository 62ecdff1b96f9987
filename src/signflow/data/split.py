"""The split stage's library: stratified, track-grouped train/val/test manifests of the targets.

GTSRB images come in tracks of up to 30 near-identical frames of one physical
sign; an image-level split leaks them across train and test (why tutorials
report 100%). Here whole tracks go to one split, greedily, largest tracks first,
each to the split furthest below its target, so every class lands within one
track of the requested proportions.

What a "track" is comes from ``split.group_by`` (:func:`resolve_grouping`): the
data's track ids, each image alone, or clusters of near-identical pixels
(perceptual hashes) for data without track ids. ``split.exclude`` leaves named
images out of every split, each with its reason (:func:`apply_exclude`, the one
rule the split and add_unknown stages share).
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from signflow.config import check_choice
from signflow.data.hashes import hash_groups, hash_image_files
from signflow.data.images import ImageLimits, image_ref
from signflow.data.manifest import ROLE_TARGET, DataError
from signflow.data.records import RECORD_FIELDS, RawRecord

log = logging.getLogger(__name__)

EXCLUDED_FILE = "excluded.csv"  # beside the split stage's manifests: the images split.exclude left out, and why
EXCLUDED_COLUMNS = ["path", "class_id", "reason"]
MAX_PATHS_SHOWN = 10  # unknown split.exclude paths named in the error; the rest are counted

# A grouping gives each record its group key: records sharing a key share a split.
Grouping = Callable[[Sequence[RawRecord]], list[str]]


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


def track_keys(records: Sequence[RawRecord]) -> list[str]:
    """``group_by: track``: the data's track ids (class-scoped: GTSRB reuses track numbers per class)."""
    return [r.group for r in records]


def image_keys(records: Sequence[RawRecord]) -> list[str]:
    """``group_by: image``: every image alone (leaks a track's frames across splits; for comparison only)."""
    return [r.path for r in records]


def hash_keys(
    records: Sequence[RawRecord], *, raw_root: Path, max_distance: int, limits: ImageLimits, workers: int
) -> list[str]:
    """``group_by: hash``: images within ``max_distance`` pHash bits, transitively, share a key; so do a track's.

    Each image file is decoded whole from ``raw_root`` (its shard or loose file)
    and hashed. Tracks stay whole as with ``track``: hash only ever merges more
    (near-identical images of different tracks). A key is class-scoped
    (``class_id/`` + the group's first path in sorted order): a cluster spanning
    two classes (the same picture under two labels, a label issue the audit
    reports) becomes one group per class, since a group may not span the
    stratified split's strata. Keys do not depend on the records' order.
    """
    hashes = hash_image_files([image_ref(raw_root, r.path, r.shard) for r in records],
                              [r.shard for r in records], limits, workers)
    tracks, _ = pd.factorize(pd.Series(track_keys(records), dtype=object))
    groups = _join_partitions(hash_groups(hashes, max_distance), tracks).tolist()
    first_path: dict[int, str] = {}
    for record, group in zip(records, groups, strict=True):
        first_path[group] = min(first_path.get(group, record.path), record.path)
    keys = [f"{r.class_id}/{first_path[g]}" for r, g in zip(records, groups, strict=True)]
    sizes = Counter(keys)
    log.info("group_by hash (<= %d bits): %d images in %d groups (%d tracks), %d groups of several (largest %d)",
             max_distance, len(keys), len(sizes), tracks.max(initial=-1) + 1, sum(n > 1 for n in sizes.values()),
             max(sizes.values(), default=0))
    return keys


def _join_partitions(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """A component id per item: items sharing a label of ``first`` or of ``second``, transitively, share one.

    The connected components of the bipartite graph linking each item's two labels (scipy, as hash_groups).
    """
    if not len(first):
        return np.empty(0, dtype=np.int64)
    offset = int(first.max()) + 1
    size = offset + int(second.max()) + 1
    graph = coo_array((np.ones(len(first), dtype=np.int8), (first, second + offset)), shape=(size, size))
    _, component = connected_components(graph, directed=False)
    return component[first]


def resolve_grouping(
    group_by: str, *, raw_root: Path, hash_distance: int, limits: ImageLimits, workers: int
) -> Grouping:
    """The grouping named by ``split.group_by``; the other arguments are what ``hash`` needs to read images."""
    groupings: dict[str, Grouping] = {
        "track": track_keys,
        "image": image_keys,
        "hash": partial(hash_keys, raw_root=raw_root, max_distance=hash_distance, limits=limits, workers=workers),
    }
    check_choice("split.group_by", group_by, groupings)
    return groupings[group_by]


def check_exclude(index: Sequence[RawRecord], exclude: Mapping[str, str]) -> None:
    """Fail, naming them, when ``split.exclude`` paths are not images of ``index``: a typo must not exclude nothing."""
    known = {r.path for r in index}
    unknown = [path for path in exclude if path not in known]
    if not unknown:
        return
    shown = unknown[:MAX_PATHS_SHOWN]
    more = f" and {len(unknown) - len(shown)} more" if len(unknown) > len(shown) else ""
    example = f" (e.g. {index[0].path!r})" if index else ""
    raise DataError(
        f"params.yaml: split.exclude names images not in data/raw/index.csv ({len(unknown)}): {shown}{more}; "
        f"use that file's path column{example}"
    )


def apply_exclude(records: Sequence[RawRecord], exclude: Mapping[str, str]) -> list[RawRecord]:
    """``records`` without the images ``exclude`` ({path: reason}, ``split.exclude``) names.

    The one rule for every stage that picks images from the raw index (split, add_unknown).
    """
    return [r for r in records if r.path not in exclude] if exclude else list(records)


def excluded_frame(index: Sequence[RawRecord], exclude: Mapping[str, str]) -> pd.DataFrame:
    """The excluded images (path, class_id, reason) in ``exclude`` order; DataError for a path not in ``index``."""
    check_exclude(index, exclude)
    class_of = {r.path: r.class_id for r in index if r.path in exclude}
    rows = [(path, class_of[path], reason) for path, reason in exclude.items()]
    return pd.DataFrame(rows, columns=EXCLUDED_COLUMNS)


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
    records: Sequence[RawRecord], fractions: Mapping[str, float], seed: int, by_track: bool = True,
    *, grouping: Grouping | None = None,
) -> dict[str, list[RawRecord]]:
    """Split records stratified by class, keeping each group in one split.

    Groups are tracks (``by_track``) or single images, unless ``grouping`` gives the keys.
    """
    keys = grouping or (track_keys if by_track else image_keys)
    names = group_split(keys(records), [r.class_id for r in records], fractions, seed)
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
    by_track: bool = True, *, grouping: Grouping | None = None, exclude: Mapping[str, str] | None = None,
) -> dict[str, pd.DataFrame]:
    """The split stage in one call: check the classes exist, split their images, one manifest per split.

    ``grouping`` and ``by_track`` as in :func:`split_records`; ``exclude``
    ({path: reason}) names images left out (every path must be in ``index``).
    """
    check_classes(index, list(classes))
    check_exclude(index, exclude or {})
    targets = apply_exclude([r for r in index if r.class_id in classes], exclude or {})
    if exclude:
        log.info("split.exclude: %d images left out of the data (%d of them targets)", len(exclude),
                 sum(r.class_id in classes for r in index if r.path in exclude))
    parts = split_records(targets, fractions, seed, by_track, grouping=grouping)
    return {name: target_frame(records, classes) for name, records in parts.items()}
