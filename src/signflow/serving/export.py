"""Export a trained checkpoint to ONNX, verified against PyTorch, optionally quantised to int8.

The exported graph is everything ``signflow predict`` does after decoding:
uint8 RGB images (N, S, S, 3) in, calibrated probabilities (N, K) out, with
the normalisation, the linear strategy's upsampling and pooled stages, and the
temperature folded in. So a consumer needs onnxruntime, the JSON sidecar
(class names, size, threshold) and an image decoder, nothing of signflow's.
Nothing is assumed: :func:`compare` runs both models on the same images and
the stage fails unless every predicted class agrees. The int8 copy is optional:
one that loses too much accuracy on this CPU is refused (not shipped, recorded
in the metrics), and the stage still ships the verified float model.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Iterator, Mapping
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
# The int8 format: QDQ, uint8 activations, int8 weights per channel, reduce_range (weights in 7 bits).
# On x86-64 CPUs without VNNI (AVX2, AVX-512 without VNNI) onnxruntime's U8S8 kernels use VPMADDUBSW,
# whose 16-bit sum of two uint8 x int8 products saturates with 8-bit weights (255 * 127 * 2 > 32767) and
# never with 7-bit ones (255 * 64 * 2 = 32640); VNNI and AMX accumulate in 32 bits. onnxruntime's guide
# prescribes reduce_range for exactly this ("When to use reduce-range and per-channel quantization?",
# https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html). A file exported on a
# VNNI CPU and served on an AVX2 one would saturate there, so the format never depends on the exporting
# CPU. Measured (accuracy and speed, both kinds of CPU): README "Shipping the model".
INT8_REDUCE_RANGE = True
INT8_FORMAT = "QDQ U8S8 per-channel reduce_range"  # what the sidecar and metrics/export.json record
# CPU flags that pick onnxruntime's int8 kernels (x86: AVX2 / AVX-512 without VNNI saturate U8S8,
# VNNI and AMX do not; ARM: dot product, i8mm), recorded so two machines' metrics explain their diff.
INT8_CPU_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
CPUINFO = Path("/proc/cpuinfo")


class ExportError(RuntimeError):
    """The exported float model does not reproduce PyTorch's predictions."""


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


def cpu_int8_flags(cpuinfo: Path = CPUINFO) -> str:
    """The machine and the :data:`INT8_CPU_FLAGS` its CPU reports (Linux's ``/proc/cpuinfo``), e.g. ``x86_64: avx2``."""
    try:
        lines = cpuinfo.read_text(errors="replace").splitlines()
    except OSError:
        return f"{platform.machine()}: unknown (no {cpuinfo})"
    # x86 lists "flags", ARM "Features"; every core repeats the line.
    reported = next((line.split(":", 1)[1].split() for line in lines if line.startswith(("flags", "Features"))), [])
    return f"{platform.machine()}: " + " ".join(flag for flag in INT8_CPU_FLAGS if flag in reported)


def runtime_facts() -> dict[str, str]:
    """Where the export ran and was verified: the CPU's int8 flags and onnxruntime's version and device."""
    import onnxruntime

    return {"cpu": cpu_int8_flags(), "onnxruntime": f"{onnxruntime.__version__} {onnxruntime.get_device()}"}


def build_sidecar(loaded: LoadedModel, *, threshold: float, opset: int, source_checkpoint: Path | None,
                  threshold_policy: Mapping[str, Any] | None = None) -> dict:
    """Everything a consumer of the ONNX file needs besides the graph, and the machine it was verified on.

    ``threshold_policy``: how the evaluate stage chose ``threshold``
    (``openset.threshold_policy_from_metrics``: name, setting, validation
    shares); null when the threshold was given by hand.
    """
    return {
        "format": ONNX_FORMAT,
        "format_version": ONNX_FORMAT_VERSION,
        "class_names": list(loaded.class_names),
        "unknown_class": loaded.class_names[loaded.unknown_index] if loaded.unknown_index is not None else None,
        "image_size": loaded.image_size,
        "input": dict(INPUT_SPEC),
        "output": {"name": OUTPUT_NAME, "calibrated": True},
        "threshold": float(threshold),
        "threshold_policy": dict(threshold_policy) if threshold_policy is not None else None,
        "temperature": float(loaded.temperature),
        "opset": opset,
        "backbone": loaded.model.name,
        "signflow_version": signflow.__version__,
        "source_checkpoint": {
            "path": source_checkpoint.as_posix() if source_checkpoint else None,
            "sha256": file_digest(source_checkpoint, "sha256") if source_checkpoint else None,
        },
        "exported_on": runtime_facts(),
    }


def export_onnx(
    loaded: LoadedModel, out_path: Path | str, *, threshold: float, opset: int = 18,
    source_checkpoint: Path | None = None, threshold_policy: Mapping[str, Any] | None = None,
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
    sidecar = build_sidecar(loaded, threshold=threshold, opset=opset, source_checkpoint=source_checkpoint,
                            threshold_policy=threshold_policy)
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
    """Static int8 quantisation in :data:`INT8_FORMAT`, calibrated on ``calibration`` images."""
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
                        reduce_range=INT8_REDUCE_RANGE, op_types_to_quantize=QUANTIZED_OPS,
                        nodes_to_exclude=sensitive_convs(onnx.load(prepared)))
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


def discard_int8(int8_path: Path) -> None:
    """Remove an int8 model and its sidecar: a refused or stale copy is never left beside the float model."""
    for path in (int8_path, sidecar_path(int8_path)):
        path.unlink(missing_ok=True)


# ------------------------------------------------------------------ the stage's work

SPEED_REPEATS = 3


@dataclass(frozen=True)
class ExportPaths:
    model: Path
    int8: Path
    source_checkpoint: Path | None  # hashed into the sidecar


@dataclass(frozen=True)
class ExportResult:
    metrics: dict[str, float | str]  # deterministic on one machine: metrics/export.json, in the pull-request diff
    timings: dict[str, float]  # speeds: metrics/timings/export.json, shown apart
    sidecar: dict


def spread_sample(images: np.ndarray, count: int) -> np.ndarray:
    """``count`` images evenly spaced through ``images`` (manifests are grouped by class: this spans them all)."""
    picks = np.unique(np.linspace(0, len(images) - 1, min(count, len(images))).round().astype(int))
    return np.asarray(images[picks])


def export_verified(
    loaded: LoadedModel, cfg: Any, paths: ExportPaths, *, test_images: np.ndarray, test_labels: np.ndarray,
    train_images: np.ndarray, threshold: float, batch_size: int, threshold_policy: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Export, then prove it: classes and probabilities against PyTorch on the whole test split.

    ``cfg`` is the ``export`` section (:class:`signflow.config.ExportConfig`).
    A float model that disagrees raises :class:`ExportError`. With ``cfg.quantize``
    also write the int8 model, calibrated on training images; it is optional, so
    one losing more than ``cfg.max_int8_drop`` accuracy points is refused with a
    warning (``int8.refused`` in the metrics), never an error.
    """
    discard_int8(paths.int8)  # an earlier run's int8 copy was made from another model
    sidecar = export_onnx(loaded, paths.model, threshold=threshold, opset=cfg.opset,
                          source_checkpoint=paths.source_checkpoint, threshold_policy=threshold_policy)
    # The consumer's own loader: the sidecar and the graph's contract are checked on the way.
    exported = load_predictor(paths.model)
    torch_probs = predict_probs(loaded, test_images, batch_size)
    onnx_probs = exported.predict_images(test_images, batch_size)
    agreement = compare(torch_probs, onnx_probs)
    check_agreement(agreement, cfg.tolerance, str(paths.model))
    metrics: dict[str, float | str] = {
        "machine.cpu": sidecar["exported_on"]["cpu"],
        "machine.onnxruntime": sidecar["exported_on"]["onnxruntime"],
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
        if not metrics["int8.refused"]:
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
) -> dict[str, float | str]:
    """Quantise, measure on the test split, and keep the int8 copy only within ``cfg.max_int8_drop``."""
    calibration = spread_sample(train_images, cfg.calibration_images)
    quantize_int8(paths.model, paths.int8, calibration, batch_size)
    write_json(sidecar_path(paths.int8), {
        **sidecar, "quantization": {"format": INT8_FORMAT, "calibration_images": len(calibration)}})
    int8_probs = load_predictor(paths.int8).predict_images(test_images, batch_size)
    float_acc, int8_acc = accuracy(onnx_probs, test_labels), accuracy(int8_probs, test_labels)
    drop = (float_acc - int8_acc) * 100
    metrics = {
        "int8.format": INT8_FORMAT,
        "int8.refused": int(drop > cfg.max_int8_drop),
        "int8.test_accuracy": round(int8_acc, 6),
        "int8.accuracy_change_points": round(-drop, 3) + 0.0,  # + 0.0: no "-0.0" in the metrics
        "int8.mismatched_vs_float": compare(onnx_probs, int8_probs).mismatched,
        "int8.size_mb": round(paths.int8.stat().st_size / 2**20, 2),
    }
    if metrics["int8.refused"]:
        discard_int8(paths.int8)
        log.warning("int8 refused: it loses %.2f test-accuracy points (%.4f -> %.4f) on this CPU (%s), more than "
                    "export.max_int8_drop = %g; %s ships the float model only", drop, float_acc, int8_acc,
                    sidecar["exported_on"]["cpu"], cfg.max_int8_drop, paths.model.parent)
    return metrics
