"""Hostile and unusual image files: converted to upright RGB uint8 where they are images, refused where not.

One decoder (``signflow.data.images.read_rgb``) serves download validation, the
add_unknown decode (``decode_job``) and ``signflow predict`` (``try_decode``); the
last test runs a folder source holding all of them through the download stage.
Already covered in tests/data/test_images.py (not repeated here): empty file, text named
.png, truncated PNG and JPEG, 100000x100000 and 5000x300 headers, too small, grayscale.
"""

from __future__ import annotations

import logging
import struct
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from signflow.config import DataConfig, from_mapping
from signflow.data.images import (
    IMAGE_SUFFIXES,
    BadImageError,
    ImageLimits,
    ImageRef,
    check_image,
    decode_job,
    read_rgb,
    try_decode,
)
from signflow.data.raw import materialise
from signflow.data.records import INDEX_FILE, QUARANTINE_COLUMNS, QUARANTINE_FILE, read_records

LIMITS = ImageLimits(min_side=8, max_side=4096)
EXIF_ORIENTATION = 0x0112
ROTATE_90_CW = 6  # EXIF: display the stored pixels turned 90 degrees clockwise
JPEG_TOLERANCE = 12  # lossy: mean absolute error in levels; a misplaced red quarter would give ~85


def _two_colour(height: int = 20, width: int = 30) -> np.ndarray:
    """RGB: red top-left quarter, blue elsewhere, so orientation and channel order are both visible."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:] = (0, 0, 255)
    rgb[: height // 2, : width // 2] = (255, 0, 0)
    return rgb


def _close(a: np.ndarray, b: np.ndarray, tolerance: int = JPEG_TOLERANCE) -> bool:
    """Same shape and pixels: exactly (tolerance 0) or within a mean error (JPEG rings at colour edges)."""
    if a.shape != b.shape:
        return False
    error = np.abs(a.astype(int) - b.astype(int))
    return not error.any() if tolerance == 0 else float(error.mean()) <= tolerance


def _noise(path: Path, side: int = 64) -> Path:
    image = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)
    return path


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _png_header_bomb(path: Path, width: int = 30_000, height: int = 30_000) -> Path:
    """A valid tiny PNG whose IHDR claims ``width`` x ``height`` (CRC fixed)."""
    Image.fromarray(_two_colour(10, 10)).save(path, format="PNG")
    data = bytearray(path.read_bytes())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(bytes(data))
    return path


def _jpeg_header_bomb(path: Path, width: int = 30_000, height: int = 30_000) -> Path:
    """A valid tiny JPEG whose SOF0 frame header claims ``width`` x ``height``."""
    Image.fromarray(_two_colour(16, 16)).save(path, format="JPEG")
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


# --- files that are images: converted ------------------------------------------------------


def _sixteen_bit_grey(path: Path) -> np.ndarray:
    wide = (np.arange(20 * 30, dtype=np.uint32).reshape(20, 30) * 109).astype(np.uint16)  # 0 .. 65291
    Image.fromarray(wide).save(path)
    assert Image.open(path).mode == "I;16"
    grey = (wide >> 8).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _sixteen_bit_rgb(path: Path) -> np.ndarray:
    rgb = _two_colour()
    assert cv2.imwrite(str(path), rgb[..., ::-1].astype(np.uint16) * 257)  # 16 bits per channel, BGR on disk
    return rgb


def _rgba(path: Path) -> np.ndarray:
    rgb = _two_colour()
    alpha = np.full(rgb.shape[:2], 128, np.uint8)
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    return rgb  # alpha dropped, colours kept (as torchvision's loader does)


def _cmyk_jpeg(path: Path) -> np.ndarray:
    rgb = _two_colour()
    Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    return rgb


def _palette_png(path: Path) -> np.ndarray:
    rgb = _two_colour()
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(path, transparency=0)
    assert Image.open(path).mode == "P"
    return rgb


def _animated_gif(path: Path) -> np.ndarray:
    first, second = _two_colour(), np.full((20, 30, 3), (0, 255, 0), np.uint8)
    Image.fromarray(first).save(path, save_all=True, append_images=[Image.fromarray(second)], duration=100)
    assert Image.open(path).n_frames == 2
    return first


def _exif_rotated_jpeg(path: Path) -> np.ndarray:
    stored = _two_colour(20, 30)  # 30 wide, 20 high as stored; red in the stored top-left
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    return np.ascontiguousarray(np.rot90(stored, k=-1))  # upright: 20 wide, 30 high, red top-right


def _corrupt_exif_jpeg(path: Path) -> np.ndarray:
    """A JPEG whose EXIF block is garbage: Pillow warns, the pixels are kept as stored."""
    rgb = _two_colour()
    Image.fromarray(rgb).save(path, quality=95)
    junk = b"Exif\0\0MM\0*\0\0\0\x08\xff\xff" + b"\x01" * 40
    data = path.read_bytes()
    path.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(junk) + 2) + junk + data[2:])
    return rgb


def _png_named_jpg(path: Path) -> np.ndarray:
    rgb = _two_colour()
    Image.fromarray(rgb).save(path, format="PNG")
    return rgb


def _jpeg_named_png(path: Path) -> np.ndarray:
    rgb = _two_colour()
    Image.fromarray(rgb).save(path, format="JPEG", quality=95)
    return rgb


def _ppm_named_png(path: Path) -> np.ndarray:
    rgb = _two_colour()
    Image.fromarray(rgb).save(path, format="PPM")
    return rgb


CONVERTED = {
    "16bit-grey.png": (_sixteen_bit_grey, 0),
    "16bit-rgb.png": (_sixteen_bit_rgb, 0),
    "rgba.png": (_rgba, 0),
    "cmyk.jpg": (_cmyk_jpeg, JPEG_TOLERANCE),
    "palette.png": (_palette_png, 0),
    "animated.gif": (_animated_gif, 0),
    "exif-rotated.jpg": (_exif_rotated_jpeg, JPEG_TOLERANCE),
    "corrupt-exif.jpg": (_corrupt_exif_jpeg, JPEG_TOLERANCE),
    "png-named.jpg": (_png_named_jpg, 0),
    "jpeg-named.png": (_jpeg_named_png, JPEG_TOLERANCE),
    "ppm-named.png": (_ppm_named_png, 0),
}


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's warning, the expected part of corrupt-exif.jpg
@pytest.mark.parametrize("name", CONVERTED)
def test_image_variants_become_upright_rgb_uint8(tmp_path: Path, name: str) -> None:
    write, tolerance = CONVERTED[name]
    expected = write(tmp_path / name)
    rgb = read_rgb(tmp_path / name, LIMITS)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert _close(rgb, expected, tolerance), f"{name}: mean difference {np.abs(rgb.astype(int) - expected).mean()}"


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    """Pillow's convert("RGB") clips 16-bit values at 255: a dark 16-bit image came out white."""
    Image.fromarray(np.full((16, 16), 1000, np.uint16)).save(tmp_path / "dark16.png")
    assert (read_rgb(tmp_path / "dark16.png", LIMITS) == 1000 >> 8).all()


def test_exif_rotation_is_applied_before_the_size_check(tmp_path: Path) -> None:
    stored = np.zeros((8, 40, 3), np.uint8)  # 40 x 8 stored, 8 x 40 upright
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW
    Image.fromarray(stored).save(tmp_path / "tall.jpg", exif=exif)
    assert read_rgb(tmp_path / "tall.jpg", ImageLimits(min_side=8, max_side=40)).shape == (40, 8, 3)


def test_every_decoder_entry_point_gives_the_same_upright_rgb(tmp_path: Path) -> None:
    """Download validation, add_unknown (decode_job, from a shard) and predict (try_decode) share read_rgb."""
    expected = _exif_rotated_jpeg(tmp_path / "photo.jpg")
    loose = read_rgb(tmp_path / "photo.jpg", LIMITS)
    with zipfile.ZipFile(tmp_path / "shard.zip", "w") as zf:
        zf.write(tmp_path / "photo.jpg", "14/photo.jpg")
    size = max(expected.shape[:2])  # 30: the resize only stretches the 20-px side
    from_shard = decode_job((ImageRef(str(tmp_path / "shard.zip"), "14/photo.jpg"), None, size, LIMITS))
    for_predict, reason = try_decode((str(tmp_path / "photo.jpg"), size, LIMITS))
    assert check_image(tmp_path / "photo.jpg", LIMITS) is None and reason is None
    assert _close(loose, expected)
    assert np.array_equal(from_shard, for_predict)
    assert from_shard[0, -1, 0] > 200 and from_shard[0, 0, 2] > 200  # red top-right, blue top-left: upright


def test_gif_is_an_image_suffix() -> None:
    assert ".gif" in IMAGE_SUFFIXES  # else a folder source or `signflow predict DIR` would skip GIFs unseen


# --- files that are not usable images: refused, the reason says why ---------------------------


def test_truncated_ppm_is_refused(tmp_path: Path) -> None:
    path = _noise(tmp_path / "cut.ppm")
    assert check_image(path, LIMITS) is None  # valid before the cut
    reason = check_image(_truncate(path), LIMITS)
    assert reason is not None and "truncated" in reason


def test_one_pixel_image_is_refused_by_min_side(tmp_path: Path) -> None:
    Image.new("RGB", (1, 1), (255, 0, 0)).save(tmp_path / "dot.png")
    assert check_image(tmp_path / "dot.png", LIMITS) == "size 1x1 outside [8, 4096] px"
    assert check_image(tmp_path / "dot.png", ImageLimits(min_side=1, max_side=8)) is None


@pytest.mark.parametrize("write", [_png_header_bomb, _jpeg_header_bomb], ids=["png", "jpeg"])
@pytest.mark.parametrize("max_side", [4096, 40_000], ids=["our-limit", "raised-limit-pillow-cap"])
def test_decompression_bomb_header_refused_before_decoding(
    tmp_path: Path, no_decode: list[str], write, max_side: int  # type: ignore[no-untyped-def]
) -> None:
    """30000 x 30000 RGB would be 2.7 GB: refused from the header by our limit, or by Pillow's cap if it is raised."""
    path = write(tmp_path / "bomb.img")
    with pytest.raises(BadImageError) as info:
        read_rgb(path, ImageLimits(min_side=8, max_side=max_side))
    assert "refused before decoding (decompression bomb?)" in str(info.value) and "900000000 pixels" in str(info.value)
    assert no_decode == []  # no pixel was decoded, so nothing near the claimed size was allocated


# --- the download stage over a folder holding all of them -------------------------------------

REFUSED = {  # file name -> a word of its quarantine reason
    "empty.png": "empty",
    "truncated.ppm": "truncated",
    "truncated.png": "truncated",
    "truncated.jpg": "truncated",
    "one-pixel.png": "1x1",
    "bomb-header.png": "bomb",
    "bomb-header.jpg": "bomb",
    "text.jpg": "not an image",
}


def _write_refused(folder: Path) -> None:
    (folder / "empty.png").write_bytes(b"")
    for suffix in (".ppm", ".png", ".jpg"):
        _truncate(_noise(folder / f"truncated{suffix}"))
    Image.new("RGB", (1, 1)).save(folder / "one-pixel.png")
    _png_header_bomb(folder / "bomb-header.png")
    _jpeg_header_bomb(folder / "bomb-header.jpg")
    (folder / "text.jpg").write_text("a web page saved as a photo\n")


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_download_stage_converts_images_and_quarantines_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "photos"
    stop = folder / "stop"
    stop.mkdir(parents=True)
    for name, (write, _) in CONVERTED.items():
        write(stop / name)
    _write_refused(stop)
    cfg = from_mapping(
        DataConfig,
        {"source": "folder", "classes": {"14": "stop"}, "decode_workers": 1, "folder": {"path": str(folder)}},
        "data",
    )
    raw = tmp_path / "raw"

    with caplog.at_level(logging.WARNING, logger="signflow.data.raw"):
        good, bad = materialise(cfg, raw, tmp_path / "cache")

    quarantine = pd.read_csv(raw / QUARANTINE_FILE, dtype=str)
    assert list(quarantine.columns) == QUARANTINE_COLUMNS
    assert sorted(quarantine["path"]) == sorted(f"stop/{name}" for name in REFUSED) == sorted(bad["path"])
    for row in quarantine.itertuples():
        assert REFUSED[Path(row.path).name] in row.reason, row
        assert (raw / "quarantine" / row.path).read_bytes() == (folder / row.path).read_bytes()
    assert (quarantine["class_id"] == "14").all()
    assert f"quarantined {len(REFUSED)} of {len(REFUSED) + len(CONVERTED)} images" in caplog.text

    index = read_records(raw / INDEX_FILE)
    assert index == good and sorted(r.path for r in index) == sorted(f"stop/{name}" for name in CONVERTED)
    for record in index:  # as add_unknown decodes them: from the shard
        rgb = decode_job((ImageRef(str(raw / record.shard), record.path), None, 16, LIMITS))
        assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
