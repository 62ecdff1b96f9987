"""Decode a manifest's image files into one uint8 array, in parallel, once."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from tqdm import tqdm

from signflow.data.images import ImageLimits, decode_job
from signflow.parallel import process_pool, resolve_workers

DECODE_CHUNK = 256  # below this many images a pool's start-up costs more than it saves


def decode_frame(
    frame: pd.DataFrame, raw_root: Path, size: int, roi_crop: bool, workers: int, limits: ImageLimits
) -> np.ndarray:
    """Decode and resize every image of ``frame`` into (N, size, size, 3) uint8, in parallel."""
    jobs = [
        (str(raw_root / row.path), (row.x1, row.y1, row.x2, row.y2) if roi_crop and row.x2 > row.x1 else None,
         size, limits)
        for row in frame.itertuples()
    ]
    out = np.empty((len(jobs), size, size, 3), dtype=np.uint8)
    workers = resolve_workers(workers)
    with tqdm(total=len(jobs), desc="decode", unit="img", leave=False) as progress:
        if workers == 1 or len(jobs) < DECODE_CHUNK:
            _fill(out, map(decode_job, jobs), progress)
        else:
            with process_pool(workers) as pool:
                _fill(out, pool.map(decode_job, jobs, chunksize=max(1, DECODE_CHUNK // workers)), progress)
    return out


def _fill(out: np.ndarray, images: Iterable[np.ndarray], progress: tqdm) -> None:
    for i, image in enumerate(images):
        out[i] = image
        progress.update()
