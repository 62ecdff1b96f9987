"""metrics/data_tracks.csv: a row per split and track, its images and their sizes, the same bytes for the same data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest

from signflow.data import summary
from signflow.data.manifest import MANIFEST_COLUMNS, ROLE_HELDOUT, ROLE_TARGET, ROLE_UNKNOWN
from signflow.data.summary import (
    parse_track_table,
    side_bin_label,
    side_columns,
    track_table,
    write_track_table,
)

# (class_id, track, width, height, label, role): one image each.
Row = tuple[str, str, int, int, str, str]

TRAIN: list[Row] = [
    ("12", "00000", 20, 30, "stop", ROLE_TARGET),  # shorter side 20
    ("12", "00001", 31, 50, "stop", ROLE_TARGET),  # 31
    ("12", "00000", 40, 24, "stop", ROLE_TARGET),  # 24
    ("1", "00000", 32, 32, "unknown", ROLE_UNKNOWN),  # 32
    ("12", "00000", 130, 100, "stop", ROLE_TARGET),  # 100
    ("1", "00000", 200, 128, "unknown", ROLE_UNKNOWN),  # 128
]
VAL: list[Row] = [("15", "00003", 47, 48, "unknown", ROLE_HELDOUT)]  # 47
OFFICIAL: list[Row] = [("12", "00009", 64, 64, "stop", ROLE_TARGET)]  # 64


def manifest(rows: Sequence[Row]) -> pd.DataFrame:
    """A manifest of ``rows``; the columns the table does not read get placeholder values."""
    records = [{"path": f"{c}/{t}_{i:05d}.png", "class_id": c, "track": t, "width": w, "height": h,
                "x1": 0, "y1": 0, "x2": w, "y2": h, "shard": "", "label": label, "label_idx": 0, "role": role}
               for i, (c, t, w, h, label, role) in enumerate(rows)]
    return pd.DataFrame(records, columns=MANIFEST_COLUMNS)


def frames() -> dict[str, pd.DataFrame]:
    return {"train": manifest(TRAIN), "val": manifest(VAL), "test": manifest([]),
            "official_test": manifest(OFFICIAL)}


def _bins(**counts: int) -> dict[str, int]:
    """Every size column, 0 unless given (``side_24_32=2``)."""
    return {column: counts.get(column, 0) for column in side_columns()}


def test_one_row_per_split_and_track_with_counts_and_size_bins() -> None:
    table = track_table(frames())

    assert list(table.columns) == ["split", "class_id", "label", "role", "track", "images", *side_columns()]
    # Sorted by split, then class_id and track as text ("1" before "12"); the empty test split has no row.
    keys = list(zip(table["split"], table["class_id"], table["track"], strict=True))
    assert keys == [("official_test", "12", "00009"), ("train", "1", "00000"), ("train", "12", "00000"),
                    ("train", "12", "00001"), ("val", "15", "00003")]
    rows = table.set_index(["split", "class_id", "track"])
    expected = {
        ("official_test", "12", "00009"): ("stop", ROLE_TARGET, 1, _bins(side_64_96=1)),
        ("train", "1", "00000"): ("unknown", ROLE_UNKNOWN, 2, _bins(side_32_48=1, side_128_up=1)),
        ("train", "12", "00000"): ("stop", ROLE_TARGET, 3, _bins(side_0_24=1, side_24_32=1, side_96_128=1)),
        ("train", "12", "00001"): ("stop", ROLE_TARGET, 1, _bins(side_24_32=1)),
        ("val", "15", "00003"): ("unknown", ROLE_HELDOUT, 1, _bins(side_32_48=1)),
    }
    for key, (label, role, images, bins) in expected.items():
        row = rows.loc[key]
        assert (row["label"], row["role"], row["images"]) == (label, role, images), key
        assert {c: row[c] for c in side_columns()} == bins, key
    assert table["images"].sum() == len(TRAIN) + len(VAL) + len(OFFICIAL)


def test_a_side_on_a_bin_edge_falls_in_the_upper_bin() -> None:
    edges = [("3", "00000", side, side, "x", ROLE_TARGET) for side in (23, 24, 31, 32, 127, 128, 4000)]
    row = track_table({"train": manifest(edges)}).iloc[0]
    assert {c: row[c] for c in side_columns()} == _bins(side_0_24=1, side_24_32=2, side_32_48=1, side_96_128=1,
                                                        side_128_up=2)


def test_chunked_grouping_adds_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tracks straddling chunk borders count once, with every image: a 2-row chunk gives the one-chunk result."""
    whole = track_table(frames())
    monkeypatch.setattr(summary, "GROUP_CHUNK_ROWS", 2)
    pd.testing.assert_frame_equal(track_table(frames()), whole)


def test_same_data_gives_the_same_bytes(tmp_path: Path) -> None:
    """Row order in the manifests and split order in ``frames`` change nothing in the file."""
    shuffled = {name: frame.sample(frac=1.0, random_state=3) for name, frame in reversed(frames().items())}
    write_track_table(tmp_path / "a.csv", track_table(frames()))
    write_track_table(tmp_path / "b.csv", track_table(shuffled))
    data = (tmp_path / "a.csv").read_bytes()
    assert data == (tmp_path / "b.csv").read_bytes()
    assert b"\r" not in data and data.endswith(b"\n")


def test_file_round_trip_keeps_ids_as_text(tmp_path: Path) -> None:
    table = track_table({"train": manifest([("00012", "00007", 30, 30, "stop", ROLE_TARGET)])})
    write_track_table(tmp_path / "tracks.csv", table)
    read = parse_track_table((tmp_path / "tracks.csv").read_text())
    assert (read["class_id"].iat[0], read["track"].iat[0]) == ("00012", "00007")
    pd.testing.assert_frame_equal(read, table, check_dtype=False)


def test_no_images_give_a_header_only_table() -> None:
    table = track_table({"train": manifest([]), "val": manifest([]), "test": manifest([])})
    assert table.empty and list(table.columns)[:6] == ["split", "class_id", "label", "role", "track", "images"]
    assert parse_track_table("").empty


def test_bin_labels_read_as_inclusive_pixel_ranges() -> None:
    assert side_columns((0, 24, 32)) == ["side_0_24", "side_24_32", "side_32_up"]
    assert [side_bin_label(c) for c in side_columns((0, 24, 32))] == ["0-23", "24-31", "32+"]
