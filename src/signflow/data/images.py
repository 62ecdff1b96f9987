"""Image validation and decoding: the only place image files are opened.

Headers are read before pixels, so an absurd size (a decompression bomb) is
refused without allocating it; a full decode then catches truncated files,
which OpenCV would silently return half grey. Whatever the file's mode (grey,
16-bit, palette, RGBA, CMYK, an animated GIF's first frame) and EXIF orientation,
the result is upright RGB uint8. An image is a loose file or a member of a raw
dataset's zip shard (:class:`ImageRef`); both decode the same way.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)


class BadImageError(ValueError):
    """An image file that cannot be used; the message says why."""


@dataclass(frozen=True)
class ImageLimits:
    min_side: int = 8
    max_side: int = 4096


DEFAULT_LIMITS = ImageLimits()  # frozen: safe to share as a default argument
# File suffixes taken as images when a folder is searched (data sources, `signflow predict DIR`).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
# Pillow modes holding more than 8 bits per pixel in one integer channel (16-bit grey PNG, PGM, TIFF).
# Pillow's own convert("RGB") clips them at 255, which turns a 16-bit image almost white.
WIDE_INTEGER_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
WIDE_TO_8_BITS = 8  # right shift from the 16-bit range to 0-255
# Open shards kept per process. An open shard holds its zip's whole directory (~600 bytes per member):
# keeping all 43 cost each decode worker 110 MB at 200k images. `decode_into` reads the rows shard by
# shard, so a process needs one at a time; the second serves a pool chunk that straddles two shards.
OPEN_SHARDS = 2


class ImageRef(NamedTuple):
    """Where an image's bytes are: the file ``path``, or member ``member`` of the zip ``path``."""

    path: str
    member: str = ""


ImageSource = Path | str | ImageRef


def image_ref(root: Path, path: str, shard: str = "") -> ImageRef:
    """A record's image: member ``path`` of the shard ``root/shard``, or the loose file ``root/path``."""
    return ImageRef(str(root / shard), path) if shard else ImageRef(str(root / path))


@functools.lru_cache(maxsize=OPEN_SHARDS)
def _open_shard(path: str, mtime_ns: int, size: int) -> zipfile.ZipFile:
    """One open handle per shard and process (pools start from forkserver: nothing is inherited).

    Keyed by modification time and size as well, so a shard rewritten at the same path is reopened.
    """
    return zipfile.ZipFile(path)


def _read_member(ref: ImageRef) -> bytes:
    try:
        stat = os.stat(ref.path)
        return _open_shard(ref.path, stat.st_mtime_ns, stat.st_size).read(ref.member)
    except KeyError as err:
        raise BadImageError(f"no member {ref.member!r} in shard {ref.path}") from err
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise BadImageError(f"cannot read {ref.member!r} from shard {ref.path}: {err}") from err


def _stat_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as err:
        raise BadImageError(f"cannot stat: {err.strerror}") from err


def _open_checked(source: ImageSource, limits: ImageLimits) -> Image.Image:
    if isinstance(source, ImageRef) and source.member:
        data = _read_member(source)
        size, opened = len(data), io.BytesIO(data)
    else:
        path = Path(source.path if isinstance(source, ImageRef) else source)
        size, opened = _stat_size(path), path
    if size == 0:
        raise BadImageError("empty file")
    try:
        image = Image.open(opened)
    except UnidentifiedImageError as err:
        raise BadImageError("not an image") from err
    except Image.DecompressionBombError as err:  # Pillow's pixel cap, checked on the header: nothing decoded yet
        raise BadImageError(f"refused before decoding (decompression bomb?): {err}") from err
    except OSError as err:
        raise BadImageError(f"unreadable: {err}") from err
    width, height = image.size
    if min(width, height) < limits.min_side or max(width, height) > limits.max_side:
        image.close()
        raise BadImageError(
            f"size {width}x{height} outside [{limits.min_side}, {limits.max_side}] px"
        )
    return image


def read_rgb(source: ImageSource, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode ``source`` fully to an RGB uint8 array (H, W, 3) or raise BadImageError."""
    image = _open_checked(source, limits)
    try:
        with image:
            # Our own size check above replaces Pillow's pixel cap, so large but
            # allowed images are not refused twice.
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # a phone photo's pixels stored sideways: stand it up
            rgb = _to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise BadImageError(f"corrupt or truncated: {err}") from err
    return rgb


def _to_rgb(image: Image.Image) -> np.ndarray:
    """A decoded image of any mode as an RGB uint8 array (H, W, 3)."""
    if image.mode in WIDE_INTEGER_MODES:
        wide = np.asarray(image).astype(np.int64)  # (H, W), up to 16 significant bits
        grey = np.clip(wide >> WIDE_TO_8_BITS, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def check_image(source: ImageSource, limits: ImageLimits = DEFAULT_LIMITS) -> str | None:
    """Return None for a usable image, else the reason it is not."""
    try:
        read_rgb(source, limits)
    except BadImageError as err:
        return str(err)
    return None


def crop_and_resize(
    rgb: np.ndarray, size: int, roi: tuple[int, int, int, int] | None = None
) -> np.ndarray:
    """Optionally crop to ``roi`` (x1, y1, x2, y2), then resize to ``size`` x ``size``."""
    if roi is not None:
        x1, y1, x2, y2 = roi
        height, width = rgb.shape[:2]
        x1, y1 = max(0, x1), max(0, y1)
        x2, y2 = min(width, x2), min(height, y2)
        if x2 > x1 and y2 > y1:
            rgb = rgb[y1:y2, x1:x2]
    shrinking = max(rgb.shape[:2]) > size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interpolation)


# ---- process-pool workers --------------------------------------------------------------
# They live in this light module on purpose: a pool worker imports the module of
# the function it runs, and importing signflow.serving.batch (torch, timm, sklearn) cost
# each worker about 5 s, more than decoding 2,000 images.

DecodeOutcome = tuple["np.ndarray | None", "str | None"]  # (image, None) or (None, reason)


def decode_job(job: tuple[ImageSource, tuple[int, int, int, int] | None, int, ImageLimits]) -> np.ndarray:
    """Decode, crop and resize one validated dataset image (raises on a bad file)."""
    source, roi, size, limits = job
    return crop_and_resize(read_rgb(source, limits), size, roi)


def check_job(job: tuple[ImageSource, ImageLimits]) -> str | None:
    return check_image(*job)


def try_decode(job: tuple[str, int, ImageLimits]) -> DecodeOutcome:
    """Decode one user file for prediction: the image, or the reason it failed (never raises)."""
    path, size, limits = job
    if Path(path).is_dir():
        return None, "directory with no images"
    if not Path(path).exists():
        return None, "no such file or directory"
    try:
        return crop_and_resize(read_rgb(path, limits), size), None
    except BadImageError as err:
        return None, str(err)
    except Exception as err:  # noqa: BLE001 - a decoder bug on one user file must not stop the rest
        return None, f"cannot decode ({type(err).__name__}: {err})"
