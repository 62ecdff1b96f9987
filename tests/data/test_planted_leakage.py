"""Planted leakage: a folder of sign photos where some also sit under a second name, re-encoded and resized.

With no track pattern every image is its own track, so ``group_by: track`` puts
many planted pairs in two splits: near_pairs over the split's images must find
at least 95% of them. ``group_by: hash`` must then leave none across splits, and
no near pair at the threshold at all. The real folder source (download's
``materialise``: validation, shards) and the split library run on the folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from signflow.config import DataConfig, FolderConfig, SplitConfig
from signflow.data.decode import decode_frame
from signflow.data.hashes import hash_image_files, near_pairs, perceptual_hashes
from signflow.data.images import ImageLimits, image_ref
from signflow.data.raw import materialise
from signflow.data.records import INDEX_FILE, RawRecord, read_records
from signflow.data.sources.synthetic import render_sign
from signflow.data.split import resolve_grouping, split_targets

from .test_hashes import reencoded

IMAGES_PER_CLASS = 40
PLANTED_PER_CLASS = 24  # the first this many images of a class also sit under a second name
MIN_RECALL = 0.95  # the bar: planted pairs across splits that the pair search finds
MIN_LEAKED_PAIRS = 20  # below this the recall says little: the seed must leak enough pairs
DATASET_SIDE = 64  # the default data.image_size: what the decoded dataset (and an audit of it) sees
LIMITS = ImageLimits()


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[RawRecord], dict[str, str]]:
    """The raw dataset of the planted folder, and {copy path: original path} of the planted pairs."""
    base = tmp_path_factory.mktemp("planted")
    folder, rng = base / "folder", np.random.default_rng(31)
    classes = DataConfig().classes
    planted = {}
    for class_id in classes:
        (folder / class_id).mkdir(parents=True)
        for k in range(IMAGES_PER_CLASS):
            rgb = cv2.cvtColor(render_sign(class_id, rng, int(rng.integers(32, 97))), cv2.COLOR_BGR2RGB)
            original = f"{class_id}/sign_{k:03d}.png"
            assert cv2.imwrite(str(folder / original), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            if k < PLANTED_PER_CLASS:
                # Another name, sorted far from the original; 1-3 px smaller or larger; JPEG quality 85.
                copy = f"{class_id}/IMG_{int(rng.integers(1000, 10_000))}_{k}.jpg"
                shrink = int(rng.integers(1, 4)) * int(rng.choice([-1, 1]))
                assert cv2.imwrite(str(folder / copy), cv2.cvtColor(reencoded(rgb, shrink), cv2.COLOR_RGB2BGR))
                planted[copy] = original
    cfg = DataConfig(source="folder", folder=FolderConfig(path=str(folder)), decode_workers=1)
    materialise(cfg, base / "raw", base / "cache")
    index = read_records(base / "raw" / INDEX_FILE)
    assert len(index) == len(classes) * (IMAGES_PER_CLASS + PLANTED_PER_CLASS)  # nothing quarantined
    assert all(r.shard for r in index) and len({r.group for r in index}) == len(index)  # one track per image
    return base / "raw", index, planted


def _split(raw_dir: Path, index: list[RawRecord], group_by: str) -> pd.DataFrame:
    split = SplitConfig()
    grouping = resolve_grouping(group_by, raw_root=raw_dir, hash_distance=split.hash_distance, limits=LIMITS,
                                workers=1)
    frames = split_targets(index, DataConfig().classes, split.fractions, split.seed, grouping=grouping)
    return pd.concat([f.assign(split=name) for name, f in frames.items()], ignore_index=True)


def _file_hashes(raw_dir: Path, frame: pd.DataFrame) -> np.ndarray:
    refs = [image_ref(raw_dir, path, shard) for path, shard in zip(frame["path"], frame["shard"], strict=True)]
    return hash_image_files(refs, list(frame["shard"]), LIMITS, workers=1)


def _dataset_hashes(raw_dir: Path, frame: pd.DataFrame) -> np.ndarray:
    """Hashes of the images as add_unknown decodes them (64 px squares), as an audit of data/dataset sees them."""
    return perceptual_hashes(decode_frame(frame, raw_dir, DATASET_SIDE, False, 1, LIMITS), 8)


def _cross_split_pairs(frame: pd.DataFrame, hashes: np.ndarray) -> set[frozenset[str]]:
    """Near pairs (within split.hash_distance) whose images sit in two different splits, as path pairs."""
    i, j, _ = near_pairs(hashes, None, SplitConfig().hash_distance)
    paths, splits = frame["path"].to_numpy(), frame["split"].to_numpy()
    return {frozenset((paths[a], paths[b])) for a, b in zip(i, j, strict=True) if splits[a] != splits[b]}


def _leaked(frame: pd.DataFrame, planted: Mapping[str, str]) -> set[frozenset[str]]:
    split_of = dict(zip(frame["path"], frame["split"], strict=True))
    return {frozenset(pair) for pair in planted.items() if split_of[pair[0]] != split_of[pair[1]]}


@pytest.mark.parametrize("hashes_of", [_file_hashes, _dataset_hashes], ids=["files", "decoded_64px"])
def test_track_split_leaks_planted_pairs_and_near_pairs_find_them(raw, hashes_of) -> None:
    raw_dir, index, planted = raw
    frame = _split(raw_dir, index, "track")
    leaked = _leaked(frame, planted)
    assert len(leaked) >= MIN_LEAKED_PAIRS, "precondition: the seed must put enough planted pairs in two splits"
    found = _cross_split_pairs(frame, hashes_of(raw_dir, frame))
    recall = len(leaked & found) / len(leaked)
    assert recall >= MIN_RECALL, f"found {len(leaked & found)} of {len(leaked)} planted pairs across splits"


def test_hash_split_keeps_planted_pairs_and_near_pairs_together(raw) -> None:
    raw_dir, index, planted = raw
    frame = _split(raw_dir, index, "hash")
    assert _leaked(frame, planted) == set()
    assert _cross_split_pairs(frame, _file_hashes(raw_dir, frame)) == set()
    # Still a stratified split of every image: each class in each split, near the requested shares.
    assert sorted(frame["path"]) == sorted(r.path for r in index)
    shares = frame.groupby("class_id")["split"].value_counts(normalize=True).unstack()
    for name, share in SplitConfig().fractions.items():
        assert (shares[name] - share).abs().max() < 0.1, shares


def test_hash_split_is_the_same_for_the_same_data(raw) -> None:
    raw_dir, index, _ = raw
    first = _split(raw_dir, index, "hash")
    again = _split(raw_dir, list(reversed(index)), "hash")  # keys do not depend on the index's order
    assert dict(zip(first["path"], first["split"], strict=True)) == dict(zip(again["path"], again["split"],
                                                                               strict=True))
