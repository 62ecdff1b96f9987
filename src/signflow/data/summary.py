"""``metrics/data.json``: what the dataset holds per split, role and label, and whether tracks leak."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from signflow.config import SPLIT_NAMES
from signflow.data.manifest import ROLE_TARGET

GROUP_CHUNK_ROWS = 16384  # rows turned into track keys at a time: the temporaries stay a chunk's


def _groups(frame: pd.DataFrame, rows: pd.Series | None = None) -> set[tuple[str, str]]:
    """The distinct tracks, (class_id, track), of ``frame`` (of its ``rows`` only, when given)."""
    keys = frame[["class_id", "track"]] if rows is None else frame.loc[rows, ["class_id", "track"]]
    found: set[tuple[str, str]] = set()
    for start in range(0, len(keys), GROUP_CHUNK_ROWS):
        part = keys.iloc[start:start + GROUP_CHUNK_ROWS]
        found.update(zip(part["class_id"].astype(str).tolist(), part["track"].astype(str).tolist(), strict=True))
    return found


def summarize(frames: Mapping[str, pd.DataFrame], quarantine: pd.DataFrame) -> dict:
    """Counts per split, role and label, target tracks and leaks, for metrics/data.json.

    Split by split, never a concatenation: at 200k images a copy of every row cost ~80 MB here.
    """
    is_target = {n: frames[n]["role"] == ROLE_TARGET for n in SPLIT_NAMES}
    target_tracks = set().union(*(_groups(frames[n], is_target[n]) for n in SPLIT_NAMES))
    groups = {name: _groups(frames[name]) for name in SPLIT_NAMES}
    shared = sum(len(groups[a] & groups[b]) for i, a in enumerate(SPLIT_NAMES) for b in SPLIT_NAMES[i + 1:])
    summary: dict = {
        "targets": {"images": sum(int(m.sum()) for m in is_target.values()), "tracks": len(target_tracks)},
        "tracks_shared_between_splits": shared,
        "splits": {},
        "quarantined": {"count": int(len(quarantine))},
    }
    for name, frame in frames.items():  # the three splits, then an official test set if there is one
        summary["splits"][name] = {
            "images": int(len(frame)),
            "tracks": len(groups[name]) if name in groups else len(_groups(frame)),
            "per_label": {k: int(v) for k, v in frame.groupby("label").size().items()},
            "per_role": {k: int(v) for k, v in frame.groupby("role").size().items()},
        }
    if len(quarantine):
        summary["quarantined"]["files"] = quarantine.to_dict(orient="records")
        summary["quarantined"]["per_class"] = {str(k): int(v) for k, v in quarantine.groupby("class_id").size().items()}
    return summary


def describe(summary: Mapping) -> str:
    """A few human lines of the summary for the stage log."""
    lines = [
        f"targets: {summary['targets']['images']} images in {summary['targets']['tracks']} tracks; "
        f"tracks shared between splits: {summary['tracks_shared_between_splits']}; "
        f"quarantined: {summary['quarantined']['count']}"
    ]
    for name, split in summary["splits"].items():
        labels = ", ".join(f"{k} {v}" for k, v in split["per_label"].items())
        counts = f"{split['images']} images, {split['tracks']} tracks"
        lines.append(f"{name}: {counts} ({labels}; roles {split['per_role']})")
    return "\n".join(lines)
