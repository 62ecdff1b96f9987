"""The gate of `signflow pr-report --gate`: the guards of ``review.guards`` checked against a review.

A guard is **non-inferiority**: it passes only when the interval of
``head - base`` lies above ``-margin``, i.e. the data show with the review's
confidence that head is not worse by more than the margin. Identical
predictions pass (the interval is exactly zero); a head that is worse, or one
whose test set is too small to show it is not, fails. Besides margins: no class
may be significantly worse (``guards.classes``), and head's ECE may not rise above
``guards.max_ece`` (above the limit and above base's). Timings are not metrics here: they never gate.

The guards are read from the *base* revision's params.yaml by the caller, so
a pull request cannot loosen the gate it is judged by (its change to
``review:`` shows in the params diff and applies from the next review on).
"""

from __future__ import annotations

from dataclasses import dataclass

from signflow.config import GuardsConfig
from signflow.review.compare import ACCURACY, AUROC, ECE, HELDOUT_REJECTED, KNOWN_ACCURACY, Review
from signflow.review.stats import WORSE, Comparison

# Guard field of review.guards -> the metric it guards.
MARGIN_GUARDS = {
    "accuracy": ACCURACY,
    "known_accuracy": KNOWN_ACCURACY,
    "heldout_rejected": HELDOUT_REJECTED,
    "auroc": AUROC,
}
PROPORTION_METRICS = frozenset({ACCURACY, KNOWN_ACCURACY, HELDOUT_REJECTED})  # shown in points
POINTS = 100.0


def amount(metric: str, value: float) -> str:
    """``value`` in the metric's reading unit: points for shares of images, else the metric's own scale."""
    return f"{value * POINTS:.2f} points" if metric in PROPORTION_METRICS else f"{value:.4f}"


@dataclass(frozen=True)
class GateResult:
    """Whether the pull request passes, one line per failed guard, and what was checked."""

    failures: tuple[str, ...]
    checked: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures


def _margin_failure(comparison: Comparison, margin: float) -> str | None:
    if comparison.low >= -margin:
        return None
    level = f"{comparison.confidence:.0%}"
    return (
        f"{comparison.metric}: head - base = {amount(comparison.metric, comparison.difference)}; "
        f"at {level} confidence head may be worse by up to {amount(comparison.metric, -comparison.low)}, "
        f"more than the margin of {amount(comparison.metric, margin)} ({comparison.method})"
    )


def _class_failure(comparison: Comparison) -> str | None:
    if comparison.verdict != WORSE:
        return None
    return (
        f"class {comparison.metric}: accuracy {amount(ACCURACY, comparison.difference)}, "
        f"interval [{amount(ACCURACY, comparison.low)}, {amount(ACCURACY, comparison.high)}] at "
        f"{comparison.confidence:.2%} confidence (Bonferroni across classes): significantly worse"
    )


def _ece_failure(ece: Comparison, limit: float) -> str | None:
    """Head's ECE above ``limit`` *and* above base's: the pull request raised it there.

    A base already above the limit is not the pull request's doing: an unchanged
    model never fails this guard, a model that gets better calibrated never does.
    """
    if ece.head <= limit or (ece.base is not None and ece.head <= ece.base):
        return None
    return f"{ECE}: head's {ece.head:.4f} (base {_or_dash(ece.base)}) is above the limit of {limit:.4f}"


def _or_dash(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def check_gate(review: Review, guards: GuardsConfig) -> GateResult:
    """Every guard of ``guards`` that is on, against ``review``; a metric the review lacks is skipped, said so."""
    failures, checked = [], []
    for field, metric in MARGIN_GUARDS.items():
        margin = getattr(guards, field)
        comparison = review.metric(metric)
        if margin is None:
            continue
        if comparison is None:
            checked.append(f"{metric}: not measured in both revisions, not checked")
            continue
        checked.append(f"{metric}: not worse by more than {amount(metric, margin)}")
        failure = _margin_failure(comparison, margin)
        if failure:
            failures.append(failure)
    if guards.classes:
        checked.append("no class significantly worse")
        failures += [f for f in map(_class_failure, review.classes) if f]
    ece = review.metric(ECE)
    if guards.max_ece is not None and ece is not None and ece.head is not None:
        checked.append(f"{ECE} not raised above {guards.max_ece:.4f}")
        failure = _ece_failure(ece, guards.max_ece)
        if failure:
            failures.append(failure)
    return GateResult(tuple(failures), tuple(checked))
