"""The manifest: one row per dataset image, the raw record plus its label and role.

Roles say why an image is in a split: ``target`` (one of ``data.classes``),
``unknown`` (a trained "unknown" image) or ``heldout`` (a sign type never
trained on, in val/test only, label index ``HELDOUT_LABEL_IDX``).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import pandas as pd

from signflow.data.records import RECORD_FIELDS, RawRecord

ROLE_TARGET, ROLE_UNKNOWN, ROLE_HELDOUT = "target", "unknown", "heldout"
HELDOUT_LABEL_IDX = -1  # never a training target
MANIFEST_COLUMNS = [*RECORD_FIELDS, "label", "label_idx", "role"]


class DataError(ValueError):
    """The data does not match what params.yaml asks for."""


def to_frame(records: Sequence[RawRecord], label: str, label_idx: int, role: str) -> pd.DataFrame:
    """Manifest rows for ``records`` that all share one label and role."""
    frame = pd.DataFrame([asdict(r) for r in records], columns=RECORD_FIELDS)
    return frame.assign(label=label, label_idx=label_idx, role=role)


def read_manifest(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"class_id": str, "track": str, "path": str})
