"""The ONNX export: one graph from uint8 pixels to calibrated probabilities, checked against PyTorch."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import numpy_helper

from signflow.config import ExportConfig
from signflow.model.backbones import FeatureSpec, create_model
from signflow.model.inference import LoadedModel, predict_probs
from signflow.model.transforms import Normalization
from signflow.serving.export import (
    INT8_FORMAT,
    Agreement,
    ExportError,
    ExportPaths,
    build_sidecar,
    check_agreement,
    compare,
    cpu_int8_flags,
    export_onnx,
    export_verified,
    quantize_int8,
    spread_sample,
)
from signflow.serving.predictor import INPUT_NAME, ONNX_FORMAT, OUTPUT_NAME, load_predictor, sidecar_path

SIZE = 32
CLASSES = ["priority_road", "give_way", "stop", "no_entry", "unknown"]
TEMPERATURE = 0.5


FEATURES = FeatureSpec(input_size=48, pooled_blocks=2)


def tiny_loaded(seed: int = 0, features: FeatureSpec = FEATURES) -> LoadedModel:
    """An untrained simple_cnn with upsampling and pooled stages: every part the export must fold in."""
    torch.manual_seed(seed)
    model = create_model("simple_cnn", len(CLASSES), "none", 0.0, features).eval()
    norm = Normalization((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    return LoadedModel(model, CLASSES, norm, SIZE, torch.device("cpu"), False, TEMPERATURE)


def random_images(count: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedModel, Path, dict]:
    loaded = tiny_loaded()
    out = tmp_path_factory.mktemp("export") / "model.onnx"
    checkpoint = out.with_name("best.pt")
    checkpoint.write_bytes(b"stands in for a checkpoint: only its hash is read")
    sidecar = export_onnx(loaded, out, threshold=0.7, opset=18, source_checkpoint=checkpoint)
    return loaded, out, sidecar


def test_onnx_reproduces_pytorch_probabilities_for_any_batch_size(exported: tuple[LoadedModel, Path, dict]) -> None:
    loaded, path, _ = exported
    predictor = load_predictor(path)
    for count in (1, 7):  # the batch axis is dynamic
        images = random_images(count, seed=count)
        expected = predict_probs(loaded, images)  # calibrated: softmax(logits / T)
        got = predictor.predict_images(images, batch_size=4)
        assert got.shape == (count, len(CLASSES))
        np.testing.assert_allclose(got, expected, atol=1e-5)
        np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)


def test_temperature_is_folded_into_the_graph(exported: tuple[LoadedModel, Path, dict]) -> None:
    loaded, path, _ = exported
    images = random_images(5)
    raw = predict_probs(dataclasses.replace(loaded, temperature=1.0), images)
    got = load_predictor(path).predict_images(images, batch_size=8)
    # T = 0.5 sharpens: the top probability is higher than the raw softmax's.
    assert (got.max(1) > raw.max(1)).all()


def test_graph_takes_uint8_nhwc_and_declares_the_opset(exported: tuple[LoadedModel, Path, dict]) -> None:
    _, path, _ = exported
    model = onnx.load(str(path))
    (graph_input,) = model.graph.input
    assert graph_input.name == INPUT_NAME
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [SIZE, SIZE, 3]
    assert [o.name for o in model.graph.output] == [OUTPUT_NAME]
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17


def test_sidecar_says_what_a_consumer_needs(exported: tuple[LoadedModel, Path, dict]) -> None:
    _, path, sidecar = exported
    on_disk = json.loads(sidecar_path(path).read_text())
    assert on_disk == sidecar and sidecar_path(path).name == "model.json"
    assert on_disk["format"] == ONNX_FORMAT and on_disk["class_names"] == CLASSES
    assert on_disk["unknown_class"] == "unknown" and on_disk["image_size"] == SIZE
    assert on_disk["threshold"] == 0.7 and on_disk["temperature"] == TEMPERATURE
    assert on_disk["input"] == {"name": INPUT_NAME, "dtype": "uint8", "layout": "NHWC", "color": "RGB"}
    checkpoint = path.with_name("best.pt")
    assert on_disk["source_checkpoint"]["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    # The machine it was verified on: a sidecar diff between two machines explains itself.
    assert set(on_disk["exported_on"]) == {"cpu", "onnxruntime"}
    assert on_disk["exported_on"]["onnxruntime"].startswith(onnxruntime.__version__)


def test_sidecar_records_the_threshold_policy_when_given(exported: tuple[LoadedModel, Path, dict]) -> None:
    loaded, _, sidecar = exported
    assert sidecar["threshold_policy"] is None  # a threshold given by hand: no policy chose it
    policy = {"name": "known_kept", "setting": 0.995, "val_known_kept": 0.9951, "val_heldout_rejected": 0.87}
    built = build_sidecar(loaded, threshold=0.4, opset=18, source_checkpoint=None, threshold_policy=policy)
    assert json.loads(json.dumps(built))["threshold_policy"] == policy and built["threshold"] == 0.4


@pytest.mark.parametrize(("cpuinfo", "flags"), [
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\nprocessor\t: 1\n",
     "avx2 avx512f avx512bw avx512_vnni"),
    ("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n", "avx2"),  # the AVX2 CPUs whose U8S8 kernels saturate
    ("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\n", "asimddp i8mm"),  # ARM
    (None, "unknown (no "),
])
def test_cpu_int8_flags_names_what_picks_the_int8_kernels(tmp_path: Path, cpuinfo: str | None, flags: str) -> None:
    path = tmp_path / "cpuinfo"
    if cpuinfo is not None:
        path.write_text(cpuinfo)
    machine, _, reported = cpu_int8_flags(path).partition(": ")
    assert machine and reported.startswith(flags) and (cpuinfo is None or reported == flags)


def test_compare_counts_class_flips_and_the_largest_difference() -> None:
    reference = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    candidate = np.array([[0.9, 0.1], [0.7, 0.3], [0.6, 0.4]], dtype=np.float32)
    agreement = compare(reference, candidate)
    assert agreement == Agreement(n_images=3, mismatched=1, max_abs_diff=pytest.approx(0.5))
    with pytest.raises(ExportError, match="1 predicted classes differ"):
        check_agreement(agreement, 1e-4, "model.onnx")
    with pytest.raises(ExportError, match="largest probability difference"):
        check_agreement(Agreement(3, 0, 2e-4), 1e-4, "model.onnx")
    check_agreement(Agreement(3, 0, 5e-5), 1e-4, "model.onnx")  # within tolerance: no error
    with pytest.raises(ExportError, match="shapes differ"):
        compare(reference, candidate[:2])


def test_spread_sample_spans_the_whole_array() -> None:
    images = np.arange(100).reshape(100, 1, 1, 1)
    picked = spread_sample(images, 5).ravel().tolist()
    assert picked == [0, 25, 50, 74, 99]
    assert len(spread_sample(images, 1000)) == 100  # never more than there are


def test_int8_model_is_quantised_and_runs(exported: tuple[LoadedModel, Path, dict], tmp_path: Path) -> None:
    _, path, _ = exported
    out = tmp_path / "model.int8.onnx"
    quantize_int8(path, out, random_images(32, seed=3), batch_size=8)
    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    shutil.copy(sidecar_path(path), sidecar_path(out))  # the stage writes it: the same contract
    probs = load_predictor(out).predict_images(random_images(3), batch_size=8)
    assert probs.shape == (3, len(CLASSES)) and np.allclose(probs.sum(1), 1.0, atol=1e-4)
    assert not list(tmp_path.glob("*.tmp"))  # the pre-processed intermediate is gone


def test_int8_weights_fit_in_7_bits_so_no_x86_kernel_saturates(
    exported: tuple[LoadedModel, Path, dict], tmp_path: Path,
) -> None:
    """reduce_range: |w| <= 64, so VPMADDUBSW's 16-bit pair sums (AVX2, AVX-512 without VNNI) stay below 2**15."""
    _, path, _ = exported
    out = tmp_path / "model.int8.onnx"
    quantize_int8(path, out, random_images(32, seed=3), batch_size=8)
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer
               if t.data_type == onnx.TensorProto.INT8]
    assert weights, "no int8 weights: nothing was quantised"
    assert max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64


def _verify(tmp_path: Path, loaded: LoadedModel, cfg: ExportConfig, labels: np.ndarray | None = None):
    images = random_images(40, seed=5)
    if labels is None:
        labels = predict_probs(loaded, images).argmax(1)  # float accuracy 1.0
    paths = ExportPaths(tmp_path / "onnx" / "model.onnx", tmp_path / "onnx" / "model.int8.onnx", None)
    return export_verified(loaded, cfg, paths, test_images=images, test_labels=labels,
                           train_images=random_images(64, seed=6), threshold=0.5, batch_size=16)


def test_export_verified_reports_agreement_and_speeds(tmp_path: Path) -> None:
    stale = tmp_path / "onnx" / "model.int8.onnx"  # an earlier run's int8 copy, made from another model
    stale.parent.mkdir()
    stale.write_bytes(b"stale")
    sidecar_path(stale).write_text("{}")
    result = _verify(tmp_path, tiny_loaded(), ExportConfig(quantize=False, benchmark_images=8))
    assert result.metrics["onnx.mismatched_predictions"] == 0
    assert result.metrics["onnx.max_prob_diff"] < 1e-4
    assert result.metrics["onnx.test_accuracy"] == result.metrics["torch.test_accuracy"] == 1.0
    assert result.metrics["machine.cpu"] == result.sidecar["exported_on"]["cpu"]
    assert result.timings["onnx.images_per_second"] > 0 and result.timings["torch.images_per_second"] > 0
    assert not stale.exists() and not sidecar_path(stale).exists()
    # Nothing that varies run to run in the reviewed metrics.
    assert not any("second" in key for key in result.metrics)


def test_int8_within_the_limit_is_shipped_with_its_format(tmp_path: Path) -> None:
    result = _verify(tmp_path, tiny_loaded(), ExportConfig(quantize=True, max_int8_drop=100.0, benchmark_images=8))
    assert result.metrics["int8.refused"] == 0 and result.metrics["int8.format"] == INT8_FORMAT
    assert result.timings["int8.images_per_second"] > 0
    int8_sidecar = json.loads(sidecar_path(tmp_path / "onnx" / "model.int8.onnx").read_text())
    assert int8_sidecar["quantization"] == {"format": INT8_FORMAT, "calibration_images": 64}
    assert int8_sidecar["exported_on"] == result.sidecar["exported_on"]


def test_int8_that_loses_too_much_accuracy_is_refused_and_the_float_model_shipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    other = tiny_loaded(seed=42)  # a different network: stands in for a quantisation that broke the model

    def broken_quantize(model_path: Path, out_path: Path, calibration: np.ndarray, batch_size: int) -> None:
        export_onnx(other, out_path, threshold=0.5)

    monkeypatch.setattr("signflow.serving.export.quantize_int8", broken_quantize)
    with caplog.at_level(logging.WARNING):
        result = _verify(tmp_path, tiny_loaded(), ExportConfig(quantize=True, max_int8_drop=0.5, benchmark_images=8))
    assert result.metrics["int8.refused"] == 1
    assert result.metrics["int8.accuracy_change_points"] < -0.5  # its figures stay in the metrics
    assert {p.name for p in (tmp_path / "onnx").iterdir()} == {"model.onnx", "model.json"}
    assert "int8.images_per_second" not in result.timings
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "int8 refused" in warning.getMessage() and "export.max_int8_drop = 0.5" in warning.getMessage()
    assert load_predictor(tmp_path / "onnx" / "model.onnx").predict_images(random_images(2)).shape == (2, len(CLASSES))


def test_a_graph_that_disagrees_with_pytorch_fails_the_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = tiny_loaded()
    real_export = export_onnx

    def export_other(_loaded: LoadedModel, out_path: Path, **kwargs: object) -> dict:
        return real_export(tiny_loaded(seed=7), out_path, **kwargs)

    monkeypatch.setattr("signflow.serving.export.export_onnx", export_other)
    with pytest.raises(ExportError, match="does not reproduce PyTorch"):
        _verify(tmp_path, loaded, ExportConfig(quantize=False, benchmark_images=8))


def test_export_config_rejects_an_old_opset() -> None:
    from signflow.config import ConfigError, from_mapping

    with pytest.raises(ConfigError, match="export.opset"):
        from_mapping(ExportConfig, {"opset": 13}, "export")
