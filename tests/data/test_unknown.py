"""The "unknown" class and the held-out open-set classes."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from signflow.data.manifest import HELDOUT_LABEL_IDX, ROLE_HELDOUT, ROLE_UNKNOWN, DataError
from signflow.data.unknown import build_open_set, resolve_unknown_classes, sample_balanced, water_fill

FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
TARGETS = ["12", "13"]


@pytest.mark.parametrize(
    ("available", "budget", "expected"),
    [
        ([5, 5, 5], 100, [5, 5, 5]),  # budget larger than supply: take everything
        ([2, 10, 10], 12, [2, 5, 5]),  # the small class is capped, the rest shared evenly
        ([1, 2, 10], 9, [1, 2, 6]),  # two rounds of re-sharing
        ([0, 4], 3, [0, 3]),
        ([4, 4], 0, [0, 0]),
        ([6, 6, 6], 9, [3, 3, 3]),
        ([], 5, []),
    ],
)
def test_water_fill_hand_examples(available: list[int], budget: int, expected: list[int]) -> None:
    assert water_fill(available, budget) == expected


def test_water_fill_uneven_remainder_is_within_one() -> None:
    quotas = water_fill([10, 10, 10], 11)
    assert sum(quotas) == 11 and max(quotas) - min(quotas) == 1


def _spec() -> dict[str, list[int]]:
    # class 1: 6 tracks of 10; class 2: 2 tracks of 3 (scarce); class 3: 12 tracks of 5
    return {"1": [10] * 6, "2": [3, 3], "3": [5] * 12}


def test_sample_balanced_balances_within_budget(make_records) -> None:
    records = make_records(_spec())
    picked = sample_balanced(records, ["1", "2", "3"], max_images=30, seed=0)
    counts = Counter(r.class_id for r in picked)
    assert sum(counts.values()) == 30
    assert counts == {"2": 6, "1": 12, "3": 12}  # the scarce class gives all it has, the rest share evenly
    assert len({r.path for r in picked}) == len(picked)


def test_sample_balanced_ignores_classes_not_asked_for(make_records) -> None:
    picked = sample_balanced(make_records(_spec()), ["1"], max_images=1000, seed=0)
    assert {r.class_id for r in picked} == {"1"} and len(picked) == 60


def test_sample_balanced_spreads_over_tracks(make_records) -> None:
    records = make_records(_spec())
    picked = sample_balanced(records, ["1", "3"], max_images=16, seed=0)
    per_class = {c: [r for r in picked if r.class_id == c] for c in ("1", "3")}
    # 8 images of class 1 (6 tracks): every track used, none more than twice
    tracks_1 = Counter(r.track for r in per_class["1"])
    assert len(tracks_1) == 6 and max(tracks_1.values()) == 2
    # 8 images of class 3 (12 tracks): 8 different tracks
    assert len({r.track for r in per_class["3"]}) == 8


def test_sample_balanced_is_deterministic_and_seeded(make_records) -> None:
    records = make_records(_spec())
    a = sample_balanced(records, ["1", "3"], max_images=16, seed=0)
    assert sample_balanced(list(reversed(records)), ["1", "3"], max_images=16, seed=0) == a
    assert sample_balanced(records, ["1", "3"], max_images=16, seed=1) != a


def test_resolve_default_excludes_targets_and_heldout() -> None:
    available = ["1", "10", "12", "13", "15", "2", "32"]
    assert resolve_unknown_classes(available, TARGETS, [], ["15", "32"]) == ["1", "2", "10"]


def test_resolve_keeps_requested() -> None:
    assert resolve_unknown_classes(["1", "2", "3"], TARGETS, ["3", "1"], []) == ["3", "1"]


def test_resolve_missing_requested_raises() -> None:
    with pytest.raises(ValueError, match=r"unknown\.classes.*\['7'\]") as info:
        resolve_unknown_classes(["1", "2"], TARGETS, ["1", "7"], [])
    assert "'2'" in str(info.value)  # lists what is available


def _open_set_records(make_records):
    spec = {c: [4] * 10 for c in ("12", "13")}
    spec |= {c: [3] * 8 for c in ("1", "2", "3")}  # unknown sources
    spec |= {c: [5] * 6 for c in ("15", "32")}  # held out
    return make_records(spec)


def _build(records, **overrides) -> dict[str, pd.DataFrame]:
    kwargs = dict(
        enabled=True, unknown_classes=[], heldout=["15", "32"], max_images=45, heldout_max_images=40
    ) | overrides
    return build_open_set(records, TARGETS, FRACTIONS, 0, **kwargs)


def test_open_set_roles_labels_and_splits(make_records) -> None:
    frames = _build(_open_set_records(make_records))
    assert sorted(frames) == sorted(FRACTIONS)
    everything = pd.concat(frames.values(), ignore_index=True)

    heldout = everything[everything["role"] == ROLE_HELDOUT]
    assert set(heldout["class_id"]) == {"15", "32"}
    assert (heldout["label_idx"] == HELDOUT_LABEL_IDX).all()
    assert len(heldout) == 40
    assert (frames["train"]["role"] != ROLE_HELDOUT).all()
    assert (frames["val"]["role"] == ROLE_HELDOUT).any() and (frames["test"]["role"] == ROLE_HELDOUT).any()

    unknown = everything[everything["role"] == ROLE_UNKNOWN]
    assert set(unknown["class_id"]) == {"1", "2", "3"}
    assert (unknown["label_idx"] == len(TARGETS)).all()
    assert (unknown["label"] == "unknown").all()
    assert len(unknown) == 45
    assert set(unknown["class_id"].value_counts()) == {15}
    assert not set(everything["class_id"]) & set(TARGETS)  # targets come from the split stage

    keys = {name: set(f["class_id"] + "/" + f["track"]) for name, f in frames.items()}
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"] and not keys["val"] & keys["test"]


def test_open_set_heldout_follows_val_test_ratio(make_records) -> None:
    records = make_records({"12": [1], "13": [1], "15": [1] * 40})
    frames = build_open_set(
        records, TARGETS, {"train": 0.6, "val": 0.1, "test": 0.3}, 0,
        enabled=False, unknown_classes=[], heldout=["15"], max_images=0, heldout_max_images=100,
    )
    assert (len(frames["val"]), len(frames["test"])) == (10, 30)


def test_open_set_disabled_keeps_heldout(make_records) -> None:
    frames = _build(_open_set_records(make_records), enabled=False)
    everything = pd.concat(frames.values(), ignore_index=True)
    assert set(everything["role"]) == {ROLE_HELDOUT}
    assert len(frames["train"]) == 0


def test_open_set_requested_unknown_classes(make_records) -> None:
    frames = _build(_open_set_records(make_records), unknown_classes=["2"])
    everything = pd.concat(frames.values(), ignore_index=True)
    assert set(everything.loc[everything["role"] == ROLE_UNKNOWN, "class_id"]) == {"2"}


def test_open_set_missing_heldout_raises(make_records) -> None:
    with pytest.raises(DataError, match=r"unknown\.heldout.*\['99'\]"):
        _build(_open_set_records(make_records), heldout=["15", "99"])
