"""``metrics/data.json``: what the dataset holds per split, role and label, and whether tracks leak."""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from signflow.config import SPLIT_NAMES
from signflow.data.manifest import ROLE_TARGET


def _groups(frame: pd.DataFrame) -> set[str]:
    return set(frame["class_id"].astype(str) + "/" + frame["track"].astype(str))


def summarize(frames: Mapping[str, pd.DataFrame], quarantine: pd.DataFrame) -> dict:
    """Counts per split, role and label, target tracks and leaks, for metrics/data.json."""
    targets = pd.concat([frames[n][frames[n]["role"] == ROLE_TARGET] for n in SPLIT_NAMES])
    groups = {name: _groups(frames[name]) for name in SPLIT_NAMES}
    shared = sum(len(groups[a] & groups[b]) for i, a in enumerate(SPLIT_NAMES) for b in SPLIT_NAMES[i + 1:])
    summary: dict = {
        "targets": {"images": int(len(targets)), "tracks": len(_groups(targets))},
        "tracks_shared_between_splits": shared,
        "splits": {},
        "quarantined": {"count": int(len(quarantine))},
    }
    for name in SPLIT_NAMES:
        frame = frames[name]
        summary["splits"][name] = {
            "images": int(len(frame)),
            "tracks": len(groups[name]),
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
        lines.append(f"{name}: {split['images']} images, {split['tracks']} tracks ({labels}; roles {split['per_role']})")
    return "\n".join(lines)
