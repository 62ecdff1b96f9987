"""GTSRB source: tree parsing on tiny trees, and one end-to-end run on the real subset.

The end-to-end test serves the shared 77 MB / 25k-file subset over loopback
HTTP and materialises it once per session (a few seconds), because that is
the path the ``download`` stage takes with the official archive.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from signflow.config import GTSRB_TRAINING_MD5, GTSRB_TRAINING_URL
from signflow.data.records import RawRecord
from signflow.data.sources.gtsrb import (
    archive_name,
    materialise_gtsrb,
    read_gtsrb_tree,
    scan_gtsrb_tree,
)

from http_server import LoopbackServer

SHARED = Path(os.environ.get("SIGNFLOW_SHARED", Path(__file__).resolve().parents[3].parent / "shared"))
SUBSET_ZIP = SHARED / "data" / "gtsrb" / "GTSRB-Training_subset.zip"
SUBSET_CLASSES = 43
# (images, tracks) per class, from the subset's README
SUBSET_COUNTS = {"12": (1588, 69), "14": (623, 26)}
HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"


def _write_class(root: Path, class_id: int, rows: list[tuple[str, int, int]], *, images: list[str]) -> Path:
    """A GT csv with ``rows`` of (file, width, height) and the listed image files."""
    class_dir = root / f"{class_id:05d}"
    class_dir.mkdir(parents=True)
    lines = [HEADER] + [f"{name};{w};{h};1;2;{w - 1};{h - 2};{class_id}" for name, w, h in rows]
    (class_dir / f"GT-{class_id:05d}.csv").write_text("\r\n".join(lines) + "\r\n")
    for name in images:
        (class_dir / name).write_bytes(b"P6")
    return class_dir


@pytest.mark.parametrize("prefix", ["GTSRB/Training", "Training", ""], ids=["official", "no-GTSRB", "flat"])
def test_read_tree_layouts(tmp_path: Path, prefix: str) -> None:
    base = tmp_path / prefix
    names = ["00003_00000.ppm", "00003_00001.ppm", "00007_00000.ppm"]
    _write_class(base, 12, [(n, 40 + i, 50 + i) for i, n in enumerate(names)], images=names)
    records = read_gtsrb_tree(tmp_path)
    stem = f"{prefix}/" if prefix else ""
    assert records[0] == RawRecord(f"{stem}00012/00003_00000.ppm", "12", "00003", 40, 50, 1, 2, 39, 48)
    assert [r.track for r in records] == ["00003", "00003", "00007"]
    assert all((tmp_path / r.path).is_file() for r in records)


def test_missing_image_is_reported_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class_dir = _write_class(tmp_path, 1, [("00000_00000.ppm", 30, 30), ("00000_00001.ppm", 31, 31)], images=[])
    (class_dir / "00000_00000.ppm").write_bytes(b"P6")
    scan = scan_gtsrb_tree(tmp_path)
    assert [r.path for r in scan.records] == ["00001/00000_00000.ppm"]
    assert scan.missing == ["00001/00000_00001.ppm"]
    with caplog.at_level(logging.WARNING):
        assert len(read_gtsrb_tree(tmp_path)) == 1
    assert "1 GT csv rows" in caplog.text and "00000_00001.ppm" in caplog.text


def test_class_dir_without_csv_falls_back(tmp_path: Path) -> None:
    class_dir = tmp_path / "GTSRB" / "Training" / "00005"
    class_dir.mkdir(parents=True)
    for name in ["00002_00000.ppm", "00002_00001.ppm"]:
        (class_dir / name).write_bytes(b"P6")
    records = read_gtsrb_tree(tmp_path)
    assert records == [
        RawRecord("GTSRB/Training/00005/00002_00000.ppm", "5", "00002"),
        RawRecord("GTSRB/Training/00005/00002_00001.ppm", "5", "00002"),
    ]


def test_malformed_csv_names_file_and_line(tmp_path: Path) -> None:
    class_dir = _write_class(tmp_path, 2, [("00000_00000.ppm", 30, 30)], images=["00000_00000.ppm"])
    csv_path = class_dir / "GT-00002.csv"
    csv_path.write_text(csv_path.read_text() + "00000_00001.ppm;30;abc;1;1;2;2;2\r\n")
    with pytest.raises(ValueError, match=r"GT-00002\.csv:3"):
        read_gtsrb_tree(tmp_path)


def test_empty_tree_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no GTSRB class directories"):
        read_gtsrb_tree(tmp_path)


def test_archive_name_and_constants() -> None:
    assert archive_name(GTSRB_TRAINING_URL) == "GTSRB-Training_fixed.zip"
    assert archive_name("/mirror/GTSRB-Training_subset.zip") == "GTSRB-Training_subset.zip"
    assert archive_name("file:///mirror/x.zip") == "x.zip"
    assert len(GTSRB_TRAINING_MD5) == 32


def test_materialise_small_archive_uses_cache(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    source = tmp_path / "tree"
    names = ["00001_00000.ppm", "00001_00001.ppm"]
    _write_class(source / "GTSRB" / "Training", 14, [(n, 35, 35) for n in names], images=names)
    with zipfile.ZipFile(served / "mini.zip", "w") as zf:
        for path in sorted(source.rglob("*")):
            zf.write(path, path.relative_to(source).as_posix())
    md5 = hashlib.md5((served / "mini.zip").read_bytes()).hexdigest()
    with LoopbackServer(served) as server:
        for _ in range(2):
            records = materialise_gtsrb(server.url("mini.zip"), md5, tmp_path / "raw", tmp_path / "cache")
            assert [r.path for r in records] == [f"GTSRB/Training/00014/{n}" for n in names]
        assert len(server.state.requests) == 1  # second run reused the cached archive


# --- end to end on the real subset ------------------------------------------------


@pytest.fixture(scope="session")
def subset_records(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[RawRecord]]]:
    """Serve the shared subset over loopback and materialise it once per session."""
    if not SUBSET_ZIP.is_file():
        pytest.skip(f"GTSRB subset not found at {SUBSET_ZIP}; set SIGNFLOW_SHARED to the shared folder")
    md5 = hashlib.md5(SUBSET_ZIP.read_bytes()).hexdigest()
    work = tmp_path_factory.mktemp("gtsrb")
    with LoopbackServer(SUBSET_ZIP.parent) as server:
        records = materialise_gtsrb(server.url(SUBSET_ZIP.name), md5, work / "raw", work / "downloads")
    yield work / "raw", records


@pytest.mark.slow
def test_subset_end_to_end_counts(subset_records: tuple[Path, list[RawRecord]]) -> None:
    _, records = subset_records
    images = Counter(r.class_id for r in records)
    tracks: dict[str, set[str]] = defaultdict(set)
    for r in records:
        tracks[r.class_id].add(r.track)
    assert sorted(images, key=int) == [str(i) for i in range(SUBSET_CLASSES)]
    for class_id, (n_images, n_tracks) in SUBSET_COUNTS.items():
        assert (images[class_id], len(tracks[class_id])) == (n_images, n_tracks)


@pytest.mark.slow
def test_subset_end_to_end_boxes_and_paths(subset_records: tuple[Path, list[RawRecord]]) -> None:
    raw, records = subset_records
    assert all(r.path.startswith("GTSRB/Training/") for r in records)
    assert all(0 <= r.x1 < r.x2 <= r.width and 0 <= r.y1 < r.y2 <= r.height for r in records)
    assert all((raw / r.path).is_file() for r in records[:: len(records) // 100])
