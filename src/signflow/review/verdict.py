"""The review's verdict section in markdown: the gate, then one row per metric and per class."""

from __future__ import annotations

from collections.abc import Sequence

from signflow.markdown import table
from signflow.review.compare import ACCURACY, Review
from signflow.review.gate import GateResult, amount
from signflow.review.stats import BETTER, WORSE, Comparison

TITLE = "### Verdict: head against base"
VERDICT_MARKS = {BETTER: "**better**", WORSE: "**worse**"}  # "no detectable difference" stays plain
P_DIGITS = 4


def _value(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}"


def signed(metric: str, value: float) -> str:
    text = amount(metric, value)
    return text if text.startswith("-") else f"+{text}"


def _row(comparison: Comparison, label: str | None = None, unit: str | None = None) -> list[str]:
    """One table row; ``unit`` is the metric whose unit the numbers are read in (a class's: accuracy)."""
    metric = unit or comparison.metric
    interval = f"[{signed(metric, comparison.low)}, {signed(metric, comparison.high)}]"
    p_value = "-" if comparison.p_value is None else f"{comparison.p_value:.{P_DIGITS}g}"
    return [
        label or f"`{metric}`",
        _value(metric, comparison.base),
        _value(metric, comparison.head),
        signed(metric, comparison.difference),
        interval,
        p_value,
        f"{comparison.method}" + (f" ({comparison.detail})" if comparison.detail else ""),
        VERDICT_MARKS.get(comparison.verdict, comparison.verdict),
    ]


def _headers(confidence: float, first: str = "metric") -> list[str]:
    return [first, "base", "head", "head - base", f"{confidence:.0%} interval", "p", "test", "verdict"]


def gate_lines(gate: GateResult) -> list[str]:
    if gate.passed:
        return [f"**Gate: passed** ({len(gate.checked)} guards: " + "; ".join(gate.checked) + ")."]
    return ["**Gate: failed**", ""] + [f"- {failure}" for failure in gate.failures]


def verdict_section(review: Review, gate: GateResult | None, confidence: float,
                    notes: Sequence[str] = ()) -> str:
    """The verdicts of ``review`` (and the gate's outcome, when one was checked) as a markdown section."""
    how = (
        f"Paired: base and head scored the same {review.n_head} test images, joined by path."
        if review.paired else
        f"**The test sets differ** (base {review.n_base} images, head {review.n_head}): the data or the split "
        "changed, so the images are not the same and the comparison is unpaired (two-sample intervals), "
        "which detects only larger changes. See the data section below."
    )
    lines = [TITLE, "", how, ""]
    if gate is not None:
        lines += gate_lines(gate) + [""]
    lines += [table(_headers(confidence), [_row(c) for c in review.metrics]), ""]
    if review.classes:
        lines += [
            f"Per class (accuracy on the class's images; {review.class_confidence:.2%} intervals: "
            f"{confidence:.0%} with a Bonferroni correction across {len(review.classes)} classes):",
            "",
            table(_headers(review.class_confidence, "class"), [_row(c, c.metric, ACCURACY) for c in review.classes]),
        ]
    lines += [f"\n{note}" for note in notes]
    return "\n".join(lines)
