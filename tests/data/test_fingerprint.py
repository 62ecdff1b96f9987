"""The data source's fingerprint: byte-stable, changed by what the source reads and by nothing else.

End to end under real DVC (the `fingerprint` stage before `download`): tests/pipeline/test_external_data.py.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from signflow.config import ConfigError, DataConfig, from_mapping
from signflow.data.fingerprint import (
    SOURCE_INPUTS,
    MissingInputError,
    folder_listing,
    source_fingerprint,
    update_fingerprint,
)
from signflow.data.raw import DATA_SOURCES
from signflow.data.sources.folder import read_folder_tree

from conftest import write_image_folder
from http_server import LoopbackServer

SECOND_NS = 1_000_000_000


def _folder_config(root: Path) -> DataConfig:
    return from_mapping(DataConfig, {"source": "folder", "folder": {"path": str(root)}}, "data")


def _gtsrb_config(url: str, md5: str = "", **more: Any) -> DataConfig:
    return from_mapping(DataConfig, {"source": "gtsrb", "gtsrb": {"url": url, "md5": md5, **more}}, "data")


def _digest(root: Path) -> dict[str, Any]:
    return source_fingerprint(_folder_config(root))["inputs"][0]


def _later(path: Path, seconds: int = 1) -> None:
    """Move ``path``'s mtime ``seconds`` on: an edit made later, whatever the file system's clock resolution."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + seconds * SECOND_NS))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "signs", classes=("12", "13"), tracks=2, frames=2)


def test_every_data_source_has_an_entry() -> None:
    assert list(SOURCE_INPUTS) == list(DATA_SOURCES)


def test_unknown_source_fails_with_the_valid_names() -> None:
    cfg = from_mapping(DataConfig, {"source": "kaggle"}, "data")
    with pytest.raises(ConfigError, match=r"data.source='kaggle'.*synthetic \| gtsrb \| folder"):
        source_fingerprint(cfg)


def test_synthetic_has_no_external_input() -> None:
    assert source_fingerprint(DataConfig()) == {"source": "synthetic", "inputs": []}


def test_folder_fingerprint_is_byte_stable_and_written_once(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "fingerprint.json"
    assert update_fingerprint(_folder_config(folder), out)
    first, mtime = out.read_bytes(), out.stat().st_mtime_ns
    assert not update_fingerprint(_folder_config(folder), out)  # same inputs: the file is left alone
    assert out.read_bytes() == first and out.stat().st_mtime_ns == mtime
    entry = _digest(folder)
    assert entry["files"] == 8 and entry["path"] == str(folder)
    assert entry["bytes"] == sum(p.stat().st_size for p in folder.rglob("*.png"))


def test_listing_order_does_not_matter(tmp_path: Path) -> None:
    """Two copies of a tree, files created in opposite orders with equal times, fingerprint the same."""
    source = write_image_folder(tmp_path / "a", classes=("1", "2"), tracks=2, frames=2)
    files = sorted(p.relative_to(source) for p in source.rglob("*.png"))
    copy = tmp_path / "b"
    for relative in reversed(files):
        (copy / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / relative, copy / relative)  # copy2 keeps the mtime
    assert folder_listing(source) == folder_listing(copy)


def test_adding_modifying_deleting_or_renaming_an_image_changes_it(folder: Path) -> None:
    seen = [_digest(folder)["sha256"]]
    image = folder / "12" / "00000_00000.png"

    shutil.copy2(image, folder / "12" / "00009_00000.png")  # added: a copy, same bytes and time
    seen.append(_digest(folder)["sha256"])
    pixels = cv2.imread(str(image))
    assert cv2.imwrite(str(image), 255 - pixels)  # fixed in place
    _later(image)
    seen.append(_digest(folder)["sha256"])
    (folder / "12" / "00009_00000.png").rename(folder / "12" / "00008_00000.png")
    seen.append(_digest(folder)["sha256"])
    (folder / "13" / "00000_00001.png").unlink()
    seen.append(_digest(folder)["sha256"])
    assert len(set(seen)) == len(seen), seen


def test_an_edit_that_keeps_the_size_changes_it(folder: Path) -> None:
    image = folder / "13" / "00001_00000.png"
    before = _digest(folder)
    data = bytearray(image.read_bytes())
    data[-1] ^= 0xFF  # same size: a re-encode of equal length is caught by its new mtime
    image.write_bytes(bytes(data))
    _later(image)
    after = _digest(folder)
    assert (after["files"], after["bytes"]) == (before["files"], before["bytes"])
    assert after["sha256"] != before["sha256"]


def test_files_the_folder_source_skips_do_not_count(folder: Path) -> None:
    before = _digest(folder)
    (folder / ".DS_Store").write_bytes(b"finder")
    (folder / "README.md").write_text("about these photos\n")  # outside a class folder
    (folder / "12" / "._00000_00000.png").write_bytes(b"resource fork")
    (folder / "12" / "notes.txt").write_text("taken in May\n")
    checkpoints = folder / "13" / ".ipynb_checkpoints"
    checkpoints.mkdir()
    shutil.copy2(folder / "13" / "00000_00000.png", checkpoints / "00000_00000-checkpoint.png")
    (folder / ".trash").mkdir()
    shutil.copy2(folder / "13" / "00000_00000.png", folder / ".trash" / "x.png")
    assert _digest(folder) == before
    # ...and it lists exactly the images the source reads
    assert folder_listing(folder)["files"] == len(read_folder_tree(folder))


def test_missing_folder_fails_without_a_previous_fingerprint_and_keeps_one(
    tmp_path: Path, folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "fingerprint.json"
    missing = _folder_config(tmp_path / "elsewhere")
    with pytest.raises(MissingInputError, match="data.folder.path: .*elsewhere is not a directory"):
        update_fingerprint(missing, out)
    assert not out.exists()

    update_fingerprint(DataConfig(), out)  # another source's fingerprint is no stand-in
    with pytest.raises(MissingInputError):
        update_fingerprint(missing, out)

    update_fingerprint(_folder_config(folder), out)
    written = out.read_bytes()
    with caplog.at_level(logging.WARNING, logger="signflow.data.fingerprint"):
        assert not update_fingerprint(missing, out)  # a clone without the folder: data/raw stays as DVC has it
    assert out.read_bytes() == written
    assert "kept the previous" in caplog.text


def test_change_is_logged_with_counts(folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "fingerprint.json"
    update_fingerprint(_folder_config(folder), out)
    shutil.copy2(folder / "12" / "00000_00000.png", folder / "12" / "00009_00000.png")
    with caplog.at_level(logging.INFO, logger="signflow.data.fingerprint"):
        assert update_fingerprint(_folder_config(folder), out)
    assert "data.folder.path changed: files 8 -> 9" in caplog.text


# ---- gtsrb: an md5 is the identity; a mirror file without one is watched; a URL without one cannot be


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    path = tmp_path / "mirror" / "GTSRB-Training_fixed.zip"
    path.parent.mkdir()
    path.write_bytes(np.random.default_rng(0).bytes(2048))
    return path


@pytest.mark.parametrize("as_url", [False, True], ids=["path", "file-url"])
def test_local_mirror_without_md5_is_watched(mirror: Path, as_url: bool) -> None:
    url = mirror.as_uri() if as_url else str(mirror)
    before = source_fingerprint(_gtsrb_config(url))
    assert before["inputs"] == [{"key": "data.gtsrb.url", "url": url, "size": 2048,
                                 "mtime_ns": mirror.stat().st_mtime_ns}]
    mirror.write_bytes(mirror.read_bytes()[::-1])  # replaced by another file of the same size
    _later(mirror)
    assert source_fingerprint(_gtsrb_config(url)) != before


def test_an_md5_is_the_identity(mirror: Path) -> None:
    md5 = "0123456789ABCDEF0123456789abcdef"
    before = source_fingerprint(_gtsrb_config(str(mirror), md5))
    assert before["inputs"] == [{"key": "data.gtsrb.url", "url": str(mirror), "md5": md5.lower()}]
    mirror.write_bytes(b"another file")  # `fetch` refuses it by its md5; nothing to watch here
    assert source_fingerprint(_gtsrb_config(str(mirror), md5)) == before


def test_missing_mirror_file(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="data.gtsrb.url: .*nope.zip does not exist"):
        source_fingerprint(_gtsrb_config(str(tmp_path / "nope.zip")))


def test_http_url_without_md5_is_recorded_and_warned(caplog: pytest.LogCaptureFixture, mirror: Path) -> None:
    with LoopbackServer(mirror.parent) as server, caplog.at_level(logging.WARNING):
        url = server.url(mirror.name)
        fingerprint = source_fingerprint(_gtsrb_config(url))
    assert fingerprint["inputs"] == [{"key": "data.gtsrb.url", "url": url}]
    assert "cannot be seen" in caplog.text and "set its md5" in caplog.text
    assert server.state.requests == []  # no request: `dvc repro` of downloaded data works offline


def test_official_test_archives_are_inputs_too(mirror: Path) -> None:
    cfg = _gtsrb_config(str(mirror), official_test=True, test_images_url=str(mirror), test_images_md5="",
                        test_gt_url="https://example.invalid/gt.zip", test_gt_md5="f" * 32)
    keys = [entry["key"] for entry in source_fingerprint(cfg)["inputs"]]
    assert keys == ["data.gtsrb.url", "data.gtsrb.test_images_url", "data.gtsrb.test_gt_url"]
