"""``signflow predict``: classify image files with a trained model, print a table or JSON, draw a chart.

The work is :mod:`signflow.serving.batch` and :mod:`signflow.serving.predictor`;
this module adds the command's options, its text table and its probability
chart (matplotlib, imported only when ``--plot`` asks for it). With an ONNX
model nothing heavy is imported (no torch, pandas, yaml).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from signflow import paths
from signflow.catalog import DEVICES
from signflow.cli import EXIT_FILES_FAILED, EXIT_OK
from signflow.commands.args import fail, int_at_least
from signflow.data.images import BadImageError, crop_and_resize, read_rgb

if TYPE_CHECKING:
    from signflow.serving.batch import Result
    from signflow.serving.predictor import Predictor

log = logging.getLogger(__name__)

# --model's default per backend.
DEFAULT_MODELS = {"torch": paths.BEST_MODEL, "onnx": paths.ONNX_MODEL}
# Probability chart: most images drawn, thumbnail side (px).
PLOT_MAX_IMAGES = 24
PLOT_THUMB_PX = 64
TABLE_FAILED = "FAILED"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # numpy, OpenCV: imported only when this command runs (onnxruntime and torch only when a model loads).
    from signflow.serving.batch import DEFAULT_BATCH_SIZE, DEFAULT_TOP_K
    from signflow.serving.predictor import list_backends

    parser.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_DIR",
                        help="image files and/or directories (searched recursively for images)")
    parser.add_argument("--backend", choices=list_backends(), default=None,
                        help="torch: a .pt checkpoint in PyTorch; onnx: an exported .onnx model in onnxruntime, "
                             "without torch (default: from --model's suffix, else torch)")
    parser.add_argument("--model", type=Path, default=None,
                        help="model file: .pt or .onnx (default: "
                             + ", ".join(f"{path} for {name}" for name, path in DEFAULT_MODELS.items()) + ")")
    parser.add_argument("--top-k", type=int_at_least(1), default=DEFAULT_TOP_K,
                        help="classes listed per image (default: %(default)s)")
    parser.add_argument("--threshold", default="auto",
                        help="known-ness below this gives 'unknown': a number in [0, 1], or 'auto' "
                             "for the threshold the evaluate stage chose on validation (from --metrics for a "
                             "checkpoint, from the sidecar JSON for an .onnx model) (default: %(default)s)")
    parser.add_argument("--metrics", type=Path, default=paths.EVALUATE_METRICS,
                        help="evaluate stage metrics read by --threshold auto with a checkpoint (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="also write a bar chart of probabilities per image")
    parser.add_argument("--batch-size", type=int_at_least(1), default=DEFAULT_BATCH_SIZE,
                        help="images per forward pass (default: %(default)s)")
    parser.add_argument("--workers", type=int_at_least(0), default=0,
                        help="decoding threads; 0 = one per core (default: %(default)s)")
    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help="torch backend only; onnx runs on the CPU (default: %(default)s)")


def _predict_model(args: argparse.Namespace) -> Path:
    """The model file: --model, else --backend's default; ValueError when --backend cannot run --model."""
    from signflow.serving.predictor import resolve_backend

    if args.model is None:
        return DEFAULT_MODELS[args.backend or "torch"]
    needs = resolve_backend(args.model)  # the suffix decides; --backend only states what the user expects
    if args.backend is not None and args.backend != needs:
        raise ValueError(f"--backend {args.backend} cannot run {args.model}: a {args.model.suffix} file needs "
                         f"--backend {needs} (or leave --backend out)")
    return args.model


def _load_predictor(args: argparse.Namespace) -> tuple[Predictor, float]:
    """The model and the rejection threshold, or ValueError (PredictorError) with one readable line."""
    from signflow.evaluation.openset import AUTO, resolve_threshold
    from signflow.serving.predictor import load_predictor

    model = _predict_model(args)
    if args.threshold.strip().lower() != AUTO:
        threshold = resolve_threshold(args.threshold, args.metrics)  # a bad value fails before the model loads
        return load_predictor(model, args.device, threshold), threshold
    predictor = load_predictor(model, args.device)
    # An ONNX model carries the evaluate stage's threshold in its sidecar; a checkpoint has none (--metrics).
    return predictor, resolve_threshold(AUTO, args.metrics, predictor.stored_threshold)


def run(args: argparse.Namespace) -> int:
    from signflow.serving.batch import predict_files

    try:
        predictor, threshold = _load_predictor(args)
    except ValueError as err:  # PredictorError included
        return fail(str(err))
    results = predict_files(predictor, args.inputs, threshold, args.top_k, args.batch_size, args.workers)
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    if args.plot:
        plot_probabilities(results, args.plot, threshold)
        log.info("wrote %s", args.plot)
    return EXIT_FILES_FAILED if any("error" in r for r in results) else EXIT_OK


# ------------------------------------------------------------------ output


def _printable(path: str) -> str:
    """A path as text any UTF-8 stream accepts: a name that is not UTF-8 shows its bytes as ``\\xNN``."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _table_row(result: Result) -> list[str]:
    path = _printable(result["path"])
    if "error" in result:
        return [path, TABLE_FAILED, "-", result["error"]]
    top = ", ".join(f"{name} {p:.3f}" for name, p in result["top_k"])
    return [path, result["prediction"], f"{result['confidence']:.3f}", top]


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
    from signflow.evaluation.plots import plot_probability_bars  # matplotlib: only when a chart is asked for

    shown = [r for r in results if "error" not in r]
    if len(shown) > PLOT_MAX_IMAGES:
        log.warning("plotting the first %d of %d images", PLOT_MAX_IMAGES, len(shown))
        shown = shown[:PLOT_MAX_IMAGES]
    class_names = list(shown[0]["probabilities"]) if shown else []
    probs = np.array([[r["probabilities"][name] for name in class_names] for r in shown]).reshape(len(shown), -1)
    titles = [f"{Path(r['path']).name}\n→ {r['prediction']}" for r in shown]
    images = [_thumbnail(r["path"], PLOT_THUMB_PX) for r in shown]
    plot_probability_bars(images, probs, class_names, titles, out_png, threshold)
