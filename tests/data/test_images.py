"""Image checks on crafted bad files, decoding, and the download stage's validate/quarantine."""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from signflow.config import ConfigError, DataConfig, from_mapping
from signflow.data.images import BadImageError, ImageLimits, check_image, crop_and_resize, read_rgb
from signflow.data.raw import DATA_SOURCES, STAGING_DIR, materialise, validate_images
from signflow.data.records import INDEX_FILE, QUARANTINE_COLUMNS, QUARANTINE_FILE, RawRecord, read_records, shard_name

LIMITS = ImageLimits(min_side=8, max_side=4096)


def _png(path: Path, height: int = 24, width: int = 30, bgr: tuple[int, int, int] = (0, 0, 255)) -> Path:
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = bgr
    assert cv2.imwrite(str(path), image)
    return path


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A tiny valid PNG whose IHDR is patched to declare ``width`` x ``height`` (CRC fixed)."""
    data = bytearray(_png(path, 10, 10).read_bytes())
    assert data[12:16] == b"IHDR"  # 8-byte signature, then length, type, 13 data bytes, CRC
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(bytes(data))
    return path


def _truncated(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _noise(path: Path, side: int = 64) -> Path:
    # Noise does not compress, so half the file is missing half the pixel data.
    image = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)
    return path


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    assert check_image(tmp_path / "empty.png", LIMITS) == "empty file"


def test_missing_file(tmp_path: Path) -> None:
    assert "cannot stat" in check_image(tmp_path / "nope.png", LIMITS)


def test_text_named_png(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("this is not a picture\n" * 10)
    assert check_image(tmp_path / "notes.png", LIMITS) == "not an image"


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_file(tmp_path: Path, suffix: str) -> None:
    path = _noise(tmp_path / f"cut{suffix}")
    assert check_image(path, LIMITS) is None  # valid before the cut
    _truncated(path)
    reason = check_image(path, LIMITS)
    assert reason is not None and "truncated" in reason
    with pytest.raises(BadImageError):
        read_rgb(path, LIMITS)


def test_absurd_dimensions_refused_without_decoding(tmp_path: Path, no_decode: list[str]) -> None:
    path = _png_declaring(tmp_path / "bomb.png", 100_000, 100_000)
    reason = check_image(path, LIMITS)
    assert reason is not None and "size" in reason.lower()
    assert no_decode == []


def test_too_large_by_our_limit_refused_without_decoding(tmp_path: Path, no_decode: list[str]) -> None:
    path = _png_declaring(tmp_path / "big.png", 5000, 300)
    reason = check_image(path, LIMITS)
    assert reason is not None and "5000x300" in reason and "4096" in reason
    assert no_decode == []


def test_too_small(tmp_path: Path) -> None:
    path = _png(tmp_path / "tiny.png", 5, 30)
    reason = check_image(path, LIMITS)
    assert reason is not None and "30x5" in reason
    assert check_image(path, ImageLimits(min_side=5, max_side=100)) is None


def test_valid_image_is_rgb(tmp_path: Path, no_decode: list[str]) -> None:
    path = _png(tmp_path / "red.png", 24, 30, bgr=(0, 0, 255))  # OpenCV writes BGR
    assert check_image(path, LIMITS) is None
    assert no_decode  # a good image is fully decoded (and the spy above does see decoding)
    rgb = read_rgb(path, LIMITS)
    assert rgb.shape == (24, 30, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 0] == 255).all() and (rgb[..., 1:] == 0).all()


def test_grayscale_becomes_three_channels(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    cv2.imwrite(str(path), np.full((16, 16), 77, np.uint8))
    rgb = read_rgb(path, LIMITS)
    assert rgb.shape == (16, 16, 3) and (rgb == 77).all()


def test_real_gtsrb_ppm_files_decode(tmp_path: Path, shared_gtsrb_zip: Path) -> None:
    with zipfile.ZipFile(shared_gtsrb_zip) as zf:
        names = [n for n in zf.namelist() if n.endswith(".ppm")][:: 5000][:5]
        for name in names:
            (tmp_path / Path(name).name).write_bytes(zf.read(name))
    assert names
    for path in tmp_path.glob("*.ppm"):
        assert check_image(path, LIMITS) is None
        assert read_rgb(path, LIMITS).shape[2] == 3


@pytest.mark.parametrize(("height", "width", "size"), [(20, 40, 32), (100, 60, 32), (32, 32, 64)])
def test_crop_and_resize_shape(height: int, width: int, size: int) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = crop_and_resize(rgb, size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8


def test_crop_and_resize_roi_keeps_only_the_box() -> None:
    rgb = np.zeros((40, 50, 3), np.uint8)
    rgb[:] = (0, 0, 200)
    rgb[10:30, 5:25] = (200, 0, 0)  # the "sign": rows 10-29, columns 5-24
    out = crop_and_resize(rgb, 16, roi=(5, 10, 25, 30))
    assert out.shape == (16, 16, 3)
    assert (out == (200, 0, 0)).all()
    whole = crop_and_resize(rgb, 16)
    assert (whole[..., 2] > 0).any()  # without the ROI the background is there


def test_crop_and_resize_clips_or_ignores_bad_roi() -> None:
    rgb = np.zeros((40, 50, 3), np.uint8)
    rgb[20:, 30:] = 255
    clipped = crop_and_resize(rgb, 8, roi=(30, 20, 500, 500))
    assert (clipped == 255).all()
    degenerate = crop_and_resize(rgb, 8, roi=(10, 10, 10, 10))
    assert np.array_equal(degenerate, crop_and_resize(rgb, 8))


def _bad_files(class_dir: Path) -> dict[str, str]:
    """Write the bad files into ``class_dir``; return name -> a word expected in the reason."""
    class_dir.mkdir(parents=True, exist_ok=True)
    (class_dir / "00090_00000.png").write_bytes(b"")
    (class_dir / "00091_00000.png").write_text("not a png")
    _truncated(_noise(class_dir / "00092_00000.png"))
    _png(class_dir / "00093_00000.png", 4, 4)
    _png_declaring(class_dir / "00094_00000.png", 100_000, 100_000)
    return {
        "00090_00000.png": "empty",
        "00091_00000.png": "not an image",
        "00092_00000.png": "truncated",
        "00093_00000.png": "4x4",
        "00094_00000.png": "size",
    }


def test_validate_images_splits_good_and_bad(image_folder: Path) -> None:
    expected = _bad_files(image_folder / "1")
    records = [
        RawRecord(path=str(p.relative_to(image_folder)), class_id=p.parent.name, track=p.stem[:5])
        for p in sorted(image_folder.rglob("*.png"))
    ]
    records.append(RawRecord(path="2/gone.png", class_id="2", track="gone"))
    expected["gone.png"] = "cannot stat"

    good, bad = validate_images(image_folder, records, LIMITS, workers=1)

    assert list(bad.columns) == QUARANTINE_COLUMNS
    assert {Path(p).name for p in bad["path"]} == set(expected)
    for row in bad.itertuples():
        assert expected[Path(row.path).name] in row.reason
    assert good == [r for r in records if Path(r.path).name not in expected]
    assert len(good) == 18  # 3 classes x 3 tracks x 2 frames


def test_validate_images_all_good_gives_empty_table(image_folder: Path) -> None:
    files = image_folder.rglob("*.png")
    records = [RawRecord(str(p.relative_to(image_folder)), p.parent.name, p.stem[:5]) for p in files]
    good, bad = validate_images(image_folder, records, LIMITS, workers=1)
    assert good == records and bad.empty and list(bad.columns) == QUARANTINE_COLUMNS


def test_unknown_source_fails_before_any_work_listing_the_registry(tmp_path: Path) -> None:
    cfg = from_mapping(DataConfig, {"source": "kaggle"}, "data")  # config leaves data.source to its registry
    with pytest.raises(ConfigError) as info:
        materialise(cfg, tmp_path / "raw", tmp_path / "cache")
    message = str(info.value)
    assert "data.source='kaggle'" in message and all(name in message for name in DATA_SOURCES)
    assert not (tmp_path / "raw").exists() and not list(tmp_path.iterdir())


def test_materialise_folder_quarantines_bad_files(tmp_path: Path, image_folder: Path) -> None:
    expected = _bad_files(image_folder / "0")
    (image_folder / "2" / "README.txt").write_text("not an image suffix: not a record")
    before = sorted(p.relative_to(image_folder) for p in image_folder.rglob("*"))
    cfg = from_mapping(
        DataConfig,
        {
            "source": "folder",
            "classes": {"0": "zero", "1": "one"},
            "decode_workers": 1,
            "folder": {"path": str(image_folder), "track_pattern": r"^(\d+)_"},
        },
        "data",
    )
    raw = tmp_path / "raw"

    good, bad = materialise(cfg, raw, tmp_path / "cache")

    quarantine = pd.read_csv(raw / QUARANTINE_FILE, dtype=str)
    assert list(quarantine.columns) == QUARANTINE_COLUMNS
    assert sorted(quarantine["path"]) == sorted(f"0/{name}" for name in expected) == sorted(bad["path"])
    assert (quarantine["class_id"] == "0").all() and quarantine["reason"].notna().all()
    for path in quarantine["path"]:
        assert (raw / "quarantine" / path).is_file()

    index = read_records(raw / INDEX_FILE)
    assert index == good and len(index) == 18
    assert {(r.class_id, r.track) for r in index} == {(c, f"{t:05d}") for c in "012" for t in range(3)}
    # One shard per class holds exactly its usable images, byte for byte, named by their path in the folder.
    assert sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*.zip")) == [shard_name(c) for c in "012"]
    for record in index:
        assert record.shard == shard_name(record.class_id)
        with zipfile.ZipFile(raw / record.shard) as zf:
            assert zf.read(record.path) == (image_folder / record.path).read_bytes()
    assert not (raw / STAGING_DIR).exists() and not list(raw.rglob("README.txt"))  # images only, no staging

    # the user's folder is untouched, and no temporary is left beside the output
    assert sorted(p.relative_to(image_folder) for p in image_folder.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_materialise_folder_missing_path_fails_and_leaves_nothing(tmp_path: Path) -> None:
    folder = {"path": str(tmp_path / "nope")}
    cfg = from_mapping(DataConfig, {"source": "folder", "classes": {"0": "a"}, "folder": folder}, "data")
    with pytest.raises(FileNotFoundError, match=r"data\.folder\.path"):
        materialise(cfg, tmp_path / "raw", tmp_path / "cache")
    assert not (tmp_path / "raw").exists()
