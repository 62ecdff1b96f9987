"""Export a trained checkpoint to ONNX, verified against PyTorch, optionally quantised to int8.

The exported graph is everything ``signflow predict`` does after decoding:
uint8 RGB images (N, S, S, 3) in, calibrated probabilities (N, K) out, with
the normalisation, the linear strategy's upsampling and pooled stages, and the
temperature folded in. So a consumer needs onnxruntime, the JSON sidecar
(class names, size, threshold) and an image decoder, nothing of signflow's.
Nothing is assumed: :func:`compare` runs both models on the same images and
the stage fails unless every predicted class agrees.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import signflow
from signflow.files import atomic_path, file_digest, write_json
from signflow.model.inference import LoadedModel, predict_probs
from signflow.model.transforms import eval_transform
from signflow.serving.predictor import (
    INPUT_NAME,
    INPUT_SPEC,
    ONNX_FORMAT,
    ONNX_FORMAT_VERSION,
    OUTPUT_NAME,
    Predictor,
    load_predictor,
    sidecar_path,
)

log = logging.getLogger(__name__)

# Batch of the example input the exporter traces with (the batch axis stays dynamic).
TRACE_BATCH = 2
# Ops int8 quantises: the convolutions (but sensitive_convs). The head, softmax, resize
# and input scaling stay float: the concatenated multi-stage features span very
# different ranges, which one int8 scale cannot share.
QUANTIZED_OPS = ["Conv"]
# The exporter's graph passes log every rewrite at INFO: hundreds of lines per export.
CHATTY_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx")


class ExportError(RuntimeError):
    """The exported model does not reproduce PyTorch's predictions, or int8 lost too much."""


class ProbabilityModel(nn.Module):
    """uint8 (N, S, S, 3) RGB -> calibrated probabilities: the graph that gets exported."""

    def __init__(self, loaded: LoadedModel) -> None:
        super().__init__()
        self.model = loaded.model
        self.normalization = loaded.normalization
        self.temperature = loaded.temperature

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(eval_transform(images, self.normalization))
        return torch.softmax(logits / self.temperature, dim=1)


def build_sidecar(loaded: LoadedModel, *, threshold: float, opset: int, source_checkpoint: Path | None) -> dict:
    """Everything a consumer of the ONNX file needs besides the graph."""
    return {
        "format": ONNX_FORMAT,
        "format_version": ONNX_FORMAT_VERSION,
        "class_names": list(loaded.class_names),
        "unknown_class": loaded.class_names[loaded.unknown_index] if loaded.unknown_index is not None else None,
        "image_size": loaded.image_size,
        "input": dict(INPUT_SPEC),
        "output": {"name": OUTPUT_NAME, "calibrated": True},
        "threshold": float(threshold),
        "temperature": float(loaded.temperature),
        "opset": opset,
        "backbone": loaded.model.name,
        "signflow_version": signflow.__version__,
        "source_checkpoint": {
            "path": source_checkpoint.as_posix() if source_checkpoint else None,
            "sha256": file_digest(source_checkpoint, "sha256") if source_checkpoint else None,
        },
    }


def export_onnx(
    loaded: LoadedModel, out_path: Path | str, *, threshold: float, opset: int = 18,
    source_checkpoint: Path | None = None,
) -> dict:
    """Write ``out_path`` (ONNX, dynamic batch) and its sidecar, each atomically; returns the sidecar."""
    import onnx

    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    wrapper = ProbabilityModel(loaded).to("cpu").eval()
    example = torch.zeros((TRACE_BATCH, loaded.image_size, loaded.image_size, 3), dtype=torch.uint8)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        torch.onnx.export(
            wrapper, (example,), tmp, dynamo=True, opset_version=opset, external_data=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False,
            dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
        )
        onnx.checker.check_model(str(tmp))
    loaded.model.to(loaded.device)  # the wrapper moved the shared module to the CPU
    sidecar = build_sidecar(loaded, threshold=threshold, opset=opset, source_checkpoint=source_checkpoint)
    write_json(sidecar_path(out_path), sidecar)
    log.info("exported %s (opset %d, %.1f MB)", out_path, opset, out_path.stat().st_size / 2**20)
    return sidecar


@dataclass(frozen=True)
class Agreement:
    """How closely two models' probabilities agree on the same images."""

    n_images: int
    mismatched: int  # images whose predicted class differs
    max_abs_diff: float  # largest |p_a - p_b| over every image and class


def compare(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    if reference.shape != candidate.shape:
        raise ExportError(f"probability shapes differ: {reference.shape} vs {candidate.shape}")
    mismatched = int((reference.argmax(1) != candidate.argmax(1)).sum())
    diff = float(np.abs(reference - candidate).max()) if reference.size else 0.0
    return Agreement(len(reference), mismatched, diff)


def check_agreement(agreement: Agreement, tolerance: float, what: str) -> None:
    """Fail unless every class agrees and every probability is within ``tolerance``."""
    if agreement.mismatched or agreement.max_abs_diff >= tolerance:
        raise ExportError(
            f"{what} does not reproduce PyTorch on {agreement.n_images} test images: "
            f"{agreement.mismatched} predicted classes differ, largest probability difference "
            f"{agreement.max_abs_diff:.3g} (allowed: none differ, below {tolerance:g} = export.tolerance)"
        )


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy over the rows with a trained label (label >= 0)."""
    known = labels >= 0
    return float((probs[known].argmax(1) == labels[known]).mean()) if known.any() else float("nan")


def images_per_second(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, repeats: int) -> float:
    """Throughput of ``predict`` on ``images``: the best of ``repeats`` runs after a warm-up."""
    predict(images[:1])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        predict(images)
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def torch_predictor(loaded: LoadedModel, batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda images: predict_probs(loaded, images, batch_size)


def onnx_predictor(predictor: Predictor, batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda images: predictor.predict_images(images, batch_size)


# ------------------------------------------------------------------ int8


def _batches(images: np.ndarray, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    for start in range(0, len(images), batch_size):
        yield {INPUT_NAME: np.ascontiguousarray(images[start:start + batch_size])}


def sensitive_convs(model: Any) -> list[str]:
    """Conv nodes int8 leaves in float: the stem (it sees the raw image) and the depthwise convolutions.

    Measured on the default model's test split: quantising every Conv lost
    10.7 accuracy points, sparing the stem 4.0, sparing the stem and the
    depthwise convolutions (whose per-channel ranges differ most) none.
    """
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    depthwise = [node.name for node in convs if any(a.name == "group" and a.i > 1 for a in node.attribute)]
    return [convs[0].name, *depthwise] if convs else []


def quantize_int8(model_path: Path | str, out_path: Path | str, calibration: np.ndarray, batch_size: int) -> None:
    """Static int8 quantisation (QDQ, per-channel weights) calibrated on ``calibration`` images."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = _batches(calibration, batch_size)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    out_path = Path(out_path)
    with atomic_path(out_path) as tmp, _quiet_root_logger():
        prepared = tmp.with_name("prepared.onnx")  # shape inference + graph clean-up, as onnxruntime advises
        # skip_symbolic_shape: its symbolic inference cannot follow the dynamic batch through the resize.
        quant_pre_process(str(model_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=QUANTIZED_OPS, nodes_to_exclude=sensitive_convs(onnx.load(prepared)))
    log.info("quantised %s -> %s (%.1f MB)", model_path, out_path, out_path.stat().st_size / 2**20)


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantiser logs a line per rescaled weight channel on the root logger, at INFO."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


# ------------------------------------------------------------------ the stage's work

SPEED_REPEATS = 3


@dataclass(frozen=True)
class ExportPaths:
    model: Path
    int8: Path
    source_checkpoint: Path | None  # hashed into the sidecar


@dataclass(frozen=True)
class ExportResult:
    metrics: dict[str, float]  # deterministic: metrics/export.json, in the pull-request diff
    timings: dict[str, float]  # speeds: metrics/timings/export.json, shown apart
    sidecar: dict


def spread_sample(images: np.ndarray, count: int) -> np.ndarray:
    """``count`` images evenly spaced through ``images`` (manifests are grouped by class: this spans them all)."""
    picks = np.unique(np.linspace(0, len(images) - 1, min(count, len(images))).round().astype(int))
    return np.asarray(images[picks])


def export_verified(
    loaded: LoadedModel, cfg: Any, paths: ExportPaths, *, test_images: np.ndarray, test_labels: np.ndarray,
    train_images: np.ndarray, threshold: float, batch_size: int,
) -> ExportResult:
    """Export, then prove it: classes and probabilities against PyTorch on the whole test split.

    ``cfg`` is the ``export`` section (:class:`signflow.config.ExportConfig`).
    With ``cfg.quantize`` also write the int8 model, calibrated on training
    images, and fail if it loses more than ``cfg.max_int8_drop`` accuracy points.
    """
    sidecar = export_onnx(loaded, paths.model, threshold=threshold, opset=cfg.opset,
                          source_checkpoint=paths.source_checkpoint)
    # The consumer's own loader: the sidecar and the graph's contract are checked on the way.
    exported = load_predictor(paths.model)
    torch_probs = predict_probs(loaded, test_images, batch_size)
    onnx_probs = exported.predict_images(test_images, batch_size)
    agreement = compare(torch_probs, onnx_probs)
    check_agreement(agreement, cfg.tolerance, str(paths.model))
    metrics = {
        "onnx.n_images": agreement.n_images,
        "onnx.mismatched_predictions": agreement.mismatched,
        "onnx.max_prob_diff": float(f"{agreement.max_abs_diff:.3g}"),
        "onnx.opset": cfg.opset,
        "onnx.size_mb": round(paths.model.stat().st_size / 2**20, 2),
        "onnx.test_accuracy": round(accuracy(onnx_probs, test_labels), 6),
        "torch.test_accuracy": round(accuracy(torch_probs, test_labels), 6),
    }
    bench = np.asarray(test_images[:cfg.benchmark_images])
    timings = {
        "torch.images_per_second": images_per_second(torch_predictor(loaded, batch_size), bench, SPEED_REPEATS),
        "onnx.images_per_second": images_per_second(onnx_predictor(exported, batch_size), bench, SPEED_REPEATS),
    }
    if cfg.quantize:
        metrics |= _quantized(paths, sidecar, onnx_probs, test_images, test_labels, train_images, cfg, batch_size)
        timings["int8.images_per_second"] = images_per_second(
            onnx_predictor(load_predictor(paths.int8), batch_size), bench, SPEED_REPEATS)
    timings = {k: round(v, 1) for k, v in timings.items()}
    timings["onnx.speedup_vs_torch"] = round(timings["onnx.images_per_second"] / timings["torch.images_per_second"], 2)
    log.info("ONNX agrees with PyTorch on %d test images (largest probability difference %.2g); %s",
             agreement.n_images, agreement.max_abs_diff, timings)
    return ExportResult(metrics, timings, sidecar)


def _quantized(
    paths: ExportPaths, sidecar: dict, onnx_probs: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray,
    train_images: np.ndarray, cfg: Any, batch_size: int,
) -> dict[str, float]:
    quantize_int8(paths.model, paths.int8, spread_sample(train_images, cfg.calibration_images), batch_size)
    write_json(sidecar_path(paths.int8), {**sidecar, "quantization": "int8 static (QDQ, per-channel weights)"})
    int8_probs = load_predictor(paths.int8).predict_images(test_images, batch_size)
    float_acc, int8_acc = accuracy(onnx_probs, test_labels), accuracy(int8_probs, test_labels)
    drop = (float_acc - int8_acc) * 100
    if drop > cfg.max_int8_drop:
        raise ExportError(f"int8 model {paths.int8} loses {drop:.2f} test-accuracy points ({float_acc:.4f} -> "
                          f"{int8_acc:.4f}), more than export.max_int8_drop = {cfg.max_int8_drop}; set "
                          "export.quantize: false or raise the limit")
    return {
        "int8.test_accuracy": round(int8_acc, 6),
        "int8.accuracy_change_points": round(-drop, 3) + 0.0,  # + 0.0: no "-0.0" in the metrics
        "int8.mismatched_vs_float": compare(onnx_probs, int8_probs).mismatched,
        "int8.size_mb": round(paths.int8.stat().st_size / 2**20, 2),
    }
