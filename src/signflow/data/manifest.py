"""The manifest: one row per dataset image, the raw record plus its label and role.

Roles say why an image is in a split: ``target`` (one of ``data.classes``),
``unknown`` (a trained "unknown" image) or ``heldout`` (a sign type never
trained on, in val/test only, label index ``HELDOUT_LABEL_IDX``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from signflow.data.records import RECORD_FIELDS, RawRecord

ROLE_TARGET, ROLE_UNKNOWN, ROLE_HELDOUT = "target", "unknown", "heldout"
HELDOUT_LABEL_IDX = -1  # never a training target
MANIFEST_COLUMNS = [*RECORD_FIELDS, "label", "label_idx", "role"]
READ_CHUNK_ROWS = 16384


class DataError(ValueError):
    """The data does not match what params.yaml asks for."""


def to_frame(records: Sequence[RawRecord], label: str, label_idx: int, role: str) -> pd.DataFrame:
    """Manifest rows for ``records`` that all share one label and role."""
    frame = pd.DataFrame([asdict(r) for r in records], columns=RECORD_FIELDS)
    return frame.assign(label=label, label_idx=label_idx, role=role)


def read_manifest(path: Path) -> pd.DataFrame:
    """A manifest CSV, read in chunks: the parser's temporaries stay a chunk's (200k rows at once: +50% RSS)."""
    chunks = pd.read_csv(path, dtype={"class_id": str, "track": str, "path": str, "shard": str},
                         chunksize=READ_CHUNK_ROWS)
    frame = pd.concat(chunks, ignore_index=True)
    # An empty shard (a loose file) reads as NaN; older manifests have no shard column at all.
    return frame.assign(shard=frame["shard"].fillna("") if "shard" in frame else "")
