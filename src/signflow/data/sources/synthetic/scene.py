"""Procedural backdrops behind a sign: sky, foliage, walls, streets and their mixes.

A track's scene is drawn once at ``BG_RES`` px and re-cropped per frame by
``render``. Its own module because it is the renderer's largest self-contained
part: it needs only the ``ranges`` and a random generator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import cv2
import numpy as np

from signflow.data.sources.synthetic.draw import Color
from signflow.data.sources.synthetic.ranges import (
    BACKGROUND_WEIGHTS,
    BG_RES,
    CLOUD_CELLS,
    CLOUD_STRENGTH,
    CLUTTER_GREY,
    CLUTTER_LINES,
    CLUTTER_TINT,
    CLUTTER_WIDTH,
    COLOR_SPREAD,
    FOLIAGE_DARK,
    FOLIAGE_HOLE_CELLS,
    FOLIAGE_HOLE_LEVEL,
    FOLIAGE_HOLE_SOFTNESS,
    FOLIAGE_LIGHT,
    FOLIAGE_OCTAVES,
    HORIZON,
    OPENING_SHADE,
    OPENING_SIZE,
    ROAD_CELLS,
    ROAD_COLOR,
    SKY_BRIGHTNESS,
    SKY_COLORS,
    SKY_GRADIENT,
    SKYLINE_CELLS,
    SKYLINE_HEIGHT,
    SKYLINE_ROUGHNESS,
    TREELINE_PROB,
    WALL_BLUR,
    WALL_COLORS,
    WALL_OPENINGS,
    WALL_TEXTURE,
)


# --- backgrounds ----------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int = 1) -> np.ndarray:
    """Blobs: a coarse random grid upsampled smoothly, float32 in about [0, 1]."""
    coarse = rng.random((cells, cells, channels), dtype=np.float32)
    out = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    return out.reshape(size, size, channels)


def _palette(rng: np.random.Generator, base: Color, spread: float) -> np.ndarray:
    return np.clip(np.array(base, np.float32) / 255 + rng.normal(0, spread, 3), 0, 1).astype(np.float32)


def _pick(rng: np.random.Generator, colors: Sequence[Color]) -> np.ndarray:
    return _palette(rng, colors[int(rng.integers(len(colors)))], COLOR_SPREAD)


def _bg_sky(rng: np.random.Generator, n: int) -> np.ndarray:
    top = _pick(rng, SKY_COLORS) * rng.uniform(*SKY_BRIGHTNESS)
    bottom = np.clip(top + rng.uniform(*SKY_GRADIENT), 0, 1)
    ramp = np.linspace(0, 1, n, dtype=np.float32)[:, None, None]
    sky = top * (1 - ramp) + bottom * ramp
    clouds = _smooth_noise(rng, n, int(rng.integers(*CLOUD_CELLS))) ** 2 * rng.uniform(*CLOUD_STRENGTH)
    return np.broadcast_to(np.clip(sky + clouds, 0, 1), (n, n, 3)).copy()


def _bg_foliage(rng: np.random.Generator, n: int) -> np.ndarray:
    dark, light = _palette(rng, FOLIAGE_DARK, COLOR_SPREAD), _palette(rng, FOLIAGE_LIGHT, COLOR_SPREAD)
    mix = sum(_smooth_noise(rng, n, cells) * weight for cells, weight in FOLIAGE_OCTAVES)
    scene = dark * (1 - mix) + light * mix
    level = rng.uniform(*FOLIAGE_HOLE_LEVEL)
    holes = np.clip((_smooth_noise(rng, n, FOLIAGE_HOLE_CELLS) - level) / FOLIAGE_HOLE_SOFTNESS, 0, 1)
    return scene * (1 - holes) + _pick(rng, SKY_COLORS) * holes


def _bg_building(rng: np.random.Generator, n: int) -> np.ndarray:
    """A wall with a few irregular windows, doors or shop fronts, softly focused."""
    wall = _pick(rng, WALL_COLORS)
    texture = 1 + WALL_TEXTURE * (_smooth_noise(rng, n, CLOUD_CELLS[1]) - 0.5)
    scene = np.broadcast_to(wall, (n, n, 3)) * texture
    for _ in range(int(rng.integers(*WALL_OPENINGS, endpoint=True))):
        x, y = rng.integers(0, n, 2)
        w, h = (rng.uniform(*OPENING_SIZE, 2) * n).astype(int)
        shade = (wall * rng.uniform(*OPENING_SHADE)).tolist()
        cv2.rectangle(scene, (int(x), int(y)), (int(x + w), int(y + h)), shade, -1)
    return cv2.GaussianBlur(scene, (0, 0), rng.uniform(*WALL_BLUR))


def _bg_street(rng: np.random.Generator, n: int) -> np.ndarray:
    horizon = int(n * rng.uniform(*HORIZON))
    scene = _bg_sky(rng, n)
    road = _palette(rng, ROAD_COLOR, COLOR_SPREAD) * (1 + WALL_TEXTURE * (_smooth_noise(rng, n, ROAD_CELLS) - 0.5))
    scene[horizon:] = road[horizon:]
    return scene


def _bg_mixed(rng: np.random.Generator, n: int) -> np.ndarray:
    """Sky above a tree line or roofs: the most common GTSRB backdrop."""
    sky, ground = _bg_sky(rng, n), (_bg_foliage if rng.random() < TREELINE_PROB else _bg_building)(rng, n)
    wiggle = _smooth_noise(rng, n, SKYLINE_CELLS)[0, :, 0] - 0.5
    edge = n * (rng.uniform(*SKYLINE_HEIGHT) + wiggle * SKYLINE_ROUGHNESS)
    below = np.arange(n)[:, None] > edge[None, :]
    sky[below] = ground[below]
    return sky


_BACKGROUNDS: Mapping[str, Callable[[np.random.Generator, int], np.ndarray]] = MappingProxyType(
    {"sky": _bg_sky, "foliage": _bg_foliage, "building": _bg_building, "street": _bg_street, "mixed": _bg_mixed}
)


def _scene(rng: np.random.Generator) -> np.ndarray:
    """A BG_RES square uint8 BGR backdrop with a few wires, branches or edges."""
    kinds, weights = zip(*BACKGROUND_WEIGHTS, strict=True)
    kind = kinds[int(rng.choice(len(kinds), p=np.array(weights) / sum(weights)))]
    scene = np.clip(_BACKGROUNDS[kind](rng, BG_RES) * 255, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(*CLUTTER_LINES, endpoint=True))):
        a, b = rng.integers(0, BG_RES, (2, 2))
        grey = rng.integers(*CLUTTER_GREY)
        color = [int(c) for c in np.clip(grey + rng.integers(-CLUTTER_TINT, CLUTTER_TINT + 1, 3), 0, 255)]
        width = int(rng.integers(*CLUTTER_WIDTH, endpoint=True))
        cv2.line(scene, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), color, width, cv2.LINE_AA)
    return scene
