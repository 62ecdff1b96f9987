"""The one process pool for CPU-bound image work (render, validate, decode).

Workers start from a ``forkserver`` (a clean process), not a fork of the caller:
a child forked after OpenCV or torch started their thread pools can deadlock on
them. Each worker uses one OpenCV thread, since the pool already fills the cores.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

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
