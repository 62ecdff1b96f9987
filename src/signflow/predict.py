"""Classify new image files with a trained checkpoint: the library behind ``signflow predict``.

Every input file gets one result, either a prediction or the reason it could
not be used, so one broken file never hides the others. Files are decoded in a
process pool (decoding dominates for small models) and classified in batches,
a block of files at a time so memory stays bounded for any number of inputs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from signflow.config import flatten
from signflow.data.images import (
    DEFAULT_LIMITS,
    BadImageError,
    DecodeOutcome,
    ImageLimits,
    crop_and_resize,
    read_rgb,
    try_decode,
)
from signflow.data.sources.folder import IMAGE_SUFFIXES
from signflow.inference import LoadedModel, predict_probs
from signflow.openset import decide
from signflow.parallel import resolve_workers

log = logging.getLogger(__name__)

# Key the evaluate stage writes its validation-chosen rejection threshold under.
THRESHOLD_KEY = "openset.threshold"
# Fewer files than this are decoded in-process: a pool's start-up costs more.
POOL_MIN_FILES = 16
# Files decoded and classified together; at 224 px one block is ~150 MB of pixels.
PREDICT_BLOCK = 1024
# Probability chart: most images drawn, thumbnail side (px).
PLOT_MAX_IMAGES = 24
PLOT_THUMB_PX = 64
TABLE_FAILED = "FAILED"

Result = dict[str, Any]
Outcome = DecodeOutcome


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
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


# ------------------------------------------------------------------ decoding


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
        yield lambda jobs: map(try_decode, jobs)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield lambda jobs: pool.map(try_decode, jobs)


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
    reason it failed. ``workers=0`` uses one process per core.
    """
    paths = [Path(p) for p in paths]
    with _decoder(len(paths), workers) as mapper:
        return _decode_with(mapper, paths, size, limits)


# ------------------------------------------------------------------ prediction


def _result(path: Path, probs: np.ndarray, class_names: list[str], predicted: str, top_k: int) -> Result:
    order = np.argsort(-probs, kind="stable")[:top_k]
    return {
        "path": str(path),
        "prediction": predicted,
        "confidence": float(probs.max()),
        "probabilities": {name: float(p) for name, p in zip(class_names, probs, strict=True)},
        "top_k": [[class_names[i], float(probs[i])] for i in order],
    }


def _predict_block(
    loaded: LoadedModel, mapper: Mapper, paths: Sequence[Path], limits: ImageLimits,
    threshold: float, top_k: int, batch_size: int,
) -> list[Result]:
    images, errors = _decode_with(mapper, paths, loaded.image_size, limits)
    probs = predict_probs(loaded, images, batch_size)  # (M, K); M may be 0
    labels = decide(probs, loaded.class_names, threshold)
    decoded = iter(zip(probs, labels, strict=True))
    results = []
    for path, error in zip(paths, errors, strict=True):
        if error is not None:
            results.append({"path": str(path), "error": error})
        else:
            row, label = next(decoded)
            results.append(_result(path, row, loaded.class_names, label, top_k))
    return results


def predict_files(
    loaded: LoadedModel,
    paths: Iterable[Path | str],
    threshold: float = 0.0,
    top_k: int = 3,
    batch_size: int = 256,
    workers: int = 0,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> list[Result]:
    """One result per input file (directories expanded by :func:`collect_inputs`), in order.

    A result is ``{"path", "prediction", "confidence", "probabilities",
    "top_k"}`` or ``{"path", "error"}``. ``confidence`` is the winning class's
    probability; the prediction is "unknown" when that class is the model's
    unknown class or when the known-ness score (largest known-class
    probability) is below ``threshold``.
    """
    files = collect_inputs(paths)
    results: list[Result] = []
    with _decoder(len(files), workers) as mapper:
        for start in range(0, len(files), PREDICT_BLOCK):
            block = files[start:start + PREDICT_BLOCK]
            results.extend(_predict_block(loaded, mapper, block, limits, threshold, top_k, batch_size))
    failed = sum("error" in r for r in results)
    if failed:
        log.warning("%d of %d files could not be classified", failed, len(results))
    return results


def resolve_threshold(value: str, metrics_path: Path) -> float:
    """The rejection threshold: a number in [0, 1], or ``auto`` for the evaluate stage's choice.

    ``auto`` falls back to 0 (never reject) with a warning when the metrics
    file or its key is missing, so predict works before `dvc repro evaluate`.
    """
    if value.strip().lower() == "auto":
        return _threshold_from_metrics(Path(metrics_path))
    try:
        threshold = float(value)
    except ValueError:
        raise ValueError(f"--threshold must be 'auto' or a number in [0, 1], got {value!r}") from None
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--threshold must lie in [0, 1], got {threshold}")
    return threshold


def _threshold_from_metrics(metrics_path: Path) -> float:
    if not metrics_path.is_file():
        log.warning("%s not found (run `dvc repro evaluate`); threshold 0: nothing rejected", metrics_path)
        return 0.0
    try:
        # flatten: accept the flat key evaluate writes and a nested {"openset": {"threshold"}} alike.
        threshold = flatten(json.loads(metrics_path.read_text())).get(THRESHOLD_KEY)
    except (json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"{metrics_path} is not a JSON object of metrics: {err}") from None
    if threshold is None:
        log.warning("%s has no %s; threshold 0: nothing rejected", metrics_path, THRESHOLD_KEY)
        return 0.0
    log.info("threshold %.4f from %s", threshold, metrics_path)
    return float(threshold)


# ------------------------------------------------------------------ output


def _table_row(result: Result) -> list[str]:
    if "error" in result:
        return [result["path"], TABLE_FAILED, "-", result["error"]]
    top = ", ".join(f"{name} {p:.3f}" for name, p in result["top_k"])
    return [result["path"], result["prediction"], f"{result['confidence']:.3f}", top]


def format_table(results: Sequence[Result]) -> str:
    """Aligned text table (path, prediction, confidence, top-k); failed files show FAILED and why."""
    rows = [["path", "prediction", "confidence", "top-k / error"], *map(_table_row, results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]) for row in rows]
    failed = sum("error" in r for r in results)
    lines.append(f"{len(results) - failed} classified, {failed} failed")
    return "\n".join(lines)


def _thumbnail(path: str, size: int) -> np.ndarray | None:
    try:
        return crop_and_resize(read_rgb(path), size)
    except (BadImageError, OSError):  # changed since prediction: draw the bars without it
        return None


def plot_probabilities(results: Sequence[Result], out_png: Path | str, threshold: float | None = None) -> None:
    """The probability chart (``plots.plot_probability_bars``, as in the report) of classified files.

    Failed files are left out; past ``PLOT_MAX_IMAGES`` images the rest are
    skipped with a warning, since a wall of tiny charts helps no one.
    """
    from signflow.plots import plot_probability_bars  # matplotlib: only when a chart is asked for

    shown = [r for r in results if "error" not in r]
    if len(shown) > PLOT_MAX_IMAGES:
        log.warning("plotting the first %d of %d images", PLOT_MAX_IMAGES, len(shown))
        shown = shown[:PLOT_MAX_IMAGES]
    class_names = list(shown[0]["probabilities"]) if shown else []
    probs = np.array([[r["probabilities"][name] for name in class_names] for r in shown]).reshape(len(shown), -1)
    titles = [f"{Path(r['path']).name}\n→ {r['prediction']}" for r in shown]
    images = [_thumbnail(r["path"], PLOT_THUMB_PX) for r in shown]
    plot_probability_bars(images, probs, class_names, titles, out_png, threshold)
