"""The data's profile: brightness per image, quantiles per split and class, flat metric keys."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from signflow.audit.profile import ALL, MEASURES, QUANTILES, mean_brightness, profile_metrics, profile_table


def test_mean_brightness_of_each_image_in_batches() -> None:
    levels = np.array([0, 10, 200, 255, 77], dtype=np.uint8)
    images = np.broadcast_to(levels[:, None, None, None], (5, 4, 4, 3)).copy()
    images[2, 0, 0, 0] = 0  # one darker pixel of 48
    expected = levels.astype(float)
    expected[2] -= 200 / 48
    assert mean_brightness(images, batch_size=2) == pytest.approx(expected)


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 40
    return pd.DataFrame({"split": ["train"] * 30 + ["test"] * 10, "label": ["a", "b"] * 20,
                         "width": rng.integers(15, 200, n), "height": rng.integers(15, 200, n),
                         "brightness": rng.uniform(0, 255, n)})


def test_profile_table_has_quantiles_per_split_and_class() -> None:
    frame = _frame()
    table = profile_table(frame, ["train", "val", "test"], ["a", "b", "never"])
    assert [(r.split, r["class"]) for _, r in table.iterrows()] == [
        ("train", ALL), ("train", "a"), ("train", "b"), ("val", ALL), ("test", ALL), ("test", "a"), ("test", "b")]
    row = table[(table["split"] == "train") & (table["class"] == "b")].iloc[0]
    members = frame[(frame["split"] == "train") & (frame["label"] == "b")]
    assert row["n"] == len(members) == 15
    for measure in MEASURES:
        for name, q in QUANTILES.items():
            assert row[f"{measure}_{name}"] == pytest.approx(np.quantile(members[measure], q), abs=0.01)
    assert table[(table["split"] == "val")].iloc[0]["n"] == 0


def test_profile_metrics_are_flat_per_split_and_skip_empty_splits() -> None:
    table = profile_table(_frame(), ["train", "val", "test"], ["a", "b"])
    metrics = profile_metrics(table)
    assert metrics["profile.train.n"] == 30 and metrics["profile.test.n"] == 10
    overall = table[(table["split"] == "test") & (table["class"] == ALL)].iloc[0]
    assert metrics["profile.test.brightness.p50"] == overall["brightness_p50"]
    assert {k for k in metrics if k.startswith("profile.train.")} == {
        "profile.train.n", *(f"profile.train.{m}.{q}" for m in MEASURES for q in QUANTILES)}
    assert metrics["profile.val.n"] == 0 and not any(k.startswith("profile.val.width") for k in metrics)
    assert all(v == v for v in metrics.values())  # no NaN: metrics/audit.json stays valid JSON
