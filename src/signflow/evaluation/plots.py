"""The report's figures: one function per chart, each writing one PNG atomically.

Figures are plain ``matplotlib.figure.Figure`` objects drawn on the Agg canvas,
never ``pyplot``: pyplot keeps every figure in a global registry (a leak in a
long process, and state shared between tests), and needs a GUI backend chosen
before import. A Figure not registered there is freed like any object, and
:func:`_saved_figure` clears it anyway once the file is written.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from signflow.evaluation.metrics import confusion_matrix_counts, expected_calibration_error
from signflow.evaluation.openset import DEFAULT_TPR
from signflow.evaluation.threshold import policy_points
from signflow.figures import saved_figure

DPI = 110  # sharp on GitHub at its ~900 px content width without multi-megabyte PNGs
PANEL_INCHES = 4.6  # side of one chart panel
THUMB_INCHES = 1.35  # side of one image thumbnail in grids (a 64 px sign stays crisp at DPI)
CAPTION_INCHES = 0.35  # room for a two-line caption above a thumbnail
TITLE_INCHES = 0.3  # room for a figure title
CELL_INCHES = 0.75  # confusion-matrix cell side, so labels and counts stay legible
LABEL_INCHES = 1.5  # confusion-matrix room for rotated class names
MIN_CONFUSION_INCHES = 3.5
# Past this many classes (GTSRB has 43) the confusion matrix is one dense panel: two panels of
# 0.75 in cells are already 1650 px wide at 8 classes (7000 px at 43), and a number in every
# cell is unreadable clutter.
DENSE_CLASSES = 8
DENSE_CELL_INCHES = 0.3  # fits a three-digit count at DENSE_CELL_FONT
DENSE_LABEL_INCHES = 1.9  # room for a MAX_LABEL_CHARS tick label at TICK_FONT
DENSE_CELL_FONT = 5.5
TICK_FONT = 7
COLORBAR_INCHES = 0.9
MAX_LABEL_CHARS = 24  # longer class names ("32 end_of_all_speed_and_passing_limits") are cut with an ellipsis
BAR_INCHES = 0.28  # one probability bar, so the class names beside it stay legible
BAR_AXIS_INCHES = 0.5  # the probability axis under the bars
PAIR_INCHES = 0.6 * 2 * PANEL_INCHES  # one thumbnail + bars pair
HISTORY_ASPECT, RELIABILITY_ASPECT = 0.75, 1.3  # panel height / width
CAPTION_WIDTH = 22  # characters per caption line under a thumbnail
CAPTION_FONT = 7.5
CELL_FONT = 9
TITLE_FONT = 12
GRID_ALPHA = 0.3
VALUE_OFFSET, MAX_VALUE_X = 0.02, 0.8  # probability labels: just right of the bar, inside the axes
# Cells darker than this share of the colour scale get white annotation text.
DARK_CELL = 0.55
# Accent colours (colour-blind safe Okabe-Ito palette).
TRAIN_COLOUR, VAL_COLOUR, TOP_COLOUR, BAR_COLOUR = "#0072B2", "#D55E00", "#009E73", "#999999"
CMAP = "Blues"
# Threshold trade-off: markers of the policies not chosen, in registry order; the zoomed panel's margin
# around the policies' points and its smallest side (shares), so close points stay apart.
POLICY_MARKERS = ("o", "s", "^", "D", "v")
MARKER_SIZE, CHOSEN_MARKER_SIZE = 8, 14  # points; the chosen policy's star stands out
ZOOM_MARGIN, MIN_ZOOM_SPAN = 0.01, 0.04
PROBS_PER_ROW = 2  # thumbnail + bar chart pairs side by side
MAX_BARS = 10  # classes drawn per probability chart; with more (e.g. all 43 signs) the most probable


def _saved_figure(out: Path | str, width: float, height: float) -> AbstractContextManager[Figure]:
    return saved_figure(out, width, height, DPI)


def _wrap(text: str) -> str:
    """Wrap each line of a caption; explicit line breaks are kept."""
    return "\n".join(textwrap.fill(line, CAPTION_WIDTH) for line in text.splitlines())


def _message_figure(out: Path | str, message: str, title: str = "") -> None:
    """A small placeholder so a report link never points at a missing image."""
    with _saved_figure(out, PANEL_INCHES, PANEL_INCHES / 3) as fig:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=TITLE_FONT, color="dimgray")
        if title:
            ax.set_title(title, fontsize=TITLE_FONT)


def plot_history(history: pd.DataFrame, out: Path | str, best_epoch: int | None = None) -> None:
    """Loss and accuracy per epoch, train vs val: over- or under-fitting at a glance."""
    with _saved_figure(out, 2 * PANEL_INCHES, PANEL_INCHES * HISTORY_ASPECT) as fig:
        axes = fig.subplots(1, 2)
        for ax, metric, label in ((axes[0], "loss", "Loss"), (axes[1], "accuracy", "Accuracy")):
            ax.plot(history["epoch"], history[f"train_{metric}"], "o-", color=TRAIN_COLOUR, label="train")
            ax.plot(history["epoch"], history[f"val_{metric}"], "s-", color=VAL_COLOUR, label="val")
            if best_epoch is not None and best_epoch >= 0:
                ax.axvline(best_epoch, color="gray", linestyle=":", label=f"best (epoch {best_epoch})")
            ax.set(title=label, xlabel="epoch", ylabel=label.lower())
            ax.grid(alpha=GRID_ALPHA)
            ax.legend()
        # Integer epochs only: "2.5" on the axis would suggest a half epoch exists.
        for ax in axes:
            ax.xaxis.get_major_locator().set_params(integer=True)


def short_label(name: str, limit: int = MAX_LABEL_CHARS) -> str:
    """``name`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _annotate(ax: Axes, values: np.ndarray, texts: np.ndarray, vmax: float, fontsize: float = CELL_FONT) -> None:
    """Write ``texts`` over the cells; an empty text leaves its cell blank."""
    for (i, j), value in np.ndenumerate(values):
        if not texts[i, j]:
            continue
        dark = vmax > 0 and value / vmax > DARK_CELL
        ax.text(j, i, texts[i, j], ha="center", va="center", fontsize=fontsize, color="white" if dark else "black")


def _confusion_panel(
    ax: Axes, values: np.ndarray, texts: np.ndarray, names: Sequence[str], title: str, vmax: float,
    dense: bool = False,
) -> AxesImage:
    image = ax.imshow(values, cmap=CMAP, vmin=0, vmax=vmax)
    _annotate(ax, values, texts, vmax, DENSE_CELL_FONT if dense else CELL_FONT)
    ticks = np.arange(len(names))
    labels = [short_label(n) for n in names]
    tick_font = TICK_FONT if dense else None
    # Dense: vertical x labels, so each stays under its own narrow column.
    ax.set_xticks(ticks, labels, rotation=90 if dense else 45, ha="center" if dense else "right", fontsize=tick_font)
    ax.set_yticks(ticks, labels, fontsize=tick_font)
    ax.set(title=title, xlabel="predicted", ylabel="actual")
    return image


def confusion_figure_size(n_classes: int) -> tuple[float, float]:
    """(width, height) in inches of :func:`plot_confusion`'s figure for ``n_classes`` classes."""
    if n_classes > DENSE_CLASSES:
        side = DENSE_CELL_INCHES * n_classes + DENSE_LABEL_INCHES
        return side + COLORBAR_INCHES, side
    side = max(MIN_CONFUSION_INCHES, CELL_INCHES * n_classes + LABEL_INCHES)
    return 2 * side, side


def plot_confusion(labels: np.ndarray, preds: np.ndarray, class_names: Sequence[str], out: Path | str) -> None:
    """Confusion matrices of the test images, rows the true class.

    Up to ``DENSE_CLASSES`` classes: counts beside row-normalised (recall)
    shares, every cell annotated. Beyond: one panel coloured by the
    row-normalised share (so a rare class's mistakes show as clearly as a common
    one's), its non-zero counts written small and zeros left blank, since the
    mistakes are what one looks for among 43 x 43 cells.
    """
    counts = confusion_matrix_counts(labels, preds, len(class_names))
    totals = counts.sum(axis=1, keepdims=True)
    # A class absent from the test labels has an all-zero row, not NaN.
    shares = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    dense = len(class_names) > DENSE_CLASSES
    with _saved_figure(out, *confusion_figure_size(len(class_names))) as fig:
        if dense:
            ax = fig.add_subplot()
            count_text = np.where(counts > 0, counts.astype(str), "")
            image = _confusion_panel(ax, shares, count_text, class_names,
                                     "Test confusion: colour = share of the true class, numbers = counts", 1.0, True)
            fig.colorbar(image, ax=ax, shrink=0.5, label="share of the row (recall on the diagonal)")
            return
        left, right = fig.subplots(1, 2)
        _confusion_panel(left, counts, counts.astype(str), class_names, "Counts", float(max(counts.max(), 1)))
        share_text = np.vectorize(lambda v: f"{v:.2f}" if v else "0")(shares)
        _confusion_panel(right, shares, share_text, class_names, "Row-normalised (recall)", 1.0)


def per_class_figure_height(n_classes: int) -> float:
    """Height in inches of :func:`plot_per_class_recall`'s figure: one bar per class."""
    return BAR_INCHES * n_classes + BAR_AXIS_INCHES + TITLE_INCHES


def plot_per_class_recall(names: Sequence[str], recall: Sequence[float], support: Sequence[int],
                          out: Path | str) -> None:
    """Per-class accuracy (recall) as horizontal bars, worst class on top, the dotted line at their mean.

    One bar per class at a fixed height, so 43 classes stay as legible as 4;
    sorted so the classes that need work are the first thing one reads.
    """
    recall, support = np.asarray(recall, dtype=float), np.asarray(support, dtype=int)
    if len(names) != len(recall) or len(recall) != len(support):
        raise ValueError(f"{len(names)} names, {len(recall)} recalls, {len(support)} supports")
    if len(names) == 0:
        _message_figure(out, "no classes", "Per-class accuracy")
        return
    order = np.argsort(np.nan_to_num(recall, nan=-1.0), kind="stable")  # worst first; NaN (no images) before all
    y = np.arange(len(order))
    with _saved_figure(out, 1.5 * PANEL_INCHES, per_class_figure_height(len(names))) as fig:
        ax = fig.add_subplot()
        ax.barh(y, np.nan_to_num(recall[order]), color=BAR_COLOUR)
        ax.set_yticks(y, [short_label(names[k]) for k in order], fontsize=CAPTION_FONT + 1)
        ax.invert_yaxis()  # worst on top
        for row, k in enumerate(order):
            value = "n/a" if np.isnan(recall[k]) else f"{recall[k]:.2f}"
            x = min(np.nan_to_num(recall[k]) + VALUE_OFFSET, MAX_VALUE_X)
            ax.text(x, row, f"{value} (n={support[k]})", va="center", fontsize=CAPTION_FONT)
        title = "Per-class accuracy (worst first)"
        if np.isfinite(recall).any():
            mean = float(np.nanmean(recall))
            ax.axvline(mean, color=VAL_COLOUR, linestyle=":")
            title += f"; dotted: mean {mean:.3f}"
        ax.set(xlim=(0, 1), xlabel="recall: share of the class's test images classified as it", title=title)
        ax.grid(axis="x", alpha=GRID_ALPHA)


def plot_image_grid(
    images: np.ndarray, captions: Sequence[str], out: Path | str, cols: int = 6, title: str = ""
) -> None:
    """Thumbnails with a caption each; an empty set gives a small "none" figure."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if len(images) == 0:
        _message_figure(out, "none", title)
        return
    cols = max(1, min(cols, len(images)))
    rows = math.ceil(len(images) / cols)
    height = rows * (THUMB_INCHES + CAPTION_INCHES) + (TITLE_INCHES if title else 0)
    with _saved_figure(out, cols * THUMB_INCHES, height) as fig:
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
        for ax in axes:
            ax.axis("off")
        for ax, image, caption in zip(axes, images, captions, strict=False):
            ax.imshow(np.asarray(image), interpolation="nearest")
            ax.set_title(_wrap(caption), fontsize=CAPTION_FONT)
        if title:
            fig.suptitle(title, fontsize=TITLE_FONT)


def _probability_pair(image_ax: Axes, bar_ax: Axes, image: np.ndarray | None, probs: np.ndarray,
                      class_names: Sequence[str], title: str, threshold: float | None) -> None:
    image_ax.axis("off")
    if image is not None:  # None: the file changed since prediction; draw the bars without it
        image_ax.imshow(np.asarray(image), interpolation="nearest")
    image_ax.set_title(_wrap(title), fontsize=CAPTION_FONT + 1)
    shown = _shown_classes(probs)
    top = int(np.argmax(probs))
    colours = [TOP_COLOUR if k == top else BAR_COLOUR for k in shown]
    y = np.arange(len(shown))
    bar_ax.barh(y, probs[shown], color=colours)
    bar_ax.set_yticks(y, [class_names[k] for k in shown], fontsize=CAPTION_FONT + 1)
    bar_ax.invert_yaxis()  # first class on top, as in the class list
    bar_ax.set_xlim(0, 1)
    bar_ax.tick_params(axis="x", labelsize=CAPTION_FONT)
    for row, k in enumerate(shown):
        x = min(probs[k] + VALUE_OFFSET, MAX_VALUE_X)
        bar_ax.text(x, row, f"{probs[k]:.2f}", va="center", fontsize=CAPTION_FONT)
    if threshold is not None:
        bar_ax.axvline(threshold, color=VAL_COLOUR, linestyle=":", linewidth=1.2)


def _shown_classes(probs: np.ndarray) -> np.ndarray:
    """Every class in class order; past MAX_BARS classes only the most probable, best first."""
    if len(probs) <= MAX_BARS:
        return np.arange(len(probs))
    return np.argsort(-probs, kind="stable")[:MAX_BARS]


def plot_probability_bars(
    images: Sequence[np.ndarray | None], probs: np.ndarray, class_names: Sequence[str], titles: Sequence[str],
    out: Path | str, threshold: float | None = None,
) -> None:
    """Per image, its thumbnail beside the model's probability for each class.

    The one probability chart: the report's sample predictions and
    ``signflow predict --plot`` both draw it. ``threshold`` (the open-set
    rejection threshold) is drawn as a dotted line: a known class whose bar
    stops short of it is answered "unknown". With more than ``MAX_BARS``
    classes each image shows its most probable ones.
    """
    if not len(images) == len(probs) == len(titles):
        raise ValueError(f"{len(images)} images, {len(probs)} probability rows, {len(titles)} titles")
    if len(images) == 0:
        _message_figure(out, "no sample images")
        return
    rows = math.ceil(len(images) / PROBS_PER_ROW)
    n_bars = min(len(class_names), MAX_BARS)
    row_height = max(THUMB_INCHES + CAPTION_INCHES, BAR_INCHES * n_bars + BAR_AXIS_INCHES)
    with _saved_figure(out, PROBS_PER_ROW * PAIR_INCHES, rows * row_height + TITLE_INCHES) as fig:
        grid = fig.add_gridspec(rows, 2 * PROBS_PER_ROW, width_ratios=[1, 2] * PROBS_PER_ROW)
        for i in range(rows * PROBS_PER_ROW):
            row, col = divmod(i, PROBS_PER_ROW)
            image_ax, bar_ax = fig.add_subplot(grid[row, 2 * col]), fig.add_subplot(grid[row, 2 * col + 1])
            if i < len(images):
                _probability_pair(image_ax, bar_ax, images[i], probs[i], class_names, titles[i], threshold)
            else:
                image_ax.axis("off")
                bar_ax.axis("off")
        if threshold is not None:
            fig.suptitle(f"dotted line: rejection threshold {threshold:.2f} (below it the answer is \"unknown\")",
                         fontsize=CAPTION_FONT + 1, color=VAL_COLOUR)


def _bins_as_rows(bins: pd.DataFrame) -> list[dict]:
    """CSV round-trips empty bins as NaN; metrics wants them as None."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in bins.to_dict(orient="records")]


def plot_reliability(bins: pd.DataFrame, out: Path | str) -> None:
    """Accuracy vs confidence per bin against the diagonal, bin counts below, ECE in the title."""
    rows = _bins_as_rows(bins)
    ece = expected_calibration_error(rows) if sum(r["count"] for r in rows) else float("nan")
    lower, upper = bins["bin_lower"].to_numpy(), bins["bin_upper"].to_numpy()
    width, filled = upper - lower, bins["count"].to_numpy() > 0
    with _saved_figure(out, PANEL_INCHES, PANEL_INCHES * RELIABILITY_ASPECT) as fig:
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
        acc, conf = bins["accuracy"].to_numpy(float)[filled], bins["confidence"].to_numpy(float)[filled]
        top.bar(lower[filled], acc, width=width[filled], align="edge", color=TRAIN_COLOUR, edgecolor="white",
                label="accuracy")
        # The gap per bin is what ECE averages (weighted by the counts below).
        top.bar(lower[filled], np.abs(conf - acc), bottom=np.minimum(acc, conf), width=width[filled], align="edge",
                facecolor="none", hatch="///", edgecolor=VAL_COLOUR, label="gap to mean confidence")
        top.plot([0, 1], [0, 1], "--", color="black", zorder=3, label="perfect calibration")
        top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=f"Reliability (ECE {ece:.3f})")
        top.legend(loc="upper left", fontsize=CAPTION_FONT + 1)
        bottom.bar(lower, bins["count"], width=width, align="edge", color=BAR_COLOUR, edgecolor="white")
        bottom.set(xlabel="confidence (max softmax)", ylabel="images")
        for x, w, n in zip(lower[filled], width[filled], bins["count"].to_numpy()[filled], strict=True):
            bottom.text(x + w / 2, n, str(int(n)), ha="center", va="bottom", fontsize=CAPTION_FONT - 1)
        bottom.margins(y=0.25)  # headroom for the count labels


def plot_roc(roc: pd.DataFrame, auroc: float | None, out: Path | str) -> None:
    """Open-set ROC: known images accepted vs never-seen ones wrongly accepted."""
    if roc.empty:
        _message_figure(out, "no held-out images: no open-set ROC", "Open-set ROC")
        return
    label = f"max softmax (AUROC {auroc:.3f})" if auroc is not None else "max softmax"
    with _saved_figure(out, PANEL_INCHES, PANEL_INCHES) as fig:
        ax = fig.add_subplot()
        ax.plot(roc["fpr"], roc["tpr"], color=TRAIN_COLOUR, linewidth=2, label=label)
        ax.plot([0, 1], [0, 1], "--", color="gray", label="chance")
        ax.axhline(DEFAULT_TPR, color=VAL_COLOUR, linestyle=":", label=f"{DEFAULT_TPR:.0%} of known accepted")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="held-out images accepted (FPR)",
               ylabel="known images accepted (TPR)", title="Open-set ROC")
        ax.set_aspect("equal")
        ax.grid(alpha=GRID_ALPHA)
        ax.legend(loc="lower right", fontsize=CAPTION_FONT + 1)


def _zoom_limits(values: Sequence[float]) -> tuple[float, float]:
    low = min(min(values) - ZOOM_MARGIN, 1 - MIN_ZOOM_SPAN)
    return max(-ZOOM_MARGIN, low), 1 + ZOOM_MARGIN


def plot_threshold_tradeoff(curve: pd.DataFrame, chosen: str | None, out: Path | str) -> None:
    """Known-class validation images kept against held-out ones rejected, per threshold, each policy's point on it.

    Left the whole curve, right zoomed on the policies' points; the chosen
    policy is the star. ``curve``: ``threshold.tradeoff_curve`` (its CSV).
    """
    title = "Threshold trade-off (validation)"
    if curve.empty or curve["heldout_rejected"].isna().all():
        _message_figure(out, "no held-out validation images: no trade-off", title)
        return
    points = [p for p in policy_points(curve) if p.known_kept is not None and p.heldout_rejected is not None]
    with _saved_figure(out, 2 * PANEL_INCHES, PANEL_INCHES) as fig:
        axes = fig.subplots(1, 2)
        for ax in axes:
            ax.plot(curve["heldout_rejected"], curve["known_kept"], color=TRAIN_COLOUR, linewidth=2,
                    label="every threshold")
            others = iter(POLICY_MARKERS)
            for point in points:
                mine = point.name == chosen
                ax.plot(point.heldout_rejected, point.known_kept, linestyle="none",
                        marker="*" if mine else next(others, POLICY_MARKERS[0]),
                        markersize=CHOSEN_MARKER_SIZE if mine else MARKER_SIZE,
                        color=VAL_COLOUR if mine else TOP_COLOUR, markeredgecolor="black", zorder=3,
                        label=f"{point.name}{' (chosen)' if mine else ''}: threshold {point.threshold:.3f}")
            ax.set(xlabel="held-out images rejected", ylabel="known-class images kept")
            ax.grid(alpha=GRID_ALPHA)
        axes[0].set(xlim=(-ZOOM_MARGIN, 1 + ZOOM_MARGIN), ylim=(-ZOOM_MARGIN, 1 + ZOOM_MARGIN), title=title)
        if points:
            axes[1].set(xlim=_zoom_limits([p.heldout_rejected for p in points]),
                        ylim=_zoom_limits([p.known_kept for p in points]), title="Zoomed on the policies")
        axes[0].legend(loc="lower left", fontsize=CAPTION_FONT + 1)  # the curve hugs the top right
