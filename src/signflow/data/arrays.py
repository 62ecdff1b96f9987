"""The decode-once image arrays every stage after ``add_unknown`` reads.

Beside each split's manifest (``{split}.csv``) lies a uint8 array
(N, S, S, 3), ``{split}.npy``, of its images decoded and resized once;
training, evaluation, the report and benchmarks memory-map it, so no image
file is decoded twice.

A page read or written through a memory map counts in the process's resident
memory (RSS) until it is unmapped, so one pass over a 2.4 GB split would end
at 2.4 GB RSS although nothing is held. Every loop over a map therefore calls
:func:`release_resident` as it goes: its resident memory stays at a batch.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.format import open_memmap

from signflow.data.manifest import MANIFEST_COLUMNS, DataError, read_manifest
from signflow.files import atomic_path


def release_resident(images: np.ndarray) -> None:
    """Unmap the pages of a memory-mapped array this process has touched; the data stays.

    ``madvise(MADV_DONTNEED)`` on a file mapping drops only this process's page
    table entries: the OS page cache keeps the pages (written ones are written
    back as usual), so the next access is a minor fault, not a disk read. A
    no-op for in-memory arrays and where ``madvise`` is unavailable.
    """
    mapped = getattr(images, "_mmap", None)  # np.memmap's mmap.mmap, shared by its slices
    if mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED)


def write_split(out_dir: Path, name: str, frame: pd.DataFrame, images: np.ndarray) -> None:
    # Both temporaries are complete before either is renamed: a failed write (a full disk)
    # leaves the previous pair, never a new array beside the old manifest.
    with atomic_path(out_dir / f"{name}.npy") as tmp_npy, atomic_path(out_dir / f"{name}.csv") as tmp_csv:
        np.save(tmp_npy, images)
        frame.to_csv(tmp_csv, index=False, columns=MANIFEST_COLUMNS)


def write_split_streamed(
    out_dir: Path, name: str, frame: pd.DataFrame, size: int, fill: Callable[[np.ndarray], None]
) -> None:
    """Like :func:`write_split`, but ``fill`` writes the images straight into the memory-mapped ``.npy``.

    The (N, size, size, 3) array is never held in RAM (``fill`` should call
    :func:`release_resident` as it goes); the file's bytes are those ``np.save``
    writes for the same images (same header, same layout).
    """
    shape = (len(frame), int(size), int(size), 3)  # plain ints: the header is their repr
    with atomic_path(out_dir / f"{name}.npy") as tmp_npy, atomic_path(out_dir / f"{name}.csv") as tmp_csv:
        images = open_memmap(tmp_npy, mode="w+", dtype=np.uint8, shape=shape)
        _allocate(tmp_npy)
        fill(images)
        images.flush()
        del images  # unmapped before the rename
        frame.to_csv(tmp_csv, index=False, columns=MANIFEST_COLUMNS)


def _allocate(path: Path) -> None:
    """Reserve the disk blocks of the sparse file ``open_memmap`` made.

    A full disk then fails here with OSError (ENOSPC) instead of killing the process
    with SIGBUS when ``fill`` first touches a page that has no block behind it.
    """
    if not hasattr(os, "posix_fallocate"):  # macOS, Windows: the write itself reports it
        return
    with open(path, "r+b") as fh:
        os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)


def load_split(dataset_dir: Path, name: str, mmap: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
    """The manifest and its decoded images (memory-mapped: no copy in RAM)."""
    frame = read_manifest(dataset_dir / f"{name}.csv")
    images = np.load(dataset_dir / f"{name}.npy", mmap_mode="r" if mmap else None)
    if len(frame) != len(images):
        raise DataError(f"{dataset_dir}/{name}: manifest has {len(frame)} rows, array {len(images)}")
    return frame, images
