"""The audit's figures: the closest cross-split pairs side by side, and the top suspect labels.

Small PNGs for the report's README, numbered like its tables (#1 is the first
row). Plain ``matplotlib.figure.Figure`` on the Agg canvas, never pyplot (no
global figure registry, no GUI backend), written atomically; an empty finding
gives a one-line figure, so a link never points at a missing or stale file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from signflow.data.arrays import release_resident
from signflow.figures import saved_figure

DPI = 90  # a 64 px sign stays crisp at THUMB_INCHES, and the PNGs stay small
THUMB_INCHES = 1.4  # side of one thumbnail: a caption line of 24 monospace characters at CAPTION_FONT
CAPTION_INCHES = 0.45  # room for a two- or three-line caption above a thumbnail
MESSAGE_INCHES = (4.0, 0.6)
CAPTION_FONT = 7
MESSAGE_FONT = 10
LABEL_CHARS = 16  # class names longer than this are cut with an ellipsis
PAIRS_PER_ROW = 3  # each pair is two thumbnails
SUSPECTS_PER_ROW = 6
NO_PAIRS = "no near-duplicate pair across splits"
NO_SUSPECTS = "no suspect label"


def _saved_figure(out: Path, width: float, height: float) -> AbstractContextManager[Figure]:
    return saved_figure(out, width, height, DPI)


def _message(out: Path, text: str) -> None:
    with _saved_figure(out, *MESSAGE_INCHES) as fig:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=MESSAGE_FONT, color="dimgray")


def _short(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"


def pick_images(images: Mapping[str, np.ndarray], splits: pd.Series, rows: pd.Series) -> list[np.ndarray]:
    """The decoded image at each (split, row), in order; only those rows of each memory map are read."""
    picked = []
    for split, row in zip(splits, rows, strict=True):
        picked.append(np.asarray(images[split][int(row)]))
        release_resident(images[split])
    return picked


def _grid(fig: Figure, count: int, cols: int) -> list[Axes]:
    axes = np.atleast_1d(fig.subplots(math.ceil(count / cols), cols, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    return list(axes)


def _show(ax: Axes, image: np.ndarray, caption: str) -> None:
    ax.imshow(image, interpolation="nearest")
    ax.set_title(caption, fontsize=CAPTION_FONT, family="monospace")


def draw_pairs(pairs: pd.DataFrame, images: Mapping[str, np.ndarray], out: Path | str) -> Path:
    """Each pair of ``pairs`` (split_a/row_a, split_b/row_b) as two thumbnails side by side, numbered."""
    out = Path(out)
    if pairs.empty:
        _message(out, NO_PAIRS)
        return out
    left = pick_images(images, pairs["split_a"], pairs["row_a"])
    right = pick_images(images, pairs["split_b"], pairs["row_b"])
    cols = 2 * min(PAIRS_PER_ROW, len(pairs))
    height = math.ceil(2 * len(pairs) / cols) * (THUMB_INCHES + CAPTION_INCHES)
    with _saved_figure(out, cols * THUMB_INCHES, height) as fig:
        axes = _grid(fig, 2 * len(pairs), cols)
        for k, (_, pair) in enumerate(pairs.iterrows()):
            _show(axes[2 * k], left[k], f"#{k + 1} {pair['split_a']}\n{_short(str(pair['class_a']))}")
            _show(axes[2 * k + 1], right[k], f"{pair['split_b']}, {pair['distance']} bits\n"
                                             f"{_short(str(pair['class_b']))}")
    return out


def draw_suspects(suspects: pd.DataFrame, images: Mapping[str, np.ndarray], out: Path | str) -> Path:
    """Each suspect (split/row) with its given label -> the suggested one and the probabilities of both."""
    out = Path(out)
    if suspects.empty:
        _message(out, NO_SUSPECTS)
        return out
    picked = pick_images(images, suspects["split"], suspects["row"])
    cols = min(SUSPECTS_PER_ROW, len(suspects))
    height = math.ceil(len(suspects) / cols) * (THUMB_INCHES + CAPTION_INCHES)
    with _saved_figure(out, cols * THUMB_INCHES, height) as fig:
        axes = _grid(fig, len(suspects), cols)
        for k, (_, row) in enumerate(suspects.iterrows()):
            caption = (f"#{k + 1} {row['split']} {row['label_probability']:.2f}\n{_short(str(row['label']))}\n"
                       f"-> {_short(str(row['suggested']))} {row['suggested_probability']:.2f}")
            _show(axes[k], picked[k], caption)
    return out
