"""Near-duplicates across splits: planted copies found, unrelated images not, counts and the leakage warning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.builders import manifest, reencoded, smooth_images
from signflow.audit.duplicates import (
    PAIR_COLUMNS,
    ROW_COLUMNS,
    cross_split_pairs,
    duplicate_metrics,
    hash_images,
    leakage_warning,
    leaked_groups,
)
from signflow.data.hashes import perceptual_hashes

CLASSES = ("a", "b")
DISTANCE = 4  # params.yaml audit.hash_distance


def _split(images: np.ndarray, prefix: str, labels: list[str] | None = None) -> pd.DataFrame:
    labels = labels or [CLASSES[k % 2] for k in range(len(images))]
    return manifest([f"{prefix}/{k}.png" for k in range(len(images))], labels, CLASSES,
                    [f"{prefix}{k}" for k in range(len(images))])


def test_hash_images_in_batches_equals_one_pass() -> None:
    images = smooth_images(7, seed=0)
    assert hash_images(images, 8, batch_size=3).tolist() == perceptual_hashes(images, 8).tolist()
    assert hash_images(images[:0], 8, batch_size=3).shape == (0,)


def test_planted_cross_split_copies_are_found_and_unrelated_images_are_not() -> None:
    originals = smooth_images(60, seed=1)
    train = originals[:40]
    planted = [3, 7, 11, 19, 23, 31, 37, 39]  # train images re-encoded into val and test
    val = np.concatenate([smooth_images(10, seed=2), np.stack([reencoded(train[k]) for k in planted[:4]])])
    test = np.concatenate([originals[40:], np.stack([reencoded(train[k]) for k in planted[4:]])])
    frames = {"train": _split(train, "tr"), "val": _split(val, "va"), "test": _split(test, "te")}
    hashes = {name: perceptual_hashes(images, 8) for name, images in (("train", train), ("val", val),
                                                                       ("test", test))}
    pairs = cross_split_pairs(frames, hashes, DISTANCE)

    assert list(pairs.columns) == PAIR_COLUMNS + ROW_COLUMNS
    found = {(r.split_b, r.row_a) for r in pairs.itertuples() if r.split_a == "train"}
    expected = {("val", k) for k in planted[:4]} | {("test", k) for k in planted[4:]}
    assert len(found & expected) >= 0.95 * len(expected)  # the bar for planted leakage
    assert found <= expected, f"unrelated images paired: {found - expected}"
    assert pairs["distance"].is_monotonic_increasing
    first = pairs.iloc[0]
    assert first["path_a"] == f"tr/{first['row_a']}.png" and first["class_a"] == CLASSES[first["row_a"] % 2]


def test_pairs_within_one_split_are_not_leakage() -> None:
    images = smooth_images(6, seed=3)
    train = np.concatenate([images, images[:2]])  # exact copies, but inside train
    frames = {"train": _split(train, "tr"), "val": _split(images[2:4], "va")}
    hashes = {"train": perceptual_hashes(train, 8), "val": perceptual_hashes(images[2:4], 8)}
    pairs = cross_split_pairs(frames, hashes, DISTANCE)
    assert sorted(pairs["row_a"]) == [2, 3] and set(pairs["split_b"]) == {"val"}


def test_leaked_groups_count_signs_not_pairs() -> None:
    burst = smooth_images(1, seed=4)[0]
    copies = np.stack([reencoded(burst, shrink) for shrink in (1, 2, 3, 4)])  # one sign, four photos
    others = smooth_images(4, seed=5)
    hashes = {"train": perceptual_hashes(np.concatenate([copies[:3], others[:2]]), 8),
              "test": perceptual_hashes(np.concatenate([copies[3:], others[2:]]), 8)}
    assert leaked_groups(hashes, DISTANCE) == 1  # 3 cross-split pairs, one leaked sign
    assert leaked_groups({"train": hashes["train"][3:], "test": hashes["test"][1:]}, DISTANCE) == 0
    assert leaked_groups({"train": np.empty(0, np.uint64)}, DISTANCE) == 0


def test_duplicate_metrics_count_per_split_pair_and_class() -> None:
    pairs = pd.DataFrame({"split_a": ["train", "train", "val"], "split_b": ["test", "test", "test"],
                          "class_a": ["a", "a", "b"], "class_b": ["a", "b", "b"], "distance": [0, 2, 4]})
    metrics = duplicate_metrics(pairs, 2, ("train", "val", "test"), CLASSES)
    assert metrics == {"duplicates.total": 3, "duplicates.groups": 2, "duplicates.train-val": 0,
                       "duplicates.train-test": 2, "duplicates.val-test": 1, "duplicates.label_conflicts": 1,
                       "duplicates.class.a": 2, "duplicates.class.b": 2}


@pytest.mark.parametrize(("pairs", "source", "pattern", "group_by", "warns"), [
    (5, "folder", "", "track", True),
    (5, "folder", "", "image", True),
    (0, "folder", "", "track", False),
    (5, "folder", r"^(\d+)_", "track", False),
    (5, "folder", "", "hash", False),
    (5, "synthetic", "", "track", False),
    (5, "gtsrb", "", "track", False),
])
def test_leakage_warning_names_the_fix_only_for_a_folder_without_tracks(
    pairs: int, source: str, pattern: str, group_by: str, warns: bool
) -> None:
    message = leakage_warning(pairs, source, pattern, group_by)
    if not warns:
        assert message is None
        return
    assert message is not None and str(pairs) in message
    assert "data.folder.track_pattern" in message and "split.group_by: hash" in message
