"""Decode a manifest's image files into one uint8 array, in parallel, once.

:func:`decode_into` writes each image into a given (N, S, S, 3) array as it
arrives from the pool, so given a memory-mapped ``.npy`` (``arrays.write_split_streamed``)
the stage's memory stays flat however many images there are. Rows are read shard by
shard (:func:`shard_order`), so each process keeps one zip directory open, not all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from signflow.data.arrays import release_resident
from signflow.data.images import ImageLimits, decode_job, image_ref
from signflow.parallel import bounded_map, process_pool, resolve_workers

DECODE_CHUNK = 256  # below this many images a pool's start-up costs more than it saves
RELEASE_EVERY = 1024  # images written between two releases of a memory-mapped output's pages (12 MB at 64 px)
JOB_ROWS = 4096  # manifest rows turned into jobs at a time: a copy of this many rows, never of the whole frame


def decode_frame(
    frame: pd.DataFrame, raw_root: Path, size: int, roi_crop: bool, workers: int, limits: ImageLimits
) -> np.ndarray:
    """Decode and resize every image of ``frame`` into an in-memory (N, size, size, 3) uint8 array."""
    out = np.empty((len(frame), size, size, 3), dtype=np.uint8)
    decode_into(out, frame, raw_root, roi_crop, workers, limits)
    return out


def decode_into(
    out: np.ndarray, frame: pd.DataFrame, raw_root: Path, roi_crop: bool, workers: int, limits: ImageLimits
) -> None:
    """Decode every image of ``frame`` into ``out`` (N, S, S, 3) uint8, in parallel; row i goes to ``out[i]``.

    ``raw_root`` is the directory the rows' ``shard`` (or, for loose files, ``path``) is relative to.
    """
    size = out.shape[1]
    if out.shape != (len(frame), size, size, 3) or out.dtype != np.uint8:
        raise ValueError(f"expected a ({len(frame)}, S, S, 3) uint8 output, got {out.shape} {out.dtype}")
    order = shard_order(frame)
    jobs = _jobs(frame, order, raw_root, roi_crop, size, limits)
    workers = resolve_workers(workers)
    with tqdm(total=len(frame), desc="decode", unit="img", leave=False) as progress:
        if workers == 1 or len(frame) < DECODE_CHUNK:
            _fill(out, order, map(decode_job, jobs), progress)
        else:
            with process_pool(workers) as pool:
                images = bounded_map(pool, decode_job, jobs, chunksize=max(1, DECODE_CHUNK // workers))
                _fill(out, order, images, progress)


def shard_order(frame: pd.DataFrame) -> np.ndarray:
    """Row positions grouped by shard, in order of first appearance; manifest order within a shard.

    A process keeps only ``images.OPEN_SHARDS`` shards open, each holding its zip's whole directory;
    visited in this order, a worker opens each shard once. The split stage's manifests (class by
    class, one shard per class) keep their order; an official test set's mixed classes are grouped.
    """
    codes, _ = pd.factorize(frame["shard"])
    return np.argsort(codes, kind="stable")


def _jobs(
    frame: pd.DataFrame, order: np.ndarray, raw_root: Path, roi_crop: bool, size: int, limits: ImageLimits
) -> Iterator[tuple]:
    """``decode_job``'s arguments for the rows at ``order``, made as the pool (one window at a time) takes them."""
    for row in _rows_in_order(frame, order):
        roi = (row.x1, row.y1, row.x2, row.y2) if roi_crop and row.x2 > row.x1 else None
        yield image_ref(raw_root, row.path, row.shard), roi, size, limits


def _rows_in_order(frame: pd.DataFrame, order: np.ndarray) -> Iterator[tuple]:
    """The rows at ``order``: the frame's own when already in that order, else copies of a few rows at a time.

    Already in order is the large case (the split stage's manifests) and must copy nothing: the
    Arrow memory pool keeps what row copies (``iloc`` takes) allocated, ~15 MB at 120k rows.
    """
    if bool(np.all(order[1:] > order[:-1])):  # a permutation that only increases is the identity
        yield from frame.itertuples()
        return
    for start in range(0, len(order), JOB_ROWS):
        yield from frame.iloc[order[start:start + JOB_ROWS]].itertuples()


def _fill(out: np.ndarray, order: np.ndarray, images: Iterable[np.ndarray], progress: tqdm) -> None:
    for i, image in enumerate(images):
        out[order[i]] = image  # one image at a time: the pool's results are not all kept
        progress.update()
        if (i + 1) % RELEASE_EVERY == 0:
            release_resident(out)  # a memory-mapped output's written pages leave RSS, stay in the file
    release_resident(out)
