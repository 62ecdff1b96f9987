"""Extract a downloaded zip without trusting it.

A dataset archive comes from the network or a mirror, so every member is checked
before a single byte is written: no absolute paths, no ``..``, no Windows drive
or backslash names, no symlinks, no two members writing the same path, and
bounded member count, total size and compression ratio (zip bombs). Extraction
goes to a temporary directory beside ``dest`` that is renamed into place at the
end, so ``dest`` is never half-extracted.
"""

from __future__ import annotations

import logging
import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from signflow.files import atomic_path

log = logging.getLogger(__name__)

DEFAULT_MAX_MEMBERS = 200_000  # the official GTSRB training zip has about 39k
DEFAULT_MAX_TOTAL_BYTES = 8 << 30  # 8 GiB uncompressed; GTSRB is well under 2
# Deflate tops out near 1032:1 on constant bytes; GTSRB's PPM photos compress about 1.5:1, so a member
# inflating more than 100x is a bomb, not a photo. Members below RATIO_MIN_BYTES are too small to matter.
DEFAULT_MAX_RATIO = 100
RATIO_MIN_BYTES = 1 << 20
COPY_CHUNK_SIZE = 1 << 20
# The high 16 bits of a zip entry's external_attr hold the Unix st_mode.
UNIX_MODE_SHIFT = 16
_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafeArchiveError(ValueError):
    """The archive is corrupt or has a member that could escape or flood ``dest``."""


def safe_extract_zip(
    archive: Path,
    dest: Path,
    *,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_ratio: int = DEFAULT_MAX_RATIO,
) -> list[Path]:
    """Extract ``archive`` into ``dest`` (replacing it) and return the files written.

    Raises ``UnsafeArchiveError`` naming the first bad member, before extracting
    anything, if any member is unsafe or the limits are exceeded.
    """
    archive, dest = Path(archive), Path(dest)
    with _open_zip(archive) as zf:
        members = zf.infolist()
        check_members(members, archive, max_members=max_members, max_total_bytes=max_total_bytes,
                      max_ratio=max_ratio)
        with atomic_path(dest) as tmp:
            tmp.mkdir()
            written = _extract_all(zf, members, archive, tmp)
    log.info("extracted %d files from %s into %s", len(written), archive, dest)
    return [dest / name for name in written]


def check_members(
    members: list[zipfile.ZipInfo],
    archive: Path,
    *,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_ratio: int = DEFAULT_MAX_RATIO,
) -> None:
    """Raise ``UnsafeArchiveError`` unless every member and the totals are safe."""
    if len(members) > max_members:
        raise UnsafeArchiveError(f"{archive} has {len(members)} members, more than the limit of {max_members}")
    kinds: dict[PurePosixPath, str] = {}  # normalised path -> file, dir or parent (see _clash_problem)
    for info in members:
        problem = _member_problem(info) or _ratio_problem(info, max_ratio) or _clash_problem(info, kinds)
        if problem:
            raise UnsafeArchiveError(f"{archive}: refusing member {info.filename!r}: {problem}")
    # ZipExtFile stops at the declared file_size, so the declared sum bounds what is written.
    total = sum(info.file_size for info in members)
    if total > max_total_bytes:
        raise UnsafeArchiveError(
            f"{archive} would extract to {total} bytes, more than the limit of {max_total_bytes} (zip bomb?)"
        )


def _open_zip(archive: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise UnsafeArchiveError(f"{archive} is not a readable zip file ({err}); delete it and download again") from err


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a member is unsafe, or None. Names are checked as written, not normalised."""
    name = info.filename
    if not name or name.startswith("/"):
        return "absolute or empty path"
    if "\\" in name:
        return "backslash in path (a Windows separator could escape the destination)"
    if _DRIVE.match(name):
        return "drive letter in path"
    if ".." in PurePosixPath(name).parts:
        return "'..' in path"
    if stat.S_ISLNK(info.external_attr >> UNIX_MODE_SHIFT):
        return "symbolic link"
    return None


def _ratio_problem(info: zipfile.ZipInfo, max_ratio: int) -> str | None:
    if info.file_size >= RATIO_MIN_BYTES and info.file_size > max_ratio * max(info.compress_size, 1):
        return (f"expands {info.compress_size} bytes to {info.file_size}, a ratio above the limit of "
                f"{max_ratio} (zip bomb?)")
    return None


def _clash_problem(info: zipfile.ZipInfo, kinds: dict[PurePosixPath, str]) -> str | None:
    """Two members for one path (one would silently overwrite the other), or a path both a file and a folder.

    Records the member's normalised path ("file" or "dir") and its folders ("parent") in ``kinds``.
    """
    path, kind = PurePosixPath(info.filename), "dir" if info.is_dir() else "file"  # drops "." parts and "//"
    previous = kinds.get(path)
    if previous == kind:
        return "duplicate entry name (another member has the same path)"
    if previous is not None and (kind == "file" or previous == "file"):
        return "the same path is both a file and a folder in the archive"
    for parent in path.parents:
        if kinds.get(parent) == "file":
            return f"its folder {str(parent)!r} is also a file in the archive"
        kinds.setdefault(parent, "parent")
    kinds[path] = kind
    return None


def _extract_all(zf: zipfile.ZipFile, members: list[zipfile.ZipInfo], archive: Path, root: Path) -> list[str]:
    """Write regular files and directories only (no modes: no setuid surprises)."""
    written: list[str] = []
    try:
        for info in tqdm(members, desc=f"extract {archive.name}", unit="file"):
            target = root / info.filename
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, COPY_CHUNK_SIZE)
            written.append(info.filename)
    except (zipfile.BadZipFile, EOFError, NotImplementedError) as err:
        raise UnsafeArchiveError(f"{archive} is corrupt at member {info.filename!r} ({err})") from err
    return written
