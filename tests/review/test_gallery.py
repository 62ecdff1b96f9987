"""The flipped-images gallery: which images flipped, in which order, drawn from the decoded test arrays."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from signflow.data.arrays import write_split
from signflow.data.manifest import MANIFEST_COLUMNS, ROLE_TARGET, DataError
from signflow.review.gallery import (
    COLS,
    DEFAULT_PER_DIRECTION,
    TABLE_ROWS,
    _load_images,
    draw_flip_gallery,
    find_flips,
    flips_markdown,
)

SIZE = 8  # side of the tiny test images
# (path, label, base prediction, base confidence, head prediction, head confidence), worked out by hand:
JOINED_ROWS = [
    ("b.png", "stop", "stop", 0.90, "give_way", 0.70),  # regressed, head 0.70 (ties with a.png: path decides)
    ("c.png", "stop", "stop", 0.80, "no_entry", 0.95),  # regressed, head 0.95: the worst
    ("a.png", "give_way", "give_way", 0.60, "stop", 0.70),  # regressed, head 0.70
    ("d.png", "no_entry", "stop", 0.85, "no_entry", 0.90),  # fixed, base 0.85
    ("e.png", "no_entry", "give_way", 0.99, "no_entry", 0.60),  # fixed, base 0.99: the worst
    ("f.png", "stop", "stop", 0.99, "stop", 0.99),  # right on both
    ("g.png", "stop", "give_way", 0.50, "no_entry", 0.50),  # wrong on both, differently
    ("h.png", "give_way", "stop", 0.70, "stop", 0.80),  # wrong on both, alike
]
REGRESSED_ORDER = ["c.png", "a.png", "b.png"]
FIXED_ORDER = ["e.png", "d.png"]


def _joined(rows: list[tuple] = JOINED_ROWS) -> pd.DataFrame:
    columns = ["path", "label", "base_prediction", "base_confidence", "head_prediction", "head_confidence"]
    return pd.DataFrame(rows, columns=columns).assign(role=ROLE_TARGET)


def _shade(k: int) -> int:
    """A distinct grey level per manifest row (up to 85 rows), so an image read back tells which row it came from."""
    return 3 * (k + 1)


def _dataset(root: Path, paths: list[str]) -> Path:
    """``root/dataset`` with a test split of ``paths``, image k a flat grey of ``_shade(k)``."""
    frame = pd.DataFrame({
        "path": paths, "class_id": "00001", "track": "00000", "width": SIZE, "height": SIZE,
        "x1": 0, "y1": 0, "x2": SIZE, "y2": SIZE, "label": "stop", "label_idx": 0, "role": ROLE_TARGET,
    }, columns=MANIFEST_COLUMNS)
    images = np.stack([np.full((SIZE, SIZE, 3), _shade(k), dtype=np.uint8) for k in range(len(paths))])
    dataset = root / "dataset"
    write_split(dataset, "test", frame, images)
    return dataset


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    # Manifest order differs from the joined frame's: images must be matched by path, not by position.
    return _dataset(tmp_path, sorted((row[0] for row in JOINED_ROWS), reverse=True))


def test_find_flips_counts_and_orders_worst_first() -> None:
    flips = find_flips(_joined())
    assert (flips.regressed_total, flips.fixed_total, flips.compared) == (3, 2, len(JOINED_ROWS))
    assert list(flips.regressed["path"]) == REGRESSED_ORDER
    assert list(flips.fixed["path"]) == FIXED_ORDER


def test_find_flips_order_does_not_depend_on_input_order() -> None:
    shuffled = _joined().sample(frac=1.0, random_state=3)
    flips = find_flips(shuffled)
    assert list(flips.regressed["path"]) == REGRESSED_ORDER
    assert list(flips.fixed["path"]) == FIXED_ORDER


def test_find_flips_rejects_missing_column_and_prediction() -> None:
    with pytest.raises(ValueError, match="head_confidence"):
        find_flips(_joined().drop(columns="head_confidence"))
    unpredicted = _joined()
    unpredicted.loc[0, "base_prediction"] = None
    with pytest.raises(ValueError, match="b.png"):
        find_flips(unpredicted)


def test_images_are_matched_by_path(dataset: Path) -> None:
    manifest_order = sorted((row[0] for row in JOINED_ROWS), reverse=True)
    wanted = ["a.png", "h.png", "c.png"]
    images = _load_images(dataset, wanted)
    assert images.shape == (len(wanted), SIZE, SIZE, 3)
    assert [int(image[0, 0, 0]) for image in images] == [_shade(manifest_order.index(p)) for p in wanted]


def test_gallery_png_is_written(dataset: Path, tmp_path: Path) -> None:
    gallery = draw_flip_gallery(find_flips(_joined()), dataset, tmp_path / "pr" / "flips.png")
    assert (gallery.regressed_shown, gallery.fixed_shown) == (3, 2)
    png = mpimg.imread(gallery.path)
    assert png.ndim == 3 and png.shape[2] in (3, 4)


def test_cap_shrinks_the_picture_not_the_totals(tmp_path: Path) -> None:
    count = 2 * COLS  # two rows of thumbnails uncapped
    rows = [(f"r{k:02d}.png", "stop", "stop", 0.9, "give_way", k / 100) for k in range(count)]
    dataset = _dataset(tmp_path, [row[0] for row in rows])
    flips = find_flips(_joined(rows))
    full = draw_flip_gallery(flips, dataset, tmp_path / "full.png", per_direction=count)
    capped = draw_flip_gallery(flips, dataset, tmp_path / "capped.png", per_direction=COLS)
    assert (full.regressed_shown, capped.regressed_shown) == (count, COLS)
    assert flips.regressed_total == count
    assert mpimg.imread(capped.path).shape[0] < mpimg.imread(full.path).shape[0]  # one row of thumbnails, not two


def test_gallery_with_one_direction_empty(dataset: Path, tmp_path: Path) -> None:
    only_fixed = [row for row in JOINED_ROWS if row[0] not in REGRESSED_ORDER]
    flips = find_flips(_joined(only_fixed))
    gallery = draw_flip_gallery(flips, dataset, tmp_path / "one.png")
    assert (gallery.regressed_shown, gallery.fixed_shown) == (0, 2)
    assert mpimg.imread(gallery.path).ndim == 3


def test_no_flips_still_replaces_the_png(tmp_path: Path) -> None:
    same = [row for row in JOINED_ROWS if row[0] in ("f.png", "g.png", "h.png")]
    out = tmp_path / "flips.png"
    out.write_text("a previous report's gallery")
    # Nothing to draw: the arrays are not even read (the folder does not exist).
    gallery = draw_flip_gallery(find_flips(_joined(same)), tmp_path / "absent", out)
    assert (gallery.regressed_shown, gallery.fixed_shown) == (0, 0)
    assert mpimg.imread(out).ndim == 3


def test_path_missing_from_arrays_is_named(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path, [row[0] for row in JOINED_ROWS if row[0] != "a.png"])
    out = tmp_path / "flips.png"
    with pytest.raises(DataError, match="a.png"):
        draw_flip_gallery(find_flips(_joined()), dataset, out)
    assert not out.exists()


def test_missing_arrays_say_dvc_pull(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dvc pull"):
        draw_flip_gallery(find_flips(_joined()), tmp_path / "no_dataset", tmp_path / "flips.png")


def test_cap_must_be_positive(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="per_direction"):
        draw_flip_gallery(find_flips(_joined()), dataset, tmp_path / "flips.png", per_direction=0)


def test_markdown_gives_totals_link_and_worst_regressions() -> None:
    text = flips_markdown(find_flips(_joined()), "pr/flips.png")
    assert re.search(r"\b3\b\D*right on base and wrong on head", text)
    assert re.search(r"\b2 the reverse", text)
    assert "(pr/flips.png)" in text
    table_paths = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")][1:]
    assert table_paths == REGRESSED_ORDER[:TABLE_ROWS]
    assert str(DEFAULT_PER_DIRECTION) in text


def test_markdown_table_is_capped() -> None:
    many = [(f"r{k:02d}.png", "stop", "stop", 0.9, "give_way", k / 100) for k in range(TABLE_ROWS + 3)]
    text = flips_markdown(find_flips(_joined(many)), None)
    table_paths = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")][1:]
    # Highest head confidence first: the last rows built are the worst.
    assert table_paths == [f"r{k:02d}.png" for k in range(TABLE_ROWS + 2, 2, -1)]
    assert re.search(rf"\b{TABLE_ROWS + 3}\b\D*right on base and wrong on head", text)  # the total, not the shown
    assert "![" not in text  # no gallery drawn, none linked


def test_markdown_without_flips_links_nothing() -> None:
    same = [row for row in JOINED_ROWS if row[0] in ("f.png", "g.png", "h.png")]
    text = flips_markdown(find_flips(_joined(same)), "pr/flips.png")
    assert "pr/flips.png" not in text
    assert "|" not in text
