"""The data section of the PR report: base's and head's summaries compared, new images drawn from head's arrays."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from signflow.data.arrays import write_split
from signflow.data.manifest import MANIFEST_COLUMNS, ROLE_HELDOUT, ROLE_TARGET
from signflow.data.records import QUARANTINE_COLUMNS
from signflow.data.summary import summarize, track_table, write_track_table
from signflow.review.datadiff import (
    MAX_THUMBNAILS,
    DataFiles,
    NewTrack,
    compare_data,
    data_changed,
    data_diff_markdown,
    draw_new_image_thumbnails,
    workspace_files,
)

# split -> class_id -> [images of track 0, track 1, ...]; label and role from CLASSES.
Spec = Mapping[str, Mapping[str, Sequence[int]]]
CLASSES = {"12": ("priority_road", ROLE_TARGET), "14": ("stop", ROLE_TARGET), "20": ("unknown", ROLE_HELDOUT)}
BASE: Spec = {"train": {"12": [2, 2], "14": [3, 1]}, "val": {"12": [1], "20": [2]}, "test": {"14": [2]}}
SIDE = 30  # every image's side unless a test says otherwise: bin 24-31


def manifest(spec: Mapping[str, Sequence[int]], side: int = SIDE) -> pd.DataFrame:
    rows = [{"path": f"{c}/{t:05d}_{i:05d}.png", "class_id": c, "track": f"{t:05d}", "width": side, "height": side,
             "x1": 0, "y1": 0, "x2": side, "y2": side, "shard": "", "label": CLASSES[c][0], "label_idx": 0,
             "role": CLASSES[c][1]}
            for c, tracks in spec.items() for t, n in enumerate(tracks) for i in range(n)]
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def files(tmp_path: Path, spec: Spec, quarantined: Sequence[tuple[str, str, str]] = (), side: int = SIDE,
          name: str = "rev") -> DataFiles:
    """The two summaries the add_unknown stage writes for ``spec``, as text (written by the real writers)."""
    frames = {split: manifest(spec.get(split, {}), side) for split in ("train", "val", "test")}
    folder = tmp_path / name
    write_track_table(folder / "data_tracks.csv", track_table(frames))
    quarantine = pd.DataFrame(list(quarantined), columns=QUARANTINE_COLUMNS)
    summary = json.dumps(summarize(frames, quarantine), indent=2, sort_keys=True)
    return DataFiles((folder / "data_tracks.csv").read_text(), summary)


def with_tracks(spec: Spec, split: str, class_id: str, tracks: Sequence[int]) -> dict:
    changed = {s: dict(classes) for s, classes in spec.items()}
    changed.setdefault(split, {})[class_id] = list(tracks)
    return changed


def test_identical_summaries_are_no_change(tmp_path: Path) -> None:
    base, head = files(tmp_path, BASE, name="a"), files(tmp_path, BASE, name="b")
    assert not data_changed(base, head)
    text = data_diff_markdown(compare_data(base, head), base="main")
    assert text.startswith("### Data") and "No change in the data vs `main`" in text
    assert "|" not in text  # no table


def test_a_class_gaining_tracks_is_named_with_its_counts(tmp_path: Path) -> None:
    # stop in train: tracks of 3 and 1 images at base; two more tracks of 2 and 4 images at head.
    head_spec = with_tracks(BASE, "train", "14", [3, 1, 2, 4])
    base, head = files(tmp_path, BASE, name="a"), files(tmp_path, head_spec, name="b")
    diff = compare_data(base, head)

    assert data_changed(base, head)
    changed = [c for c in diff.classes if c.changed]
    assert [(c.split, c.name) for c in changed] == [("train", "stop")]
    stop = changed[0]
    assert (stop.tracks_base, stop.tracks_head, stop.tracks_added, stop.tracks_removed) == (2, 4, 2, 0)
    assert (stop.images_base, stop.images_head, stop.images_added, stop.images_removed) == (4, 10, 6, 0)
    assert diff.new_tracks == (NewTrack("train", "14", "00002", "stop"), NewTrack("train", "14", "00003", "stop"))

    text = data_diff_markdown(diff, base="main")
    assert "| train | stop | 2 → 4 (+2 / -0) | 4 → 10 (+6 / -0) |" in text
    assert "priority_road" not in text  # unchanged classes are counted, not listed
    assert "Tracks: +2 / -0; images: +6 / -0. 2 tracks are new" in text


def test_a_removed_track_and_a_moved_track(tmp_path: Path) -> None:
    # priority_road loses its second train track (2 images); the held-out track moves from val to test.
    head_spec = {"train": {"12": [2], "14": [3, 1]}, "val": {"12": [1]}, "test": {"14": [2], "20": [2]}}
    diff = compare_data(files(tmp_path, BASE, name="a"), files(tmp_path, head_spec, name="b"))

    by_key = {(c.split, c.name): c for c in diff.classes if c.changed}
    assert set(by_key) == {("train", "priority_road"), ("val", "unknown (heldout)"), ("test", "unknown (heldout)")}
    road = by_key["train", "priority_road"]
    assert (road.tracks_removed, road.tracks_added, road.images_removed, road.images_head) == (1, 0, 2, 2)
    assert by_key["val", "unknown (heldout)"].tracks_removed == 1
    assert by_key["test", "unknown (heldout)"].tracks_added == 1
    assert diff.new_tracks == ()  # the moved track was in the base already: none of its images is new

    text = data_diff_markdown(diff)
    assert "| train | priority_road | 2 → 1 (+0 / -1) | 4 → 2 (+0 / -2) |" in text
    # rows read train, val, test
    assert text.index("| train |") < text.index("| val |") < text.index("| test |")


def test_quarantine_changes_are_listed_by_path_and_capped(tmp_path: Path) -> None:
    old = [("12/a.png", "12", "empty file"), ("14/b.png", "14", "not an image")]
    new = [("14/b.png", "14", "not an image"), ("12/c.png", "12", "size 4x4"), ("12/d|e.png", "12", "empty file")]
    base, head = files(tmp_path, BASE, old, name="a"), files(tmp_path, BASE, new, name="b")
    diff = compare_data(base, head)

    assert data_changed(base, head)
    assert [f.path for f in diff.quarantine_added] == ["12/c.png", "12/d|e.png"]
    assert [f.path for f in diff.quarantine_removed] == ["12/a.png"]
    assert (diff.quarantine_base, diff.quarantine_head) == (2, 3)
    text = data_diff_markdown(diff)
    assert "Quarantined files: 2 → 3 (+2 / -1)" in text
    assert "| added | `12/c.png` | 12 | size 4x4 |" in text and "| removed | `12/a.png` | 12 | empty file |" in text
    assert "`12/d\\|e.png`" in text  # a pipe in a path does not split the row
    assert "No class gained or lost" in text

    capped = data_diff_markdown(diff, max_listed=1)
    assert "12/c.png" in capped and "12/a.png" not in capped and "… and 2 more" in capped


def test_size_distribution_before_and_after(tmp_path: Path) -> None:
    # Same tracks, images re-decoded larger: base 13 images at 30 px (bin 24-31), head the same at 50 (48-63).
    diff = compare_data(files(tmp_path, BASE, name="a"), files(tmp_path, BASE, side=50, name="b"))
    sizes = {b.side: (b.base, b.head) for b in diff.sizes}
    assert sizes["24-31"] == (13, 0) and sizes["48-63"] == (0, 13) and sizes["128+"] == (0, 0)
    assert diff.changed and not any(c.changed for c in diff.classes)
    text = data_diff_markdown(diff, base="main")
    assert "| side (px) | `main` | workspace |" in text
    assert "| 24-31 | 13 | 0 |" in text and "| 48-63 | 0 | 13 |" in text


def test_a_base_without_the_track_table_falls_back_to_data_json(tmp_path: Path) -> None:
    base, head = files(tmp_path, BASE, name="a"), files(tmp_path, BASE, name="b")
    older = DataFiles(None, base.summary)
    assert not data_changed(older, head)
    text = data_diff_markdown(compare_data(older, head))
    assert "metrics/data_tracks.csv at base" in text and "No change in the data" in text

    grown = files(tmp_path, with_tracks(BASE, "train", "14", [3, 1, 5]), name="c")
    diff = compare_data(older, grown)
    assert diff.changed and not diff.tracks_compared and diff.classes == ()
    assert "`metrics/data.json` differs" in data_diff_markdown(diff)


def test_workspace_files_reads_what_is_there(tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "data.json").write_text("{}")
    assert workspace_files(tmp_path) == DataFiles(None, "{}")


def test_thumbnail_link_is_relative_to_the_markdown(tmp_path: Path) -> None:
    head = files(tmp_path, with_tracks(BASE, "train", "14", [3, 1, 2]), name="b")
    diff = compare_data(files(tmp_path, BASE, name="a"), head)
    text = data_diff_markdown(diff, thumbnails=tmp_path / "reports" / "pr" / "new.png",
                              markdown_dir=tmp_path / "reports")
    assert "](pr/new.png)" in text


# ---------------------------------------------------------------------- thumbnails


def dataset(tmp_path: Path, spec: Spec) -> Path:
    """A decoded dataset dir, as add_unknown writes it: each image a solid grey of its row number."""
    out = tmp_path / "dataset"
    for split in ("train", "val", "test"):
        frame = manifest(spec.get(split, {}))
        images = np.repeat(np.arange(len(frame), dtype=np.uint8), 8 * 8 * 3).reshape(len(frame), 8, 8, 3)
        write_split(out, split, frame, images)
    return out


def test_thumbnails_of_new_tracks_are_drawn_and_capped(tmp_path: Path) -> None:
    # Five new stop tracks with 20 images in all, beside the base's.
    head_spec = with_tracks(BASE, "train", "14", [3, 1, 4, 4, 4, 4, 4])
    diff = compare_data(files(tmp_path, BASE, name="a"), files(tmp_path, head_spec, name="b"))
    assert len(diff.new_tracks) == 5
    root = dataset(tmp_path, head_spec)

    out = tmp_path / "pr" / "new.png"
    assert draw_new_image_thumbnails(diff.new_tracks, root, out, sample=100, seed=0) == MAX_THUMBNAILS
    picture = mpimg.imread(out)
    assert picture.ndim == 3 and picture.shape[0] > 0
    assert draw_new_image_thumbnails(diff.new_tracks, root, tmp_path / "three.png", sample=3, seed=0) == 3
    assert (tmp_path / "three.png").is_file()

    # Fewer images than the cap: every one is drawn (a second held-out track of 2 images).
    one = with_tracks(BASE, "val", "20", [2, 2])
    few = compare_data(files(tmp_path, BASE, name="c"), files(tmp_path, one, name="d"))
    assert draw_new_image_thumbnails(few.new_tracks, dataset(tmp_path / "e", one), tmp_path / "few.png") == 2


def test_the_same_seed_draws_the_same_picture(tmp_path: Path) -> None:
    head_spec = with_tracks(BASE, "train", "14", [3, 1, 6, 6, 6])
    diff = compare_data(files(tmp_path, BASE, name="a"), files(tmp_path, head_spec, name="b"))
    root = dataset(tmp_path, head_spec)
    for name in ("a.png", "b.png"):
        draw_new_image_thumbnails(diff.new_tracks, root, tmp_path / name, sample=4, seed=7)
    draw_new_image_thumbnails(diff.new_tracks, root, tmp_path / "c.png", sample=4, seed=8)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "c.png").read_bytes()


def test_no_new_track_draws_nothing(tmp_path: Path) -> None:
    assert draw_new_image_thumbnails((), tmp_path / "absent", tmp_path / "none.png") == 0
    assert not (tmp_path / "none.png").exists()


def test_missing_arrays_name_dvc_pull(tmp_path: Path) -> None:
    new = (NewTrack("train", "14", "00002", "stop"),)
    with pytest.raises(FileNotFoundError, match=r"dvc pull .*dataset"):
        draw_new_image_thumbnails(new, tmp_path / "dataset", tmp_path / "new.png")


def test_the_sample_spreads_over_new_tracks_and_reads_their_rows(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Five new tracks, five thumbnails: one per track, each the array row of an image of its captioned track."""
    from signflow.evaluation import plots

    drawn: dict = {}
    monkeypatch.setattr(plots, "plot_image_grid", lambda images, captions, out, **kw: drawn.update(
        images=images, captions=captions))
    head_spec = with_tracks(BASE, "train", "14", [3, 1, 4, 4, 4, 4, 4])
    diff = compare_data(files(tmp_path, BASE, name="a"), files(tmp_path, head_spec, name="b"))
    root = dataset(tmp_path, head_spec)

    assert draw_new_image_thumbnails(diff.new_tracks, root, tmp_path / "new.png", sample=5, seed=1) == 5
    tracks = [caption.splitlines()[1] for caption in drawn["captions"]]
    assert sorted(tracks) == [f"class 14 track {t:05d}" for t in range(2, 7)]
    assert all(caption.startswith("stop\n") for caption in drawn["captions"])
    train = manifest(head_spec["train"])
    for image, track in zip(drawn["images"], tracks, strict=True):
        rows = train.index[(train["class_id"] == "14") & (train["track"] == track.split()[-1])]
        assert int(image[0, 0, 0]) in set(rows)  # the grey level is the row number
