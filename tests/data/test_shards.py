"""Raw shards: one stored zip per class, byte-identical for the same images, read like loose files."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from signflow.data.decode import DECODE_CHUNK, decode_frame
from signflow.data.images import (
    OPEN_SHARDS,
    BadImageError,
    ImageLimits,
    ImageRef,
    _open_shard,
    decode_job,
    image_ref,
    read_rgb,
)
from signflow.data.manifest import ROLE_TARGET, to_frame
from signflow.data.records import RawRecord, shard_name
from signflow.data.shards import pack_shards


def _images(root: Path, per_class: int = 3, classes: tuple[str, ...] = ("12", "14")) -> list[RawRecord]:
    records = []
    for class_id in classes:
        for i in range(per_class):
            rgb = np.full((20 + i, 24, 3), (int(class_id) * 10 + i, 80, 160), dtype=np.uint8)
            path = f"{class_id}/{i:05d}_00000.png"
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(root / path), rgb)
            records.append(RawRecord(path, class_id, f"{i:05d}"))
    return records


def test_pack_writes_one_stored_shard_per_class_that_reads_like_the_files(tmp_path: Path) -> None:
    records = _images(tmp_path / "loose")
    packed = pack_shards(tmp_path / "loose", tmp_path / "raw", records)

    assert [r.path for r in packed] == [r.path for r in records]
    assert {r.shard for r in packed} == {shard_name("12"), shard_name("14")}
    for record in packed:
        with zipfile.ZipFile(tmp_path / "raw" / record.shard) as zf:
            assert zf.getinfo(record.path).compress_type == zipfile.ZIP_STORED
        from_shard = read_rgb(image_ref(tmp_path / "raw", record.path, record.shard))
        assert np.array_equal(from_shard, read_rgb(tmp_path / "loose" / record.path))


def test_same_images_give_byte_identical_shards(tmp_path: Path) -> None:
    """No timestamps in the bytes: re-running download on the same data changes nothing DVC can see."""
    records = _images(tmp_path / "loose")
    pack_shards(tmp_path / "loose", tmp_path / "a", records)
    for path in (tmp_path / "loose").rglob("*.png"):
        os.utime(path, (1_700_000_000, 1_700_000_000))  # a later extraction gives the files new times
    pack_shards(tmp_path / "loose", tmp_path / "b", records)
    for shard in ("12", "14"):
        assert (tmp_path / "a" / shard_name(shard)).read_bytes() == (tmp_path / "b" / shard_name(shard)).read_bytes()


def test_a_second_record_set_appends_to_the_class_shard(tmp_path: Path) -> None:
    records = _images(tmp_path / "loose")
    extra = RawRecord("official_test/00000.png", "12", "00000")
    (tmp_path / "loose" / extra.path).parent.mkdir()
    (tmp_path / "loose" / extra.path).write_bytes((tmp_path / "loose" / records[0].path).read_bytes())
    pack_shards(tmp_path / "loose", tmp_path / "raw", records)
    pack_shards(tmp_path / "loose", tmp_path / "raw", [extra])
    with zipfile.ZipFile(tmp_path / "raw" / shard_name("12")) as zf:
        assert zf.namelist() == [r.path for r in records if r.class_id == "12"] + [extra.path]


def test_missing_member_and_rewritten_shard(tmp_path: Path) -> None:
    records = _images(tmp_path / "loose")
    pack_shards(tmp_path / "loose", tmp_path / "raw", records)
    shard = str(tmp_path / "raw" / shard_name("12"))
    with pytest.raises(BadImageError, match="no member 'nope.png'"):
        read_rgb(ImageRef(shard, "nope.png"))
    first = read_rgb(ImageRef(shard, records[0].path))

    # The same path rewritten with other pixels: the per-process handle cache must not serve the old bytes.
    cv2.imwrite(str(tmp_path / "loose" / records[0].path), np.zeros((30, 30, 3), np.uint8))
    os.remove(shard)
    pack_shards(tmp_path / "loose", tmp_path / "raw", [r for r in records if r.class_id == "12"])
    os.utime(shard, ns=(1, os.stat(shard).st_mtime_ns + 1_000_000))
    second = read_rgb(ImageRef(shard, records[0].path))
    assert first.shape != second.shape and not second.any()


@pytest.mark.parametrize("workers", [1, 2])
def test_rows_of_mixed_shards_decode_in_place_opening_each_shard_once(tmp_path: Path, workers: int) -> None:
    """An official test set mixes classes: rows are decoded shard by shard, each image still at its own row."""
    classes = tuple(str(c) for c in range(10, 11 + OPEN_SHARDS))  # more shards than a process keeps open
    records = pack_shards(tmp_path / "loose", tmp_path / "raw", _images(tmp_path / "loose", classes=classes))
    by_class = [[r for r in records if r.class_id == c] for c in classes]
    mixed = [r for group in zip(*by_class, strict=True) for r in group]  # 10, 11, 12, 10, 11, 12, ...
    rows = (mixed * (DECODE_CHUNK // len(mixed) + 1))[: DECODE_CHUNK + 5]  # enough rows for the pool
    frame = to_frame(rows, "x", 0, ROLE_TARGET)
    opened = _open_shard.cache_info().misses

    images = decode_frame(frame, tmp_path / "raw", 16, False, workers=workers, limits=ImageLimits())

    if workers == 1:  # decoded in this process: one open per shard, although consecutive rows never share one
        assert _open_shard.cache_info().misses - opened == len(classes)
    expected = [decode_job((image_ref(tmp_path / "raw", r.path, r.shard), None, 16, ImageLimits())) for r in rows]
    assert np.array_equal(images, np.stack(expected))
