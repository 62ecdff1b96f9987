"""Classify new images with a loaded model: the library behind ``signflow predict`` and ``Predictor.predict``.

Every input (an image file, or an in-memory array) gets one result, either a
prediction or the reason it could not be used, so one broken file never hides
the others. Files are decoded in a thread pool (decoding dominates for small
models) and classified in batches, a block of files at a time so memory stays
bounded for any number of inputs. The model is a :class:`signflow.serving.predictor.Predictor`
(PyTorch or onnxruntime): this module imports neither, nor anything else heavy
(no torch, pandas, yaml), so the ONNX path runs in a ``signflow[predict]`` install.
"""

from __future__ import annotations

import itertools
import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from signflow.data.images import (
    DEFAULT_LIMITS,
    IMAGE_SUFFIXES,
    DecodeOutcome,
    ImageLimits,
    crop_and_resize,
    try_decode,
)
from signflow.evaluation.openset import decide
from signflow.parallel import resolve_workers

if TYPE_CHECKING:
    from signflow.serving.predictor import Predictor

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 3
DEFAULT_BATCH_SIZE = 256
# The "path" of an in-memory image in results: its position among the array inputs.
ARRAY_NAME = "<array {}>"
# Fewer files than this are decoded in-process: a pool's start-up costs more.
POOL_MIN_FILES = 16
# Files decoded and classified together; at 224 px one block is ~150 MB of pixels.
PREDICT_BLOCK = 1024

Result = dict[str, Any]
Outcome = DecodeOutcome
# What Predictor.predict takes: a path (file or directory), an RGB uint8 array (H, W, 3) or a stack (N, H, W, 3).
Input = str | os.PathLike | np.ndarray


# ------------------------------------------------------------------ inputs


def _images_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def collect_inputs(paths: Iterable[Path | str]) -> list[Path]:
    """Expand ``paths`` into the files to classify, in a stable order.

    A file named explicitly is kept whatever its suffix (the decoder judges it);
    a directory contributes its image files, recursively. A directory without
    any image, or a path that does not exist, is kept as itself so it gets its
    own error entry instead of silently vanishing. Duplicates are dropped.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        images = _images_under(path) if path.is_dir() else []
        found.extend(images or [path])
    seen: set[Path] = set()
    unique = []
    for path in found:
        key = _identity(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def _identity(path: Path) -> Path:
    """``path`` resolved, for deduplication; a symlink loop (which ``resolve`` refuses) stays as given."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: "Symlink loop" before Python 3.13
        return path.absolute()


# ------------------------------------------------------------------ decoding


_FILE_KINDS = {stat.S_ISFIFO: "a FIFO", stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
               stat.S_ISSOCK: "a socket"}


def _try_decode_file(job: tuple[str, int, ImageLimits]) -> Outcome:
    """:func:`try_decode`, but a FIFO, device or socket is refused without being opened.

    Opening a FIFO blocks until someone writes to it, and a device may never end.
    Missing files and directories keep ``try_decode``'s own messages.
    """
    try:
        mode = os.stat(job[0]).st_mode
    except FileNotFoundError:
        return try_decode(job)
    except OSError as err:  # a symlink loop, a name too long
        return None, f"cannot read: {err.strerror or err}"
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = next((name for test, name in _FILE_KINDS.items() if test(mode)), "a special file")
        return None, f"not a regular file ({kind})"
    return try_decode(job)


Mapper = Callable[[list[tuple[str, int, ImageLimits]]], Iterator[Outcome]]


@contextmanager
def _decoder(n_files: int, workers: int) -> Iterator[Mapper]:
    """A map over decode jobs: in-process for few files or one worker, else a thread pool.

    Threads, not processes: Pillow and OpenCV release the GIL while decoding, and a
    process pool cost seconds of worker start-up per call (measured in
    benchmarks/bench_predict.py), more than decoding thousands of small images.
    """
    workers = resolve_workers(workers)
    if workers == 1 or n_files < POOL_MIN_FILES:
        yield lambda jobs: map(_try_decode_file, jobs)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield lambda jobs: pool.map(_try_decode_file, jobs)


def _decode_with(
    mapper: Mapper, paths: Sequence[Path], size: int, limits: ImageLimits
) -> tuple[np.ndarray, list[str | None]]:
    outcomes = list(mapper([(str(p), size, limits) for p in paths]))
    images = [image for image, _ in outcomes if image is not None]
    stacked = np.stack(images) if images else np.empty((0, size, size, 3), dtype=np.uint8)
    return stacked, [error for _, error in outcomes]


def decode_many(
    paths: Sequence[Path | str], size: int, limits: ImageLimits = DEFAULT_LIMITS, workers: int = 0
) -> tuple[np.ndarray, list[str | None]]:
    """Decode ``paths`` to (M, size, size, 3) uint8, in parallel; a failed file never stops the rest.

    Returns the images of the files that decoded, in input order, and
    ``errors`` aligned with ``paths``: ``None`` for a decoded file, else the
    reason it failed. ``workers=0`` uses one thread per core.
    """
    paths = [Path(p) for p in paths]
    with _decoder(len(paths), workers) as mapper:
        return _decode_with(mapper, paths, size, limits)


# ------------------------------------------------------------------ prediction


def _result(path: Path | str, probs: np.ndarray, class_names: list[str], predicted: str, top_k: int) -> Result:
    order = np.argsort(-probs, kind="stable")[:top_k]
    return {
        "path": str(path),
        "prediction": predicted,
        "confidence": float(probs.max()),
        "probabilities": {name: float(p) for name, p in zip(class_names, probs, strict=True)},
        "top_k": [[class_names[i], float(probs[i])] for i in order],
    }


def _classify(
    predictor: Predictor, names: Sequence[str], images: np.ndarray, errors: Sequence[str | None],
    threshold: float | None, top_k: int, batch_size: int,
) -> list[Result]:
    """Results for ``names`` in order: ``errors[i]`` where set, else the next row of ``images`` classified."""
    probs = predictor.predict_images(images, batch_size)  # (M, K); M may be 0
    labels = decide(probs, predictor.class_names, threshold)
    decoded = iter(zip(probs, labels, strict=True))
    results = []
    for name, error in zip(names, errors, strict=True):
        if error is not None:
            results.append({"path": str(name), "error": error})
        else:
            row, label = next(decoded)
            results.append(_result(name, row, predictor.class_names, label, top_k))
    return results


def _predict_block(
    predictor: Predictor, mapper: Mapper, paths: Sequence[Path], limits: ImageLimits,
    threshold: float | None, top_k: int, batch_size: int,
) -> list[Result]:
    images, errors = _decode_with(mapper, paths, predictor.image_size, limits)
    return _classify(predictor, paths, images, errors, threshold, top_k, batch_size)


def _log_failed(results: Sequence[Result], what: str) -> None:
    failed = sum("error" in r for r in results)
    if failed:
        log.warning("%d of %d %s could not be classified", failed, len(results), what)


def predict_files(
    predictor: Predictor,
    paths: Iterable[Path | str],
    threshold: float | None = None,
    top_k: int = DEFAULT_TOP_K,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 0,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> list[Result]:
    """One result per input file (directories expanded by :func:`collect_inputs`), in order.

    A result is ``{"path", "prediction", "confidence", "probabilities",
    "top_k"}`` or ``{"path", "error"}``. ``confidence`` is the winning class's
    probability; the prediction is "unknown" when that class is the model's
    unknown class or when the known-ness score (largest known-class
    probability) is below ``threshold`` (``None``: the predictor's own).
    """
    threshold = predictor.threshold if threshold is None else threshold
    files = collect_inputs(paths)
    results: list[Result] = []
    with _decoder(len(files), workers) as mapper:
        for start in range(0, len(files), PREDICT_BLOCK):
            block = files[start:start + PREDICT_BLOCK]
            results.extend(_predict_block(predictor, mapper, block, limits, threshold, top_k, batch_size))
    _log_failed(results, "files")
    return results


# ------------------------------------------------------------------ in-memory images


def _array_images(array: np.ndarray) -> list[np.ndarray]:
    """The images of one array input: itself (H, W, 3), or each of a stack (N, H, W, 3)."""
    return list(array) if array.ndim == 4 else [array]


def fit_array(image: np.ndarray, size: int) -> tuple[np.ndarray | None, str | None]:
    """An RGB uint8 (H, W, 3) array at ``size`` x ``size``, resized as a decoded file is; or why it cannot be."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        return None, f"expected a uint8 RGB array (H, W, 3) or a stack of them, got {image.dtype} {image.shape}"
    if image.shape[:2] == (size, size):
        return image, None  # already the model's size (e.g. a stack made for it): used as is
    return crop_and_resize(image, size), None


def predict_arrays(
    predictor: Predictor,
    arrays: Iterable[np.ndarray],
    threshold: float | None = None,
    top_k: int = DEFAULT_TOP_K,
    batch_size: int = DEFAULT_BATCH_SIZE,
    first_index: int = 0,
) -> list[Result]:
    """One result per image of ``arrays`` (each (H, W, 3), or a stack (N, H, W, 3)), named ``<array i>``.

    Images of any size are resized exactly as decoded files are
    (:func:`signflow.data.images.crop_and_resize`); one that is not uint8 RGB
    gets its own error result. ``first_index`` numbers the first image.
    """
    threshold = predictor.threshold if threshold is None else threshold
    images = [image for array in arrays for image in _array_images(np.asarray(array))]
    names = [ARRAY_NAME.format(first_index + i) for i in range(len(images))]
    results: list[Result] = []
    for start in range(0, len(images), PREDICT_BLOCK):
        fitted = [fit_array(image, predictor.image_size) for image in images[start:start + PREDICT_BLOCK]]
        ok = [image for image, _ in fitted if image is not None]
        size = predictor.image_size
        stacked = np.stack(ok) if ok else np.empty((0, size, size, 3), dtype=np.uint8)
        results.extend(_classify(predictor, names[start:start + PREDICT_BLOCK], stacked,
                                 [error for _, error in fitted], threshold, top_k, batch_size))
    _log_failed(results, "in-memory images")
    return results


def predict_inputs(
    predictor: Predictor,
    inputs: Input | Iterable[Input],
    threshold: float | None = None,
    top_k: int = DEFAULT_TOP_K,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 0,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> list[Result]:
    """Files, directories and arrays mixed, in input order: runs of paths go to :func:`predict_files`
    and runs of arrays to :func:`predict_arrays`, so each run is batched."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike, np.ndarray)) else list(inputs)
    results: list[Result] = []
    arrays_seen = 0
    for is_array, run in itertools.groupby(items, key=lambda item: isinstance(item, np.ndarray)):
        run = list(run)
        if is_array:
            found = predict_arrays(predictor, run, threshold, top_k, batch_size, first_index=arrays_seen)
            arrays_seen += len(found)
        else:
            found = predict_files(predictor, run, threshold, top_k, batch_size, workers, limits)
        results.extend(found)
    return results
