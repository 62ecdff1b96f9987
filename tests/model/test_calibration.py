"""Temperature scaling: the fitted T, its guard against separable validation sets, and its use at load time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from signflow.config import EvaluateConfig, ThresholdConfig
from signflow.evaluation.evaluate import evaluate, score_split
from signflow.evaluation.metrics import expected_calibration_error, reliability_bins
from signflow.evaluation.openset import choose_threshold, prediction_correct
from signflow.model.backbones import create_model
from signflow.model.calibration import BETA_RANGE, fit_temperature, softmax, succession_targets
from signflow.model.checkpoint import load_checkpoint, save_checkpoint
from signflow.model.inference import load_model, predict_logits, predict_probs
from signflow.model.transforms import Normalization
from signflow.training.loop import ArraySet
from signflow.training.stage import calibrate_checkpoint

K, N = 5, 4000


def _sampled(temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose labels are drawn from softmax(logits / temperature): the true T is known."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (N, K))
    probs = softmax(logits, temperature)
    labels = np.array([rng.choice(K, p=row) for row in probs])
    return logits, labels


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_recovers_the_temperature_the_labels_were_drawn_with(true_t: float) -> None:
    logits, labels = _sampled(true_t)
    fitted = fit_temperature(logits, labels)
    assert fitted.temperature == pytest.approx(true_t, rel=0.1)
    assert fitted.nll_after <= fitted.nll_before + 1e-12
    assert fitted.n == N


def test_calibration_lowers_ece_and_keeps_every_prediction() -> None:
    logits, labels = _sampled(0.4)  # the raw softmax is under-confident, as with label smoothing
    fitted = fit_temperature(logits[:2000], labels[:2000])  # fitted on one half ("validation")
    raw, calibrated = softmax(logits[2000:]), softmax(logits[2000:], fitted.temperature)
    held_labels = labels[2000:]
    assert np.array_equal(raw.argmax(1), calibrated.argmax(1))
    ece_raw = expected_calibration_error(reliability_bins(held_labels, raw))
    ece_cal = expected_calibration_error(reliability_bins(held_labels, calibrated))
    assert ece_cal < 0.03 < ece_raw


def test_a_perfectly_separated_validation_set_does_not_saturate_probabilities() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, K, 500)
    logits = rng.normal(0, 1, (500, K))
    logits[np.arange(500), labels] += 6.0  # every image right, by a margin
    fitted = fit_temperature(logits, labels)
    assert 1.0 / BETA_RANGE[1] < fitted.temperature  # not the search's lower bound
    top = softmax(logits, fitted.temperature).max(axis=1)
    assert np.all(top < 1.0)  # still room for a threshold between images
    assert top.mean() == pytest.approx(1 - 1 / 502, abs=0.01)  # about the rule of succession's accuracy


def test_succession_targets_rows_sum_to_one() -> None:
    targets = succession_targets(np.array([0, 2, 1]), 3)
    assert np.allclose(targets.sum(axis=1), 1.0)
    assert targets[0, 0] == pytest.approx(1 - 1 / 5) and targets[0, 1] == pytest.approx(1 / 10)


@pytest.mark.parametrize(("logits", "labels", "match"), [
    (np.zeros((0, 3)), np.zeros(0, dtype=int), "zero validation images"),
    (np.zeros((2, 3)), np.array([0, 3]), "labels must lie"),
    (np.zeros(3), np.array([0, 1, 2]), "expected logits"),
])
def test_bad_inputs_fail(logits: np.ndarray, labels: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_temperature(logits, labels)


def _checkpoint(path: Path, size: int = 16) -> None:
    model = create_model("simple_cnn", 3, "none")
    norm = model.normalization
    save_checkpoint(path, {
        "model": model.state_dict(), "epoch": 0, "config": {}, "class_names": ["a", "b", "c"], "num_classes": 3,
        "normalization": {"mean": list(norm.mean), "std": list(norm.std)}, "image_size": size,
        "backbone": "simple_cnn", "features": {"input_size": 0, "pooled_blocks": 0},
    })


def test_calibrate_checkpoint_stores_the_temperature_that_predict_applies(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    _checkpoint(path)
    torch.manual_seed(0)
    images = np.random.default_rng(0).integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    labels = np.random.default_rng(1).integers(0, 3, 40)
    assert load_model(path).temperature == 1.0  # nothing fitted yet: raw probabilities
    fitted = calibrate_checkpoint(path, ArraySet(images, labels), batch_size=16, device=torch.device("cpu"))
    loaded = load_model(path)
    assert load_checkpoint(path)["temperature"] == loaded.temperature == fitted.temperature
    expected = softmax(predict_logits(loaded, images), fitted.temperature)
    assert np.allclose(predict_probs(loaded, images), expected, atol=1e-6)
    assert fitted.temperature != pytest.approx(1.0)  # random labels: the fit moves T


def test_normalization_is_untouched_by_calibration(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    _checkpoint(path)
    images = np.zeros((4, 16, 16, 3), dtype=np.uint8)
    calibrate_checkpoint(path, ArraySet(images, np.array([0, 1, 2, 0])), batch_size=4, device=torch.device("cpu"))
    assert load_model(path).normalization == Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _split_frame(n: int, roles: list[str]) -> pd.DataFrame:
    labels = [i % 3 if role != "heldout" else -1 for i, role in enumerate(roles)]
    return pd.DataFrame({"path": [f"img{i}.png" for i in range(n)], "label": [str(v) for v in labels],
                         "label_idx": labels, "role": roles})


def test_evaluate_reports_calibrated_metrics_beside_the_raw_ece_and_an_interval(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    _checkpoint(path)
    save_checkpoint(path, {**load_checkpoint(path), "temperature": 0.25})  # sharpen: a different ECE
    loaded = load_model(path)
    rng = np.random.default_rng(0)
    roles = ["target"] * 30 + ["heldout"] * 10
    frame = _split_frame(40, roles)
    images = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    val, test = (score_split(loaded, frame, images, 16) for _ in range(2))
    assert np.allclose(test.probs, softmax(np.log(test.raw_probs), 0.25), atol=1e-6)  # same logits, T applied
    metrics = evaluate(loaded, val, test, EvaluateConfig()).metrics
    assert metrics["test.temperature"] == 0.25
    assert metrics["test.ece"] != metrics["test.ece_uncalibrated"]
    assert metrics["test.accuracy_ci_low"] <= metrics["test.accuracy"] <= metrics["test.accuracy_ci_high"]
    assert 0.0 <= metrics["openset.known_accuracy"] <= 1.0 and 0.0 <= metrics["openset.heldout_rejected"] <= 1.0


def test_evaluate_chooses_the_threshold_with_the_configured_tolerance(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    _checkpoint(path)
    loaded = load_model(path)
    frame = _split_frame(60, ["target"] * 45 + ["heldout"] * 15)
    images = np.random.default_rng(2).integers(0, 256, (60, 16, 16, 3), dtype=np.uint8)
    val, test = (score_split(loaded, frame, images, 16) for _ in range(2))
    rows = val.mask("target") | val.mask("heldout")
    known = val.mask("target")[rows]
    correct = prediction_correct(val.preds[rows], frame["label_idx"].to_numpy()[rows], known, loaded.unknown_index)
    chosen = {}
    for tolerance in (0.0, 1.0, 5.0):
        cfg = EvaluateConfig(threshold=ThresholdConfig(tolerance_se=tolerance))
        chosen[tolerance] = evaluate(loaded, val, test, cfg).metrics["openset.threshold"]
        expected = choose_threshold(val.scores[rows], known, correct, tolerance_se=tolerance)
        assert chosen[tolerance] == pytest.approx(expected, abs=1e-6)
    assert chosen[5.0] < chosen[0.0]  # the setting reaches the choice: a wider tolerance, a lower threshold
