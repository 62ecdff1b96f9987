"""Near-duplicate images across splits: the leakage a track id cannot see.

A split grouped by track keeps the frames of one sign together only where the
data has track ids; a folder of burst photos has none, so one sign's frames
land in train and test, and test accuracy measures memory. The decoded images
of every split are hashed (``signflow.data.hashes``: imagehash's pHash, XOR and
popcount search), and every pair within ``max_distance`` bits that straddles
two splits is listed, closest first. The hashes are of the decoded arrays the
model sees (after any ROI crop and the resize), so a pair is what training and
testing actually share.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
import pandas as pd

from signflow.data.arrays import release_resident
from signflow.data.hashes import hash_groups, near_pairs, perceptual_hashes

log = logging.getLogger(__name__)

PAIR_COLUMNS = ["split_a", "path_a", "class_a", "split_b", "path_b", "class_b", "distance"]
ROW_COLUMNS = ["row_a", "row_b"]  # positions in each split's arrays (for the gallery), not written to the CSV
PREFIX = "duplicates"


def hash_images(images: np.ndarray, hash_size: int, batch_size: int) -> np.ndarray:
    """One pHash (uint64) per decoded image (N, S, S, 3), a batch of a memory map resident at a time."""
    parts = []
    for start in range(0, len(images), batch_size):
        parts.append(perceptual_hashes(np.asarray(images[start:start + batch_size]), hash_size))
        release_resident(images)
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)


def split_pairs(splits: Sequence[str]) -> list[tuple[str, str]]:
    """Every pair of splits, in the order given: train-val, train-test, val-test."""
    return list(combinations(splits, 2))


def cross_split_pairs(frames: Mapping[str, pd.DataFrame], hashes: Mapping[str, np.ndarray],
                      max_distance: int) -> pd.DataFrame:
    """Image pairs of two different splits within ``max_distance`` bits: :data:`PAIR_COLUMNS` and
    :data:`ROW_COLUMNS`, closest first (ties by split pair, then paths, so the order is stable).

    ``frames`` are the splits' manifests (``path``, ``label``), in split order;
    ``hashes`` their images' pHashes, row for row.
    """
    found = []
    for a, b in split_pairs(list(frames)):
        i, j, distance = near_pairs(hashes[a], hashes[b], max_distance)
        fa, fb = frames[a].iloc[i], frames[b].iloc[j]
        found.append(pd.DataFrame({
            "split_a": a, "path_a": fa["path"].to_numpy(), "class_a": fa["label"].to_numpy(),
            "split_b": b, "path_b": fb["path"].to_numpy(), "class_b": fb["label"].to_numpy(),
            "distance": distance, "row_a": i, "row_b": j,
        }))
    pairs = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=PAIR_COLUMNS + ROW_COLUMNS)
    order = {name: k for k, name in enumerate(frames)}
    pairs = pairs.assign(_a=pairs["split_a"].map(order), _b=pairs["split_b"].map(order))
    pairs = pairs.sort_values(["distance", "_a", "_b", "path_a", "path_b"], kind="stable")
    return pairs.drop(columns=["_a", "_b"]).reset_index(drop=True)


def leaked_groups(hashes: Mapping[str, np.ndarray], max_distance: int) -> int:
    """Clusters of near-identical images (transitively within ``max_distance``) that span two or more splits.

    A burst of ten photos split 8/2 is 16 pairs but one leaked sign: this
    counts the signs. It is the grouping ``split.group_by: hash`` uses, so at
    that stage's distance or below the count is zero after such a split.
    """
    names = list(hashes)
    split_of = np.concatenate([np.full(len(hashes[n]), k) for k, n in enumerate(names)]) if names else np.empty(0)
    if not len(split_of):
        return 0
    cluster = hash_groups(np.concatenate([hashes[n] for n in names]), max_distance)
    spans = pd.DataFrame({"cluster": cluster, "split": split_of}).groupby("cluster")["split"].nunique()
    return int((spans > 1).sum())


def duplicate_metrics(pairs: pd.DataFrame, groups: int, splits: Sequence[str],
                      class_names: Sequence[str]) -> dict[str, int]:
    """Flat counts: ``duplicates.total``, per split pair (``duplicates.train-test``), ``duplicates.groups``,
    ``duplicates.label_conflicts`` (pairs whose two sides carry different labels) and per class
    (``duplicates.class.<name>``: pairs with a side of that class, a conflicting pair counting for both)."""
    metrics = {f"{PREFIX}.total": len(pairs), f"{PREFIX}.groups": groups}
    for a, b in split_pairs(splits):
        metrics[f"{PREFIX}.{a}-{b}"] = int(((pairs["split_a"] == a) & (pairs["split_b"] == b)).sum())
    metrics[f"{PREFIX}.label_conflicts"] = int((pairs["class_a"] != pairs["class_b"]).sum())
    for name in class_names:
        metrics[f"{PREFIX}.class.{name}"] = int(((pairs["class_a"] == name) | (pairs["class_b"] == name)).sum())
    return metrics


def leakage_warning(pairs: int, source: str, track_pattern: str, group_by: str) -> str | None:
    """The fix to name when a folder dataset without track ids has near-duplicates across splits, else None.

    Sources with tracks (GTSRB, synthetic) or a folder already split by hash clusters
    get no warning: their few pairs are look-alike signs, listed in the report.
    """
    if not pairs or source != "folder" or track_pattern or group_by == "hash":
        return None
    return (f"{pairs} near-duplicate image pair(s) sit in two splits of a folder dataset without track ids: "
            "test accuracy may count images the model trained on. Set data.folder.track_pattern (a regex whose "
            "first group is the track id in a file name) or split.group_by: hash; the audit report lists the pairs")
