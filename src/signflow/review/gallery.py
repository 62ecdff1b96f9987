"""The test images that flipped between base and head: a gallery PNG and a markdown paragraph.

Accuracy going from 0.95 to 0.95 can hide 30 images the head now gets wrong
and 30 it now gets right; a reviewer sees them here. Two directions:

- ``regressed``: right on base, wrong on head, the head's most confident
  mistakes first (a confident new mistake is the worst kind);
- ``fixed``: wrong on base, right on head, the base's most confident mistakes
  first (the head fixed what the base was sure of).

Ties are broken by path, so the same predictions always give the same picture.
The thumbnails are the head's decoded test arrays (``signflow.data.arrays``),
memory-mapped: only the images drawn are read. :func:`draw_flip_gallery`
always writes its PNG, a one-line message when nothing flipped, so a link to
it never points at a missing (or a previous run's) file; :func:`flips_markdown`
links it only when there is something to see.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import SubFigure

from signflow import markdown
from signflow.data.arrays import load_split, release_resident
from signflow.data.manifest import DataError
from signflow.evaluation.plots import (
    CAPTION_FONT,
    CAPTION_INCHES,
    THUMB_INCHES,
    TITLE_FONT,
    TITLE_INCHES,
    _message_figure,
    _saved_figure,
    short_label,
)

log = logging.getLogger(__name__)

DEFAULT_PER_DIRECTION = 24  # images drawn per direction: enough to see a pattern, small enough to load fast
TABLE_ROWS = 5  # regressions listed in the markdown table; the gallery shows more
TEST_SPLIT = "test"
JOINED_COLUMNS = ("path", "label", "role", "base_prediction", "base_confidence", "head_prediction",
                  "head_confidence")
COLS = 5  # thumbnails per gallery row
# A cell wider than the report grids' thumbnail, so "base: <class> 0.97" fits on one line; the
# image keeps its height (THUMB_INCHES), the caption gets the cell's width.
CELL_INCHES = 1.75
POINTS_PER_INCH = 72
MONO_ADVANCE = 0.6  # width of a monospace character (DejaVu Sans Mono), in ems: captions are monospace
CAPTION_FILL = 0.9  # share of the cell a caption line may take: the rest keeps neighbouring captions apart
CAPTION_CHARS = int(CELL_INCHES * POINTS_PER_INCH * CAPTION_FILL / (MONO_ADVANCE * CAPTION_FONT))  # 25
CAPTION_LINES_INCHES = CAPTION_INCHES * 3 / 2  # three caption lines where the grids have room for two
NONE_INCHES = 0.1  # below an empty section's title ("...: none")
TITLE_X = 0.01  # section titles start at the left edge, just inside the image
SIDE_PREFIX = "base: "  # as long as "head: " and "true: ", so the three caption lines align
CONFIDENCE_DIGITS = 2
NO_FLIPS = "no test image flipped between right and wrong"
ALT_TEXT = "test images that flipped between base and head"


@dataclass(frozen=True)
class Flips:
    """The flipped rows of a joined base/head frame, worst first, and how many images were compared."""

    regressed: pd.DataFrame  # right on base, wrong on head
    fixed: pd.DataFrame  # wrong on base, right on head
    compared: int

    @property
    def regressed_total(self) -> int:
        return len(self.regressed)

    @property
    def fixed_total(self) -> int:
        return len(self.fixed)


@dataclass(frozen=True)
class Gallery:
    """What :func:`draw_flip_gallery` wrote: the PNG and how many images of each direction it shows."""

    path: Path
    regressed_shown: int
    fixed_shown: int


@dataclass(frozen=True)
class _Direction:
    """One section of the gallery: which rows, how it is titled, whose confidence orders it."""

    title: str  # "right on base, wrong on head"
    rows: pd.DataFrame
    sure: str  # who was confidently wrong: "head" or "base"


def _check_joined(joined: pd.DataFrame) -> None:
    missing = [c for c in JOINED_COLUMNS if c not in joined.columns]
    if missing:
        raise ValueError(f"joined predictions lack column(s) {', '.join(missing)}; "
                         f"expected {', '.join(JOINED_COLUMNS)}")
    unpredicted = joined[joined[["base_prediction", "head_prediction"]].isna().any(axis=1)]
    if len(unpredicted):
        # A missing prediction would count as "wrong" and invent a flip: the join must keep only common images.
        raise ValueError(f"{len(unpredicted)} joined row(s) lack a base or head prediction, "
                         f"e.g. {unpredicted['path'].iloc[0]}; join only the images both revisions predicted")


def _worst_first(rows: pd.DataFrame, confidence: str) -> pd.DataFrame:
    """``rows`` by ``confidence`` (highest first), ties by path: a deterministic order."""
    ordered = rows.assign(_path=rows["path"].astype(str)).sort_values(
        [confidence, "_path"], ascending=[False, True], kind="stable")
    return ordered.drop(columns="_path").reset_index(drop=True)


def find_flips(joined: pd.DataFrame) -> Flips:
    """The images right on one revision and wrong on the other, each direction worst first.

    An image is right when its prediction equals its label (compared as text:
    both come from CSVs of class names). ``joined`` holds only the rows that
    count for the metric; no role is filtered here.
    """
    _check_joined(joined)
    label = joined["label"].astype(str)
    base_right = joined["base_prediction"].astype(str) == label
    head_right = joined["head_prediction"].astype(str) == label
    return Flips(
        regressed=_worst_first(joined[base_right & ~head_right], "head_confidence"),
        fixed=_worst_first(joined[~base_right & head_right], "base_confidence"),
        compared=len(joined),
    )


def _directions(flips: Flips, per_direction: int) -> tuple[_Direction, _Direction]:
    return (_Direction("right on base, wrong on head", flips.regressed.head(per_direction), "head"),
            _Direction("wrong on base, right on head", flips.fixed.head(per_direction), "base"))


def _section_title(direction: _Direction, total: int) -> str:
    if total == 0:
        return f"{direction.title}: none"
    shown = len(direction.rows)
    if shown < total:
        return f"{direction.title}: {total} in all, the {shown} most confident {direction.sure} answers shown"
    return f"{direction.title}: {total} in all, the most confident {direction.sure} answer first"


def _caption(row: pd.Series) -> str:
    """Three aligned lines: the true class, then each revision's answer and confidence."""
    room = CAPTION_CHARS - len(SIDE_PREFIX) - len(f" {0:.{CONFIDENCE_DIGITS}f}")
    lines = [f"true: {short_label(str(row['label']), CAPTION_CHARS - len(SIDE_PREFIX))}"]
    for side in ("base", "head"):
        answer = short_label(str(row[f"{side}_prediction"]), room)
        lines.append(f"{side}: {answer} {row[f'{side}_confidence']:.{CONFIDENCE_DIGITS}f}")
    return "\n".join(lines)


def _positions(paths: Sequence[str], manifest: pd.DataFrame, dataset_dir: Path) -> np.ndarray:
    """Row of each path in the arrays' manifest; DataError naming the paths it lacks."""
    index = pd.Index(manifest["path"].astype(str))
    positions = index.get_indexer(list(paths))  # -1: not there (a duplicated path raises: manifests have none)
    absent = [p for p, k in zip(paths, positions, strict=True) if k < 0]
    if absent:
        raise DataError(f"{len(absent)} flipped image(s) not in {dataset_dir / f'{TEST_SPLIT}.csv'}, "
                        f"e.g. {absent[0]}: the predictions and the decoded images are of different datasets; "
                        "run `dvc repro` so both come from the same data")
    return positions


def _load_images(dataset_dir: Path, paths: Sequence[str]) -> np.ndarray:
    """The decoded test images of ``paths``, in that order; only those rows are read from the map."""
    for suffix in (".csv", ".npy"):
        file = dataset_dir / f"{TEST_SPLIT}{suffix}"
        if not file.is_file():
            raise FileNotFoundError(f"{file} not found (the decoded test images): run `dvc pull {dataset_dir}` "
                                    "(or `dvc repro` to build it)")
    manifest, images = load_split(dataset_dir, TEST_SPLIT)
    positions = _positions(paths, manifest, dataset_dir)
    picked = np.asarray(images[positions]) if len(positions) else np.empty((0, 1, 1, 3), dtype=np.uint8)
    release_resident(images)
    return picked


def _draw_section(section: SubFigure, direction: _Direction, total: int, images: np.ndarray) -> None:
    section.suptitle(_section_title(direction, total), fontsize=TITLE_FONT - 1, ha="left", x=TITLE_X)
    if len(images) == 0:  # the title says "none"
        return
    rows = math.ceil(len(images) / COLS)
    axes = np.atleast_1d(section.subplots(rows, COLS, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, (_, row) in zip(axes, images, direction.rows.iterrows(), strict=False):
        ax.imshow(image, interpolation="nearest")
        # Image and caption at the cell's left edge: the caption, wider than the image, runs into the
        # cell's free right part, never into the next cell or (last column) off the figure.
        ax.set_anchor("W")
        ax.set_title(_caption(row), fontsize=CAPTION_FONT, family="monospace", loc="left")


def _section_height(shown: int) -> float:
    return TITLE_INCHES + (math.ceil(shown / COLS) * (THUMB_INCHES + CAPTION_LINES_INCHES) if shown else NONE_INCHES)


def draw_flip_gallery(flips: Flips, dataset_dir: Path | str, out: Path | str,
                      per_direction: int = DEFAULT_PER_DIRECTION) -> Gallery:
    """One PNG, two sections (regressed, then fixed), at most ``per_direction`` images each, worst first.

    Always writes ``out`` (atomically): with no flips at all, a one-line
    message, so neither a missing file nor a previous report's gallery is ever
    linked. FileNotFoundError when ``dataset_dir`` lacks the decoded test
    images; DataError when a flipped path is not among them.
    """
    if per_direction < 1:
        raise ValueError(f"per_direction must be at least 1, got {per_direction}")
    dataset_dir, out = Path(dataset_dir), Path(out)
    directions = _directions(flips, per_direction)
    totals = (flips.regressed_total, flips.fixed_total)
    if not any(totals):
        _message_figure(out, NO_FLIPS)
        return Gallery(out, 0, 0)
    paths = [str(p) for d in directions for p in d.rows["path"]]
    images = _load_images(dataset_dir, paths)
    heights = [_section_height(len(d.rows)) for d in directions]
    with _saved_figure(out, COLS * CELL_INCHES, sum(heights)) as fig:
        sections = fig.subfigures(len(directions), 1, height_ratios=heights)
        start = 0
        for section, direction, total in zip(sections, directions, totals, strict=True):
            _draw_section(section, direction, total, images[start:start + len(direction.rows)])
            start += len(direction.rows)
    log.info("flip gallery %s: %d of %d regressions, %d of %d fixes", out, len(directions[0].rows), totals[0],
             len(directions[1].rows), totals[1])
    return Gallery(out, len(directions[0].rows), len(directions[1].rows))


def _were(count: int) -> str:
    return f"{count} was" if count == 1 else f"{count} were"


def _answer(row: pd.Series, side: str) -> str:
    return f"{row[f'{side}_prediction']} ({row[f'{side}_confidence']:.{CONFIDENCE_DIGITS}f})"


def flips_markdown(flips: Flips, image_link: str | None, per_direction: int = DEFAULT_PER_DIRECTION) -> str:
    """A paragraph: how many images flipped each way, the gallery link, the first regressions as a table.

    ``image_link`` (the gallery's path relative to the markdown, or None when
    it was not drawn) is linked only when something flipped.
    """
    regressed, fixed = flips.regressed_total, flips.fixed_total
    if not regressed and not fixed:
        return f"No test image flipped: each of the {flips.compared} compared is right on both or wrong on both."
    parts = [f"Of {flips.compared} test images, {_were(regressed)} right on base and wrong on head, "
             f"{fixed} the reverse."]
    if image_link is not None:
        parts.append(f"![{ALT_TEXT}]({image_link})\n\nThe gallery shows up to {per_direction} per direction, "
                     "those the wrong revision was most sure of first.")
    if regressed:
        rows = [(r["path"], r["label"], _answer(r, "base"), _answer(r, "head"))
                for _, r in flips.regressed.head(TABLE_ROWS).iterrows()]
        shown = f"The {len(rows)} most confident" if len(rows) < regressed else "All"
        parts.append(f"{shown} regressions (head's confidence first):\n\n"
                     + markdown.table(["path", "true class", "base", "head"], rows))
    return "\n\n".join(parts)
