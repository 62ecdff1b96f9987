"""Perceptual hashes: robust to re-encoding, apart for unrelated images; pair search and clusters exact."""

from __future__ import annotations

import cv2
import imagehash
import numpy as np
import pytest
from PIL import Image

from signflow.config import HASH_BITS as CONFIG_HASH_BITS
from signflow.config import SplitConfig
from signflow.data import hashes
from signflow.data.hashes import HASH_BITS, HASH_SIZE, hash_groups, near_pairs, perceptual_hashes
from signflow.data.sources.synthetic import render_sign

TARGETS = ("12", "13", "14", "17")


def _signs(n: int, seed: int) -> list[np.ndarray]:
    """``n`` rendered sign photos (RGB, 32-80 px, fresh random instances of four sign types)."""
    rng = np.random.default_rng(seed)
    return [cv2.cvtColor(render_sign(TARGETS[k % len(TARGETS)], rng, int(rng.integers(32, 81))), cv2.COLOR_BGR2RGB)
            for k in range(n)]


def reencoded(rgb: np.ndarray, shrink: int, quality: int = 85) -> np.ndarray:
    """``rgb`` resized by ``shrink`` px per side (negative: grown) and saved as a JPEG of ``quality``, decoded back."""
    height, width = rgb.shape[:2]
    resized = cv2.resize(rgb, (width - shrink, height - shrink), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(resized, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _distance(a: np.uint64, b: np.uint64) -> int:
    return int(np.bitwise_count(np.uint64(a) ^ np.uint64(b)))


def test_hash_is_imagehash_phash_as_one_uint64() -> None:
    images = _signs(3, seed=0)
    values = perceptual_hashes(images, HASH_SIZE)
    assert values.dtype == np.uint64 and values.shape == (3,)
    assert [f"{int(v):016x}" for v in values] == [str(imagehash.phash(Image.fromarray(im))) for im in images]
    stacked = np.stack([cv2.resize(im, (40, 40)) for im in images])  # an (N, H, W, 3) array works too
    assert perceptual_hashes(stacked, HASH_SIZE).tolist() == perceptual_hashes(list(stacked), HASH_SIZE).tolist()
    assert perceptual_hashes([], HASH_SIZE).shape == (0,)


def test_identical_images_are_at_distance_zero() -> None:
    image = _signs(1, seed=1)[0]
    a, b = perceptual_hashes([image, image.copy()], HASH_SIZE)
    assert _distance(a, b) == 0


@pytest.mark.parametrize("shrink", [1, 2, 3, -2])
def test_reencoded_and_resized_copy_stays_within_the_default_distance(shrink: int) -> None:
    images = _signs(24, seed=2)
    originals = perceptual_hashes(images, HASH_SIZE)
    copies = perceptual_hashes([reencoded(im, shrink) for im in images], HASH_SIZE)
    distances = [_distance(a, b) for a, b in zip(originals, copies, strict=True)]
    assert max(distances) <= SplitConfig().hash_distance, distances


def test_unrelated_images_are_far_apart() -> None:
    values = perceptual_hashes(_signs(60, seed=3), HASH_SIZE)
    _, _, distances = near_pairs(values, None, HASH_BITS)
    assert len(distances) == 60 * 59 // 2
    assert distances.min() > SplitConfig().hash_distance  # no two of them taken for one picture
    assert np.median(distances) >= HASH_BITS // 2 - 6  # about half the bits differ, as for random bits


@pytest.mark.parametrize("bad", [4, 16])
def test_other_hash_sizes_are_refused(bad: int) -> None:
    with pytest.raises(ValueError, match=f"allowed: {HASH_SIZE}"):
        perceptual_hashes(_signs(1, seed=4), bad)


def test_non_rgb_input_is_refused() -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        perceptual_hashes([np.zeros((8, 8), dtype=np.uint8)], HASH_SIZE)


def test_config_ceiling_is_the_hash_width() -> None:
    assert CONFIG_HASH_BITS == HASH_BITS == HASH_SIZE * HASH_SIZE


# ---- near_pairs: the brute force it replaces -----------------------------------------------------


def _brute_force(a: np.ndarray, b: np.ndarray | None, max_distance: int) -> list[tuple[int, int, int]]:
    other = a if b is None else b
    return [(i, j, d) for i in range(len(a)) for j in range(len(other))
            if (b is not None or i < j) and (d := bin(int(a[i]) ^ int(other[j])).count("1")) <= max_distance]


def _clustered_hashes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random 64-bit hashes, a third of them a few flipped bits from an earlier one (so near pairs exist)."""
    values = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    for k in range(n // 3, n):
        if rng.random() < 0.5:
            flips = rng.choice(HASH_BITS, size=int(rng.integers(0, 8)), replace=False)
            values[k] = values[rng.integers(0, k)] ^ np.uint64(sum(1 << int(f) for f in flips))
    return values


@pytest.mark.parametrize("block_pairs", [1, 7, 64, hashes.BLOCK_PAIRS])
@pytest.mark.parametrize("max_distance", [0, 3, 6, 20])
def test_near_pairs_match_brute_force(monkeypatch: pytest.MonkeyPatch, block_pairs: int, max_distance: int) -> None:
    monkeypatch.setattr(hashes, "BLOCK_PAIRS", block_pairs)  # small blocks: every chunk boundary is crossed
    rng = np.random.default_rng(block_pairs * 100 + max_distance)
    a, b = _clustered_hashes(rng, 70), _clustered_hashes(rng, 45)
    b[:10] = a[:10] ^ np.uint64(0b101)  # pairs across the two sets too
    for other in (None, b):
        i, j, d = near_pairs(a, other, max_distance)
        assert all(x.dtype == np.int64 for x in (i, j, d))
        assert list(zip(i.tolist(), j.tolist(), d.tolist(), strict=True)) == _brute_force(a, other, max_distance)


def test_near_pairs_of_empty_sets_and_int64_storage() -> None:
    empty = np.empty(0, dtype=np.uint64)
    assert all(len(x) == 0 for x in near_pairs(empty, None, 6))
    assert all(len(x) == 0 for x in near_pairs(empty, np.arange(3, dtype=np.uint64), 6))
    values = np.array([2**63 + 5, 2**63 + 4, 7], dtype=np.uint64)
    stored = values.view(np.int64)  # as a CSV or a DataFrame holds them: negative, same bits
    assert [x.tolist() for x in near_pairs(stored, None, 2)] == [x.tolist() for x in near_pairs(values, None, 2)]
    assert near_pairs(values, None, 1)[0].tolist() == [0]


@pytest.mark.parametrize("bad", [-1, HASH_BITS + 1])
def test_near_pairs_refuses_impossible_distances(bad: int) -> None:
    with pytest.raises(ValueError, match="max_distance"):
        near_pairs(np.zeros(2, dtype=np.uint64), None, bad)


def test_near_pairs_of_25k_hashes_take_seconds() -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**64, size=25_000, dtype=np.uint64)
    values[-100:] = values[:100] ^ np.uint64(1)
    i, j, _ = near_pairs(values, None, 6)  # 312M comparisons in blocks of ~40 MB
    assert {(a, b) for a, b in zip(i.tolist(), j.tolist(), strict=True)} >= {(k, 24_900 + k) for k in range(100)}


# ---- hash_groups: transitive clusters ------------------------------------------------------------


def test_groups_are_transitive_and_numbered_by_first_image() -> None:
    base = np.uint64(0xF0F0_F0F0_0F0F_0F0F)
    # A chain: each link 4 bits from the last, the ends 12 bits apart; then an unrelated hash, then a duplicate.
    chain = [base, base ^ np.uint64(0xF), base ^ np.uint64(0xFF), base ^ np.uint64(0xFFF)]
    far = ~base
    values = np.array([far, *chain, far, chain[3]], dtype=np.uint64)
    assert _distance(chain[0], chain[3]) == 12
    ids = hash_groups(values, max_distance=4)
    assert ids.tolist() == [0, 1, 1, 1, 1, 0, 1]
    assert hash_groups(values, max_distance=3).tolist() == [0, 1, 2, 3, 4, 0, 4]  # links broken: singletons
    assert hash_groups(values, max_distance=0).tolist() == [0, 1, 2, 3, 4, 0, 4]  # equal hashes still merge


def test_groups_match_connected_components_of_brute_force_pairs() -> None:
    rng = np.random.default_rng(5)
    values = _clustered_hashes(rng, 120)
    ids = hash_groups(values, 5)
    parent = list(range(len(values)))

    def root(k: int) -> int:
        while parent[k] != k:
            k = parent[k]
        return k

    for i, j, _ in _brute_force(values, None, 5):
        parent[root(i)] = root(j)
    same_reference = [[root(i) == root(j) for j in range(len(values))] for i in range(len(values))]
    same_ids = (ids[:, None] == ids[None, :]).tolist()
    assert same_ids == same_reference
    assert len(set(ids.tolist())) < len(values)  # the planted near hashes did merge
    first_seen = list(dict.fromkeys(ids.tolist()))
    assert first_seen == list(range(len(first_seen)))


def test_many_equal_hashes_cost_one_node() -> None:
    values = np.zeros(20_000, dtype=np.uint64)  # 100M pairs if compared one by one
    values[::2] = ~np.uint64(0)
    assert set(hash_groups(values, 6).tolist()) == {0, 1}
    assert hash_groups(np.empty(0, dtype=np.uint64), 6).shape == (0,)
