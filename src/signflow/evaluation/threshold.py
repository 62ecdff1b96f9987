"""Threshold policies: the rules that choose the open-set rejection threshold on validation, and their trade-off.

An image is "unknown" when the model's unknown class wins or its known-ness is
below the threshold (:func:`signflow.evaluation.openset.decide`). Where the
threshold sits trades genuine signs answered "unknown" against never-seen
signs answered with a class, and which of the two is worse depends on the
user, so ``evaluate.threshold.policy`` chooses the rule:

- ``se_rule``: the lowest threshold whose validation open-set accuracy is
  within ``tolerance_se`` standard errors of the best
  (:func:`signflow.evaluation.openset.choose_threshold`);
- ``known_kept``: the highest threshold still keeping (answering with a
  class) the share ``known_kept`` of the known-class validation images;
- ``heldout_rejected``: the lowest threshold rejecting the share
  ``heldout_rejected`` of the held-out validation images.

A policy is one entry of :data:`POLICIES` (its name is also listed in
``signflow.config.THRESHOLD_POLICIES``, its setting is a key of
``ThresholdConfig``). Every policy picks among the same candidates
(:func:`signflow.evaluation.openset.candidate_thresholds`), and
:func:`tradeoff_curve` gives, at each of them, the share of known validation
images kept against the share of held-out ones rejected: the curve the report
draws with each policy's point on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd

from signflow.config import ThresholdConfig, check_choice
from signflow.evaluation.openset import (
    DEFAULT_TPR,
    candidate_thresholds,
    choose_threshold,
    prediction_correct,
    said_unknown,
    threshold_at_tpr,
)

log = logging.getLogger(__name__)

POLICY_KEY = "evaluate.threshold.policy"
TRADEOFF_COLUMNS = ["threshold", "known_kept", "heldout_rejected", "policy"]
POLICY_SEPARATOR = " "  # a row several policies chose names them all: "known_kept se_rule"


@dataclass(frozen=True)
class OpenSetSplit:
    """One split's target (known) and held-out images: known-ness and what the model answered before any threshold."""

    scores: np.ndarray  # known-ness: max softmax over the known classes
    is_known: np.ndarray  # True: a target image; False: a held-out one
    correct: np.ndarray  # openset.prediction_correct: the right class, or (held-out) the model's unknown class
    said_unknown: np.ndarray  # the model's unknown class won: "unknown" at any threshold

    @classmethod
    def from_predictions(cls, scores: np.ndarray, preds: np.ndarray, labels: np.ndarray, is_known: np.ndarray,
                         unknown_index: int | None) -> OpenSetSplit:
        is_known = np.asarray(is_known, dtype=bool)
        return cls(np.asarray(scores, dtype=np.float64), is_known,
                   prediction_correct(preds, labels, is_known, unknown_index), said_unknown(preds, unknown_index))

    @property
    def has_heldout(self) -> bool:
        return bool((~self.is_known).any())

    def take(self, rows: np.ndarray) -> OpenSetSplit:
        """The images ``rows`` (a mask or indices) selects, e.g. some tracks only."""
        return OpenSetSplit(self.scores[rows], self.is_known[rows], self.correct[rows], self.said_unknown[rows])


def kept_and_rejected(split: OpenSetSplit, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per threshold: the share of known images kept (answered with a class) and of held-out ones rejected.

    Kept: the unknown class did not win and the score is at least the
    threshold, whether the class is right or not (``openset.known_accuracy``
    counts right ones only). Rejected: answered "unknown", the definition of
    ``openset.heldout_rejected``. NaN for a side without images.
    """
    thresholds = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    keepable = np.sort(split.scores[split.is_known & ~split.said_unknown])
    heldout_open = np.sort(split.scores[~split.is_known & ~split.said_unknown])  # rejected only below the threshold
    n_known, n_heldout = int(split.is_known.sum()), int((~split.is_known).sum())
    kept = (len(keepable) - np.searchsorted(keepable, thresholds, side="left")) / n_known if n_known \
        else np.full(len(thresholds), np.nan)
    already = int((~split.is_known & split.said_unknown).sum())
    rejected = (already + np.searchsorted(heldout_open, thresholds, side="left")) / n_heldout if n_heldout \
        else np.full(len(thresholds), np.nan)
    return kept, rejected


def outcomes_at(split: OpenSetSplit, threshold: float) -> dict[str, float | None]:
    """``known_kept`` and ``heldout_rejected`` at one threshold; None for a side without images."""
    kept, rejected = (float(v[0]) for v in kept_and_rejected(split, np.array([threshold])))
    return {"known_kept": None if np.isnan(kept) else kept,
            "heldout_rejected": None if np.isnan(rejected) else rejected}


# ------------------------------------------------------------------ the policies


def _se_rule(split: OpenSetSplit, tolerance_se: float) -> float:
    return choose_threshold(split.scores, split.is_known, split.correct, tolerance_se=tolerance_se)


def _known_kept(split: OpenSetSplit, share: float) -> float:
    # Kept falls as the threshold rises: the last candidate still keeping the share.
    if not split.is_known.any():
        raise ValueError("the known_kept threshold policy needs known-class validation images")
    candidates = candidate_thresholds(split.scores)
    kept, _ = kept_and_rejected(split, candidates)
    reaching = np.flatnonzero(kept >= share)
    # None reaches it when the unknown class alone rejects more known images than the share allows: keep all it leaves.
    return float(candidates[reaching[-1]] if len(reaching) else candidates[0])


def _heldout_rejected(split: OpenSetSplit, share: float) -> float:
    # Rejected rises with the threshold; the last candidate rejects everything, so one always reaches the share.
    candidates = candidate_thresholds(split.scores)
    _, rejected = kept_and_rejected(split, candidates)
    return float(candidates[int(np.argmax(rejected >= share))])


@dataclass(frozen=True, kw_only=True)
class ThresholdPolicy:
    """A rule choosing the threshold on validation, and the ``evaluate.threshold`` key of its setting."""

    choose: Callable[[OpenSetSplit, float], float]  # (validation split, setting) -> threshold
    setting: str  # ThresholdConfig field holding the setting
    target: str | None  # the share (a PolicyChoice field) the setting is a target for; None: not a share
    needs_heldout: bool  # without held-out validation images: the fallback (openset.threshold_at_tpr) instead
    rule: str  # what it picks, formatted with the setting as ``value``


POLICIES: Mapping[str, ThresholdPolicy] = MappingProxyType({
    "se_rule": ThresholdPolicy(
        choose=_se_rule, setting="tolerance_se", target=None, needs_heldout=True,
        rule="the lowest threshold whose validation open-set accuracy is within tolerance_se = {value:g} "
             "standard errors of the best"),
    "known_kept": ThresholdPolicy(
        choose=_known_kept, setting="known_kept", target="known_kept", needs_heldout=False,
        rule="the highest threshold keeping {value:.1%} of the known-class validation images"),
    "heldout_rejected": ThresholdPolicy(
        choose=_heldout_rejected, setting="heldout_rejected", target="heldout_rejected", needs_heldout=True,
        rule="the lowest threshold rejecting {value:.1%} of the held-out validation images"),
})


@dataclass(frozen=True)
class PolicyChoice:
    """One policy's threshold on a validation split and what it gives there."""

    name: str
    setting: float
    threshold: float
    known_kept: float | None
    heldout_rejected: float | None
    fallback: bool  # no held-out images: the fallback threshold, not the policy's

    @property
    def rule(self) -> str:
        if self.fallback:
            return f"the highest threshold keeping {DEFAULT_TPR:.0%} of the known-class validation images " \
                   "(no held-out validation images)"
        return POLICIES[self.name].rule.format(value=self.setting)

    def record(self) -> dict[str, float | str | None]:
        """What the evaluate stage and the sidecar record, by the names of ``openset.POLICY_KEYS``."""
        return {"name": self.name, "setting": self.setting, "val_known_kept": self.known_kept,
                "val_heldout_rejected": self.heldout_rejected}


def resolve_policy(name: str) -> ThresholdPolicy:
    """The registry entry for ``name``; an unknown name fails with the valid ones."""
    check_choice(POLICY_KEY, name, POLICIES)
    return POLICIES[name]


def choose_with_policy(name: str, split: OpenSetSplit, setting: float) -> PolicyChoice:
    """Policy ``name``'s threshold on ``split`` (validation) with its ``setting``, and its shares there.

    A policy that needs held-out images falls back, as the threshold always
    has, to keeping ``DEFAULT_TPR`` of the known images when there are none.
    """
    policy = resolve_policy(name)
    fallback = policy.needs_heldout and not split.has_heldout
    threshold = threshold_at_tpr(split.scores[split.is_known]) if fallback else policy.choose(split, setting)
    return PolicyChoice(name, float(setting), threshold, **outcomes_at(split, threshold), fallback=fallback)


def choose_all(cfg: ThresholdConfig, split: OpenSetSplit) -> dict[str, PolicyChoice]:
    """Every policy's choice with its setting in ``cfg``, ``cfg.policy``'s first (the chosen one)."""
    names = [cfg.policy, *(name for name in POLICIES if name != cfg.policy)]
    choices = {name: choose_with_policy(name, split, getattr(cfg, resolve_policy(name).setting)) for name in names}
    chosen = choices[cfg.policy]
    target = POLICIES[chosen.name].target
    if chosen.fallback:
        log.warning("no held-out validation images: threshold policy %s falls back to %s", chosen.name, chosen.rule)
    elif target is not None and getattr(chosen, target) < chosen.setting:
        log.warning("threshold policy %s: no threshold reaches %s %.2f%% on validation (the model's unknown class "
                    "alone answers \"unknown\" for too many images); the closest gives %.2f%%", chosen.name, target,
                    100 * chosen.setting, 100 * getattr(chosen, target))
    log.info("threshold %.6f by %s (%s): validation known kept %s, held-out rejected %s", chosen.threshold,
             chosen.name, chosen.rule, chosen.known_kept, chosen.heldout_rejected)
    return choices


def tradeoff_curve(split: OpenSetSplit, choices: Mapping[str, PolicyChoice] | None = None) -> pd.DataFrame:
    """Known kept against held-out rejected at every candidate threshold of ``split``, ascending.

    Rows strictly inside a run where one share stays put are dropped (the
    curve is the same); a row any of ``choices`` picked is always kept and
    names it in ``policy``.
    """
    thresholds = candidate_thresholds(split.scores)
    kept, rejected = kept_and_rejected(split, thresholds)
    named = {}
    for choice in (choices or {}).values():
        named.setdefault(choice.threshold, []).append(choice.name)
    keep = np.ones(len(thresholds), dtype=bool)
    for share in (kept, rejected):
        keep[1:-1] &= ~((share[:-2] == share[1:-1]) & (share[1:-1] == share[2:]))
    keep |= np.isin(thresholds, list(named))
    return pd.DataFrame({
        "threshold": thresholds[keep], "known_kept": kept[keep], "heldout_rejected": rejected[keep],
        "policy": [POLICY_SEPARATOR.join(sorted(named.get(t, []))) for t in thresholds[keep]],
    }, columns=TRADEOFF_COLUMNS)


@dataclass(frozen=True)
class PolicyPoint:
    """A policy's row of the trade-off curve."""

    name: str
    threshold: float
    known_kept: float | None
    heldout_rejected: float | None


def _share(value: float) -> float | None:
    return None if pd.isna(value) else float(value)


def policy_points(curve: pd.DataFrame) -> list[PolicyPoint]:
    """The rows of :func:`tradeoff_curve` (or its CSV read back) a policy picked, one per policy, registry order."""
    points = [PolicyPoint(name, float(row.threshold), _share(row.known_kept), _share(row.heldout_rejected))
              for row in curve.itertuples(index=False) if isinstance(row.policy, str)
              for name in row.policy.split(POLICY_SEPARATOR) if name]
    order = list(POLICIES)
    return sorted(points, key=lambda p: order.index(p.name) if p.name in order else len(order))
