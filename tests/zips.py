"""Zip archives for archive-safety tests: any members, duplicate names and symlink entries included."""

from __future__ import annotations

import stat
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

Member = tuple[str | zipfile.ZipInfo, bytes]


def make_zip(
    path: Path, members: Mapping[str | zipfile.ZipInfo, bytes] | Iterable[Member], compression: int = zipfile.ZIP_STORED
) -> Path:
    """Write ``members`` (a mapping, or pairs so that one name can appear twice) to the zip ``path``."""
    pairs = members.items() if isinstance(members, Mapping) else members
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns "Duplicate name": some tests want exactly that
        with zipfile.ZipFile(path, "w", compression) as zf:
            for name, data in pairs:
                zf.writestr(name, data)
    return path


def symlink_entry(name: str) -> zipfile.ZipInfo:
    """A member that unpacks as a symbolic link (Unix mode in the external attributes)."""
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info
