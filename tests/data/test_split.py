"""Track-grouped, stratified splitting: no leakage, proportions within one track, deterministic."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from signflow.data.split import group_split, split_records

FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def _random_items(rng: np.random.Generator, n_classes: int) -> tuple[list[str], list[str], dict[str, int]]:
    """Items (group, stratum) for classes with random track counts and sizes; also group sizes."""
    groups, strata, sizes = [], [], {}
    for c in range(n_classes):
        for t in range(int(rng.integers(1, 25))):
            size = int(rng.integers(1, 31))
            key = f"{c}/{t}"
            sizes[key] = size
            groups += [key] * size
            strata += [str(c)] * size
    return groups, strata, sizes


def _group_splits(groups: list[str], names: list[str]) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = defaultdict(set)
    for group, name in zip(groups, names, strict=True):
        seen[group].add(name)
    return seen


@pytest.mark.parametrize("seed", range(25))
def test_random_draws_keep_groups_whole_and_counts_near_target(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    fractions = dict(zip(FRACTIONS, rng.dirichlet([4, 1, 1]), strict=True)) if seed % 2 else FRACTIONS
    groups, strata, sizes = _random_items(rng, n_classes=4)
    names = group_split(groups, strata, fractions, seed)

    assert len(names) == len(groups)
    assert all(len(s) == 1 for s in _group_splits(groups, names).values())
    for stratum in set(strata):
        members = [i for i, s in enumerate(strata) if s == stratum]
        largest = max(size for g, size in sizes.items() if g.startswith(f"{stratum}/"))
        counts = Counter(names[i] for i in members)
        for split, frac in fractions.items():
            assert abs(counts[split] - frac * len(members)) <= largest + 1e-9, (stratum, split, counts)


def test_deterministic_and_independent_of_input_order() -> None:
    rng = np.random.default_rng(7)
    groups, strata, _ = _random_items(rng, n_classes=3)
    first = group_split(groups, strata, FRACTIONS, seed=3)
    assert group_split(groups, strata, FRACTIONS, seed=3) == first

    order = rng.permutation(len(groups))
    shuffled = group_split([groups[i] for i in order], [strata[i] for i in order], FRACTIONS, seed=3)
    assert {groups[i]: name for i, name in zip(order, shuffled, strict=True)} == dict(zip(groups, first, strict=True))


def test_different_seed_gives_different_assignment() -> None:
    # 40 equal tracks per class: the assignment is decided by the seeded shuffle alone.
    groups = [f"{c}/{t}" for c in "ab" for t in range(40) for _ in range(3)]
    strata = [g.split("/")[0] for g in groups]
    a = group_split(groups, strata, FRACTIONS, seed=0)
    b = group_split(groups, strata, FRACTIONS, seed=1)
    assert a != b
    assert Counter(a) == Counter(b)  # same sizes, so the same counts: only who goes where changed


@pytest.mark.parametrize("n_tracks", [1, 2, 3])
def test_tiny_classes_do_not_crash_and_keep_groups_whole(n_tracks: int) -> None:
    groups = [f"x/{t}" for t in range(n_tracks) for _ in range(4)]
    strata = ["x"] * len(groups)
    names = group_split(groups, strata, FRACTIONS, seed=0)
    assert set(names) <= set(FRACTIONS)
    assert all(len(s) == 1 for s in _group_splits(groups, names).values())
    assert "train" in names  # the largest share always gets the first track


def test_zero_fraction_split_stays_empty() -> None:
    groups = [f"x/{t}" for t in range(20)]
    names = group_split(groups, ["x"] * 20, {"train": 0.5, "val": 0.0, "test": 0.5}, seed=0)
    assert Counter(names) == {"train": 10, "test": 10}


def test_fractions_of_a_subset_are_normalised() -> None:
    # The held-out set is split over val/test only, with their (not summing to 1) fractions.
    groups = [f"x/{t}" for t in range(40)]
    names = group_split(groups, ["x"] * 40, {"val": 0.1, "test": 0.3}, seed=0)
    assert Counter(names) == {"val": 10, "test": 30}


def test_group_spanning_two_strata_raises() -> None:
    with pytest.raises(ValueError, match="spans strata"):
        group_split(["g1", "g1", "g2"], ["a", "b", "a"], FRACTIONS, seed=0)


def test_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        group_split(["g1", "g2"], ["a"], FRACTIONS, seed=0)


def test_split_records_by_track_keeps_tracks_whole(make_records) -> None:
    records = make_records({"12": [5] * 10, "14": [3] * 10})
    parts = split_records(records, FRACTIONS, seed=0)
    assert sorted(parts) == sorted(FRACTIONS)
    assert sorted(r.path for p in parts.values() for r in p) == sorted(r.path for r in records)
    where = {r.group: name for name, recs in parts.items() for r in recs}
    assert all(where[r.group] == name for name, recs in parts.items() for r in recs)
    assert all(len({r.class_id for r in recs}) == 2 for recs in parts.values())


def test_split_records_by_image_splits_tracks(make_records) -> None:
    # One class, a single 20-frame track: only an image-level split can divide it.
    records = make_records({"12": [20]})
    parts = split_records(records, FRACTIONS, seed=0, by_track=False)
    assert {name: len(recs) for name, recs in parts.items()} == {"train": 16, "val": 2, "test": 2}
    assert split_records(records, FRACTIONS, seed=0, by_track=True)["train"] == records
