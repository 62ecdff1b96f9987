"""The procedural sign renderer: shapes, determinism, dataset layout, crude realism."""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from signflow.config import ConfigError, SyntheticConfig
from signflow.data.sources.synthetic import SIGN_TYPES, render_dataset, render_sign, resolve_sign
from signflow.data.sources.synthetic.ranges import PLATE_BLUE_SHARE, PLATE_PROB
from signflow.data.sources.synthetic.render import (
    PLATE_BLUE,
    PLATE_WHITE,
    _plate,
    _render_frame,
    _sensor,
    _track_style,
)

TARGETS = ("12", "13", "14", "17")
BLUE_SIGNS = ("33", "35", "38")
TINY = SyntheticConfig(seed=7, tracks_per_class=2, frames_per_track=3, min_size=15, max_size=40)
COLOR_SAMPLES = 24  # renders per class for colour statistics: enough to average out fading and casts
CENTER = slice(16, 32)  # middle third of a 48 px render: inside the sign whatever the margin


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


@pytest.mark.parametrize("class_id", list(SIGN_TYPES))
def test_every_class_renders_a_plausible_image(class_id: str) -> None:
    image = render_sign(class_id, np.random.default_rng(0), 32)
    assert image.shape == (32, 32, 3)
    assert image.dtype == np.uint8
    assert image.std() > 5, "a constant image means the sign or scene was lost"


def test_targets_and_distractors_are_registered() -> None:
    required = {"12", "13", "14", "17", "1", "4", "9", "11", "15", "18", "25", "32", "33", "35", "38"}
    assert required <= set(SIGN_TYPES)
    with pytest.raises(TypeError):
        SIGN_TYPES["99"] = SIGN_TYPES["12"]  # type: ignore[index]


def test_render_sign_is_deterministic_per_seed() -> None:
    first = render_sign("14", np.random.default_rng(3), 40)
    again = render_sign("14", np.random.default_rng(3), 40)
    other = render_sign("14", np.random.default_rng(4), 40)
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()


def test_unknown_class_names_the_valid_ids(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'99'.*12, 13, 14"):
        render_sign("99", np.random.default_rng(0), 32)
    with pytest.raises(ValueError, match="valid GTSRB class ids"):
        render_dataset(tmp_path, ["12", "nope"], TINY)
    with pytest.raises(ValueError, match="duplicate"):
        render_dataset(tmp_path, ["12", "00012"], TINY)
    assert not any(tmp_path.iterdir()), "validation must happen before any file is written"


def test_zero_padded_ids_resolve_to_the_same_sign() -> None:
    assert resolve_sign("00012") is SIGN_TYPES["12"]


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"min_size": 40, "max_size": 30}, "max_size"),
        ({"min_size": 2}, "min_size"),
        ({"tracks_per_class": 0}, "tracks_per_class"),
        ({"max_other_tracks": 0}, "max_other_tracks"),
    ],
)
def test_config_rejects_impossible_values(tmp_path: Path, kwargs: dict[str, int], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"data\.synthetic\.{key}="):
        render_dataset(tmp_path, ["12"], SyntheticConfig(**kwargs))
    assert not any(tmp_path.iterdir()), "validation must happen before any file is written"


def test_render_dataset_writes_what_it_reports(tmp_path: Path) -> None:
    classes = ["12", "14", "33"]
    records = render_dataset(tmp_path, classes, TINY)
    assert len(records) == len(classes) * TINY.tracks_per_class * TINY.frames_per_track
    assert len(_files(tmp_path)) == len(records)
    tracks: dict[str, list[int]] = defaultdict(list)
    for record in records:
        assert re.fullmatch(rf"{int(record.class_id):05d}/{record.track}_\d{{5}}\.png", record.path)
        image = cv2.imread(str(tmp_path / record.path))
        assert image.shape == (record.height, record.width, 3)
        assert TINY.min_size <= record.width <= TINY.max_size
        assert TINY.min_size <= record.height <= TINY.max_size
        assert 0 <= record.x1 < record.x2 <= record.width
        assert 0 <= record.y1 < record.y2 <= record.height
        # GTSRB-like framing: the sign is most of the image but has a margin.
        assert 0.4 <= (record.x2 - record.x1) / record.width <= 0.97
        tracks[record.group].append(record.height)
    assert len(tracks) == len(classes) * TINY.tracks_per_class
    for heights in tracks.values():
        assert len(heights) == TINY.frames_per_track
        assert heights == sorted(heights), "a track's sign grows as the car approaches"


def test_only_targets_get_the_full_track_count(tmp_path: Path) -> None:
    config = dataclasses.replace(TINY, tracks_per_class=3, max_other_tracks=1)
    records = render_dataset(tmp_path / "few", ["12", "14", "33"], config, targets=["0014"])
    tracks = {(r.class_id, r.group) for r in records}
    assert sorted(c for c, _ in tracks) == ["12", "14", "14", "14", "33"]  # zero-padded target ids match too
    # A target's tracks are the same renders whatever the other classes get.
    render_dataset(tmp_path / "alone", ["14"], config)
    assert _files(tmp_path / "alone") == {k: v for k, v in _files(tmp_path / "few").items() if k.startswith("00014")}
    # max_other_tracks only caps: with fewer target tracks, the others get as many.
    capped = render_dataset(tmp_path / "cap", ["12", "33"], dataclasses.replace(config, tracks_per_class=1,
                            max_other_tracks=5), targets=["12"])  # fmt: skip
    assert len({r.group for r in capped if r.class_id == "33"}) == 1


def test_render_dataset_is_byte_identical_per_seed_and_worker_count(tmp_path: Path) -> None:
    classes = ["13", "17"]
    one = render_dataset(tmp_path / "one", classes, TINY, workers=1)
    two = render_dataset(tmp_path / "two", classes, TINY, workers=2)
    reseeded = SyntheticConfig(**{**TINY.__dict__, "seed": TINY.seed + 1})
    render_dataset(tmp_path / "other", classes, reseeded)
    assert one == two
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    other = _files(tmp_path / "other")
    assert other.keys() == _files(tmp_path / "one").keys()
    assert other != _files(tmp_path / "one")


def _center_bgr(class_id: str) -> np.ndarray:
    """Mean BGR of the sign's middle over many random instances."""
    rng = np.random.default_rng(11)
    crops = [render_sign(class_id, rng, 48)[CENTER, CENTER].reshape(-1, 3) for _ in range(COLOR_SAMPLES)]
    return np.concatenate(crops).astype(np.float64).mean(axis=0)


def test_colours_separate_stop_priority_and_blue_signs() -> None:
    stop_b, stop_g, stop_r = _center_bgr("14")
    prio_b, prio_g, prio_r = _center_bgr("12")
    assert stop_r > stop_g + 10 and stop_r > stop_b + 10, "stop is red-dominant"
    assert prio_g - prio_b > stop_g - stop_b + 15, "priority road is yellow: much more green than stop"
    for class_id in BLUE_SIGNS:
        b, g, r = _center_bgr(class_id)
        assert b > r + 10, f"class {class_id} should be blue-dominant"


def test_in_camera_sharpening_adds_edge_energy_and_nothing_else() -> None:
    """Real GTSRB frames are sharpened by the camera: a sharpened render has more edge energy, same mean light."""
    style = _track_style(resolve_sign("14"), np.random.default_rng(0), ((48, 48),))
    soft = cv2.GaussianBlur(render_sign("14", np.random.default_rng(1), 48).astype(np.float32) / 255, (0, 0), 1.0)

    def edges(amount: float) -> tuple[float, float]:
        plain = dataclasses.replace(style, sharpen=amount, noise_sigma=0.0)
        out = _sensor(plain, np.random.default_rng(2), soft)  # same generator: same JPEG quality and fringes
        grey = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY).astype(np.float32)
        return float(np.abs(cv2.Laplacian(grey, cv2.CV_32F)).mean()), float(out.mean())

    (flat, flat_mean), (sharp, sharp_mean) = edges(0.0), edges(1.5)
    assert sharp > 1.5 * flat
    assert abs(sharp_mean - flat_mean) < 3


@pytest.mark.parametrize("kind", [PLATE_BLUE, PLATE_WHITE])
def test_a_plate_shows_in_its_colour_below_the_sign_only(kind: str) -> None:
    """Real tracks have a blue "P" or a white plate under the sign: it shows in the bottom margin, nowhere else."""
    size = 64
    style = _track_style(resolve_sign("12"), np.random.default_rng(3), ((size, size),))
    style = dataclasses.replace(style, pole=None, occluder=None, angles=(0.0, 0.0, 0.0), yaw_drift=0.0)
    bare, _ = _render_frame(dataclasses.replace(style, plate=None), np.random.default_rng(4), 0)
    plated, _ = _render_frame(dataclasses.replace(style, plate=kind), np.random.default_rng(4), 0)
    changed = np.abs(plated.astype(int) - bare.astype(int)).max(axis=2) > 12
    rows = np.nonzero(changed.any(axis=1))[0]
    assert rows.size and rows.min() >= size // 2, "the sign and everything above it are untouched"
    bottom = (slice(size - 3, size), slice(size // 3, 2 * size // 3))  # the plate's middle, in the margin
    (b0, g0, r0), (b1, g1, r1) = bare[bottom].reshape(-1, 3).mean(0), plated[bottom].reshape(-1, 3).mean(0)
    if kind == PLATE_BLUE:
        assert (b1 - r1) > (b0 - r0) + 20, "a blue plate makes the margin bluer"
    else:
        assert min(b1, g1, r1) > min(b0, g0, r0) + 20 and abs(b1 - r1) < 40, "a white plate: light and grey"


def test_one_draw_picks_the_plate_so_other_draws_do_not_move() -> None:
    blue_below = PLATE_PROB * PLATE_BLUE_SHARE
    assert [_plate(x) for x in (0.0, blue_below - 1e-9, blue_below, PLATE_PROB - 1e-9, PLATE_PROB, 1.0)] == [
        PLATE_BLUE, PLATE_BLUE, PLATE_WHITE, PLATE_WHITE, None, None]
