"""What a pull request changes in the data, from two small summaries in git: no ``dvc pull`` of the base's data.

The ``add_unknown`` stage writes ``metrics/data_tracks.csv`` (a row per split
and track: label, role, images, images per size bin; ``signflow.data.summary``)
and ``metrics/data.json`` (counts, and the quarantined files). Both are in git,
so the base's copies come from ``git show <base>:<path>`` and the head's from
the workspace; this module compares them:

- per split and class: tracks and images added and removed (a track is
  ``(class_id, track)``; one that moves to another split is removed from one
  and added to the other);
- the quarantine: files added and removed, by path;
- the distribution of the image side (the shorter one) over all splits;
- a seeded sample of images of the tracks new in head (in no split of the
  base), drawn from head's decoded arrays (those are in the workspace after
  ``dvc repro``; the base's never are needed).

A file missing in a revision (a base older than the summary) is reported, and
only what both revisions hold is compared.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from signflow import paths
from signflow.config import OFFICIAL_TEST_SPLIT, SPLIT_NAMES
from signflow.data.manifest import ROLE_TARGET
from signflow.data.summary import SIDE_PREFIX, parse_track_table, side_bin_label
from signflow.markdown import escape_cell, relative_link, table

log = logging.getLogger(__name__)

TITLE = "### Data"
HEAD_LABEL = "workspace"  # the reproduced pull request, as in signflow.review.report
MAX_THUMBNAILS = 16  # images drawn at most: 3 rows of 6 stay under GitHub's ~900 px content width
THUMBNAIL_COLUMNS = 6
MAX_QUARANTINE_LISTED = 50  # quarantine changes listed at most; the rest stay in metrics/data.json
SPLIT_ORDER = (*SPLIT_NAMES, OFFICIAL_TEST_SPLIT)  # rows read train, val, test, then the official test set
ARROW = "→"
TRACK_ID = ["class_id", "track"]  # what identifies a track across splits and revisions
CLASS_KEY = ["split", "name"]  # one row of the per-class table


@dataclass(frozen=True)
class DataFiles:
    """One revision's data summaries, as text; None: that file is not in the revision."""

    tracks: str | None = None  # metrics/data_tracks.csv
    summary: str | None = None  # metrics/data.json


@dataclass(frozen=True)
class ClassChange:
    """One class in one split, base against head (a class absent in a revision counts 0 there)."""

    split: str
    name: str  # the label; "unknown (heldout)" when the role is neither target nor the label itself
    tracks_base: int
    tracks_head: int
    tracks_added: int
    tracks_removed: int
    images_base: int
    images_head: int
    images_added: int  # images of new tracks, and new images of kept tracks
    images_removed: int

    @property
    def changed(self) -> bool:
        return bool(self.tracks_added or self.tracks_removed or self.images_added or self.images_removed)


@dataclass(frozen=True)
class NewTrack:
    """A track of head found in no split of the base: its images are new to the project."""

    split: str
    class_id: str
    track: str
    label: str


@dataclass(frozen=True)
class SizeBin:
    """Images whose shorter side falls in ``side`` (px), per revision; None: that revision has no such bin."""

    side: str
    base: int | None
    head: int | None


@dataclass(frozen=True)
class QuarantinedFile:
    path: str
    class_id: str
    reason: str


@dataclass(frozen=True)
class DataDiff:
    """Base against head. Empty tuples where a revision lacks the file a comparison needs (see ``missing``)."""

    classes: tuple[ClassChange, ...] = ()  # every (split, class) of either revision
    new_tracks: tuple[NewTrack, ...] = ()
    sizes: tuple[SizeBin, ...] = ()
    quarantine_base: int | None = None  # quarantined files per revision; None: no metrics/data.json there
    quarantine_head: int | None = None
    quarantine_added: tuple[QuarantinedFile, ...] = ()
    quarantine_removed: tuple[QuarantinedFile, ...] = ()
    missing: tuple[str, ...] = ()  # "metrics/data_tracks.csv at base", ...
    tracks_compared: bool = False  # both revisions have metrics/data_tracks.csv
    summary_differs: bool = False  # metrics/data.json differs; consulted only when the tracks cannot be compared

    @property
    def changed(self) -> bool:
        """Whether the data differs: by the tracks when both revisions have them, else by metrics/data.json."""
        quarantine = bool(self.quarantine_added or self.quarantine_removed)
        if not self.tracks_compared:
            return quarantine or self.summary_differs
        sizes = any(b.base != b.head for b in self.sizes)
        return quarantine or sizes or any(c.changed for c in self.classes)


def workspace_files(root: Path, tracks: Path = paths.DATA_TRACKS, summary: Path = paths.DATA_SUMMARY) -> DataFiles:
    """The head's summaries: the files in the workspace under ``root`` (None for each one absent)."""
    return DataFiles(*(p.read_text() if p.is_file() else None for p in (Path(root) / tracks, Path(root) / summary)))


# ---------------------------------------------------------------------- comparing


def _class_name(label: str, role: str) -> str:
    return label if role in (ROLE_TARGET, label) else f"{label} ({role})"


def _per_track(tracks: pd.DataFrame) -> pd.Series:
    """Images per (split, class name, class_id, track)."""
    names = [_class_name(label, role) for label, role in zip(tracks["label"], tracks["role"], strict=True)]
    keyed = tracks.assign(name=names)
    return keyed.groupby([*CLASS_KEY, *TRACK_ID])["images"].sum()


def _split_order(split: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def _class_changes(base: pd.DataFrame, head: pd.DataFrame) -> tuple[ClassChange, ...]:
    both = pd.concat({"base": _per_track(base), "head": _per_track(head)}, axis=1).fillna(0).astype(np.int64)
    old, new = both["base"], both["head"]
    per_class = pd.DataFrame({
        "tracks_base": old > 0, "tracks_head": new > 0,
        "tracks_added": (old == 0) & (new > 0), "tracks_removed": (old > 0) & (new == 0),
        "images_base": old, "images_head": new,
        "images_added": (new - old).clip(lower=0), "images_removed": (old - new).clip(lower=0),
    }).groupby(level=CLASS_KEY).sum()
    changes = [ClassChange(split, name, **{k: int(v) for k, v in row.items()})
               for (split, name), row in per_class.iterrows()]
    return tuple(sorted(changes, key=lambda c: (_split_order(c.split), c.name)))


def _new_tracks(base: pd.DataFrame, head: pd.DataFrame) -> tuple[NewTrack, ...]:
    known = set(zip(base["class_id"], base["track"], strict=True))
    new = head[[key not in known for key in zip(head["class_id"], head["track"], strict=True)]]
    found = {NewTrack(r.split, r.class_id, r.track, r.label) for r in new.itertuples(index=False)}
    return tuple(sorted(found, key=lambda t: (_split_order(t.split), t.class_id, t.track)))


def _bin_edge(column: str) -> int:
    return int(column.removeprefix(SIDE_PREFIX).split("_")[0])


def _sizes(base: pd.DataFrame, head: pd.DataFrame) -> tuple[SizeBin, ...]:
    """Images per side bin over all splits; bins are read from each file's columns (their edges may differ)."""
    columns = sorted({c for f in (base, head) for c in f.columns if c.startswith(SIDE_PREFIX)}, key=_bin_edge)
    return tuple(SizeBin(side_bin_label(c), *(int(f[c].sum()) if c in f else None for f in (base, head)))
                 for c in columns)


def _quarantined(summary: Mapping[str, Any]) -> dict[str, QuarantinedFile]:
    files = summary.get("quarantined", {}).get("files", [])
    return {str(f["path"]): QuarantinedFile(str(f["path"]), str(f.get("class_id", "")), str(f.get("reason", "")))
            for f in files}


def _quarantine_fields(base: Mapping[str, Any], head: Mapping[str, Any]) -> dict[str, Any]:
    old, new = _quarantined(base), _quarantined(head)
    return {
        "quarantine_base": int(base.get("quarantined", {}).get("count", len(old))),
        "quarantine_head": int(head.get("quarantined", {}).get("count", len(new))),
        "quarantine_added": tuple(new[p] for p in sorted(new.keys() - old.keys())),
        "quarantine_removed": tuple(old[p] for p in sorted(old.keys() - new.keys())),
    }


def _missing(base: DataFiles, head: DataFiles) -> tuple[str, ...]:
    return tuple(f"{path.as_posix()} at {side}" for path, attr in ((paths.DATA_TRACKS, "tracks"),
                                                                     (paths.DATA_SUMMARY, "summary"))
                 for side, files in (("base", base), ("head", head)) if getattr(files, attr) is None)


def compare_data(base: DataFiles, head: DataFiles) -> DataDiff:
    """Base's summaries against head's: per class, quarantine, sizes, new tracks (see :class:`DataDiff`)."""
    fields: dict[str, Any] = {"missing": _missing(base, head)}
    if base.tracks is not None and head.tracks is not None:
        old, new = parse_track_table(base.tracks), parse_track_table(head.tracks)
        fields |= {"classes": _class_changes(old, new), "new_tracks": _new_tracks(old, new), "sizes": _sizes(old, new),
                   "tracks_compared": True}
    summaries = [None if s is None else json.loads(s) for s in (base.summary, head.summary)]
    fields["summary_differs"] = summaries[0] != summaries[1]
    if summaries[0] is not None and summaries[1] is not None:
        fields |= _quarantine_fields(*summaries)
    return DataDiff(**fields)


def data_changed(base: DataFiles, head: DataFiles) -> bool:
    """Whether the data differs between the revisions (what decides if the report has a data section to show)."""
    return compare_data(base, head).changed


# ---------------------------------------------------------------------- markdown


def _count_change(old: int, new: int, added: int, removed: int) -> str:
    return f"{old} {ARROW} {new} (+{added} / -{removed})" if added or removed else f"{new}"


def _class_table(classes: Sequence[ClassChange]) -> list[str]:
    changed = [c for c in classes if c.changed]
    rows = [[c.split, c.name, _count_change(c.tracks_base, c.tracks_head, c.tracks_added, c.tracks_removed),
             _count_change(c.images_base, c.images_head, c.images_added, c.images_removed)] for c in changed]
    lines = []
    if rows:
        lines += [table(["split", "class", "tracks", "images"], rows), ""]
        same = len(classes) - len(changed)
        if same:
            lines += [f"{same} other (split, class) pairs are unchanged.", ""]
    else:
        lines += ["No class gained or lost tracks or images.", ""]
    return lines


def _totals(diff: DataDiff) -> str:
    def total(field: str) -> int:
        return sum(getattr(c, field) for c in diff.classes)

    new_images = f"{len(diff.new_tracks)} tracks are new (in no split of the base)"
    return (f"Tracks: +{total('tracks_added')} / -{total('tracks_removed')}; "
            f"images: +{total('images_added')} / -{total('images_removed')}. {new_images}.")


def _quarantine_lines(diff: DataDiff, max_listed: int) -> list[str]:
    if diff.quarantine_base is None or diff.quarantine_head is None:
        return []
    added, removed = diff.quarantine_added, diff.quarantine_removed
    head = f"Quarantined files: {diff.quarantine_base} {ARROW} {diff.quarantine_head}"
    if not added and not removed:
        return [f"{head} (no file added or removed).", ""]
    lines = [f"{head} (+{len(added)} / -{len(removed)}):", ""]
    changes = [("added", f) for f in added] + [("removed", f) for f in removed]
    shown = [[change, f"`{f.path}`", f.class_id, f.reason] for change, f in changes[:max_listed]]
    lines += [table(["change", "path", "class", "reason"], shown), ""]
    if len(changes) > len(shown):
        lines += [f"… and {len(changes) - len(shown)} more, listed in `{paths.DATA_SUMMARY.as_posix()}`.", ""]
    return lines


def _size_lines(diff: DataDiff, base: str) -> list[str]:
    if not diff.sizes:
        return []

    def cell(count: int | None) -> str:
        return "-" if count is None else str(count)

    rows = [[b.side, cell(b.base), cell(b.head)] for b in diff.sizes]
    title = "Images by shorter side (px), all splits:"
    if all(b.base == b.head for b in diff.sizes):
        title = "Images by shorter side (px), all splits (unchanged):"
    return [title, "", table(["side (px)", f"`{base}`", HEAD_LABEL], rows), ""]



def data_diff_markdown(diff: DataDiff, base: str = "base", thumbnails: Path | None = None,
                       markdown_dir: Path | None = None, max_listed: int = MAX_QUARANTINE_LISTED) -> str:
    """The report's "### Data" section: per-class table, quarantine changes, size table, thumbnails link.

    ``thumbnails`` (a PNG of :func:`draw_new_image_thumbnails`) is linked relative to ``markdown_dir``.
    """
    lines = [TITLE, ""]
    sources = f"`{paths.DATA_TRACKS.as_posix()}` and `{paths.DATA_SUMMARY.as_posix()}`"
    if diff.missing:
        lines += [f"Not compared (file absent): {', '.join(escape_cell(m) for m in diff.missing)}.", ""]
    if not diff.changed:
        lines.append(f"No change in the data vs `{base}` (from {sources}).")
        return "\n".join(lines)
    lines += [f"The workspace against `{base}`, from {sources} (no data pulled).", ""]
    if diff.tracks_compared:
        lines += [_totals(diff), "", *_class_table(diff.classes)]
    else:
        lines += [f"`{paths.DATA_SUMMARY.as_posix()}` differs; per-track changes need "
                  f"`{paths.DATA_TRACKS.as_posix()}` in both revisions.", ""]
    lines += _quarantine_lines(diff, max_listed)
    lines += _size_lines(diff, base)
    if thumbnails is not None:
        lines += [f"![A sample of the images of new tracks]({relative_link(thumbnails, markdown_dir)})", ""]
    return "\n".join(lines).rstrip("\n")


# ---------------------------------------------------------------------- thumbnails


def _check_arrays(dataset_dir: Path, splits: Sequence[str]) -> None:
    """A one-line error when head's decoded arrays are not here (a CI runner without the DVC cache)."""
    missing = [p.as_posix() for s in splits for p in (dataset_dir / f"{s}.csv", dataset_dir / f"{s}.npy")
               if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} not in the workspace: run `dvc pull {dataset_dir.as_posix()}` "
                                "(or `dvc repro`) to draw the new images")


def _candidates(new_tracks: Sequence[NewTrack], manifests: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Every image of the new tracks: path, split, row in its split's array, label, class_id, track; by path."""
    parts = []
    for split, manifest in manifests.items():
        wanted = {(t.class_id, t.track) for t in new_tracks if t.split == split}
        keys = zip(manifest["class_id"].astype(str), manifest["track"].astype(str), strict=True)
        rows = np.flatnonzero([key in wanted for key in keys])
        picked = manifest.iloc[rows][["path", "label", "class_id", "track"]]
        parts.append(picked.assign(split=split, row=rows))
    found = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    # Sampled by path, not by manifest order: the same images give the same sample.
    return found.sort_values(["path", "split"], ignore_index=True) if len(found) else found


def _spread_sample(pool: pd.DataFrame, sample: int, rng: np.random.Generator) -> pd.DataFrame:
    """``sample`` rows of ``pool`` at random, one per track before any track gets a second; by split, class, track."""
    shuffled = pool.iloc[rng.permutation(len(pool))]
    rank = shuffled.groupby(["split", *TRACK_ID], sort=False).cumcount()
    chosen = shuffled.iloc[np.argsort(rank.to_numpy(), kind="stable")[:sample]]
    order = sorted(range(len(chosen)), key=lambda i: (_split_order(chosen["split"].iat[i]),
                                                       *chosen[TRACK_ID].iloc[i], chosen["path"].iat[i]))
    return chosen.iloc[order]


def draw_new_image_thumbnails(new_tracks: Sequence[NewTrack], dataset_dir: Path, out: Path,
                              sample: int = MAX_THUMBNAILS, seed: int = 0) -> int:
    """A grid PNG of up to ``sample`` (capped at MAX_THUMBNAILS) images of ``new_tracks``, seeded; how many drawn.

    Read from head's decoded arrays in ``dataset_dir`` (``signflow.data.arrays``); FileNotFoundError naming
    ``dvc pull`` when they are absent. Nothing is written when there is nothing to draw (returns 0).
    """
    from signflow.data.arrays import load_split
    from signflow.evaluation.plots import CAPTION_WIDTH, plot_image_grid, short_label

    sample = min(sample, MAX_THUMBNAILS)
    if not new_tracks or sample <= 0:
        return 0
    dataset_dir = Path(dataset_dir)
    splits = sorted({t.split for t in new_tracks}, key=_split_order)
    _check_arrays(dataset_dir, splits)
    loaded = {split: load_split(dataset_dir, split) for split in splits}  # arrays memory-mapped: rows read on use
    pool = _candidates(new_tracks, {split: frame for split, (frame, _) in loaded.items()})
    if pool.empty:
        log.warning("no image of the %d new tracks in %s's manifests: no thumbnails", len(new_tracks), dataset_dir)
        return 0
    chosen = _spread_sample(pool, sample, np.random.default_rng(seed))
    images = np.stack([np.array(loaded[r.split][1][r.row]) for r in chosen.itertuples(index=False)])
    captions = [f"{short_label(r.label, CAPTION_WIDTH)}\nclass {r.class_id} track {r.track}"
                for r in chosen.itertuples(index=False)]
    title = f"{len(chosen)} of {len(pool)} images of {len(new_tracks)} new tracks"
    plot_image_grid(images, captions, out, cols=THUMBNAIL_COLUMNS, title=title)
    return len(chosen)
