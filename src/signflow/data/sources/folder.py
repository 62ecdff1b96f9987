"""An ImageFolder-style directory (one sub-folder per class) as a data source."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from signflow.data.images import IMAGE_SUFFIXES
from signflow.data.records import RawRecord

log = logging.getLogger(__name__)


def read_folder_tree(root: Path, track_pattern: str = "") -> list[RawRecord]:
    """One record per image file under ``root/<class>/``.

    ``track_pattern`` is a regex whose first group is the track id in the file
    name (e.g. ``^(\\d+)_`` for GTSRB-style names); without it every image is
    its own track, the only safe assumption for unknown data.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"data.folder.path: {root} is not a directory")
    pattern = re.compile(track_pattern) if track_pattern else None
    records = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(class_dir.rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                continue
            match = pattern.search(path.name) if pattern else None
            track = match.group(1) if match else path.stem
            records.append(RawRecord(path=str(path.relative_to(root)), class_id=class_dir.name, track=track))
    if not records:
        raise FileNotFoundError(f"data.folder.path: no images with suffixes {sorted(IMAGE_SUFFIXES)} under {root}/<class>/")
    log.info("folder %s: %d images in %d classes", root, len(records), len({r.class_id for r in records}))
    return records
