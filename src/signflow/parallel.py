"""The one process pool for CPU-bound image work (render, validate, decode).

Workers start from a ``forkserver`` (a clean process), not a fork of the caller:
a child forked after OpenCV or torch started their thread pools can deadlock on
them. Each worker uses one OpenCV thread, since the pool already fills the cores.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

import cv2


def _single_thread_worker() -> None:
    cv2.setNumThreads(1)


def available_cores() -> int:
    """Cores this process may run on (respects taskset/cgroups, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_workers(workers: int) -> int:
    """0 means one worker per available core."""
    return workers if workers > 0 else available_cores()


def process_pool(workers: int) -> ProcessPoolExecutor:
    context = multiprocessing.get_context("forkserver")
    return ProcessPoolExecutor(
        max_workers=resolve_workers(workers), mp_context=context, initializer=_single_thread_worker
    )


MAP_WINDOW = 4096  # jobs submitted at once: the queue's memory stays bounded, the tail idle time small


def bounded_map(
    pool: Executor, fn: Callable[[Any], Any], jobs: Iterable[Any], chunksize: int,
    window: int = MAP_WINDOW,
) -> Iterator[Any]:
    """``pool.map(fn, jobs)`` in order, with at most ``window`` jobs submitted at a time.

    ``ProcessPoolExecutor.map`` submits every job up front, so its queued jobs
    (and finished results waiting for the consumer) grow with the job count:
    about 80 MB of job tuples at 200k images. Windows keep that flat.
    """
    remaining = iter(jobs)
    while window_jobs := list(itertools.islice(remaining, window)):
        yield from pool.map(fn, window_jobs, chunksize=chunksize)
