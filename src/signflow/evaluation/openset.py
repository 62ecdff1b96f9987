"""The open-set decision, in one place: how known an image looks, and the final answer.

Evaluate (the ``decision`` column of predictions.csv), the report (sample
titles) and ``signflow predict`` all answer through :func:`decide`, so an image
is "unknown" by the same rule everywhere: the model's own unknown class wins,
or its known-ness (Hendrycks & Gimpel's max softmax over the known classes,
https://arxiv.org/abs/1610.02136) is below the threshold chosen on validation.
numpy only (and the pure-data catalog), so the light prediction path can use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from signflow.catalog import UNKNOWN_NAME


def unknown_index(class_names: Sequence[str]) -> int | None:
    """Column of the trained "unknown" class, or None for a model without one."""
    names = list(class_names)
    return names.index(UNKNOWN_NAME) if UNKNOWN_NAME in names else None


def max_softmax_score(probs: np.ndarray, unknown_index: int | None) -> np.ndarray:
    """Known-ness per image: the largest probability among the known classes.

    The unknown column (if the model has one) is dropped *without*
    renormalising, so an image the model confidently calls "unknown" keeps a
    low score instead of having its small known probabilities inflated.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if unknown_index is not None:
        probs = np.delete(probs, unknown_index, axis=1)
    return probs.max(axis=1)


def decide(probs: np.ndarray, class_names: Sequence[str], threshold: float | None) -> list[str]:
    """The answer per row of ``probs`` (N, K): a class name, or "unknown".

    "unknown" when the model's unknown class wins or the known-ness score is
    below ``threshold``; ``None`` (no threshold chosen yet) rejects nothing.
    """
    names = list(class_names)
    probs = np.asarray(probs)
    if len(probs) == 0:
        return []
    winners = probs.argmax(axis=1)
    rejected = winners == unknown_index(names)
    if threshold is not None:
        rejected |= max_softmax_score(probs, unknown_index(names)) < threshold
    return [UNKNOWN_NAME if reject else names[k] for k, reject in zip(winners, rejected, strict=True)]
