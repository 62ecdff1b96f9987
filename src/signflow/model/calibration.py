"""Temperature scaling: calibrated probabilities from one number fitted on validation.

Label smoothing and class weighting leave a trained model's softmax
under-confident (a 99%-accurate model says 0.8). Guo et al. 2017
(https://arxiv.org/abs/1706.04599) fix it with one scalar: ``softmax(z / T)``
with T chosen to minimise the negative log-likelihood on held-out data. It
never changes a prediction (argmax is invariant), only confidence, so accuracy
is untouched and ECE drops. ``train`` fits T on validation and stores it in the
checkpoint; evaluate, report and predict apply it. numpy only, so the light
prediction path can use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Inverse temperatures searched: T from 1/20 to 20 covers every sane model (Guo et al. report 1-4).
BETA_RANGE = (0.05, 20.0)
# Golden-section steps: the bracket shrinks by 0.618 each, so 80 steps reach ~1e-16 of its width.
SEARCH_STEPS = 80
_GOLDEN = (math.sqrt(5) - 1) / 2


@dataclass(frozen=True)
class Calibration:
    """The fitted temperature and what it did to the validation log-loss."""

    temperature: float
    nll_before: float
    nll_after: float
    n: int


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise ``softmax(logits / temperature)`` in float64, stable for large logits."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _nll(logits: np.ndarray, targets: np.ndarray, beta: float) -> float:
    """Mean cross-entropy of soft ``targets`` (N, K) under ``softmax(beta * logits)``."""
    z = beta * logits
    top = z.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    return float(np.mean(log_norm - (targets * z).sum(axis=1)))


def succession_targets(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """One-hot targets smoothed by Laplace's rule of succession: ``1/(n+2)`` spread over the other classes.

    A validation set the model gets entirely right says its accuracy is about
    ``1 - 1/(n+2)``, not 1; with hard targets the likelihood then keeps rising
    as T -> 0 and every probability saturates at exactly 1 (no threshold can
    separate anything). With these targets the optimum stays finite, and for a
    set with errors the change is negligible.
    """
    n = len(labels)
    epsilon = 1.0 / (n + 2)
    others = epsilon / (num_classes - 1) if num_classes > 1 else 0.0
    targets = np.full((n, num_classes), others)
    targets[np.arange(n), labels] = 1.0 - epsilon if num_classes > 1 else 1.0
    return targets


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> Calibration:
    """The temperature minimising the negative log-likelihood of ``labels`` under ``softmax(logits / T)``.

    The targets are :func:`succession_targets` (so a perfectly separated
    validation set does not drive T to zero). The loss is convex in the inverse
    temperature (a log-sum-exp of linear functions minus a linear one), so a
    golden-section search over ``BETA_RANGE`` finds the global minimum; no
    optimiser state, no torch. ``nll_before``/``nll_after`` are the plain
    (hard-label) validation log-loss at T = 1 and at the fitted T.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(f"expected logits (N, K) and labels (N,), got {logits.shape} and {labels.shape}")
    if len(labels) == 0:
        raise ValueError("cannot fit a temperature on zero validation images")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"labels must lie in [0, {logits.shape[1]})")
    soft = succession_targets(labels, logits.shape[1])
    low, high = BETA_RANGE
    a, b = high - _GOLDEN * (high - low), low + _GOLDEN * (high - low)
    fa, fb = _nll(logits, soft, a), _nll(logits, soft, b)
    for _ in range(SEARCH_STEPS):
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - _GOLDEN * (high - low)
            fa = _nll(logits, soft, a)
        else:
            low, a, fa = a, b, fb
            b = low + _GOLDEN * (high - low)
            fb = _nll(logits, soft, b)
    beta = (low + high) / 2
    hard = np.eye(logits.shape[1])[labels]
    return Calibration(1.0 / beta, _nll(logits, hard, 1.0), _nll(logits, hard, beta), len(labels))
