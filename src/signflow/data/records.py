"""The raw-image record every data source produces, and its CSV round trip.

A record is one image file of the raw dataset: where it is, which class it
belongs to, which physical-sign track it comes from (frames of one track are
near-identical, so splits must keep a track together) and its region of
interest. Every later stage reads these, whatever the source.

The download stage writes them into the raw dataset's directory, whose layout is
defined here too: ``shards/<class_id>.zip`` (the usable images, one uncompressed
zip per class, each member named by the image's path in its source),
``index.csv`` (their records), ``official_test.csv`` (records of a source's
official test set, when it has one and it was asked for), ``quarantine/`` and
``quarantine.csv`` (unusable files and why).

Why shards: DVC hashes and stats every file of a tracked directory, so at 200k
loose images ``dvc status`` took 16-19 s and ``dvc push`` 71 s here; a few dozen
shards keep both near constant. A record's ``path`` stays the image's path in
its source (provenance), ``shard`` says which zip holds it.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Collection, Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd

from signflow.files import atomic_path

SHARDS_DIR, QUARANTINE_DIR = "shards", "quarantine"
SHARD_SUFFIX = ".zip"
INDEX_FILE, OFFICIAL_TEST_FILE, QUARANTINE_FILE = "index.csv", "official_test.csv", "quarantine.csv"
QUARANTINE_COLUMNS = ["path", "class_id", "reason"]


# slots: a record is ~150 bytes instead of ~500, which counts at hundreds of thousands of images.
@dataclass(frozen=True, slots=True)
class RawRecord:
    """One raw image: ``path`` is relative to its source's root (and names it inside ``shard``).

    ``shard`` is the zip holding the image, relative to the raw dataset's
    directory; empty while the image is still a loose file under a root.
    """

    path: str
    class_id: str
    track: str
    width: int = 0
    height: int = 0
    x1: int = 0
    y1: int = 0
    x2: int = 0
    y2: int = 0
    shard: str = ""

    @property
    def group(self) -> str:
        """Track key unique across classes (GTSRB reuses track numbers per class)."""
        return f"{self.class_id}/{self.track}"

    @property
    def has_roi(self) -> bool:
        return self.x2 > self.x1 and self.y2 > self.y1


def shard_name(class_id: str) -> str:
    """The shard of a class, relative to the raw dataset's directory."""
    return f"{SHARDS_DIR}/{class_id}{SHARD_SUFFIX}"


RECORD_FIELDS = [f.name for f in fields(RawRecord)]
_INT_FIELDS = {"width", "height", "x1", "y1", "x2", "y2"}
_UNIQUE_FIELDS = {"path"}  # every other text field repeats across images


def write_records(path: Path, records: Iterable[RawRecord]) -> None:
    """Write records as CSV atomically (a crash never leaves half a file)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=RECORD_FIELDS)
        writer.writeheader()
        for record in records:
            writer.writerow(asdict(record))


def read_records(path: Path) -> list[RawRecord]:
    """Records of a CSV written by :func:`write_records` (older files without ``shard`` read as loose).

    The few distinct classes, tracks and shards are interned: one string each, not one per image.
    """
    return list(_iter_records(path))


def _iter_records(path: Path) -> Iterator[RawRecord]:
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            yield RawRecord(**{k: int(v) if k in _INT_FIELDS else v if k in _UNIQUE_FIELDS else sys.intern(v)
                               for k, v in row.items()})


def read_records_except(path: Path, skipped: Collection[str]) -> tuple[list[RawRecord], list[str]]:
    """The records of classes not in ``skipped``, and every class id of the file, in one pass.

    ``add_unknown`` needs records only of the classes that may feed "unknown"
    or be held out, never of the targets: with every class a target (the
    43-class benchmark) it then holds no record at all, whatever the data's size.
    """
    kept, seen = [], set()
    for record in _iter_records(path):
        seen.add(record.class_id)
        if record.class_id not in skipped:
            kept.append(record)
    return kept, sorted(seen)


def read_quarantine(raw_dir: Path) -> pd.DataFrame:
    """The quarantine table (path, class_id, reason) of a raw dataset directory."""
    return pd.read_csv(raw_dir / QUARANTINE_FILE, dtype=str)
