"""The raw-image record every data source produces, and its CSV round trip.

A record is one image file of the raw dataset: where it is, which class it
belongs to, which physical-sign track it comes from (frames of one track are
near-identical, so splits must keep a track together) and its region of
interest. Every later stage reads these, whatever the source.

The download stage writes them into the raw dataset's directory, whose layout is
defined here too: ``images/`` (usable images), ``index.csv`` (their records),
``quarantine/`` and ``quarantine.csv`` (unusable files and why).
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable

import pandas as pd

from signflow.io import atomic_path

IMAGES_DIR, QUARANTINE_DIR = "images", "quarantine"
INDEX_FILE, QUARANTINE_FILE = "index.csv", "quarantine.csv"
QUARANTINE_COLUMNS = ["path", "class_id", "reason"]


@dataclass(frozen=True)
class RawRecord:
    """One raw image: ``path`` is relative to the raw dataset's root."""

    path: str
    class_id: str
    track: str
    width: int = 0
    height: int = 0
    x1: int = 0
    y1: int = 0
    x2: int = 0
    y2: int = 0

    @property
    def group(self) -> str:
        """Track key unique across classes (GTSRB reuses track numbers per class)."""
        return f"{self.class_id}/{self.track}"

    @property
    def has_roi(self) -> bool:
        return self.x2 > self.x1 and self.y2 > self.y1


RECORD_FIELDS = [f.name for f in fields(RawRecord)]
_INT_FIELDS = {"width", "height", "x1", "y1", "x2", "y2"}


def write_records(path: Path, records: Iterable[RawRecord]) -> None:
    """Write records as CSV atomically (a crash never leaves half a file)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=RECORD_FIELDS)
        writer.writeheader()
        for record in records:
            writer.writerow(asdict(record))


def read_records(path: Path) -> list[RawRecord]:
    with open(path, newline="") as fh:
        return [
            RawRecord(**{k: int(v) if k in _INT_FIELDS else v for k, v in row.items()})
            for row in csv.DictReader(fh)
        ]


def read_quarantine(raw_dir: Path) -> pd.DataFrame:
    """The quarantine table (path, class_id, reason) of a raw dataset directory."""
    return pd.read_csv(raw_dir / QUARANTINE_FILE, dtype=str)
