"""Perceptual hashes of images and the near-duplicate pairs and clusters they reveal.

A track id keeps the frames of one sign in one split only where the data has
track ids; a folder of burst photos has none. A perceptual hash finds those
frames by their pixels instead: images a few bits apart are the same picture
re-encoded, resized or nudged. Used by the split stage (``split.group_by: hash``)
and the audit (near-duplicates across splits).

The hash is imagehash's pHash (a DCT of the 32x32 grey image, 64 bits), not our
own: a maintained, tested implementation of the standard perceptual hash, robust
to JPEG re-encoding and small resizes. What no library does, searching pairs
within a Hamming distance among tens of thousands of 64-bit hashes, is numpy
here: XOR and popcount over bounded blocks, seconds for 25k x 25k.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import imagehash
import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

from signflow.data.images import ImageLimits, ImageSource, read_rgb
from signflow.parallel import bounded_map, process_pool, resolve_workers

log = logging.getLogger(__name__)

HASH_SIZE = 8  # pHash side: 8 x 8 DCT coefficients, so one uint64 per image
HASH_BITS = HASH_SIZE * HASH_SIZE
# Hash-pair comparisons held at once by near_pairs: ~10 bytes each (XOR, popcount, mask), so ~40 MB a block.
BLOCK_PAIRS = 1 << 22
POOL_MIN_IMAGES = 256  # below this many images a process pool's start-up costs more than it saves
POOL_CHUNK = 64


def _check_hash_size(hash_size: int) -> None:
    if hash_size != HASH_SIZE:
        raise ValueError(f"hash_size {hash_size} is not supported; allowed: {HASH_SIZE} ({HASH_BITS} bits, a uint64)")


def _phash(rgb: np.ndarray, hash_size: int) -> np.uint64:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {rgb.shape} {rgb.dtype}")
    bits = imagehash.phash(Image.fromarray(rgb), hash_size=hash_size).hash  # (8, 8) bool, row-major
    # Most significant bit first: the value prints as imagehash's own hex string.
    return np.packbits(bits.ravel()).view(">u8")[0].astype(np.uint64)


def perceptual_hashes(images: Iterable[np.ndarray] | np.ndarray, hash_size: int) -> np.ndarray:
    """One 64-bit pHash (uint64) per RGB uint8 image (H, W, 3); ``images`` is an (N, H, W, 3) array or any iterable.

    Images may differ in size: pHash sees each as a 32 x 32 grey image. Only
    ``hash_size`` 8 is supported (64 bits fill a uint64 exactly).
    """
    _check_hash_size(hash_size)
    return np.fromiter((_phash(np.asarray(rgb), hash_size) for rgb in images), dtype=np.uint64)


def _as_hashes(values: np.ndarray) -> np.ndarray:
    # Bit-preserving: hashes stored as int64 (a CSV, a DataFrame) come back as the same 64 bits.
    return np.ascontiguousarray(np.asarray(values).astype(np.uint64, copy=False).ravel())


def near_pairs(
    a: np.ndarray, b: np.ndarray | None, max_distance: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of hashes within ``max_distance`` bits: (indices into ``a``, indices into ``b``, distances).

    ``b`` None: pairs within ``a``, each once (i < j). Rows of ``a`` are
    compared in blocks of at most ``BLOCK_PAIRS`` hash pairs, so memory stays
    bounded whatever the sizes. Pairs come ordered by ``a`` index, then ``b``
    index; all three arrays are int64.
    """
    if not 0 <= max_distance <= HASH_BITS:
        raise ValueError(f"max_distance {max_distance} outside 0..{HASH_BITS}")
    a = _as_hashes(a)
    within = b is None
    b = a if within else _as_hashes(b)
    rows = max(1, BLOCK_PAIRS // max(1, len(b)))
    found_a, found_b, found_d = [], [], []
    for start in range(0, len(a), rows):
        stop = min(len(a), start + rows)
        first = start + 1 if within else 0  # within a set: only columns after the block's first row
        dist = np.bitwise_count(a[start:stop, None] ^ b[None, first:])  # (rows, columns) uint8
        hit = dist <= max_distance
        if within:  # the block's own columns: keep j > i only (j <= i is counted already, or the image itself)
            own = stop - first
            hit[:, :own] &= np.triu(np.ones((stop - start, own), dtype=bool))
        i, j = np.nonzero(hit)
        found_a.append(i + start)
        found_b.append(j + first)
        found_d.append(dist[i, j])
    if not found_a:  # an empty ``a``
        return tuple(np.empty(0, dtype=np.int64) for _ in range(3))
    return tuple(np.concatenate(parts).astype(np.int64) for parts in (found_a, found_b, found_d))


def hash_groups(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """A cluster id (int64) per hash: hashes within ``max_distance`` bits of each other, transitively, share one.

    The connected components of the near-pair graph (scipy's
    ``connected_components``). Equal hashes are merged first, so a thousand
    copies of one blank image cost one node, not half a million pairs. Ids
    are 0, 1, ... in order of each cluster's first image: the same hashes in
    the same order give the same ids.
    """
    hashes = _as_hashes(hashes)
    if not len(hashes):
        return np.empty(0, dtype=np.int64)
    unique, member_of = np.unique(hashes, return_inverse=True)
    i, j, _ = near_pairs(unique, None, max_distance)
    graph = coo_array((np.ones(len(i), dtype=np.int8), (i, j)), shape=(len(unique), len(unique)))
    _, component = connected_components(graph, directed=False)
    labels = component[member_of.ravel()]
    # Renumber by first appearance, whatever order scipy labels components in.
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.ravel()]


def _hash_job(job: tuple[ImageSource, ImageLimits]) -> np.uint64:
    """Decode one image file whole (no ROI crop, no resize) and hash it; a pool worker."""
    source, limits = job
    return _phash(read_rgb(source, limits), HASH_SIZE)


def hash_image_files(
    sources: Sequence[ImageSource], shards: Sequence[str], limits: ImageLimits, workers: int
) -> np.ndarray:
    """The pHash (uint64) of each image file, decoded whole, in parallel above a few hundred images.

    ``shards`` (one per source, "" for a loose file) orders the work shard by
    shard, so each worker keeps one zip open (see ``images.OPEN_SHARDS``);
    the result follows ``sources``.
    """
    codes, _ = pd.factorize(pd.Series(list(shards), dtype=object))
    order = np.argsort(codes, kind="stable")
    jobs = ((sources[k], limits) for k in order)
    workers = resolve_workers(workers)
    out = np.empty(len(sources), dtype=np.uint64)
    with tqdm(total=len(sources), desc="hash", unit="img", leave=False) as progress:
        if workers == 1 or len(sources) < POOL_MIN_IMAGES:
            _fill(out, order, map(_hash_job, jobs), progress)
        else:
            with process_pool(workers) as pool:
                _fill(out, order, bounded_map(pool, _hash_job, jobs, chunksize=POOL_CHUNK), progress)
    log.info("hashed %d images", len(sources))
    return out


def _fill(out: np.ndarray, order: np.ndarray, hashes: Iterable[np.uint64], progress: tqdm) -> None:
    for position, value in zip(order, hashes, strict=True):
        out[position] = value
        progress.update()
