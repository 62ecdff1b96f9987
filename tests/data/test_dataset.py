"""Decode-once arrays, manifest round trip, summaries and class checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from signflow.data.arrays import load_split, write_split
from signflow.data.decode import DECODE_CHUNK, decode_frame
from signflow.data.images import BadImageError, ImageLimits, read_rgb
from signflow.data.manifest import (
    HELDOUT_LABEL_IDX,
    MANIFEST_COLUMNS,
    ROLE_HELDOUT,
    ROLE_TARGET,
    ROLE_UNKNOWN,
    DataError,
    to_frame,
)
from signflow.data.records import QUARANTINE_COLUMNS, RawRecord
from signflow.data.split import check_classes, target_frame
from signflow.data.summary import summarize

LIMITS = ImageLimits(min_side=8, max_side=4096)
SIZE = 16


def _folder_records(root: Path) -> list[RawRecord]:
    records = []
    for path in sorted(root.rglob("*.png")):
        height, width = read_rgb(path).shape[:2]
        # a box a few pixels inside the border, like GTSRB's ROI
        roi = (2, 3, width - 4, height - 2)
        records.append(RawRecord(str(path.relative_to(root)), path.parent.name, path.stem[:5], width, height, *roi))
    return records


@pytest.mark.parametrize("roi_crop", [False, True])
def test_decode_parallel_matches_serial(image_folder: Path, roi_crop: bool) -> None:
    records = _folder_records(image_folder)
    # Enough rows for the process pool to be used: repeat the 18 files.
    rows = (records * (DECODE_CHUNK // len(records) + 2))[: DECODE_CHUNK + 7]
    frame = to_frame(rows, "x", 0, ROLE_TARGET)

    serial = decode_frame(frame, image_folder, SIZE, roi_crop, workers=1, limits=LIMITS)
    parallel = decode_frame(frame, image_folder, SIZE, roi_crop, workers=2, limits=LIMITS)

    assert serial.shape == (len(rows), SIZE, SIZE, 3) and serial.dtype == np.uint8
    assert np.array_equal(serial, parallel)
    # row order is kept: identical files give identical rows
    assert np.array_equal(serial[0], serial[len(records)])
    assert not np.array_equal(serial[0], serial[len(records) - 1])


def test_decode_roi_crop_changes_the_result(image_folder: Path) -> None:
    frame = to_frame(_folder_records(image_folder)[:4], "x", 0, ROLE_TARGET)
    plain = decode_frame(frame, image_folder, SIZE, False, workers=1, limits=LIMITS)
    cropped = decode_frame(frame, image_folder, SIZE, True, workers=1, limits=LIMITS)
    assert not np.array_equal(plain, cropped)


def test_decode_bad_file_raises(tmp_path: Path) -> None:
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "bad.png").write_text("no")
    frame = to_frame([RawRecord("0/bad.png", "0", "bad")], "x", 0, ROLE_TARGET)
    with pytest.raises(BadImageError):
        decode_frame(frame, tmp_path, SIZE, False, workers=1, limits=LIMITS)


def _manifest() -> pd.DataFrame:
    records = [RawRecord(f"00012/00003_{i:05d}.ppm", "00012", "00003", 30, 31, 1, 2, 28, 29) for i in range(3)]
    return target_frame(records, {"00012": "priority_road"})


def test_write_load_round_trip(tmp_path: Path) -> None:
    frame = _manifest()
    images = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    write_split(tmp_path, "train", frame, images)

    loaded_frame, loaded = load_split(tmp_path, "train")

    assert isinstance(loaded, np.memmap)
    assert np.array_equal(np.asarray(loaded), images)
    assert list(loaded_frame.columns) == MANIFEST_COLUMNS
    # ids with leading zeros survive the CSV (they are strings, not numbers)
    assert set(loaded_frame["class_id"]) == {"00012"} and set(loaded_frame["track"]) == {"00003"}
    pd.testing.assert_frame_equal(loaded_frame, frame[MANIFEST_COLUMNS], check_dtype=False)
    _, in_memory = load_split(tmp_path, "train", mmap=False)
    assert not isinstance(in_memory, np.memmap) and np.array_equal(in_memory, images)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.csv", "train.npy"]  # no temporaries left


def test_length_mismatch_raises(tmp_path: Path) -> None:
    write_split(tmp_path, "val", _manifest(), np.zeros((2, SIZE, SIZE, 3), np.uint8))
    with pytest.raises(DataError, match="3 rows.*2"):
        load_split(tmp_path, "val")


def test_summarize_counts(make_records) -> None:
    targets = target_frame(make_records({"12": [3, 2], "13": [1]}), {"12": "a", "13": "b"})
    unknown = to_frame(make_records({"1": [2], "2": [1, 1]}), "unknown", 2, ROLE_UNKNOWN)
    heldout = to_frame(make_records({"15": [4]}), "unknown", HELDOUT_LABEL_IDX, ROLE_HELDOUT)
    frames = {
        "train": pd.concat([targets, unknown], ignore_index=True),
        "val": heldout,
        "test": pd.DataFrame(columns=MANIFEST_COLUMNS),
    }
    bad = [("1/x.png", "1", "empty file"), ("1/y.png", "1", "not an image"), ("12/z.png", "12", "empty file")]
    quarantine = pd.DataFrame(bad, columns=QUARANTINE_COLUMNS)

    summary = summarize(frames, quarantine)

    train = summary["splits"]["train"]
    assert train["images"] == 10
    assert train["tracks"] == 6  # class-qualified: track 00000 of classes 12, 13, 1, 2 are different tracks
    assert train["per_label"] == {"a": 5, "b": 1, "unknown": 4}
    assert train["per_role"] == {ROLE_TARGET: 6, ROLE_UNKNOWN: 4}
    expected = {"images": 4, "tracks": 1, "per_label": {"unknown": 4}, "per_role": {ROLE_HELDOUT: 4}}
    assert summary["splits"]["val"] == expected
    assert summary["splits"]["test"]["images"] == 0 and summary["splits"]["test"]["tracks"] == 0
    assert summary["quarantined"]["count"] == 3
    assert summary["quarantined"]["per_class"] == {"1": 2, "12": 1}
    assert len(summary["quarantined"]["files"]) == 3


def test_summarize_without_quarantine(make_records) -> None:
    frame = target_frame(make_records({"12": [2]}), {"12": "a"})
    summary = summarize({"train": frame, "val": frame, "test": frame}, pd.DataFrame(columns=QUARANTINE_COLUMNS))
    assert summary["quarantined"] == {"count": 0}


def test_check_classes_names_key_and_available(make_records) -> None:
    index = make_records({"1": [1], "12": [1], "2": [1]})
    check_classes(index, ["12", "1"])
    with pytest.raises(DataError) as info:
        check_classes(index, ["12", "99"])
    message = str(info.value)
    assert "data.classes" in message and "99" in message
    for class_id in ("1", "2", "12"):
        assert f"'{class_id}'" in message
