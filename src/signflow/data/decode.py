"""Decode a manifest's image files into one uint8 array, in parallel, once.

:func:`decode_into` writes each image into a given (N, S, S, 3) array as it
arrives from the pool, so given a memory-mapped ``.npy`` (``arrays.write_split_streamed``)
the stage's memory stays flat however many images there are.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from signflow.data.arrays import release_resident
from signflow.data.images import ImageLimits, decode_job, image_ref
from signflow.parallel import bounded_map, process_pool, resolve_workers

DECODE_CHUNK = 256  # below this many images a pool's start-up costs more than it saves
RELEASE_EVERY = 1024  # images written between two releases of a memory-mapped output's pages (12 MB at 64 px)


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
    """Decode every image of ``frame`` into ``out`` (N, S, S, 3) uint8, in parallel, row by row in order.

    ``raw_root`` is the directory the rows' ``shard`` (or, for loose files, ``path``) is relative to.
    """
    size = out.shape[1]
    if out.shape != (len(frame), size, size, 3) or out.dtype != np.uint8:
        raise ValueError(f"expected a ({len(frame)}, S, S, 3) uint8 output, got {out.shape} {out.dtype}")
    # A generator, not a list: jobs are made as the pool (one window at a time) or the loop takes them.
    jobs = (
        (image_ref(raw_root, row.path, row.shard), (row.x1, row.y1, row.x2, row.y2) if roi_crop and row.x2 > row.x1
         else None, size, limits)
        for row in frame.itertuples()
    )
    workers = resolve_workers(workers)
    with tqdm(total=len(frame), desc="decode", unit="img", leave=False) as progress:
        if workers == 1 or len(frame) < DECODE_CHUNK:
            _fill(out, map(decode_job, jobs), progress)
        else:
            with process_pool(workers) as pool:
                _fill(out, bounded_map(pool, decode_job, jobs, chunksize=max(1, DECODE_CHUNK // workers)), progress)


def _fill(out: np.ndarray, images: Iterable[np.ndarray], progress: tqdm) -> None:
    for i, image in enumerate(images):
        out[i] = image  # one image at a time: the pool's results are not all kept
        progress.update()
        if (i + 1) % RELEASE_EVERY == 0:
            release_resident(out)  # a memory-mapped output's written pages leave RSS, stay in the file
    release_resident(out)
