"""Fault-injection hook for the reliability tests: stall a stage at a chosen moment, so a test can kill it there.

Put this folder first on PYTHONPATH and set ``SIGNFLOW_TEST_STALL=<output name>:<n>:<mode>``: Python
imports this module at start-up (``site``), which wraps ``signflow.files.atomic_path`` (the one helper every
output goes through) before any stage imports it. At the n-th write of an output named ``<output name>``:

- ``write``: the temporary is complete but not renamed yet (a kill lands between write and rename);
- ``truncate``: the temporary is cut to half its size first (a kill mid-way through writing the file);
- ``next-step``: the write completes, then training stalls at the second batch of the next epoch
  (one optimizer step of that epoch done: a kill mid-epoch).

It then creates the file ``SIGNFLOW_TEST_STALL_MARKER`` and sleeps until killed. Without
``SIGNFLOW_TEST_STALL`` it does nothing. Only tests set it.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

STALL_ENV, MARKER_ENV = "SIGNFLOW_TEST_STALL", "SIGNFLOW_TEST_STALL_MARKER"
STALL_SECONDS = 600.0


def _stall() -> None:
    Path(os.environ[MARKER_ENV]).touch()
    time.sleep(STALL_SECONDS)


def _stall_at_next_step() -> None:
    """Wrap signflow.training.loop.lr_factor (called once per batch) to stall at its second call from now."""
    import signflow.training.loop

    original, calls = signflow.training.loop.lr_factor, [0]

    def lr_factor(*args: object) -> float:
        calls[0] += 1
        if calls[0] == 2:
            _stall()
        return original(*args)

    signflow.training.loop.lr_factor = lr_factor


def _install(spec: str) -> None:
    import signflow.files

    name, nth, mode = spec.split(":")
    original, seen = signflow.files.atomic_path, [0]

    @contextmanager
    def atomic_path(path):  # type: ignore[no-untyped-def]
        with original(path) as tmp:
            yield tmp
            if Path(path).name != name:
                return
            seen[0] += 1
            if seen[0] != int(nth):
                return
            if mode == "truncate":
                with open(tmp, "r+b") as fh:
                    fh.truncate(tmp.stat().st_size // 2)
            if mode == "next-step":
                _stall_at_next_step()
            else:
                _stall()

    signflow.files.atomic_path = atomic_path


if os.environ.get(STALL_ENV):
    _install(os.environ[STALL_ENV])
