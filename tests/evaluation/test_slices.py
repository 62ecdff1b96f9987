"""Test-split slices: which images each holds, their figures, evaluate.json's keys, the report, the PR diff."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.utils.validation import validate_param_and_metric_name

from signflow.config import Config, ConfigError, EvaluateConfig, SlicesConfig, from_mapping
from signflow.data.manifest import HELDOUT_LABEL_IDX, ROLE_HELDOUT, ROLE_TARGET, ROLE_UNKNOWN
from signflow.evaluation.evaluate import evaluate, score_split
from signflow.evaluation.report import slice_label, slices_section
from signflow.evaluation.slices import (
    MIN_TRACK_FRAMES,
    OPEN_BIN,
    POSITIONS,
    SLICE_PREFIX,
    STATS,
    image_sides,
    size_labels,
    size_slices,
    slice_metrics,
    slice_rows,
    source_slices,
    track_positions,
)
from signflow.files import write_json
from signflow.model.backbones import create_model
from signflow.model.checkpoint import save_checkpoint
from signflow.model.inference import load_model
from signflow.processes import command_env
from signflow.review.report import metrics_sections

EDGES = (0, 32, 48, 64, 96)
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]


def _frame(sides: list[tuple[int, int]] | None = None, tracks: dict[tuple[str, str], int] | None = None,
           roles: list[str] | None = None) -> pd.DataFrame:
    """A test manifest: given (width, height) per image, or tracks {(class_id, track): frames} in GTSRB names."""
    if tracks is not None:
        rows = [(c, t, f"{int(c):05d}/{t}_{f:05d}.ppm") for (c, t), n in tracks.items() for f in range(n)]
    else:
        rows = [("14", f"{i:05d}", f"00014/{i:05d}_00000.ppm") for i in range(len(sides or []))]
    frame = pd.DataFrame(rows, columns=["class_id", "track", "path"])
    width, height = zip(*sides, strict=True) if sides else ([30] * len(frame), [30] * len(frame))
    roles = roles or [ROLE_TARGET] * len(frame)
    return frame.assign(width=list(width), height=list(height), role=roles,
                        label_idx=[HELDOUT_LABEL_IDX if r == ROLE_HELDOUT else 0 for r in roles])


# ------------------------------------------------------------------ sizes


def test_size_labels_name_whole_pixel_ranges_and_an_open_last_bin() -> None:
    assert size_labels(EDGES) == ["0-31", "32-47", "48-63", "64-95", f"96-{OPEN_BIN}"]
    assert size_labels((20,)) == [f"20-{OPEN_BIN}"]


@pytest.mark.parametrize(("side", "label"), [
    (31, "0-31"), (32, "32-47"),  # an edge belongs to the bin it starts
    (47, "32-47"), (48, "48-63"), (95, "64-95"), (96, f"96-{OPEN_BIN}"), (250, f"96-{OPEN_BIN}"),
])
def test_an_edge_starts_its_bin_and_the_last_bin_is_open(side: int, label: str) -> None:
    assert size_slices(_frame([(side, side)]), EDGES).tolist() == [label]


def test_the_shorter_side_decides_the_bin() -> None:
    frame = _frame([(100, 20), (20, 100), (40, 200)])
    assert image_sides(frame).tolist() == [20, 20, 40]
    assert size_slices(frame, EDGES).tolist() == ["0-31", "0-31", "32-47"]


def test_unknown_sizes_and_sides_below_the_first_edge_are_in_no_size_slice() -> None:
    frame = _frame([(0, 0), (10, 10), (20, 20)])  # 0: the folder source records no size
    assert size_slices(frame, (16, 32)).tolist() == [None, None, "16-31"]
    assert size_slices(frame.drop(columns=["width", "height"]), EDGES).isna().all()


# ------------------------------------------------------------------ positions in a track


def _thirds(positions: pd.Series) -> list[int]:
    return [POSITIONS.index(p) for p in positions]


@pytest.mark.parametrize(("frames", "expected"), [
    (3, ["first", "middle", "last"]),
    (4, ["first", "first", "middle", "last"]),
    (5, ["first", "first", "middle", "middle", "last"]),
    (6, ["first", "first", "middle", "middle", "last", "last"]),
])
def test_positions_are_thirds_of_the_track(frames: int, expected: list[str]) -> None:
    assert track_positions(_frame(tracks={("14", "00000"): frames})).tolist() == expected


@pytest.mark.parametrize("frames", [3, 7, 10, 29, 30, 31])
def test_thirds_run_in_frame_order_and_are_near_equal(frames: int) -> None:
    thirds = _thirds(track_positions(_frame(tracks={("14", "00000"): frames})))
    assert thirds[0] == 0 and thirds[-1] == len(POSITIONS) - 1 and thirds == sorted(thirds)
    counts = np.bincount(thirds, minlength=len(POSITIONS))
    assert counts.max() - counts.min() <= 1 and counts.sum() == frames


@pytest.mark.parametrize("frames", range(1, MIN_TRACK_FRAMES))
def test_short_tracks_are_in_no_position_slice(frames: int) -> None:
    frame = _frame(tracks={("14", "00000"): frames, ("14", "00001"): 3})
    positions = track_positions(frame)
    assert positions.iloc[:frames].isna().all()
    assert positions.iloc[frames:].tolist() == list(POSITIONS)


def test_positions_follow_the_paths_not_the_row_order() -> None:
    frame = _frame(tracks={("14", "00000"): 6})
    shuffled = frame.sample(frac=1.0, random_state=0)
    positions = track_positions(shuffled)
    assert positions.loc[frame.index].tolist() == track_positions(frame).tolist()
    assert list(shuffled.index) != list(frame.index)


def test_one_track_number_in_two_classes_is_two_tracks() -> None:
    """GTSRB numbers tracks per class: class 14's track 0 and class 13's track 0 are different signs."""
    frame = _frame(tracks={("14", "00000"): 3, ("13", "00000"): 3})
    assert track_positions(frame).tolist() == [*POSITIONS, *POSITIONS]
    assert track_positions(frame.drop(columns=["track"])).isna().all()


# ------------------------------------------------------------------ sources


def test_no_source_column_or_a_single_source_gives_no_source_slice() -> None:
    frame = _frame([(40, 40)] * 4)
    assert source_slices(frame).isna().all()
    assert source_slices(frame.assign(source="gtsrb")).isna().all()
    assert not any(key.startswith("source.") for key in
                   slice_metrics(frame.assign(source="gtsrb"), np.ones(4, bool), np.zeros(4, bool), EDGES))


def test_mixed_sources_each_get_their_figures() -> None:
    frame = _frame([(40, 40)] * 5).assign(source=["gtsrb", "gtsrb", "my photos", "my photos", "my photos"])
    correct = np.array([True, True, True, False, False])
    metrics = slice_metrics(frame, correct, np.zeros(5, bool), EDGES)
    assert metrics["source.gtsrb.n"] == 2 and metrics["source.gtsrb.accuracy"] == 1.0
    assert metrics["source.my_photos.n"] == 3  # a key carries no space
    assert metrics["source.my_photos.accuracy"] == pytest.approx(1 / 3)


# ------------------------------------------------------------------ the figures


def test_accuracy_counts_labelled_images_and_rejection_target_images_only() -> None:
    roles = [ROLE_TARGET, ROLE_TARGET, ROLE_UNKNOWN, ROLE_HELDOUT, ROLE_HELDOUT]
    frame = _frame([(40, 40)] * 5, roles=roles)
    correct = np.array([True, False, True, False, False])  # a held-out image has no class to be right about
    rejected = np.array([True, False, True, True, True])  # "unknown" is the right answer for the last three
    metrics = slice_metrics(frame, correct, rejected, EDGES)
    assert {k: metrics[f"size.32-47.{k}"] for k in STATS} == {"n": 3, "accuracy": pytest.approx(2 / 3),
                                                             "rejected": 0.5}


def test_a_slice_without_targets_has_no_rejection_and_one_without_labelled_images_no_keys() -> None:
    frame = _frame([(40, 40), (70, 70), (70, 70)], roles=[ROLE_UNKNOWN, ROLE_HELDOUT, ROLE_HELDOUT])
    metrics = slice_metrics(frame, np.ones(3, bool), np.ones(3, bool), EDGES)
    assert metrics["size.32-47.n"] == 1 and metrics["size.32-47.rejected"] is None
    assert not any(key.startswith("size.64-95.") for key in metrics)


def test_misaligned_inputs_fail() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        slice_metrics(_frame([(40, 40)] * 3), np.ones(2, bool), np.ones(3, bool), EDGES)


# ------------------------------------------------------------------ config


@pytest.mark.parametrize("bins", [[0, 48, 32], [0, 32, 32], [], [-8, 32]])
def test_size_bins_must_increase_from_zero_up(bins: list[int]) -> None:
    with pytest.raises(ConfigError, match=r"evaluate\.slices\.size_bins") as err:
        from_mapping(Config, {"evaluate": {"slices": {"size_bins": bins}}})
    assert "\n" not in str(err.value)


def test_size_bins_load_as_a_tuple() -> None:
    cfg = from_mapping(Config, {"evaluate": {"slices": {"size_bins": [0, 24, 40]}}})
    assert cfg.evaluate.slices == SlicesConfig(size_bins=(0, 24, 40))


# ------------------------------------------------------------------ through evaluate


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """evaluate() of an untrained 3-class simple_cnn on a test split of tracks of 1 to 6 frames and mixed sizes."""
    path = tmp_path_factory.mktemp("model") / "best.pt"
    model = create_model("simple_cnn", 3, "none")
    norm = model.normalization
    save_checkpoint(path, {
        "model": model.state_dict(), "epoch": 0, "config": {}, "class_names": ["a", "b", "unknown"],
        "num_classes": 3, "normalization": {"mean": list(norm.mean), "std": list(norm.std)}, "image_size": 16,
        "backbone": "simple_cnn", "features": {"input_size": 0, "pooled_blocks": 0},
    })
    loaded = load_model(path)
    tracks = {(str(c), f"{t:05d}"): 1 + (t + c) % 6 for c in (13, 14, 15) for t in range(8)}
    frame = _frame(tracks=tracks)
    rng = np.random.default_rng(0)
    side = rng.integers(15, 120, len(frame))
    roles = np.where(frame["class_id"] == "13", ROLE_TARGET, np.where(frame["class_id"] == "14", ROLE_UNKNOWN,
                                                                      ROLE_HELDOUT))
    label_idx = np.select([roles == ROLE_TARGET, roles == ROLE_UNKNOWN], [0, 2], HELDOUT_LABEL_IDX)
    frame = frame.assign(width=side, height=side + rng.integers(0, 5, len(frame)), role=roles, label_idx=label_idx,
                         label=np.where(roles == ROLE_TARGET, "a", "unknown"))
    images = rng.integers(0, 256, (len(frame), 16, 16, 3), dtype=np.uint8)
    val, test = (score_split(loaded, frame, images, 16) for _ in range(2))
    result = evaluate(loaded, val, test, EvaluateConfig())
    return result.metrics, frame, result.predictions


def test_evaluate_json_gets_the_slice_keys(evaluated: tuple[dict, pd.DataFrame, pd.DataFrame]) -> None:
    metrics, frame, predictions = evaluated
    labelled = frame["label_idx"] >= 0
    keys = [k for k in metrics if k.startswith(f"{SLICE_PREFIX}.")]
    assert f"{SLICE_PREFIX}.position.first.accuracy" in keys and f"{SLICE_PREFIX}.size.0-31.n" in keys
    assert all(validate_param_and_metric_name(k) for k in keys)  # MLflow takes every one
    sizes = [k for k in keys if k.startswith(f"{SLICE_PREFIX}.size.") and k.endswith(".n")]
    assert sum(metrics[k] for k in sizes) == labelled.sum() == metrics["test.n"]  # every labelled image has a size
    long_tracks = frame.groupby(["class_id", "track"])["path"].transform("size") >= MIN_TRACK_FRAMES
    assert sum(metrics[f"{SLICE_PREFIX}.position.{p}.n"] for p in POSITIONS) == (labelled & long_tracks).sum()
    # The slices add up to the whole split's figures: accuracy weighted by n, rejection by target images.
    weighted = sum(metrics[k] * metrics[k.removesuffix(".n") + ".accuracy"] for k in sizes) / metrics["test.n"]
    assert weighted == pytest.approx(metrics["test.accuracy"], abs=1e-5)
    targets = (frame["role"] == ROLE_TARGET).to_numpy()
    target_sides = size_slices(frame, EDGES)[targets]
    rejected = sum(metrics[f"{SLICE_PREFIX}.size.{name}.rejected"] * (target_sides == name).sum()
                   for name in target_sides.unique()) / targets.sum()
    assert rejected == pytest.approx(1 - metrics["openset.known_kept"], abs=1e-5)
    assert rejected == pytest.approx((predictions["decision"][targets] == "unknown").mean(), abs=1e-5)


# ------------------------------------------------------------------ the report


def test_report_table_lists_slices_in_reading_order(evaluated: tuple[dict, pd.DataFrame, pd.DataFrame]) -> None:
    metrics = evaluated[0]
    rows = slice_rows(metrics)
    assert [r.kind for r in rows] == sorted((r.kind for r in rows), key=["size", "position"].index)
    sizes = [int(r.name.split("-")[0]) for r in rows if r.kind == "size"]
    assert sizes == sorted(sizes) and [r.name for r in rows if r.kind == "position"] == list(POSITIONS)
    text = slices_section(metrics)
    for row in rows:
        line = next(line for line in text.splitlines() if line.startswith(f"| {slice_label(row)} |"))
        assert f"| {row.n} |" in line
    assert "| size 96+ px |" in text and "| position: first third |" in text


def test_report_accuracy_shows_a_wilson_interval_that_holds_it() -> None:
    text = slices_section({f"{SLICE_PREFIX}.size.0-31.n": 8, f"{SLICE_PREFIX}.size.0-31.accuracy": 0.75,
                           f"{SLICE_PREFIX}.size.0-31.rejected": None})
    row = next(line for line in text.splitlines() if line.startswith("| size 0-31 px |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    low, high = (float(v) for v in cells[2].split("(")[1].rstrip(")").split("-"))
    assert low < 0.75 < high and high - low > 0.3  # 8 images: a wide interval
    assert cells[3] == "n/a"


def test_report_without_slices_says_why() -> None:
    assert "No slices" in slices_section({"test.accuracy": 0.9})


# ------------------------------------------------------------------ the pull-request review


def _sh(repo: Path, *argv: str) -> str:
    proc = subprocess.run(argv, cwd=repo, env=command_env(), capture_output=True, text=True)
    assert proc.returncode == 0, f"{argv} failed:\n{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
def test_pr_review_metrics_diff_lists_the_slice_keys(evaluated: tuple[dict, pd.DataFrame, pd.DataFrame],
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The review diffs every key of evaluate.json (`dvc metrics diff`): new slice keys show with no listing."""
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    metrics = evaluated[0]
    repo = tmp_path / "repo"
    repo.mkdir()
    _sh(repo, "git", "init", "--quiet", "--initial-branch=main")
    _sh(repo, "dvc", "init", "--quiet")
    (repo / "dvc.yaml").write_text("stages:\n  evaluate:\n    cmd: 'true'\n    metrics:\n"
                                   "      - metrics/evaluate.json:\n          cache: false\n")
    before = {k: v for k, v in metrics.items() if not k.startswith(f"{SLICE_PREFIX}.")}  # an evaluate.json of old
    write_json(repo / "metrics/evaluate.json", before)
    _sh(repo, "git", "add", "-A")
    _sh(repo, *GIT, "commit", "--quiet", "-m", "base")
    write_json(repo / "metrics/evaluate.json", metrics)
    section, _ = metrics_sections(repo, "dvc", "main")
    listed = {line.strip("|").split("|")[1].strip() for line in section.splitlines() if line.startswith("|")}
    slice_keys = {k for k, v in metrics.items() if k.startswith(f"{SLICE_PREFIX}.") and v is not None}
    assert slice_keys and slice_keys <= listed
