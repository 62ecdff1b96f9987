"""The one way a matplotlib figure becomes a PNG file: a plain Agg figure, written atomically.

No pyplot: its global registry keeps every figure alive until closed, and
selecting its backend is global state. A ``Figure`` with an Agg canvas is freed
like any object. Used by the report's plots and the audit's galleries.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from signflow.files import atomic_path


@contextmanager
def saved_figure(out: Path | str, width: float, height: float, dpi: int) -> Iterator[Figure]:
    """A fresh Agg figure (inches); written to ``out`` as PNG at ``dpi``, atomically, when the block succeeds."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    try:
        yield fig
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png", facecolor="white")
    finally:
        fig.clear()
