"""Accuracy and rejection of the test split by slice: where the errors sit, not only how many there are.

A slice is a set of test images sharing one trait the manifest records:

- ``size``: the shorter side of the original image in px, ``min(width,
  height)``, binned by ``evaluate.slices.size_bins`` (lower edges; a bin holds
  sides in ``[edge, next edge)``, the last is open). The shorter side, as
  ``data.min_image_side`` filters and ``metrics/data_tracks.csv`` bins it: it
  is the fewest pixels the sign has along one axis, the detail no resize to
  ``data.image_size`` brings back. A side of 0 (a folder source records no
  size) or below the first edge is in no size slice;
- ``position``: first, middle or last third of its track's test frames in
  path order (frame ``i`` of ``k``: third ``floor(3 i / k)``). GTSRB
  (``<track>_<frame>.ppm``) and the synthetic source (``<track>_<frame>.png``)
  zero-pad the frame number, so path order is frame order, and later frames
  are nearer, larger signs. Only tracks of at least ``MIN_TRACK_FRAMES`` test
  images have thirds; a one-frame track (a folder image without a track
  pattern, a capped "unknown" track) is in no position slice;
- ``source``: the manifest's ``source`` column, only when it holds more than
  one value. Today every dataset comes from one source (``data.source``) and
  no manifest has the column, so there is no source slice: none is invented.

Per slice: ``n``, its labelled images (targets and trained "unknown"
images; held-out ones have no class to be right about); ``accuracy``, the
share of them given the right class (as ``test.accuracy``); ``rejected``, the
share of its target images answered "unknown" (:func:`signflow.evaluation.openset.decide`:
the unknown class wins or the score is below the threshold), i.e.
``1 - openset.known_kept`` on the slice, None without target images. A
slice without labelled images is left out. Keys: ``slice.<kind>.<name>.<stat>``,
e.g. ``slice.size.32-47.accuracy``, ``slice.position.first.n``: flat, so
``dvc metrics diff`` lists each, and MLflow-safe (no ``+``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from signflow.data.manifest import ROLE_TARGET

SLICE_PREFIX = "slice"  # evaluate.json's slice keys: slice.<kind>.<name>.<stat>
KINDS = ("size", "position", "source")  # in the report's order
STATS = ("n", "accuracy", "rejected")
POSITIONS = ("first", "middle", "last")  # thirds of a track, in frame order
MIN_TRACK_FRAMES = len(POSITIONS)  # fewer frames have no thirds
OPEN_BIN = "up"  # the last size bin's upper end: "96-up" (MLflow refuses "+" in metric names)
SOURCE_COLUMN = "source"
TRACK_COLUMNS = ("class_id", "track", "path")  # GTSRB reuses track numbers across classes: the class is part of the key
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")  # what a source name may not carry into a key


@dataclass(frozen=True)
class SliceRow:
    """One slice as evaluate.json records it."""

    kind: str
    name: str
    n: int
    accuracy: float | None
    rejected: float | None


# ------------------------------------------------------------------ which slice each image is in


def size_labels(edges: Sequence[int]) -> list[str]:
    """The size bins' names, lowest first: ``[0, 32, 48]`` -> ``0-31``, ``32-47``, ``48-up`` (sides are whole px)."""
    highs = [str(edge - 1) for edge in edges[1:]] + [OPEN_BIN]
    return [f"{low}-{high}" for low, high in zip(edges, highs, strict=True)]


def image_sides(frame: pd.DataFrame) -> np.ndarray:
    """The shorter side of each original image (px); 0 where unknown (no size recorded)."""
    if not {"width", "height"} <= set(frame.columns):
        return np.zeros(len(frame), dtype=np.int64)
    sides = np.minimum(frame["width"].to_numpy(dtype=np.float64), frame["height"].to_numpy(dtype=np.float64))
    return np.nan_to_num(sides, nan=0.0).astype(np.int64)


def size_slices(frame: pd.DataFrame, edges: Sequence[int]) -> pd.Series:
    """Each image's size bin name (:func:`size_labels`), None when its side is unknown or below the first edge."""
    sides = image_sides(frame)
    bins = np.searchsorted(np.asarray(edges), sides, side="right") - 1  # [edge, next edge)
    names = np.asarray(size_labels(edges), dtype=object)
    inside = (sides > 0) & (bins >= 0)
    return pd.Series(np.where(inside, names[np.clip(bins, 0, None)], None), index=frame.index, dtype=object)


def track_positions(frame: pd.DataFrame) -> pd.Series:
    """Each image's third of its track (first / middle / last, path order); None in tracks of < 3 frames."""
    positions = pd.Series(None, index=frame.index, dtype=object)
    if not set(TRACK_COLUMNS) <= set(frame.columns) or frame.empty:
        return positions
    keys = frame[list(TRACK_COLUMNS)].astype(str).sort_values(list(TRACK_COLUMNS), kind="stable")
    tracks = keys.groupby(list(TRACK_COLUMNS[:2]), sort=False)
    index = tracks.cumcount().to_numpy()
    frames = tracks["path"].transform("size").to_numpy()
    has_thirds = frames >= MIN_TRACK_FRAMES
    thirds = (len(POSITIONS) * index[has_thirds]) // frames[has_thirds]
    positions.loc[keys.index[has_thirds]] = np.asarray(POSITIONS, dtype=object)[thirds]
    return positions


def source_slices(frame: pd.DataFrame) -> pd.Series:
    """Each image's data source when the manifest mixes several; all None otherwise (one source: no slice)."""
    if SOURCE_COLUMN not in frame.columns or frame[SOURCE_COLUMN].nunique(dropna=True) < 2:
        return pd.Series(None, index=frame.index, dtype=object)
    names = frame[SOURCE_COLUMN].map(lambda s: None if pd.isna(s) else _UNSAFE.sub("_", str(s)))
    return names.astype(object)


# ------------------------------------------------------------------ the metrics


def _stats(labelled: np.ndarray, targets: np.ndarray, correct: np.ndarray,
           rejected: np.ndarray) -> dict[str, Any] | None:
    n, n_targets = int(labelled.sum()), int(targets.sum())
    if n == 0:
        return None
    return {"n": n, "accuracy": float(correct[labelled].mean()),
            "rejected": float(rejected[targets].mean()) if n_targets else None}


def slice_metrics(frame: pd.DataFrame, correct: np.ndarray, rejected: np.ndarray,
                  size_bins: Sequence[int]) -> dict[str, Any]:
    """``<kind>.<name>.<stat>`` for every non-empty slice of ``frame`` (a test manifest), without the prefix.

    ``correct``: per row, the predicted class is the label (read on labelled
    rows only); ``rejected``: per row, the answer is "unknown" (read on
    target rows only). Both aligned with ``frame``.
    """
    frame = frame.reset_index(drop=True)
    correct, rejected = np.asarray(correct, dtype=bool), np.asarray(rejected, dtype=bool)
    if not len(frame) == len(correct) == len(rejected):
        raise ValueError(f"frame ({len(frame)}), correct ({len(correct)}) and rejected ({len(rejected)}) "
                         "differ in length")
    labelled = (frame["label_idx"] >= 0).to_numpy()
    targets = (frame["role"] == ROLE_TARGET).to_numpy()
    members = {"size": size_slices(frame, size_bins), "position": track_positions(frame),
               "source": source_slices(frame)}
    metrics: dict[str, Any] = {}
    for kind in KINDS:
        names = members[kind]
        for name in names.dropna().unique():
            inside = (names == name).to_numpy()
            stats = _stats(inside & labelled, inside & targets, correct, rejected)
            if stats is not None:
                metrics.update({f"{kind}.{name}.{stat}": value for stat, value in stats.items()})
    return metrics


# ------------------------------------------------------------------ reading them back (the report)


def _order(row: SliceRow) -> tuple[int, int, str]:
    if row.kind == "size":
        low = row.name.partition("-")[0]
        rank = int(low) if low.isdigit() else 0
    elif row.kind == "position":
        rank = POSITIONS.index(row.name) if row.name in POSITIONS else len(POSITIONS)
    else:
        rank = 0
    return (KINDS.index(row.kind) if row.kind in KINDS else len(KINDS), rank, row.name)


def slice_rows(metrics: Mapping[str, Any]) -> list[SliceRow]:
    """The slices of an evaluate.json, sizes smallest first, then positions first to last, then sources."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for key, value in metrics.items():
        if not key.startswith(f"{SLICE_PREFIX}."):
            continue
        kind, _, rest = key.removeprefix(f"{SLICE_PREFIX}.").partition(".")
        name, _, stat = rest.rpartition(".")
        if kind and name and stat in STATS:
            found.setdefault((kind, name), {})[stat] = value
    rows = [SliceRow(kind, name, int(stats.get("n") or 0), stats.get("accuracy"), stats.get("rejected"))
            for (kind, name), stats in found.items()]
    return sorted(rows, key=_order)
