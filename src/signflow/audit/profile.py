"""The data's shape per split and class: original image sizes and brightness, as a few quantiles.

What a review's data diff needs to see at a glance: a new batch of photos
that are larger, darker or smaller than the rest shows as a moved quantile.
Width and height are the original image's (the manifest's ``width`` and
``height``, before the resize); brightness is the mean of the decoded pixels
(0-255, all three channels). Per split (class ``all``) in the metrics, per
split and class in the CSV.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from signflow.data.arrays import release_resident

QUANTILES = {"p5": 0.05, "p50": 0.5, "p95": 0.95}
MEASURES = ("width", "height", "brightness")
ALL = "all"  # the class of a split's overall row
PREFIX = "profile"
DIGITS = 2


def mean_brightness(images: np.ndarray, batch_size: int) -> np.ndarray:
    """Mean pixel value (0-255) of each decoded image (N, S, S, 3), a batch of a memory map resident at a time."""
    out = np.empty(len(images), dtype=np.float64)
    for start in range(0, len(images), batch_size):
        out[start:start + batch_size] = np.asarray(images[start:start + batch_size]).mean(axis=(1, 2, 3))
        release_resident(images)
    return out


def _describe(rows: pd.DataFrame) -> dict[str, float | int]:
    stats: dict[str, float | int] = {"n": len(rows)}
    for measure in MEASURES:
        values = rows[measure].to_numpy(dtype=np.float64)
        for name, q in QUANTILES.items():
            stats[f"{measure}_{name}"] = round(float(np.quantile(values, q)), DIGITS) if len(values) else float("nan")
    return stats


def profile_table(frame: pd.DataFrame, splits: Sequence[str], class_names: Sequence[str]) -> pd.DataFrame:
    """One row per split and class (and per split, class ``all``): ``n`` and each measure's quantiles.

    ``frame``: every image of every split with ``split``, ``label`` and the
    :data:`MEASURES` columns. Classes without images in a split are left out.
    """
    rows = []
    for split in splits:
        part = frame[frame["split"] == split]
        rows.append({"split": split, "class": ALL, **_describe(part)})
        for name in class_names:
            members = part[part["label"] == name]
            if len(members):
                rows.append({"split": split, "class": name, **_describe(members)})
    return pd.DataFrame(rows)


def profile_metrics(table: pd.DataFrame) -> dict[str, float | int]:
    """Flat keys of each split's overall row: ``profile.train.n``, ``profile.train.brightness.p50``, ..."""
    metrics: dict[str, float | int] = {}
    for _, row in table[table["class"] == ALL].iterrows():
        metrics[f"{PREFIX}.{row['split']}.n"] = int(row["n"])
        if not row["n"]:  # no quantiles of nothing (NaN is not valid JSON)
            continue
        for measure in MEASURES:
            for name in QUANTILES:
                metrics[f"{PREFIX}.{row['split']}.{measure}.{name}"] = float(row[f"{measure}_{name}"])
    return metrics
