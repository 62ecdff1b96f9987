"""The `folder` data source on messy ImageFolder trees: class folders by id or by name, clear errors, counted skips.

Already covered elsewhere (not repeated): a missing data.folder.path and non-image suffixes
left out of the shards (tests/data/test_images.py), files with an image suffix that are not images
quarantined (tests/reliability/test_images.py).
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import pytest

from signflow.config import ConfigError, DataConfig, from_mapping
from signflow.data.raw import materialise
from signflow.data.records import INDEX_FILE, QUARANTINE_FILE, read_records, shard_name
from signflow.data.sources.folder import read_folder_tree

from conftest import write_image_folder

CLASSES = {"12": "priority_road", "13": "give_way", "14": "stop"}
TRACK = r"^(\d+)_"
IMAGES_PER_CLASS = 4  # 2 tracks x 2 frames


def _tree(root: Path, folders: list[str]) -> Path:
    return write_image_folder(root, classes=folders, tracks=2, frames=2)


def _config(folder: Path, classes: dict[str, str] = CLASSES) -> DataConfig:
    return from_mapping(
        DataConfig,
        {
            "source": "folder",
            "classes": classes,
            "decode_workers": 1,
            "folder": {"path": str(folder), "track_pattern": TRACK},
        },
        "data",
    )


def _classes_of(records) -> dict[str, int]:  # type: ignore[no-untyped-def]
    counts: dict[str, int] = {}
    for record in records:
        counts[record.class_id] = counts.get(record.class_id, 0) + 1
    return counts


@pytest.mark.parametrize(
    "folders",
    [["12", "13", "14"], ["priority_road", "give_way", "stop"], ["12", "give_way", "stop"]],
    ids=["ids", "names", "mixed"],
)
def test_class_folders_by_id_or_by_name(tmp_path: Path, folders: list[str]) -> None:
    root = _tree(tmp_path / "signs", folders)
    records = read_folder_tree(root, TRACK, classes=CLASSES)
    assert _classes_of(records) == {c: IMAGES_PER_CLASS for c in CLASSES}
    assert {r.path.split("/")[0] for r in records} == set(folders)  # paths stay the files' paths
    assert {r.group for r in records} == {f"{c}/{t:05d}" for c in CLASSES for t in range(2)}


def test_download_stage_with_folders_named_after_class_names(tmp_path: Path) -> None:
    root = _tree(tmp_path / "signs", ["priority_road", "give_way", "stop", "speed_30"])
    raw = tmp_path / "raw"
    good, bad = materialise(_config(root), raw, tmp_path / "cache")
    index = read_records(raw / INDEX_FILE)
    assert index == good and bad.empty
    # the extra folder keeps its name as its class id: it can feed "unknown", as GTSRB's other signs do
    assert _classes_of(index) == {"12": 4, "13": 4, "14": 4, "speed_30": 4}
    assert sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*.zip")) == sorted(
        shard_name(c) for c in ["12", "13", "14", "speed_30"]
    )
    stop = [r for r in index if r.class_id == "14"]
    with zipfile.ZipFile(raw / shard_name("14")) as zf:
        assert sorted(zf.namelist()) == sorted(r.path for r in stop)
        assert all(zf.read(r.path) == (root / r.path).read_bytes() for r in stop)


def test_class_with_both_an_id_folder_and_a_name_folder_is_an_error(tmp_path: Path) -> None:
    root = _tree(tmp_path / "signs", ["12", "13", "14", "stop"])
    with pytest.raises(ConfigError, match=r"class '14' \(stop\) has 2 folders under .*\['14', 'stop'\]; keep one"):
        read_folder_tree(root, TRACK, classes=CLASSES)


def test_folder_that_is_one_class_id_and_another_class_name_is_an_error(tmp_path: Path) -> None:
    root = _tree(tmp_path / "signs", ["a", "b"])
    with pytest.raises(ConfigError, match=r"folder .*/b/ is both the id of class 'b' and the name of class 'a'"):
        read_folder_tree(root, classes={"a": "b", "b": "c"})


def test_class_missing_from_the_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    root = _tree(tmp_path / "signs", ["12", "give_way", "speed_30"])
    with pytest.raises(ConfigError) as info:
        read_folder_tree(root, classes=CLASSES)
    message = str(info.value)
    assert message.startswith("data.folder.path: no folder under") and "['14 (stop)']" in message
    assert "class id or its name" in message and "['12', 'give_way', 'speed_30']" in message


@pytest.mark.parametrize("content", ["nothing", "only-junk"])
def test_class_folder_without_images_is_an_error(tmp_path: Path, content: str) -> None:
    root = _tree(tmp_path / "signs", ["12", "13"])
    stop = root / "stop"
    stop.mkdir()
    if content == "only-junk":
        (stop / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (stop / "notes.txt").write_text("photos to do")
    with pytest.raises(ConfigError, match=r"class folders \['stop/'\] under .* have no images .*remove the class"):
        read_folder_tree(root, classes=CLASSES)


def test_error_leaves_the_previous_raw_dataset_untouched(tmp_path: Path) -> None:
    root = _tree(tmp_path / "signs", ["12", "13"])  # no 14
    raw = tmp_path / "raw"
    (raw / "shards").mkdir(parents=True)
    (raw / INDEX_FILE).write_text("previous\n")
    with pytest.raises(ConfigError, match="14 \\(stop\\)"):
        materialise(_config(root), raw, tmp_path / "cache")
    assert (raw / INDEX_FILE).read_text() == "previous\n"
    assert sorted(p.name for p in raw.iterdir()) == [INDEX_FILE, "shards"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "signs"]  # no temporary left beside it


def test_hidden_and_non_image_files_are_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _tree(tmp_path / "signs", ["12", "13", "stop"])
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # Finder metadata, beside the class folders
    (root / "README.md").write_text("my photos")  # a file outside any class folder
    (root / "stop" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "stop" / "._00000_00000.png").write_bytes(b"\0\5\26\7 AppleDouble")  # macOS resource fork: not a PNG
    (root / "stop" / ".ipynb_checkpoints").mkdir()
    (root / "stop" / ".ipynb_checkpoints" / "00000_00000-checkpoint.png").write_bytes(b"")
    (root / "13" / "labels.csv").write_text("file,label\n")
    (root / "13" / "Thumbs.db").write_bytes(b"\0")
    (root / ".git").mkdir()  # a hidden folder is no class
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "__MACOSX" / "stop").mkdir(parents=True)  # what unzipping a Mac archive leaves: only resource forks
    (root / "__MACOSX" / "stop" / "._00000_00000.png").write_bytes(b"\0\5\26\7")
    raw = tmp_path / "raw"

    with caplog.at_level(logging.WARNING, logger="signflow.data.sources.folder"):
        good, bad = materialise(_config(root), raw, tmp_path / "cache")

    assert bad.empty and (raw / QUARANTINE_FILE).read_text().strip() == "path,class_id,reason"  # never read
    assert _classes_of(good) == {c: IMAGES_PER_CLASS for c in CLASSES}
    # hidden: .DS_Store and .git/ beside the classes, 3 in stop/ (one in .ipynb_checkpoints/), 1 in __MACOSX/
    assert "skipped 9 files: 6 hidden, 1 outside a class folder, 2 without an image suffix" in caplog.text
    assert "skipped 1 folders with no images: ['__MACOSX']" in caplog.text


def test_no_images_anywhere_keeps_its_message(tmp_path: Path) -> None:
    (tmp_path / "signs" / "stop").mkdir(parents=True)
    (tmp_path / "signs" / "stop" / "notes.txt").write_text("none yet")
    with pytest.raises(FileNotFoundError, match=r"data\.folder\.path: no images with suffixes .* under .*/<class>/"):
        read_folder_tree(tmp_path / "signs", classes=CLASSES)
