"""Hostile archives: each refused with a message naming the problem, nothing extracted, the old destination kept.

Already covered in tests/data/test_fetch.py (not repeated here): ``../`` traversal, absolute
paths, backslashes, drive letters, symlink entries, too many members, too many bytes,
non-zip and empty files named ``.zip``, corrupt member data.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from signflow.data.archive import (
    DEFAULT_MAX_MEMBERS,
    DEFAULT_MAX_RATIO,
    RATIO_MIN_BYTES,
    UnsafeArchiveError,
    check_members,
    safe_extract_zip,
)

from zips import make_zip, symlink_entry

GTSRB_TRAINING_MEMBERS = 39_300  # about: GTSRB_Final_Training_Images.zip has 39,209 images plus CSVs and folders
MIB = 1 << 20


def deflated_zip(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    """Deflated, so a ratio limit has something to measure."""
    return make_zip(path, members, zipfile.ZIP_DEFLATED)


def _photo_like(size: int) -> bytes:
    """Incompressible bytes, like a photo's pixels."""
    return np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()


@pytest.fixture
def old_dest(tmp_path: Path) -> Path:
    """A destination holding a previous, good extraction."""
    dest = tmp_path / "work" / "dest"
    (dest / "class").mkdir(parents=True)
    (dest / "class" / "good.ppm").write_bytes(b"previous extraction")
    return dest


def _assert_untouched(dest: Path) -> None:
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == ["class", "class/good.ppm"]
    assert (dest / "class" / "good.ppm").read_bytes() == b"previous extraction"
    assert [p.name for p in dest.parent.iterdir()] == ["dest"]  # no temporary left beside it


HOSTILE = {
    # new cases
    "ratio-bomb": ([("bomb.bin", b"\0" * (2 * MIB))], "ratio above the limit of 100 .*zip bomb"),
    "duplicate-name": ([("a/b.txt", b"first"), ("a/b.txt", b"second")], r"'a/b\.txt'.*duplicate entry name"),
    "duplicate-after-normalising": ([("a/b.txt", b"1"), ("a/./b.txt", b"2")], r"'a/\./b\.txt'.*duplicate"),
    "duplicate-folder": ([("a/", b""), ("a/", b"")], r"'a/'.*duplicate entry name"),
    "file-then-folder": ([("a", b"file"), ("a/b.txt", b"x")], r"'a/b\.txt'.*folder 'a' is also a file"),
    "folder-then-file": ([("a/b.txt", b"x"), ("a", b"file")], r"'a'.*both a file and a folder"),
    # cases of tests/data/test_fetch.py, here for the previous destination only
    "dotdot": ([("ok.txt", b"x"), ("../evil.txt", b"x")], r"'\.\./evil\.txt'.*'\.\.'"),
    "absolute": ([("/tmp/signflow-evil.txt", b"x")], "absolute"),
    "symlink": ([(symlink_entry("link"), b"/etc/passwd")], "symbolic link"),
}


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_archive_refused_and_previous_dest_untouched(tmp_path: Path, old_dest: Path, kind: str) -> None:
    members, reason = HOSTILE[kind]
    archive = deflated_zip(tmp_path / "hostile.zip", members)
    with pytest.raises(UnsafeArchiveError, match=reason) as info:
        safe_extract_zip(archive, old_dest)
    assert str(archive) in str(info.value)
    _assert_untouched(old_dest)
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/signflow-evil.txt").exists()


@pytest.mark.parametrize("limits", [{"max_members": 3}, {"max_total_bytes": 1024}], ids=["members", "total-bytes"])
def test_over_limit_archive_keeps_previous_dest(tmp_path: Path, old_dest: Path, limits: dict[str, int]) -> None:
    archive = deflated_zip(tmp_path / "big.zip", [(f"f{i}.bin", _photo_like(512)) for i in range(4)])
    with pytest.raises(UnsafeArchiveError, match="more than the limit"):
        safe_extract_zip(archive, old_dest, **limits)
    _assert_untouched(old_dest)


@pytest.mark.parametrize("kind", ["truncated-download", "png-named-zip"])
def test_not_a_zip_keeps_previous_dest(tmp_path: Path, old_dest: Path, kind: str) -> None:
    archive = tmp_path / "data.zip"
    if kind == "truncated-download":  # the central directory, at the end, is missing
        good = deflated_zip(tmp_path / "full.zip", [("a.bin", _photo_like(4096))]).read_bytes()
        archive.write_bytes(good[: len(good) // 2])
    else:
        archive.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(UnsafeArchiveError, match="not a readable zip file .*delete it and download again"):
        safe_extract_zip(archive, old_dest)
    _assert_untouched(old_dest)


def test_ratio_limit_spares_photos_small_members_and_can_be_raised(tmp_path: Path) -> None:
    archive = deflated_zip(tmp_path / "ok.zip", [
        ("photo.ppm", _photo_like(2 * MIB)),  # ratio ~1: a real image
        ("blank.txt", b"\0" * (RATIO_MIN_BYTES - 1)),  # ratio ~1000 but below 1 MiB: harmless
    ])
    assert [p.name for p in safe_extract_zip(archive, tmp_path / "dest")] == ["photo.ppm", "blank.txt"]
    bomb = deflated_zip(tmp_path / "bomb.zip", [("zeros.bin", b"\0" * (2 * MIB))])
    with pytest.raises(UnsafeArchiveError, match="ratio"):
        safe_extract_zip(bomb, tmp_path / "dest2")
    assert safe_extract_zip(bomb, tmp_path / "dest2", max_ratio=2000) == [tmp_path / "dest2" / "zeros.bin"]
    assert DEFAULT_MAX_RATIO == 100


def test_default_member_limit_stays_well_above_the_official_archive(tmp_path: Path) -> None:
    """The check runs on the central directory only, so GTSRB-sized listings are tested without writing them."""
    assert DEFAULT_MAX_MEMBERS >= 4 * GTSRB_TRAINING_MEMBERS
    gtsrb_like = [zipfile.ZipInfo(f"GTSRB/Final_Training/Images/{i // 1000:05d}/{i:05d}.ppm")
                  for i in range(GTSRB_TRAINING_MEMBERS)]
    check_members(gtsrb_like, tmp_path / "GTSRB.zip")  # no error
    too_many = [zipfile.ZipInfo(f"{i}.ppm") for i in range(DEFAULT_MAX_MEMBERS + 1)]
    with pytest.raises(UnsafeArchiveError, match=f"{DEFAULT_MAX_MEMBERS + 1} members, more than the limit"):
        check_members(too_many, tmp_path / "flood.zip")


def test_folder_entries_listed_twice_implicitly_are_fine(tmp_path: Path) -> None:
    """A folder entry after files inside it (as some zip tools write) is not a duplicate."""
    archive = deflated_zip(tmp_path / "ok.zip", [("a/b.txt", b"b"), ("a/", b""), ("a/c/d.txt", b"d")])
    files = safe_extract_zip(archive, tmp_path / "dest")
    assert files == [tmp_path / "dest" / "a/b.txt", tmp_path / "dest" / "a/c/d.txt"]
