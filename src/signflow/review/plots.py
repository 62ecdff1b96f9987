"""Base vs head of one changed plot file, side by side in one PNG, for `signflow pr-report`.

A registry of kinds, recognised by the file's columns (the pipeline's files
keep their columns; an unknown CSV falls through to the generic kinds):

- ``confusion``: ``actual``, ``predicted`` rows, one per image -> count heatmaps
  over the classes of both revisions, one colour scale;
- ``roc``: ``fpr``, ``tpr`` -> the curve against chance;
- ``reliability``: ``confidence``, ``accuracy`` per bin -> the points against y = x;
- ``history``: an ``epoch`` or ``step`` column -> one line chart per metric,
  ``train_``/``val_``/``test_`` variants of a metric in the same chart;
- ``bars``: a label column and numbers, few rows (per-class results) -> bars per column.

Each chart row has the same scale on both sides, so a difference in the
picture is a difference in the data. The left half of the PNG is the base, the
right half the head, each under its label: each side is its own Agg figure of
the same size, the two pixel arrays put side by side, so equal data under
equal labels gives two identical halves (sub-figures of one figure are placed
to fractions of a pixel and would not). Drawn with ``signflow.evaluation.plots``' look
(colours, fonts, the confusion panel).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imsave

from signflow.evaluation.plots import (
    BAR_AXIS_INCHES,
    BAR_COLOUR,
    BAR_INCHES,
    CAPTION_FONT,
    DENSE_CLASSES,
    DPI,
    GRID_ALPHA,
    HISTORY_ASPECT,
    PANEL_INCHES,
    TITLE_FONT,
    TITLE_INCHES,
    TRAIN_COLOUR,
    VAL_COLOUR,
    _confusion_panel,
    confusion_figure_size,
    short_label,
)
from signflow.files import atomic_path

SIDES = ("base", "head")
HISTORY_X = ("epoch", "step")  # x column of a per-epoch (or per-step) history
SPLIT_PREFIXES = ("train_", "val_", "test_")  # train_loss and val_loss share the "loss" chart
MAX_BAR_ROWS = 50  # beyond: per-row data (e.g. predictions.csv), no chart says more than the other plots
MARGIN = 0.05  # share of the value range added above and below a line chart
SPLIT_COLOURS = {"train_": TRAIN_COLOUR, "val_": VAL_COLOUR, "test_": "#009E73"}
MESSAGE_COLOUR = "dimgray"

Frame = pd.DataFrame | None  # None: the file is absent in that revision


def _columns(frame: Frame) -> set[str]:
    return set() if frame is None else set(frame.columns)


def _numeric(frame: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    return [c for c in frame.columns if c not in exclude and pd.api.types.is_numeric_dtype(frame[c])]


def _message(fig: Figure, text: str) -> None:
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=TITLE_FONT, color=MESSAGE_COLOUR, wrap=True)


def _limits(values: Sequence[pd.Series]) -> tuple[float, float]:
    """(low, high) over every finite value of both revisions, with a margin; (0, 1) when there is none."""
    finite = np.concatenate([pd.to_numeric(v, errors="coerce").to_numpy(dtype=float) for v in values]
                            or [np.zeros(0)])
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    pad = (high - low) * MARGIN or abs(high) * MARGIN or MARGIN
    return low - pad, high + pad


# ---------------------------------------------------------------------- kinds


def _is_confusion(columns: set[str]) -> bool:
    return {"actual", "predicted"} <= columns


def _class_names(frames: Sequence[pd.DataFrame]) -> list[str]:
    return sorted({str(v) for f in frames for c in ("actual", "predicted") for v in f[c]})


def _counts(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    table = pd.crosstab(frame["actual"].astype(str), frame["predicted"].astype(str))
    return table.reindex(index=names, columns=names, fill_value=0).to_numpy()


def _draw_confusion(figs: Sequence[Figure], frames: Sequence[pd.DataFrame]) -> None:
    names = _class_names(frames)
    counts = [_counts(f, names) for f in frames]
    vmax = float(max(max(c.max() for c in counts), 1))
    dense = len(names) > DENSE_CLASSES
    for fig, count in zip(figs, counts, strict=True):
        text = np.where(count > 0, count.astype(str), "") if dense else count.astype(str)
        _confusion_panel(fig.add_subplot(), count, text, names, "counts (rows: actual)", vmax, dense)


def _confusion_size(frames: Sequence[pd.DataFrame]) -> tuple[float, float]:
    _, side = confusion_figure_size(len(_class_names(frames)))  # the report's panel side: one panel per revision
    return side, side + TITLE_INCHES


def _curve(x: str, y: str, diagonal: str, xlabel: str, ylabel: str) -> Callable[..., None]:
    """A y-vs-x curve on [0, 1] x [0, 1] against a dashed diagonal (chance or perfect calibration)."""

    def draw(figs: Sequence[Figure], frames: Sequence[pd.DataFrame]) -> None:
        for fig, frame in zip(figs, frames, strict=True):
            ax = fig.add_subplot()
            points = frame[[x, y]].apply(pd.to_numeric, errors="coerce").dropna()  # empty bins have no point
            ax.plot(points[x], points[y], "o-", color=TRAIN_COLOUR, markersize=3, linewidth=1.5)
            ax.plot([0, 1], [0, 1], "--", color="gray", label=diagonal)
            ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel=xlabel, ylabel=ylabel)
            ax.set_aspect("equal")
            ax.grid(alpha=GRID_ALPHA)
            ax.legend(loc="lower right", fontsize=CAPTION_FONT + 1)

    return draw


def _square_size(frames: Sequence[pd.DataFrame]) -> tuple[float, float]:
    return PANEL_INCHES, PANEL_INCHES + TITLE_INCHES


def _history_x(columns: set[str]) -> str | None:
    return next((x for x in HISTORY_X if x in columns), None)


def _metric_groups(frames: Sequence[pd.DataFrame], x: str) -> dict[str, list[str]]:
    """Chart title -> its columns, in first-seen order: ``train_loss``, ``val_loss`` -> ``loss``."""
    groups: dict[str, list[str]] = {}
    for frame in frames:
        for column in _numeric(frame, exclude=[x]):
            prefix = next((p for p in SPLIT_PREFIXES if column.startswith(p)), "")
            members = groups.setdefault(column[len(prefix):], [])
            if column not in members:
                members.append(column)
    return groups


def _draw_history(figs: Sequence[Figure], frames: Sequence[pd.DataFrame]) -> None:
    x = _history_x(_columns(frames[0])) or HISTORY_X[0]
    groups = _metric_groups(frames, x)
    x_limits = _limits([f[x] for f in frames if x in f])
    for fig, frame in zip(figs, frames, strict=True):
        axes = np.atleast_1d(fig.subplots(len(groups), 1, squeeze=False)).ravel()
        for ax, (title, columns) in zip(axes, groups.items(), strict=True):
            for column in columns:
                if column in frame:
                    prefix = next((p for p in SPLIT_PREFIXES if column.startswith(p)), "")
                    ax.plot(frame[x], frame[column], "o-", markersize=3, label=column,
                            color=SPLIT_COLOURS.get(prefix, TRAIN_COLOUR))
            ax.set(xlim=x_limits, ylim=_limits([f[c] for f in frames for c in columns if c in f]), title=title)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=GRID_ALPHA)
            if ax.lines:
                ax.legend(fontsize=CAPTION_FONT)
            else:  # a column added or dropped between the revisions
                ax.text(0.5, 0.5, "no such column", ha="center", va="center", transform=ax.transAxes,
                        color=MESSAGE_COLOUR)
        axes[-1].set_xlabel(x)


def _history_size(frames: Sequence[pd.DataFrame]) -> tuple[float, float]:
    x = _history_x(_columns(frames[0])) or HISTORY_X[0]
    rows = max(1, len(_metric_groups(frames, x)))
    return PANEL_INCHES, rows * PANEL_INCHES * HISTORY_ASPECT + TITLE_INCHES


def _bar_labels(frame: pd.DataFrame) -> pd.Series:
    return frame.iloc[:, 0].astype(str)


def _is_bars(frame: pd.DataFrame) -> bool:
    first = frame.columns[0] if len(frame.columns) else None
    return (first is not None and not pd.api.types.is_numeric_dtype(frame[first])
            and bool(_numeric(frame)) and len(frame) <= MAX_BAR_ROWS and frame[first].is_unique)


def _draw_bars(figs: Sequence[Figure], frames: Sequence[pd.DataFrame]) -> None:
    columns = list(dict.fromkeys(c for f in frames for c in _numeric(f)))
    labels = list(dict.fromkeys(label for f in frames for label in _bar_labels(f)))
    for fig, frame in zip(figs, frames, strict=True):
        axes = np.atleast_1d(fig.subplots(len(columns), 1, squeeze=False)).ravel()
        by_label = frame.set_index(_bar_labels(frame))
        for ax, column in zip(axes, columns, strict=True):
            values = by_label[column].reindex(labels) if column in by_label else pd.Series(np.nan, index=labels)
            y = np.arange(len(labels))
            ax.barh(y, values.fillna(0).to_numpy(dtype=float), color=BAR_COLOUR)
            ax.set_yticks(y, [short_label(label) for label in labels], fontsize=CAPTION_FONT)
            ax.invert_yaxis()  # first row on top, as in the file
            high = max(_limits([f[column] for f in frames if column in f])[1], 0.0)
            ax.set(xlim=(0, high or 1.0), title=column)
            ax.grid(axis="x", alpha=GRID_ALPHA)


def _bars_size(frames: Sequence[pd.DataFrame]) -> tuple[float, float]:
    columns = {c for f in frames for c in _numeric(f)}
    labels = {label for f in frames for label in _bar_labels(f)}
    chart = BAR_INCHES * len(labels) + BAR_AXIS_INCHES + TITLE_INCHES
    return PANEL_INCHES, len(columns) * chart + TITLE_INCHES


@dataclass(frozen=True)
class PlotKind:
    """How to recognise a plot file by its columns, draw the revisions (one scale), size one side."""

    name: str
    matches: Callable[[pd.DataFrame], bool]
    draw: Callable[[Sequence[Figure], Sequence[pd.DataFrame]], None]  # figure i shows frame i
    size: Callable[[Sequence[pd.DataFrame]], tuple[float, float]]  # (width, height) of one side, inches


# First match wins: the specific kinds before the generic ones.
KINDS: tuple[PlotKind, ...] = (
    PlotKind("confusion", lambda f: _is_confusion(_columns(f)), _draw_confusion, _confusion_size),
    PlotKind("roc", lambda f: {"fpr", "tpr"} <= _columns(f),
             _curve("fpr", "tpr", "chance", "held-out images accepted (FPR)", "known images accepted (TPR)"),
             _square_size),
    PlotKind("reliability", lambda f: {"confidence", "accuracy"} <= _columns(f),
             _curve("confidence", "accuracy", "perfect calibration", "confidence", "accuracy"), _square_size),
    PlotKind("history", lambda f: _history_x(_columns(f)) is not None and len(_numeric(f)) > 1,
             _draw_history, _history_size),
    PlotKind("bars", _is_bars, _draw_bars, _bars_size),
)


def resolve_kind(frame: pd.DataFrame) -> PlotKind | None:
    """The first kind that can draw ``frame``; None when none can (no picture for that file)."""
    return next((kind for kind in KINDS if kind.matches(frame)), None)


def plot_comparison(base: Frame, head: Frame, out: Path | str, labels: Sequence[str] = SIDES) -> str | None:
    """Draw ``base`` (left) and ``head`` (right) to ``out``; the kind drawn, or None (nothing written).

    A revision without the file (None), or whose columns the kind cannot
    draw, gets a one-line panel saying so; the other side is drawn alone.
    """
    present = [f for f in (head, base) if f is not None]
    kind = next((k for k in map(resolve_kind, present) if k is not None), None)
    if kind is None:
        return None
    drawable = [f for f in (base, head) if f is not None and kind.matches(f) and not f.empty]
    width, height = kind.size(drawable) if drawable else _square_size(drawable)
    sides = [_side_figure(width, height) for _ in SIDES]
    try:
        drawn = []
        for side, frame, label in zip(sides, (base, head), labels, strict=True):
            side.suptitle(label, fontsize=TITLE_FONT)
            if frame is None:
                _message(side, "no such file")
            elif not kind.matches(frame):
                _message(side, f"not a {kind.name} file: columns {', '.join(map(str, frame.columns))}")
            elif frame.empty:
                _message(side, "empty file")
            else:
                drawn.append((side, frame))
        if drawn:
            kind.draw([s for s, _ in drawn], [f for _, f in drawn])
        with atomic_path(out) as tmp:
            imsave(tmp, np.hstack([_pixels(side) for side in sides]), format="png", dpi=DPI)
    finally:
        for side in sides:
            side.clear()
    return kind.name


def _side_figure(width: float, height: float) -> Figure:
    """One side: a plain Agg figure (no pyplot registry, as in ``signflow.evaluation.plots``)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained", facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def _pixels(fig: Figure) -> np.ndarray:
    """The figure rendered: (H, W, 4) uint8 RGBA."""
    canvas = fig.canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()
