"""Threshold policies: each reaches its target on constructed scores, falls back without held-out images, and the
trade-off curve, evaluate.json and the sidecar record agree with what was chosen."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from signflow.config import THRESHOLD_POLICIES, Config, ConfigError, ThresholdConfig, from_mapping
from signflow.data.manifest import ROLE_HELDOUT, ROLE_TARGET, ROLE_UNKNOWN
from signflow.evaluation import plots
from signflow.evaluation.evaluate import Scored, open_set
from signflow.evaluation.openset import (
    DEFAULT_TPR,
    POLICY_KEYS,
    candidate_thresholds,
    choose_threshold,
    openset_outcomes,
    threshold_at_tpr,
    threshold_policy_from_metrics,
)
from signflow.evaluation.report import threshold_text
from signflow.evaluation.threshold import (
    POLICIES,
    OpenSetSplit,
    PolicyChoice,
    choose_all,
    choose_with_policy,
    kept_and_rejected,
    policy_points,
    resolve_policy,
    tradeoff_curve,
)

UNKNOWN_INDEX = 2  # classes: "a", "b", "unknown"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _split(n_known: int = 200, n_heldout: int = 60, seed: int = 0, said_unknown: int = 3) -> OpenSetSplit:
    """Known images scoring high, held-out ones low with overlap; a few of each won by the unknown class."""
    rng = np.random.default_rng(seed)
    scores = np.round(np.r_[rng.beta(6, 1, n_known), rng.beta(2, 3, n_heldout)], 4)  # rounded: ties occur
    is_known = np.r_[np.ones(n_known, dtype=bool), np.zeros(n_heldout, dtype=bool)]
    labels = np.r_[rng.integers(0, 2, n_known), np.full(n_heldout, -1)]
    preds = np.where(rng.random(n_known + n_heldout) < 0.9, labels, 1 - labels.clip(0, 1))
    preds[:said_unknown] = UNKNOWN_INDEX
    preds[n_known:n_known + said_unknown] = UNKNOWN_INDEX
    return OpenSetSplit.from_predictions(scores, preds, labels, is_known, UNKNOWN_INDEX)


def _naive_shares(split: OpenSetSplit, threshold: float) -> tuple[float, float]:
    """Known kept and held-out rejected by the served answer itself (openset.decide's rule), image by image."""
    answered_unknown = split.said_unknown | (split.scores < threshold)
    return float(np.mean(~answered_unknown[split.is_known])), float(np.mean(answered_unknown[~split.is_known]))


# ------------------------------------------------------------------ the registry


def test_registry_and_config_list_the_same_policies_and_settings() -> None:
    assert list(POLICIES) == list(THRESHOLD_POLICIES)
    fields = {f.name for f in dataclasses.fields(ThresholdConfig)}
    assert {policy.setting for policy in POLICIES.values()} <= fields
    for name, policy in POLICIES.items():
        assert policy.rule.format(value=0.5)  # every rule text formats with its setting
        assert resolve_policy(name) is policy


def test_a_bad_policy_name_fails_at_load_in_one_line_naming_key_and_choices() -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping(Config, {"evaluate": {"threshold": {"policy": "best_accuracy"}}})
    message = str(info.value)
    assert "\n" not in message
    assert "evaluate.threshold.policy='best_accuracy'" in message
    assert "se_rule | known_kept | heldout_rejected" in message
    with pytest.raises(ConfigError, match="evaluate.threshold.policy"):
        resolve_policy("best_accuracy")


@pytest.mark.parametrize(("key", "value"), [("known_kept", 1.2), ("heldout_rejected", -0.1), ("tolerance_se", -1.0)])
def test_settings_out_of_range_fail_naming_the_key(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"evaluate.threshold.{key}={value!r}"):
        from_mapping(Config, {"evaluate": {"threshold": {key: value}}})


# ------------------------------------------------------------------ shares


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kept_and_rejected_match_the_served_answer_image_by_image(seed: int) -> None:
    split = _split(seed=seed)
    thresholds = candidate_thresholds(split.scores)
    kept, rejected = kept_and_rejected(split, thresholds)
    for k in range(0, len(thresholds), 7):
        assert (kept[k], rejected[k]) == pytest.approx(_naive_shares(split, thresholds[k]))
    assert np.all(np.diff(kept) <= 0) and np.all(np.diff(rejected) >= 0)  # a higher threshold: fewer kept
    assert rejected[-1] == 1.0 and kept[-1] == 0.0  # the last candidate rejects everything


def test_heldout_rejected_is_the_figure_evaluate_reports() -> None:
    split = _split()
    preds = np.where(split.said_unknown, UNKNOWN_INDEX, 0)
    labels = np.where(split.is_known, np.where(split.correct, 0, 1), -1)
    for threshold in (0.2, 0.5, 0.8):
        outcomes = openset_outcomes(split.scores, preds, labels, split.is_known, threshold, UNKNOWN_INDEX)
        assert kept_and_rejected(split, np.array([threshold]))[1][0] == pytest.approx(outcomes["heldout_rejected"])


# ------------------------------------------------------------------ each policy reaches its target


@pytest.mark.parametrize("target", [0.5, 0.9, 0.95, 0.98])
def test_known_kept_is_the_highest_threshold_keeping_the_share(target: float) -> None:
    split = _split()
    threshold = choose_with_policy("known_kept", split, target).threshold
    candidates = candidate_thresholds(split.scores)
    kept, _ = kept_and_rejected(split, candidates)
    at = int(np.flatnonzero(candidates == threshold)[0])
    assert kept[at] >= target > kept[at + 1]  # reaches it; one step higher does not
    assert _naive_shares(split, threshold)[0] >= target


@pytest.mark.parametrize("target", [0.5, 0.8, 0.95, 1.0])
def test_heldout_rejected_is_the_lowest_threshold_rejecting_the_share(target: float) -> None:
    split = _split()
    threshold = choose_with_policy("heldout_rejected", split, target).threshold
    candidates = candidate_thresholds(split.scores)
    _, rejected = kept_and_rejected(split, candidates)
    at = int(np.flatnonzero(candidates == threshold)[0])
    assert rejected[at] >= target and (at == 0 or rejected[at - 1] < target)  # one step lower falls short
    assert _naive_shares(split, threshold)[1] >= target


@pytest.mark.parametrize("tolerance_se", [0.0, 1.0, 3.0])
def test_se_rule_is_todays_rule(tolerance_se: float) -> None:
    split = _split()
    expected = choose_threshold(split.scores, split.is_known, split.correct, tolerance_se=tolerance_se)
    assert choose_with_policy("se_rule", split, tolerance_se).threshold == expected


def test_a_share_the_unknown_class_alone_denies_keeps_all_it_leaves(caplog: pytest.LogCaptureFixture) -> None:
    split = _split(said_unknown=10)  # 10 of 200 known images won by the unknown class: at most 95% kept
    with caplog.at_level(logging.WARNING, logger="signflow.evaluation.threshold"):
        choice = choose_with_policy("known_kept", split, 0.99)
        assert not caplog.records  # said only for the policy evaluate applies, not for every point drawn
        assert choose_all(ThresholdConfig(policy="known_kept", known_kept=0.99), split)["known_kept"] == choice
    assert choice.threshold == split.scores.min() and choice.known_kept == pytest.approx(0.95)
    assert "no threshold reaches known_kept 99.00% on validation" in caplog.text and "gives 95.00%" in caplog.text


def test_policies_order_as_their_targets_say() -> None:
    split = _split()
    choices = choose_all(ThresholdConfig(known_kept=0.98, heldout_rejected=0.98), split)
    assert choices["known_kept"].known_kept >= 0.98 and choices["heldout_rejected"].heldout_rejected >= 0.98
    assert choices["known_kept"].threshold < choices["heldout_rejected"].threshold  # overlap: both cannot hold


# ------------------------------------------------------------------ without held-out images


def test_without_heldout_policies_needing_it_fall_back_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    split = _split()
    known_only = split.take(split.is_known)
    fallback = threshold_at_tpr(known_only.scores, DEFAULT_TPR)
    for name, policy in POLICIES.items():
        cfg = ThresholdConfig(policy=name, known_kept=0.9)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="signflow.evaluation.threshold"):
            chosen = choose_all(cfg, known_only)[name]
        if policy.needs_heldout:
            assert chosen.fallback and chosen.threshold == fallback and chosen.heldout_rejected is None
            assert f"no held-out validation images: threshold policy {name} falls back" in caplog.text
            assert len(caplog.records) == 1  # one line, for the chosen policy only
        else:
            assert not chosen.fallback and chosen.known_kept >= cfg.known_kept
    # The fallback is what choose_threshold has always done without held-out images.
    assert choose_threshold(known_only.scores, known_only.is_known, known_only.correct, tolerance_se=1.0) == fallback


# ------------------------------------------------------------------ the trade-off curve


def test_tradeoff_curve_keeps_every_corner_and_names_each_policy() -> None:
    split = _split()
    choices = choose_all(ThresholdConfig(), split)
    curve = tradeoff_curve(split, choices)
    candidates = candidate_thresholds(split.scores)
    kept, rejected = kept_and_rejected(split, candidates)
    assert list(curve.columns) == ["threshold", "known_kept", "heldout_rejected", "policy"]
    assert len(curve) < len(candidates) and curve["threshold"].is_monotonic_increasing
    rows = curve["threshold"].to_numpy()
    # A dropped threshold lies inside a run of its neighbouring rows where one share stays put: the same curve.
    for k, threshold in enumerate(candidates):
        below, above = np.flatnonzero(candidates == rows[rows <= threshold][-1])[0], \
            np.flatnonzero(candidates == rows[rows >= threshold][0])[0]
        assert (kept[below] == kept[k] == kept[above]) or (rejected[below] == rejected[k] == rejected[above])
    points = {p.name: p for p in policy_points(curve)}
    assert list(points) == list(POLICIES)
    for name, choice in choices.items():
        assert (points[name].threshold, points[name].known_kept, points[name].heldout_rejected) == \
            (choice.threshold, choice.known_kept, choice.heldout_rejected)


def test_tradeoff_csv_round_trip_keeps_the_policies(tmp_path: Path) -> None:
    split = _split()
    choices = choose_all(ThresholdConfig(known_kept=0.95), split)
    curve = tradeoff_curve(split, choices)
    curve.to_csv(tmp_path / "tradeoff.csv", index=False)
    back = pd.read_csv(tmp_path / "tradeoff.csv")  # as the report reads it
    assert policy_points(back) == policy_points(curve)


def test_tradeoff_plot_draws_the_curve_or_says_why_not(tmp_path: Path) -> None:
    split = _split()
    curve = tradeoff_curve(split, choose_all(ThresholdConfig(), split))
    plots.plot_threshold_tradeoff(curve, "se_rule", tmp_path / "curve.png")
    known_only = split.take(split.is_known)
    plots.plot_threshold_tradeoff(tradeoff_curve(known_only, choose_all(ThresholdConfig(), known_only)), "se_rule",
                                  tmp_path / "none.png")
    for name in ("curve.png", "none.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_SIGNATURE)
    assert (tmp_path / "curve.png").stat().st_size > (tmp_path / "none.png").stat().st_size


# ------------------------------------------------------------------ evaluate.json, the report, the sidecar


def _scored(split: OpenSetSplit) -> Scored:
    """A Scored split whose open-set rows are ``split`` (plus one trained-unknown image, which open-set skips)."""
    n = len(split.scores)
    preds = np.where(split.said_unknown, UNKNOWN_INDEX, np.where(split.correct | ~split.is_known, 0, 1))
    probs = np.full((n + 1, 3), 0.0)
    probs[np.arange(n), preds] = 1.0
    probs[n, UNKNOWN_INDEX] = 1.0
    roles = np.append(np.where(split.is_known, ROLE_TARGET, ROLE_HELDOUT), ROLE_UNKNOWN)
    frame = pd.DataFrame({"label_idx": np.r_[np.where(split.is_known, 0, -1), UNKNOWN_INDEX], "role": roles})
    return Scored(frame, probs, np.r_[split.scores, 0.0], probs)


@pytest.mark.parametrize("policy", list(POLICIES))
def test_evaluate_records_the_chosen_policy_and_its_figures(policy: str) -> None:
    val, test = _split(seed=0), _split(seed=1)
    cfg = ThresholdConfig(policy=policy, known_kept=0.97)
    result = open_set(_scored(val), _scored(test), UNKNOWN_INDEX, cfg)
    chosen = choose_with_policy(policy, val, getattr(cfg, POLICIES[policy].setting))
    metrics = {f"openset.{k}": v for k, v in result.metrics.items()}
    assert metrics["openset.threshold"] == chosen.threshold
    assert {field: metrics[key] for field, key in POLICY_KEYS.items()} == chosen.record()
    assert metrics[POLICY_KEYS["name"]] == policy
    assert metrics["openset.known_kept"] == pytest.approx(_naive_shares(test, chosen.threshold)[0])
    assert metrics["openset.heldout_rejected"] == pytest.approx(_naive_shares(test, chosen.threshold)[1])
    assert policy in " ".join(result.tradeoff["policy"])


def test_the_policy_record_reaches_the_sidecar_through_evaluate_json(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    split = _split()
    record = choose_with_policy("known_kept", split, 0.97).record()
    path = tmp_path / "evaluate.json"
    path.write_text(json.dumps({"openset.threshold": 0.4, **{POLICY_KEYS[k]: v for k, v in record.items()}}))
    assert threshold_policy_from_metrics(path) == record
    assert threshold_policy_from_metrics(tmp_path / "missing.json") is None
    path.write_text(json.dumps({"openset.threshold": 0.4}))  # an evaluate.json from before the policies
    with caplog.at_level(logging.WARNING):
        assert threshold_policy_from_metrics(path) is None
    assert POLICY_KEYS["name"] in caplog.text


def test_report_text_names_the_policy_its_rule_and_every_policy_point() -> None:
    split = _split()
    choices = choose_all(ThresholdConfig(policy="heldout_rejected"), split)
    chosen = choices["heldout_rejected"]
    metrics = {"openset.threshold": chosen.threshold, "openset.known_kept": 0.9, "openset.heldout_rejected": 0.8,
               **{POLICY_KEYS[k]: v for k, v in chosen.record().items()}}
    text = threshold_text(metrics, tradeoff_curve(split, choices))
    assert "Policy `heldout_rejected`: the lowest threshold rejecting 95.0% of the held-out" in text
    assert "`heldout_rejected` (chosen)" in text and "| `se_rule` |" in text and "| `known_kept` |" in text
    assert "on test 90.0% and 80.0%" in text
    fallback = PolicyChoice("se_rule", 1.0, 0.3, 0.95, None, fallback=True)
    metrics = {"openset.threshold": 0.3, **{POLICY_KEYS[k]: v for k, v in fallback.record().items()}}
    assert "(no held-out validation images)" in threshold_text(metrics, pd.DataFrame(columns=["policy"]))
    assert "no policy recorded" in threshold_text({"openset.threshold": 0.3}, pd.DataFrame())
