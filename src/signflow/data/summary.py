"""What the dataset holds, small enough for git, so a pull request's data change is seen without the data.

- ``metrics/data.json`` (:func:`summarize`): counts per split, role and label,
  whether tracks leak, and the quarantined files;
- ``metrics/data_tracks.csv`` (:func:`track_table`): one row per split and
  track (class_id, track) with its label, role, images and how many of them
  fall in each image-size bin. ``signflow pr-report`` compares base's and
  head's copies (``signflow.review.datadiff``) to say which classes gained or
  lost tracks and how the image sizes moved, with no ``dvc pull`` of the base's data.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from signflow.config import SPLIT_NAMES
from signflow.data.manifest import ROLE_TARGET
from signflow.files import atomic_path

GROUP_CHUNK_ROWS = 16384  # rows turned into track keys at a time: the temporaries stay a chunk's

# metrics/data_tracks.csv: one row per (split, class_id, track); a track's images share its label and role.
TRACK_KEYS = ["split", "class_id", "label", "role", "track"]
TRACK_SORT = ["split", "class_id", "track", "label", "role"]  # a total order: the same data, the same bytes
# The image side binned is the shorter one, min(width, height), as data.min_image_side filters it. Lower
# edges in px; the last bin is open. GTSRB's images are 15 to 250 px a side (its documentation); three
# quarters of this project's subset are under 60.
SIDE_BIN_EDGES = (0, 24, 32, 48, 64, 96, 128)
SIDE_PREFIX = "side_"  # bin columns: side_24_32 counts sides in [24, 32), side_128_up sides of 128 px and more
OPEN_BIN = "up"


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


def side_columns(edges: tuple[int, ...] = SIDE_BIN_EDGES) -> list[str]:
    """The size-bin column names, lowest bin first: ``side_0_24``, ..., ``side_128_up``."""
    highs = [str(edge) for edge in edges[1:]] + [OPEN_BIN]
    return [f"{SIDE_PREFIX}{low}_{high}" for low, high in zip(edges, highs, strict=True)]


def side_bin_label(column: str) -> str:
    """A bin column as the reader sees it: ``side_24_32`` -> ``24-31``, ``side_128_up`` -> ``128+``."""
    low, high = column.removeprefix(SIDE_PREFIX).split("_")
    return f"{low}+" if high == OPEN_BIN else f"{low}-{int(high) - 1}"


def _empty_tracks() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=str) for c in TRACK_KEYS} | {"images": pd.Series(dtype=np.int64)}
                        | {c: pd.Series(dtype=np.int64) for c in side_columns()})


def _chunk_counts(chunk: pd.DataFrame) -> pd.Series:
    """Images per (class_id, label, role, track, size bin) of ``chunk``, grouped on its own columns (no copy)."""
    sides = np.minimum(chunk["width"].to_numpy(dtype=np.int64), chunk["height"].to_numpy(dtype=np.int64))
    bins = np.searchsorted(SIDE_BIN_EDGES, sides, side="right") - 1  # sides are >= 0 (0: size unknown)
    keys = [chunk[c] for c in TRACK_KEYS[1:]] + [pd.Series(bins, index=chunk.index, name="bin")]
    return chunk.groupby(keys, sort=False, dropna=False).size()


def _split_tracks(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The per-track rows of one split: images per track and per size bin.

    Grouped a chunk of rows at a time and added up: grouping 200k rows at once held ~15 MB of
    key codes; the running total is a row per track and bin (~7k tracks at 200k images).
    """
    if frame.empty:
        return _empty_tracks()
    counts = None
    for start in range(0, len(frame), GROUP_CHUNK_ROWS):
        part = _chunk_counts(frame.iloc[start:start + GROUP_CHUNK_ROWS])
        counts = part if counts is None else counts.add(part, fill_value=0)
    columns = side_columns()
    per_bin = counts.astype(np.int64).unstack("bin", fill_value=0)
    per_bin = per_bin.reindex(columns=range(len(columns)), fill_value=0).set_axis(columns, axis=1)
    table = per_bin.reset_index()
    table[TRACK_KEYS[1:]] = table[TRACK_KEYS[1:]].astype(str)  # ids read as numbers still sort and print as text
    table.insert(0, "split", name)
    table.insert(len(TRACK_KEYS), "images", per_bin.sum(axis=1).to_numpy())
    return table


def track_table(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """metrics/data_tracks.csv: a row per (split, class_id, track) with label, role, images and size bins.

    Split by split, as :func:`summarize`: only the per-track results are concatenated, never the images' rows.
    """
    parts = [part for part in (_split_tracks(name, frame) for name, frame in frames.items()) if len(part)]
    table = pd.concat(parts, ignore_index=True) if parts else _empty_tracks()
    return table.sort_values(TRACK_SORT, kind="stable", ignore_index=True)[TRACK_KEYS + ["images", *side_columns()]]


def write_track_table(path: Path | str, table: pd.DataFrame) -> None:
    """Write the track table atomically, ``\\n`` line ends whatever the OS: git and DVC see only real changes."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")


def parse_track_table(text: str) -> pd.DataFrame:
    """A track table from its CSV text (``git show base:metrics/data_tracks.csv``): ids stay strings."""
    if not text.strip():
        return _empty_tracks()
    return pd.read_csv(io.StringIO(text), dtype={c: str for c in TRACK_KEYS}, keep_default_na=False)


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
