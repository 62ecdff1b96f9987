"""Atomic output helpers: every file signflow writes goes through these.

Writing to a temporary sibling and renaming at the end means an interrupted
stage never leaves a truncated output that DVC or a later stage would trust.
A write that fails (a full disk, a file-size limit) leaves the previous output
as it was, and its error names the output, not the temporary.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Errors of a write that name no file: the disk is full, a quota or file-size limit is hit, the device failed.
WRITE_FAILURES = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    Works for files and directories. On error the temporary is removed and the
    previous ``path`` (if any) is left untouched; an OSError about the temporary
    (e.g. ENOSPC) is raised again naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
    except OSError as err:
        named = _naming(err, path, tmp)
        if named is err:
            raise
        raise named from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale_temporaries(path: Path) -> None:
    """Remove what a write of ``path`` killed mid-way (SIGKILL, power cut) left: never renamed, never read,
    but a whole checkpoint or dataset of disk each. One writer per path at a time: DVC's repository lock."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        log.info("removing %s, left by an interrupted write of %s", stale, path)
        shutil.rmtree(stale, ignore_errors=True)


def _naming(err: OSError, path: Path, tmp: Path) -> OSError:
    """``err`` if it concerns another file or names ``path`` already, else the same error naming ``path``.

    A failed write reports the temporary (or no file at all: numpy's "N requested and M
    written"), which means nothing to the user. The errno, hence the subclass, is kept.
    """
    about = err.filename
    if str(path) in str(err):
        return err
    if about is not None:
        concerns_write = str(about).startswith(str(tmp))
    else:  # no file named: a full disk or size limit (errno), or numpy's "N requested and M written"
        concerns_write = err.errno in WRITE_FAILURES or (err.errno is None and "written" in str(err))
    if not concerns_write:
        return err  # about another file, or raised by the caller's own code inside the block: theirs to word
    reason = err.strerror if err.errno is not None and err.strerror else str(err)
    message = f"cannot write {path}: {reason} (any previous {path.name} is unchanged)"
    return OSError(err.errno, message) if err.errno is not None else OSError(message)


def write_json(path: Path | str, payload: Any) -> None:
    """Write stable, diff-friendly JSON (sorted keys, fixed indent) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def file_digest(path: Path | str, algorithm: str) -> str:
    """Hex digest (``md5``, ``sha256``...) of a file, read in chunks so multi-GB archives fit in memory."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()
