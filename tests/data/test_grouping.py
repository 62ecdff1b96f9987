"""split.group_by: each name resolves to its grouping; track and image split as before; hash groups by pixels."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from signflow.config import GROUP_BY, ConfigError, DataConfig, SplitConfig, UnknownConfig
from signflow.data.arrays import load_split
from signflow.data.images import ImageLimits
from signflow.data.records import RawRecord
from signflow.data.sources.synthetic import render_sign
from signflow.data.split import (
    group_split,
    hash_keys,
    image_keys,
    resolve_grouping,
    split_records,
    split_targets,
    track_keys,
)
from signflow.data.unknown import build_dataset, build_open_set

from .test_hashes import reencoded

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}
CLASSES = {"12": "priority_road", "13": "give_way"}


def _grouping(name: str, raw_root: Path = Path("/nonexistent")):
    return resolve_grouping(name, raw_root=raw_root, hash_distance=6, limits=ImageLimits(), workers=1)


@pytest.mark.parametrize("name", GROUP_BY)
def test_every_configured_name_resolves(name: str, make_records) -> None:
    grouping = _grouping(name)  # resolving reads nothing, even for hash
    if name != "hash":  # hash reads pixels: tested on real files below
        records = make_records({"12": [2, 1]})
        assert len(grouping(records)) == len(records)


def test_unknown_name_fails_with_the_choices() -> None:
    with pytest.raises(ConfigError, match="split.group_by='frame'.*track | image | hash"):
        _grouping("frame")


@pytest.mark.parametrize(("name", "by_track"), [("track", True), ("image", False)])
def test_track_and_image_split_exactly_as_before(name: str, by_track: bool, make_records) -> None:
    """The manifests of group_by track/image are the ones the boolean ``by_track`` gave, frame for frame."""
    index = make_records({"12": [5, 3, 4, 2, 6, 1], "13": [2] * 7, "14": [3]})
    before = split_targets(index, CLASSES, FRACTIONS, 42, by_track)
    after = split_targets(index, CLASSES, FRACTIONS, 42, grouping=_grouping(name))
    for split in FRACTIONS:
        pd.testing.assert_frame_equal(after[split], before[split])
    assert track_keys(index) == [r.group for r in index] and image_keys(index) == [r.path for r in index]


def _write(root: Path, path: str, rgb: np.ndarray) -> RawRecord:
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(root / path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    class_id = path.split("/")[0]
    return RawRecord(path=path, class_id=class_id, track=Path(path).stem)  # loose file: no shard


def _sign(class_id: str, rng: np.random.Generator) -> np.ndarray:
    return cv2.cvtColor(render_sign(class_id, rng, int(rng.integers(40, 72))), cv2.COLOR_BGR2RGB)


@pytest.fixture
def bursts(tmp_path: Path) -> tuple[Path, list[RawRecord]]:
    """Loose images: per class 12 signs, each also as 2 re-encoded copies (3 near-identical photos); plus one
    picture filed under both classes (a label conflict)."""
    rng = np.random.default_rng(7)
    records = []
    for class_id in CLASSES:
        for k in range(12):
            rgb = _sign(class_id, rng)
            records.append(_write(tmp_path, f"{class_id}/a{k:02d}.png", rgb))
            for copy in range(2):
                records.append(_write(tmp_path, f"{class_id}/z{k:02d}_{copy}.jpg", reencoded(rgb, copy + 1)))
    both = _sign("12", rng)
    records += [_write(tmp_path, "12/both.png", both), _write(tmp_path, "13/both_again.png", reencoded(both, 2))]
    return tmp_path, records


def test_hash_keys_group_bursts_within_their_class(bursts) -> None:
    root, records = bursts
    keys = dict(zip((r.path for r in records), _grouping("hash", root)(records), strict=True))
    for class_id in CLASSES:
        for k in range(12):
            burst = {keys[f"{class_id}/a{k:02d}.png"], *(keys[f"{class_id}/z{k:02d}_{c}.jpg"] for c in range(2))}
            assert burst == {f"{class_id}/{class_id}/a{k:02d}.png"}  # class, then the cluster's first path
    assert len(set(keys.values())) == 2 * 12 + 2
    # The picture under two labels: one cluster, two class-scoped groups (a group may not span strata).
    assert keys["12/both.png"] == "12/12/both.png" and keys["13/both_again.png"] == "13/12/both.png"


def test_hash_grouping_splits_a_cluster_spanning_two_classes_without_error(bursts) -> None:
    root, records = bursts
    parts = split_records(records, FRACTIONS, seed=0, grouping=_grouping("hash", root))
    split_of = {r.path: name for name, recs in parts.items() for r in recs}
    for class_id in CLASSES:
        for k in range(12):
            assert split_of[f"{class_id}/a{k:02d}.png"] == split_of[f"{class_id}/z{k:02d}_0.jpg"] \
                == split_of[f"{class_id}/z{k:02d}_1.jpg"]
    # Without the grouping the bursts fall apart: the test can tell the difference.
    by_image = split_records(records, FRACTIONS, seed=0, by_track=False)
    split_of = {r.path: name for name, recs in by_image.items() for r in recs}
    assert any(split_of[f"12/a{k:02d}.png"] != split_of[f"12/z{k:02d}_0.jpg"] for k in range(12))


def test_hash_keys_follow_the_distance(bursts) -> None:
    root, records = bursts
    exact = hash_keys(records, raw_root=root, max_distance=0, limits=ImageLimits(), workers=1)
    loose = hash_keys(records, raw_root=root, max_distance=6, limits=ImageLimits(), workers=1)
    assert len(set(exact)) > len(set(loose))  # at 0 bits only byte-identical pixels merge
    assert group_split(loose, [r.class_id for r in records], FRACTIONS, 0)  # still a valid grouping


def test_open_set_follows_the_grouping(make_records) -> None:
    index = make_records({"20": [1] * 30, "21": [1] * 30, "15": [1] * 30})
    one_group = lambda records: [r.class_id for r in records]  # noqa: E731 - a whole class per group
    frames = build_open_set(index, ["12"], FRACTIONS, 0, enabled=True, unknown_classes=(), heldout=("15",),
                            max_images=40, heldout_max_images=10, available=["12", "15", "20", "21"],
                            grouping=one_group)
    for role in ("unknown", "heldout"):
        where = Counter((row.class_id, name) for name, f in frames.items() for row in f[f.role == role].itertuples())
        per_class = Counter(class_id for class_id, _ in where)
        assert all(n == 1 for n in per_class.values()), where  # each class in one split only


def test_add_unknown_hashes_the_open_set_under_group_by_hash(bursts, tmp_path: Path) -> None:
    """With group_by hash, a class feeding "unknown" keeps its bursts in one split too (as a folder's would)."""
    root, records = bursts
    targets = {name: pd.DataFrame(columns=["path"]) for name in FRACTIONS}  # no targets: only the open set here
    data = DataConfig(classes={"99": "other"}, image_size=16, decode_workers=1)
    unknown = UnknownConfig(heldout=(), max_images=1000)
    for group_by, whole in (("hash", True), ("track", False)):
        out = tmp_path / f"dataset_{group_by}"
        frames = build_dataset(records, targets, root, out, data,
                               SplitConfig(train=0.6, val=0.2, test=0.2, group_by=group_by), unknown,
                               available=["12", "13", "99"])
        split_of = {p: name for name, f in frames.items() for p in f["path"]}
        kept = all(split_of[f"12/a{k:02d}.png"] == split_of[f"12/z{k:02d}_0.jpg"] for k in range(12))
        assert kept == whole, group_by
        assert len(load_split(out, "train")[1]) == len(frames["train"])


def test_hash_keeps_a_track_whole_even_when_its_frames_look_different(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    near, far = _sign("12", rng), _sign("12", rng)
    records = [_write(tmp_path, "12/t1_a.png", near), _write(tmp_path, "12/t1_b.png", far),
               _write(tmp_path, "12/t2_a.jpg", reencoded(far, 1)), _write(tmp_path, "12/t3_a.png", _sign("12", rng))]
    records = [RawRecord(path=r.path, class_id=r.class_id, track=r.path.split("/")[1][:2]) for r in records]
    keys = _grouping("hash", tmp_path)(records)
    # t1's two frames share a key though their pixels differ; t2 joins them through its copy of t1_b; t3 is alone.
    assert keys == ["12/12/t1_a.png"] * 3 + ["12/12/t3_a.png"]
