"""The audit's figures: the right images drawn, numbered; a one-line figure when there is nothing to show."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd

from audit.builders import smooth_images
from signflow.audit.gallery import PAIRS_PER_ROW, SUSPECTS_PER_ROW, draw_pairs, draw_suspects, pick_images


def _arrays() -> dict[str, np.ndarray]:
    return {"train": smooth_images(5, seed=0), "test": smooth_images(3, seed=1)}


def test_pick_images_reads_each_split_row() -> None:
    arrays = _arrays()
    picked = pick_images(arrays, pd.Series(["test", "train", "test"]), pd.Series([2, 4, 0]))
    for image, (split, row) in zip(picked, [("test", 2), ("train", 4), ("test", 0)], strict=True):
        assert np.array_equal(image, arrays[split][row])


def _pixels(path: Path) -> np.ndarray:
    return mpimg.imread(path)


def test_pairs_are_drawn_side_by_side(tmp_path: Path) -> None:
    pairs = pd.DataFrame({"split_a": ["train"] * 4, "row_a": [0, 1, 2, 3], "class_a": ["a"] * 4,
                          "split_b": ["test"] * 4, "row_b": [0, 1, 2, 0], "class_b": ["a", "b", "a", "a"],
                          "distance": [0, 2, 2, 4]})
    one = _pixels(draw_pairs(pairs.head(1), _arrays(), tmp_path / "one.png"))
    many = _pixels(draw_pairs(pairs, _arrays(), tmp_path / "many.png"))
    assert many.shape[1] > one.shape[1]  # up to PAIRS_PER_ROW pairs per row
    assert many.shape[0] > one.shape[0]  # 4 pairs > PAIRS_PER_ROW: a second row
    assert len(pairs) > PAIRS_PER_ROW


def test_suspects_grid_and_empty_message(tmp_path: Path) -> None:
    suspects = pd.DataFrame({"split": ["train"] * 7, "row": range(7), "label": ["a"] * 7,
                             "suggested": ["b"] * 7, "suggested_probability": 0.9, "label_probability": 0.05})
    arrays = {"train": smooth_images(7, seed=2)}
    grid = _pixels(draw_suspects(suspects, arrays, tmp_path / "suspects.png"))
    row = _pixels(draw_suspects(suspects.head(SUSPECTS_PER_ROW), arrays, tmp_path / "row.png"))
    assert grid.shape[1] == row.shape[1] and grid.shape[0] > row.shape[0]
    empty = _pixels(draw_suspects(suspects.head(0), arrays, tmp_path / "none.png"))
    assert empty.shape[0] < row.shape[0]
    assert draw_pairs(pd.DataFrame(columns=["split_a"]), arrays, tmp_path / "nopairs.png").is_file()
