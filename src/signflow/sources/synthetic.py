"""Procedural German traffic signs that look like GTSRB crops: the offline data source.

Why procedural: the pipeline must run end to end with no download, and a model
trained here is later judged on real GTSRB photos, so the images imitate what a
dash camera makes of a sign, not clean icons. Each sign is drawn once, crisp, on
a ``CANVAS`` px canvas from a table of paint layers (``SIGN_TYPES``), then
degraded in two levels, like GTSRB's tracks of one physical sign:

* per track (one physical sign seen by one car): faded/hue-shifted paint, dirt,
  shading, a background scene, pole or plate, lighting, colour cast, viewpoint,
  maybe an occluder, and a series of frame sizes growing as the car approaches;
* per frame: perspective warp into a frame with a GTSRB-like margin (10 %, at
  least a few px), small jitter, downscale, optical and motion blur, tone curve,
  sensor noise and JPEG re-compression.

Shapes and glyphs are in *unit* coordinates: the origin is the sign's centre and
1 unit is half the sign's width, so every table entry reads like a sign drawing.
Every (class, track) gets its own ``np.random.Generator`` spawned from the seed,
so the files are byte-identical whatever the worker count or order.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Iterator, Mapping, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from signflow.parallel import process_pool
from signflow.records import RawRecord

log = logging.getLogger(__name__)

# --- drawing geometry ----------------------------------------------------------
CANVAS = 128  # px side of the clean drawing; outputs are at most ~90 % of 96 px, so it is only ever shrunk
UNIT_PX = 62.0  # px per unit (half the sign's width): leaves 2 px of canvas for anti-aliasing
SHIFT_BITS = 4  # cv2 fixed-point bits: sub-pixel coordinates keep small glyphs symmetric
CORNER = 0.06  # corner radius of polygonal signs (units): real signs have rounded corners
CIRCLE_POINTS = 32  # points sampling a circle's outline for placement and bounding boxes
ARC_POINTS = 12  # points sampling a curved arrow shaft
ARROW_HEAD_WIDTH = 0.75  # arrow head half-width / head length
TEXT_FONT = cv2.FONT_HERSHEY_SIMPLEX
TEXT_RENDER_SCALE = 3.0  # text is rendered large, cropped to its ink and resized into its box
TEXT_STROKE = 9  # px stroke at TEXT_RENDER_SCALE: gives the bold DIN-like weight of sign digits

Color = tuple[int, int, int]
Point = tuple[float, float]
Layer = Callable[[np.ndarray], None]

# Paint colours (BGR), slightly off the pure primaries as printed sign foils are.
RED: Color = (40, 30, 190)
WHITE: Color = (235, 235, 232)
BLACK: Color = (30, 30, 30)
GREY: Color = (120, 120, 120)
YELLOW: Color = (20, 185, 240)
BLUE: Color = (165, 85, 20)
AMBER: Color = (20, 160, 240)
GREEN: Color = (70, 150, 40)

# Border widths (units) measured off the StVO drawings, roughly.
RIM = 0.03  # thin white (or black) edge around the main colour
RING = 0.21  # red ring of prohibitory discs (inset of the white field)
TRIANGLE_BORDER = 0.23  # red border of warning/give-way triangles (perpendicular inset)
END_RING = 0.04  # thin grey edge of "end of ..." signs
DIAMOND_FIELD = 0.22  # white band of the priority-road diamond
STROKE = 0.08  # default glyph stroke width


@dataclass(frozen=True)
class Shape:
    """A sign outline: a circle (``sides == 0``) or a regular polygon."""

    sides: int
    start: float  # angle of the first vertex, radians clockwise from straight up
    radius: float  # circumradius, units
    center_y: float  # incentre's y, chosen so that the bounding box is centred

    def outline(self, inset: float = 0.0) -> np.ndarray:
        """(N, 2) unit points of the outline moved inwards by ``inset`` units."""
        count = self.sides or CIRCLE_POINTS
        inradius = self.radius * math.cos(math.pi / self.sides) if self.sides else self.radius
        radius = self.radius * (inradius - inset) / inradius
        angles = self.start + 2 * math.pi * np.arange(count) / count
        return np.stack([radius * np.sin(angles), self.center_y - radius * np.cos(angles)], axis=1)


_TRIANGLE_R = 2 / math.sqrt(3)  # circumradius of an equilateral triangle 2 units wide
DISC = Shape(0, 0.0, 1.0, 0.0)
TRIANGLE_UP = Shape(3, 0.0, _TRIANGLE_R, _TRIANGLE_R / 4)
TRIANGLE_DOWN = Shape(3, math.pi, _TRIANGLE_R, -_TRIANGLE_R / 4)
OCTAGON = Shape(8, math.pi / 8, 1 / math.cos(math.pi / 8), 0.0)
DIAMOND = Shape(4, 0.0, 1.0, 0.0)
WARNING_CENTER = (0.0, 0.3)  # visual centre of a warning triangle's white field


@dataclass(frozen=True)
class SignSpec:
    """One sign type: its outline (alpha mask and ROI) and its paint layers, in order."""

    name: str
    shape: Shape
    layers: tuple[Layer, ...]

    def draw(self) -> tuple[np.ndarray, np.ndarray]:
        """The clean CANVAS x CANVAS BGR face and its uint8 alpha mask."""
        face = np.zeros((CANVAS, CANVAS, 3), np.uint8)
        for layer in self.layers:
            layer(face)
        mask = np.zeros((CANVAS, CANVAS), np.uint8)
        _fill_shape(mask, shape=self.shape, color=(255, 255, 255), inset=0.0)
        return face, mask


# --- drawing primitives (unit coordinates; img is the canvas) -------------------
def _px(point: Point) -> tuple[int, int]:
    """Unit point -> cv2 fixed-point pixel coordinates."""
    scale = 1 << SHIFT_BITS
    half = CANVAS / 2
    return round((half + point[0] * UNIT_PX) * scale), round((half + point[1] * UNIT_PX) * scale)


def _thickness(width: float) -> int:
    return max(1, round(width * UNIT_PX))


def _fill_shape(img: np.ndarray, *, shape: Shape, color: Color, inset: float) -> None:
    if shape.sides == 0:
        radius = round((shape.radius - inset) * UNIT_PX * (1 << SHIFT_BITS))
        cv2.circle(img, _px((0.0, 0.0)), radius, color, -1, cv2.LINE_AA, SHIFT_BITS)
        return
    # Fill the polygon shrunk by the corner radius, then stroke it: round corners.
    pts = np.array([_px(p) for p in shape.outline(inset + CORNER)], np.int32)
    cv2.fillPoly(img, [pts], color, lineType=cv2.LINE_AA, shift=SHIFT_BITS)
    cv2.polylines(img, [pts], True, color, _thickness(2 * CORNER), cv2.LINE_AA, SHIFT_BITS)


def _draw_poly(img: np.ndarray, *, points: Sequence[Point], color: Color, width: float, closed: bool) -> None:
    """A polyline of ``width`` units, or a filled polygon when ``width`` is 0."""
    pts = np.array([_px(p) for p in points], np.int32)
    if width == 0:
        cv2.fillPoly(img, [pts], color, lineType=cv2.LINE_AA, shift=SHIFT_BITS)
    else:
        cv2.polylines(img, [pts], closed, color, _thickness(width), cv2.LINE_AA, SHIFT_BITS)


def _draw_disc(img: np.ndarray, *, center: Point, radius: float, color: Color, width: float) -> None:
    radius_px = round(radius * UNIT_PX * (1 << SHIFT_BITS))
    thickness = -1 if width == 0 else _thickness(width)
    cv2.circle(img, _px(center), radius_px, color, thickness, cv2.LINE_AA, SHIFT_BITS)


def _draw_arrow(img: np.ndarray, *, points: Sequence[Point], color: Color, width: float, head: float) -> None:
    """Shaft along ``points``, triangular head ending exactly at the last point."""
    tip = np.asarray(points[-1], float)
    direction = tip - np.asarray(points[-2], float)
    direction /= np.linalg.norm(direction)
    normal = np.array([-direction[1], direction[0]])
    base = tip - direction * head
    shaft = [*points[:-1], tuple(base + direction * width / 2)]
    _draw_poly(img, points=shaft, color=color, width=width, closed=False)
    wing = normal * head * ARROW_HEAD_WIDTH
    _draw_poly(img, points=[tuple(tip), tuple(base + wing), tuple(base - wing)], color=color, width=0, closed=True)


def _draw_text(img: np.ndarray, *, text: str, center: Point, size: Point, color: Color) -> None:
    """Text squeezed into a ``size`` (w, h) unit box: sign lettering is narrower than Hershey."""
    (tw, th), base = cv2.getTextSize(text, TEXT_FONT, TEXT_RENDER_SCALE, TEXT_STROKE)
    ink = np.zeros((th + base + 2 * TEXT_STROKE, tw + 2 * TEXT_STROKE), np.uint8)
    cv2.putText(ink, text, (TEXT_STROKE, th + TEXT_STROKE), TEXT_FONT, TEXT_RENDER_SCALE, 255, TEXT_STROKE, cv2.LINE_AA)
    ys, xs = np.nonzero(ink)
    ink = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    w, h = round(size[0] * UNIT_PX), round(size[1] * UNIT_PX)
    alpha = cv2.resize(ink, (w, h), interpolation=cv2.INTER_AREA)[..., None].astype(np.float32) / 255
    x0 = round(CANVAS / 2 + center[0] * UNIT_PX - w / 2)
    y0 = round(CANVAS / 2 + center[1] * UNIT_PX - h / 2)
    region = img[y0 : y0 + h, x0 : x0 + w]
    region[:] = (region * (1 - alpha) + np.array(color, np.float32) * alpha).round().astype(np.uint8)


# --- layer builders: each returns Layers for the sign table --------------------
def fill(outline: Shape, color: Color, inset: float = 0.0) -> Layer:
    """The outline moved in by ``inset`` units, filled: rims, rings and fields."""
    return partial(_fill_shape, shape=outline, color=color, inset=inset)


def poly(points: Sequence[Point], color: Color = BLACK, width: float = 0.0, closed: bool = False) -> Layer:
    return partial(_draw_poly, points=tuple(points), color=color, width=width, closed=closed)


def line(a: Point, b: Point, color: Color = BLACK, width: float = STROKE) -> Layer:
    return poly((a, b), color, width)


def rect(x0: float, y0: float, x1: float, y1: float, color: Color = BLACK) -> Layer:
    return poly(((x0, y0), (x1, y0), (x1, y1), (x0, y1)), color)


def disc(center: Point, radius: float, color: Color = BLACK, width: float = 0.0) -> Layer:
    return partial(_draw_disc, center=center, radius=radius, color=color, width=width)


def arrow(points: Sequence[Point], color: Color = WHITE, width: float = 0.2, head: float = 0.4) -> Layer:
    return partial(_draw_arrow, points=tuple(points), color=color, width=width, head=head)


def text(label: str, center: Point, size: Point, color: Color = BLACK) -> Layer:
    return partial(_draw_text, text=label, center=center, size=size, color=color)


def arc(center: Point, radius: float, start_deg: float, end_deg: float) -> list[Point]:
    """Points on a circular arc; angles clockwise from +x (image coordinates)."""
    angles = np.radians(np.linspace(start_deg, end_deg, ARC_POINTS))
    return [(center[0] + radius * math.cos(a), center[1] + radius * math.sin(a)) for a in angles]


def extend(points: Sequence[Point], length: float) -> list[Point]:
    """Append a point ``length`` units further along the last segment: room for an arrow head."""
    (x0, y0), (x1, y1) = points[-2], points[-1]
    norm = math.hypot(x1 - x0, y1 - y0)
    return [*points, (x1 + (x1 - x0) / norm * length, y1 + (y1 - y0) / norm * length)]


def mirror(points: Sequence[Point]) -> list[Point]:
    """Left-right mirror: turn-left signs are turn-right signs flipped."""
    return [(-x, y) for x, y in points]


def stripes(count: int, spacing: float, radius: float, color: Color, width: float = 0.035) -> tuple[Layer, ...]:
    """The diagonal band of thin lines of "end of ..." signs, lower-left to upper-right."""
    along = np.array([1.0, -1.0]) / math.sqrt(2)
    across = np.array([1.0, 1.0]) / math.sqrt(2)
    layers = []
    for k in range(count):
        offset = (k - (count - 1) / 2) * spacing
        half = math.sqrt(radius**2 - offset**2)
        mid = across * offset
        layers.append(line(tuple(mid - along * half), tuple(mid + along * half), color, width))
    return tuple(layers)


def car_rear(cx: float, cy: float, scale: float, color: Color) -> tuple[Layer, ...]:
    """A car seen from behind, as on the no-passing signs."""
    s = scale
    return (
        rect(cx - 0.5 * s, cy - 0.1 * s, cx + 0.5 * s, cy + 0.32 * s, color),
        poly([(cx - 0.42 * s, cy - 0.08 * s), (cx - 0.3 * s, cy - 0.45 * s),
              (cx + 0.3 * s, cy - 0.45 * s), (cx + 0.42 * s, cy - 0.08 * s)], color),
        rect(cx - 0.48 * s, cy + 0.3 * s, cx - 0.28 * s, cy + 0.5 * s, color),
        rect(cx + 0.28 * s, cy + 0.3 * s, cx + 0.48 * s, cy + 0.5 * s, color),
    )  # fmt: skip


def truck_rear(cx: float, cy: float, scale: float, color: Color) -> tuple[Layer, ...]:
    s = scale
    return (
        rect(cx - 0.5 * s, cy - 0.55 * s, cx + 0.5 * s, cy + 0.32 * s, color),
        rect(cx - 0.48 * s, cy + 0.3 * s, cx - 0.25 * s, cy + 0.5 * s, color),
        rect(cx + 0.25 * s, cy + 0.3 * s, cx + 0.48 * s, cy + 0.5 * s, color),
    )


def truck_side(cx: float, cy: float, scale: float, color: Color) -> tuple[Layer, ...]:
    s = scale
    return (
        rect(cx - 0.62 * s, cy - 0.32 * s, cx + 0.28 * s, cy + 0.18 * s, color),
        poly([(cx + 0.32 * s, cy - 0.12 * s), (cx + 0.52 * s, cy - 0.12 * s),
              (cx + 0.62 * s, cy + 0.02 * s), (cx + 0.62 * s, cy + 0.18 * s), (cx + 0.32 * s, cy + 0.18 * s)], color),
        *(disc((cx + dx * s, cy + 0.22 * s), 0.1 * s, color) for dx in (-0.42, 0.05, 0.45)),
    )  # fmt: skip


def car_side(cx: float, cy: float, scale: float, color: Color) -> tuple[Layer, ...]:
    s = scale
    return (
        poly([(cx - 0.5 * s, cy + 0.15 * s), (cx - 0.5 * s, cy - 0.05 * s), (cx - 0.25 * s, cy - 0.1 * s),
              (cx - 0.12 * s, cy - 0.3 * s), (cx + 0.22 * s, cy - 0.3 * s), (cx + 0.35 * s, cy - 0.08 * s),
              (cx + 0.5 * s, cy - 0.05 * s), (cx + 0.5 * s, cy + 0.15 * s)], color),
        disc((cx - 0.28 * s, cy + 0.17 * s), 0.11 * s, color),
        disc((cx + 0.28 * s, cy + 0.17 * s), 0.11 * s, color),
    )  # fmt: skip


def person(cx: float, cy: float, scale: float, color: Color = BLACK) -> tuple[Layer, ...]:
    s = scale
    return (
        disc((cx, cy - 0.38 * s), 0.11 * s, color),
        line((cx, cy - 0.24 * s), (cx, cy + 0.12 * s), color, 0.13 * s),
        poly([(cx - 0.17 * s, cy + 0.5 * s), (cx, cy + 0.1 * s), (cx + 0.17 * s, cy + 0.5 * s)], color, 0.1 * s),
        poly([(cx - 0.2 * s, cy + 0.08 * s), (cx, cy - 0.18 * s), (cx + 0.2 * s, cy + 0.08 * s)], color, 0.08 * s),
    )


def speed_digits(label: str, color: Color = BLACK) -> Layer:
    """Speed-limit numerals: two digits fill the field, three are squeezed."""
    size = (0.95, 0.82) if len(label) < 3 else (1.2, 0.66)
    return text(label, (0.0, 0.0), size, color)


def bumps(y: float, count: int, width: float) -> list[Point]:
    xs = np.linspace(-width / 2, width / 2, ARC_POINTS * count)
    return [(float(x), y - 0.18 * abs(math.sin(math.pi * count * (x / width + 0.5)))) for x in xs]


# --- sign families --------------------------------------------------------------
def prohibitory(name: str, *symbols: Layer) -> SignSpec:
    """White disc, thin white rim, red ring."""
    return SignSpec(name, DISC, (fill(DISC, WHITE), fill(DISC, RED, RIM), fill(DISC, WHITE, RING), *symbols))


def end_of(name: str, *symbols: Layer) -> SignSpec:
    """"End of ..." sign: white disc, thin grey ring, grey symbol, diagonal band."""
    base = (fill(DISC, GREY), fill(DISC, WHITE, END_RING))
    return SignSpec(name, DISC, (*base, *symbols, *stripes(5, 0.1, 0.85, BLACK)))


def mandatory(name: str, *symbols: Layer) -> SignSpec:
    """Blue disc, thin white rim, white symbol."""
    return SignSpec(name, DISC, (fill(DISC, WHITE), fill(DISC, BLUE, RIM), *symbols))


def warning(name: str, *symbols: Layer) -> SignSpec:
    """Upright triangle, red border, white field, black symbol."""
    base = (fill(TRIANGLE_UP, WHITE), fill(TRIANGLE_UP, RED, RIM), fill(TRIANGLE_UP, WHITE, TRIANGLE_BORDER))
    return SignSpec(name, TRIANGLE_UP, (*base, *symbols))


_TURN_RIGHT = [(-0.22, 0.62), *arc((0.08, 0.05), 0.3, 180, 270), (0.6, -0.25)]
_KEEP_RIGHT = [(-0.42, -0.42), (0.38, 0.38)]
_STRAIGHT_RIGHT = [*arc((0.2, 0.3), 0.3, 180, 270), (0.6, 0.0)]
_CURVE_RIGHT = extend([(-0.12, 0.62), *arc((0.23, 0.3), 0.35, 180, 235)], 0.3)
_DOUBLE_CURVE = extend([(0.1, 0.62), (0.1, 0.5), (-0.12, 0.34), (-0.12, 0.24), (0.1, 0.08), (0.1, 0.0)], 0.22)
_NARROWS_RIGHT = [(0.2, 0.58), (0.2, 0.3), (0.05, 0.12), (0.05, -0.08)]
_DEER = [(-0.38, 0.58), (-0.25, 0.32), (-0.22, 0.18), (0.08, 0.12), (0.22, -0.05), (0.3, -0.18), (0.4, -0.12),
         (0.36, -0.05), (0.26, 0.05), (0.22, 0.3), (0.35, 0.58), (0.26, 0.58), (0.12, 0.34), (-0.1, 0.32),
         (-0.28, 0.58)]  # fmt: skip
_SNOW_ARMS = (90.0, 30.0, 150.0)  # degrees: the three diameters of a six-armed snowflake
_SNOW_CENTER, _SNOW_R = (0.0, 0.3), 0.27


def _snowflake() -> tuple[Layer, ...]:
    cx, cy = _SNOW_CENTER
    return tuple(
        line((cx - _SNOW_R * math.cos(math.radians(a)), cy - _SNOW_R * math.sin(math.radians(a))),
             (cx + _SNOW_R * math.cos(math.radians(a)), cy + _SNOW_R * math.sin(math.radians(a))), BLACK, 0.06)
        for a in _SNOW_ARMS
    )  # fmt: skip


def _roundabout() -> tuple[Layer, ...]:
    """Three arrows chasing each other anticlockwise around the centre."""
    return tuple(arrow(arc((0.0, 0.0), 0.48, start, start - 85), WHITE, 0.16, 0.3) for start in (150.0, 30.0, 270.0))


_SIGNS: dict[str, SignSpec] = {
    "0": prohibitory("speed limit 20", speed_digits("20")),
    "1": prohibitory("speed limit 30", speed_digits("30")),
    "2": prohibitory("speed limit 50", speed_digits("50")),
    "3": prohibitory("speed limit 60", speed_digits("60")),
    "4": prohibitory("speed limit 70", speed_digits("70")),
    "5": prohibitory("speed limit 80", speed_digits("80")),
    "6": end_of("end of speed limit 80", speed_digits("80", GREY)),
    "7": prohibitory("speed limit 100", speed_digits("100")),
    "8": prohibitory("speed limit 120", speed_digits("120")),
    "9": prohibitory("no passing", *car_rear(-0.3, 0.0, 0.52, RED), *car_rear(0.3, 0.0, 0.52, BLACK)),
    "10": prohibitory("no passing for trucks", *truck_rear(-0.3, 0.02, 0.5, RED), *car_rear(0.3, 0.02, 0.5, BLACK)),
    "11": warning("right of way at next intersection",
                  line((0.0, -0.12), (0.0, 0.62), BLACK, 0.13), line((-0.28, 0.28), (0.28, 0.28), BLACK, 0.09)),
    "12": SignSpec("priority road", DIAMOND,
                   (fill(DIAMOND, BLACK), fill(DIAMOND, WHITE, RIM), fill(DIAMOND, BLACK, DIAMOND_FIELD),
                    fill(DIAMOND, YELLOW, DIAMOND_FIELD + RIM))),
    "13": SignSpec("give way", TRIANGLE_DOWN,
                   (fill(TRIANGLE_DOWN, WHITE), fill(TRIANGLE_DOWN, RED, RIM),
                    fill(TRIANGLE_DOWN, WHITE, TRIANGLE_BORDER))),
    "14": SignSpec("stop", OCTAGON,
                   (fill(OCTAGON, WHITE), fill(OCTAGON, RED, 2 * RIM), text("STOP", (0.0, 0.0), (1.4, 0.5), WHITE))),
    "15": prohibitory("no vehicles"),
    "16": prohibitory("vehicles over 3.5 t prohibited", *truck_side(0.0, 0.0, 0.95, BLACK)),
    "17": SignSpec("no entry", DISC, (fill(DISC, WHITE), fill(DISC, RED, RIM), rect(-0.68, -0.15, 0.68, 0.15, WHITE))),
    "18": warning("general caution",
                  poly([(-0.07, -0.12), (0.07, -0.12), (0.035, 0.36), (-0.035, 0.36)]), disc((0.0, 0.5), 0.07)),
    "19": warning("dangerous curve left", arrow(mirror(_CURVE_RIGHT), BLACK, 0.11, 0.22)),
    "20": warning("dangerous curve right", arrow(_CURVE_RIGHT, BLACK, 0.11, 0.22)),
    "21": warning("double curve", arrow(_DOUBLE_CURVE, BLACK, 0.1, 0.2)),
    "22": warning("bumpy road", poly(bumps(0.5, 2, 0.8), BLACK, 0.08)),
    "23": warning("slippery road", *car_side(0.0, 0.18, 0.6, BLACK),
                  poly([(-0.3, 0.52), (-0.15, 0.42), (-0.2, 0.32)], BLACK, 0.05),
                  poly([(0.1, 0.56), (0.25, 0.46), (0.2, 0.36)], BLACK, 0.05)),
    "24": warning("road narrows on the right", line((-0.2, 0.58), (-0.2, -0.08), BLACK, 0.08),
                  poly(_NARROWS_RIGHT, BLACK, 0.08)),
    "25": warning("road work", *person(-0.05, 0.28, 0.55), line((0.0, 0.28), (-0.3, 0.55), BLACK, 0.05),
                  poly([(0.12, 0.6), (0.3, 0.38), (0.48, 0.6)])),
    "26": warning("traffic signals", rect(-0.15, -0.14, 0.15, 0.62),
                  disc((0.0, 0.0), 0.11, RED), disc((0.0, 0.24), 0.11, AMBER), disc((0.0, 0.48), 0.11, GREEN)),
    "27": warning("pedestrians", *person(0.0, 0.26, 0.62)),
    "28": warning("children crossing", *person(-0.14, 0.3, 0.52), *person(0.17, 0.36, 0.42)),
    "29": warning("bicycles crossing", disc((-0.24, 0.44), 0.14, BLACK, 0.04), disc((0.24, 0.44), 0.14, BLACK, 0.04),
                  poly([(-0.24, 0.44), (-0.06, 0.18), (0.16, 0.18), (0.24, 0.44)], BLACK, 0.045),
                  poly([(-0.06, 0.18), (0.0, 0.44), (0.16, 0.18)], BLACK, 0.045)),
    "30": warning("beware of ice/snow", *_snowflake()),
    "31": warning("wild animals crossing", poly(_DEER)),
    "32": end_of("end of all speed and passing limits"),
    "33": mandatory("turn right ahead", arrow(_TURN_RIGHT)),
    "34": mandatory("turn left ahead", arrow(mirror(_TURN_RIGHT))),
    "35": mandatory("ahead only", arrow([(0.0, 0.65), (0.0, -0.65)])),
    "36": mandatory("go straight or right", arrow([(-0.1, 0.65), (-0.1, -0.65)], width=0.17, head=0.33),
                    arrow(_STRAIGHT_RIGHT, width=0.17, head=0.33)),
    "37": mandatory("go straight or left", arrow([(0.1, 0.65), (0.1, -0.65)], width=0.17, head=0.33),
                    arrow(mirror(_STRAIGHT_RIGHT), width=0.17, head=0.33)),
    "38": mandatory("keep right", arrow(_KEEP_RIGHT, head=0.45)),
    "39": mandatory("keep left", arrow(mirror(_KEEP_RIGHT), head=0.45)),
    "40": mandatory("roundabout mandatory", *_roundabout()),
    "41": end_of("end of no passing", *car_rear(-0.3, 0.0, 0.52, GREY), *car_rear(0.3, 0.0, 0.52, GREY)),
    "42": end_of("end of no passing by trucks", *truck_rear(-0.3, 0.02, 0.5, GREY), *car_rear(0.3, 0.02, 0.5, GREY)),
}  # fmt: skip
SIGN_TYPES: Mapping[str, SignSpec] = MappingProxyType(_SIGNS)


def resolve_sign(class_id: str) -> SignSpec:
    """The spec of a GTSRB class id ("12" or "00012"); ValueError lists the valid ids."""
    key = str(int(class_id)) if str(class_id).isdigit() else str(class_id)
    if key not in SIGN_TYPES:
        valid = ", ".join(sorted(SIGN_TYPES, key=int))
        raise ValueError(f"unknown synthetic sign class {class_id!r}; valid GTSRB class ids: {valid}")
    return SIGN_TYPES[key]


# --- randomisation ranges -------------------------------------------------------
# Frame sizes: GTSRB sides are skewed small (most 25-60 px); a track grows as the car approaches.
SIZE_BETA = (1.8, 4.0)  # Beta(a, b) over [min_size, max_size] for a track's middle frame
TRACK_GROWTH = (1.3, 2.2)  # last / first frame side within one track
ASPECT_JITTER = 0.07  # width/height deviation from square (GTSRB crops are near square)
# Margin: GTSRB crops keep "10 % around the sign, at least 5 px".
MARGIN_FRACTION = (0.07, 0.13)
MARGIN_MIN_PX = (3.0, 5.5)
MARGIN_MAX_FRACTION = 0.25  # cap for tiny frames, where "at least 5 px" would leave no sign
CENTER_JITTER = 0.3  # fraction of the margin the sign may drift off-centre per frame
SUPERSAMPLE = 2  # compose at this multiple of the output size, then area-downscale (anti-aliasing)
MIP_OVERSAMPLE = 1.5  # pre-shrink the canvas to this multiple of the sign size before warping (no aliasing)

# Viewpoint (degrees): signs stand beside the road, so yaw dominates and grows as the car passes.
YAW_STD, YAW_MAX = 14.0, 40.0
PITCH_STD, PITCH_MAX = 5.0, 15.0
ROLL_STD, ROLL_MAX = 4.0, 15.0
YAW_DRIFT = 6.0  # max yaw change over a track
FRAME_ANGLE_JITTER = 1.0  # per-frame wobble of all three angles
CAMERA_DISTANCE = 5.0  # units; smaller means stronger perspective

# Paint ageing: UV fades red first, dirt greys everything.
HUE_SHIFT_STD = 4.0  # degrees
SATURATION = (0.45, 1.05)
VALUE = (0.7, 1.05)
DIRT = (0.0, 0.25)  # blend towards a dirt colour
DIRT_TEXTURE = 0.12  # amplitude of blotchy multiplicative dirt
SHADING = 0.25  # max brightness ramp across the sign (sun angle)
SIGN_GAIN = (0.55, 1.25)  # sign vs background light (shadow, backlight, retro-reflection)

# Camera.
# Exposure: GTSRB has many dark frames, but auto-exposure keeps the sign readable;
# a gain of 0.3 with gamma 1.6 gave near-black frames no person could classify.
GAIN_LOG_MEAN, GAIN_LOG_STD = math.log(0.8), 0.4
GAIN_RANGE = (0.45, 1.6)
GAMMA = (0.8, 1.3)
CONTRAST = (0.7, 1.0)  # blend factor towards the mean (haze, low dynamic range)
WARMTH_STD = 0.06  # white-balance error along blue <-> amber (daylight vs low sun)
TINT_STD = 0.02  # and along green <-> magenta, which cameras get much less wrong
FRAME_GAIN_STD = 0.06
BLUR_SIGMA = (0.0, 0.9)  # optical blur, output px
MOTION_PROB = 0.35
MOTION_LENGTH = (1.5, 4.0)  # px at 40 px output, scaled with frame size
MOTION_REF_SIZE = 40.0
MOTION_ANGLE_STD = 25.0  # degrees around horizontal
NOISE_SIGMA = (0.005, 0.03)  # sensor noise std on [0, 1]
JPEG_QUALITY = (30, 90)
CHROMA_SHIFT = 0.35  # max px misregistration of the red/blue planes (demosaicing fringes)

FRAME_BLUR_JITTER = (0.7, 1.3)  # per-frame factor on the track's blur (focus hunting)
MIN_BLUR_SIGMA = 0.2  # below this a Gaussian blur changes nothing visible; skip it
FRAME_MOTION_JITTER = (0.8, 1.2)  # per-frame factor on the motion-blur length

# Scene: a track's backdrop is drawn once at BG_RES and re-cropped per frame.
BG_RES = 96  # px side of the scene; frames are at most 96 px, so no detail is lost
BG_ZOOM = (1.1, 1.4)  # the frame sees 1/zoom of the scene, so it can drift between frames
BG_DRIFT = 0.04  # per-frame background shift, fraction of the scene
# (kind, weight): trees and sky dominate GTSRB backdrops (rural and suburban roads).
BACKGROUND_WEIGHTS = (("sky", 0.2), ("foliage", 0.3), ("building", 0.15), ("street", 0.1), ("mixed", 0.25))
COLOR_SPREAD = 0.05  # std of a scene colour around its base colour, on [0, 1]
# Sky: overcast, pale blue, hazy white, dull evening (BGR).
SKY_COLORS: tuple[Color, ...] = ((190, 190, 188), (215, 190, 165), (232, 230, 226), (150, 140, 140))
SKY_BRIGHTNESS = (0.6, 1.0)
SKY_GRADIENT = (0.05, 0.3)  # the sky brightens towards the horizon by this much
CLOUD_CELLS = (2, 6)
CLOUD_STRENGTH = (0.0, 0.5)
# Foliage: dark shade and sunlit leaves, mixed over several scales.
FOLIAGE_DARK: Color = (30, 60, 40)
FOLIAGE_LIGHT: Color = (60, 130, 100)
FOLIAGE_OCTAVES = ((3, 0.45), (9, 0.3), (24, 0.15), (48, 0.1))  # (grid cells, weight): crowns to leaves
FOLIAGE_HOLE_CELLS = 12
FOLIAGE_HOLE_LEVEL = (0.7, 1.0)  # noise level above which sky shows through (1.0: none)
FOLIAGE_HOLE_SOFTNESS = 0.15  # hard-edged holes read as camouflage print
# Walls: concrete, render, brick, dark facade.
WALL_COLORS: tuple[Color, ...] = ((150, 150, 150), (150, 175, 190), (70, 85, 140), (70, 70, 75))
WALL_TEXTURE = 0.4  # peak-to-peak brightness variation of a wall
WALL_OPENINGS = (0, 6)  # windows, doors, shop fronts
OPENING_SIZE = (0.1, 0.33)  # fraction of the scene
OPENING_SHADE = (0.3, 0.8)  # darker than the wall
WALL_BLUR = (0.5, 2.0)  # px: walls are behind the sign, a little out of focus
# Street: sky over asphalt.
ROAD_COLOR: Color = (70, 70, 70)
ROAD_CELLS = 16
HORIZON = (0.25, 0.75)  # fraction of the scene height
# Mixed: sky above a tree line or roofs.
TREELINE_PROB = 0.6  # else roofs
SKYLINE_HEIGHT = (0.2, 0.8)
SKYLINE_ROUGHNESS = 0.4  # of the scene height
SKYLINE_CELLS = 5
# Clutter: wires, branches, edges of other objects.
CLUTTER_LINES = (0, 4)
CLUTTER_GREY = (20, 200)
CLUTTER_TINT = 15  # per-channel deviation from grey, 0-255
CLUTTER_WIDTH = (1, 4)  # px at BG_RES
# Props behind the sign.
POLE_PROB = 0.5
POLE_GREY = (0.3, 0.7)
POLE_WIDTH = (0.05, 0.1)  # fraction of the sign width
POLE_TOP = 0.9  # canvas fraction where the pole leaves the sign (hidden behind it)
PLATE_PROB = 0.15  # a supplementary plate below the sign
PLATE_GREY = 0.8
PLATE_GAP = 0.15  # below the sign's bottom, fraction of the sign width
PLATE_HALF_WIDTH = 0.45  # fraction of the sign width
# Occluders: a clump of leaves coming in from the frame edge.
OCCLUDE_PROB = 0.15
OCCLUDER_REACH = (0.3, 0.5)  # clump centre's distance from the frame centre, fraction of the frame
OCCLUDER_SIZE = (0.15, 0.35)  # clump radii, fraction of the frame
OCCLUDER_DRIFT = 0.02  # per-frame parallax, fraction of the frame
LEAF_COLOR: Color = (40, 80, 60)
LEAVES = 9  # blobs per clump
LEAF_SPREAD = 0.5  # std of a blob's offset, in clump radii
LEAF_SIZE = (0.2, 0.5)  # blob radii, in clump radii
LEAF_SHADE = (0.6, 1.3)
# Paint dirt.
DIRT_COLOR: Color = (90, 100, 110)
DIRT_CELLS = (4, 12)
MIN_MIP_SIDE = 8  # px: smallest pre-shrunk canvas


MIN_SIDE = 8  # below this a sign is a few pixels and the margin rule breaks down


@dataclass(frozen=True)
class SynthConfig:
    """What to render; mirrors ``params.yaml`` ``data.synthetic``."""

    tracks_per_class: int = 30  # physical sign instances per class
    frames_per_track: int = 8  # frames of one instance, growing as the car approaches
    min_size: int = 15  # smallest rendered image side, px
    max_size: int = 96  # largest rendered image side, px
    seed: int = 0

    def __post_init__(self) -> None:
        if self.tracks_per_class < 1 or self.frames_per_track < 1:
            raise ValueError(f"tracks_per_class and frames_per_track must be >= 1: {self}")
        if not MIN_SIDE <= self.min_size <= self.max_size:
            raise ValueError(f"need {MIN_SIDE} <= min_size <= max_size: {self}")



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
    kinds, weights = zip(*BACKGROUND_WEIGHTS)
    kind = kinds[int(rng.choice(len(kinds), p=np.array(weights) / sum(weights)))]
    scene = np.clip(_BACKGROUNDS[kind](rng, BG_RES) * 255, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(*CLUTTER_LINES, endpoint=True))):
        a, b = rng.integers(0, BG_RES, (2, 2))
        grey = rng.integers(*CLUTTER_GREY)
        color = [int(c) for c in np.clip(grey + rng.integers(-CLUTTER_TINT, CLUTTER_TINT + 1, 3), 0, 255)]
        width = int(rng.integers(*CLUTTER_WIDTH, endpoint=True))
        cv2.line(scene, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), color, width, cv2.LINE_AA)
    return scene


# --- per-track style ------------------------------------------------------------
@dataclass(frozen=True)
class _Occluder:
    center: tuple[float, float]  # frame fractions
    axes: tuple[float, float]  # frame fractions
    seed: int  # shape of the clump of leaves
    color: tuple[float, float, float]


@dataclass(frozen=True)
class _TrackStyle:
    """Everything shared by the frames of one physical sign."""

    sign: np.ndarray  # CANVAS x CANVAS x 4 uint8 BGRA: weathered face + alpha
    outline: np.ndarray  # (N, 2) unit outline, for placement
    scene: np.ndarray  # BG_RES x BG_RES x 3 uint8
    bg_zoom: float
    sign_gain: float
    angles: tuple[float, float, float]  # yaw, pitch, roll in degrees at the first frame
    yaw_drift: float
    margin_fraction: float
    margin_min_px: float
    gain: float
    gamma: float
    contrast: float
    cast: tuple[float, float, float]
    blur_sigma: float
    motion: tuple[float, float]  # length at MOTION_REF_SIZE px, angle in degrees; length 0 = none
    noise_sigma: float
    pole: tuple[float, float] | None  # (grey level, width as a fraction of the sign) or no pole
    plate: bool
    occluder: _Occluder | None
    sizes: tuple[tuple[int, int], ...]  # (width, height) per frame


def _truncated_normal(rng: np.random.Generator, std: float, limit: float) -> float:
    return float(np.clip(rng.normal(0, std), -limit, limit))


def _track_sizes(rng: np.random.Generator, config: SynthConfig) -> tuple[tuple[int, int], ...]:
    """Growing (width, height) per frame around a small-skewed middle size."""
    lo, hi = config.min_size, config.max_size
    middle = lo + (hi - lo) * rng.beta(*SIZE_BETA)
    growth = math.log(rng.uniform(*TRACK_GROWTH))
    aspect = 1 + rng.uniform(-ASPECT_JITTER, ASPECT_JITTER)
    steps = np.linspace(-0.5, 0.5, config.frames_per_track) if config.frames_per_track > 1 else np.zeros(1)
    heights = middle * np.exp(growth * steps)
    return tuple(
        (int(np.clip(round(h * aspect), lo, hi)), int(np.clip(round(h), lo, hi))) for h in heights
    )


def _weather(face: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fade, hue-shift, dirty and shade the paint; returns BGRA uint8."""
    hsv = cv2.cvtColor(face.astype(np.float32) / 255, cv2.COLOR_BGR2HSV)
    hsv[..., 0] = (hsv[..., 0] + rng.normal(0, HUE_SHIFT_STD)) % 360
    hsv[..., 1] *= rng.uniform(*SATURATION)
    hsv[..., 2] *= rng.uniform(*VALUE)
    paint = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    dirt = _palette(rng, DIRT_COLOR, COLOR_SPREAD)
    paint = paint + (dirt - paint) * rng.uniform(*DIRT)
    paint *= 1 + DIRT_TEXTURE * (_smooth_noise(rng, CANVAS, int(rng.integers(*DIRT_CELLS))) - 0.5)
    direction = rng.normal(size=2)
    ramp = np.linspace(-0.5, 0.5, CANVAS, dtype=np.float32)
    paint *= 1 + SHADING * rng.random() * (direction[0] * ramp[None, :, None] + direction[1] * ramp[:, None, None])
    bgr = np.clip(paint * 255, 0, 255).astype(np.uint8)
    return np.dstack([bgr, mask])


def _white_balance(rng: np.random.Generator) -> tuple[float, float, float]:
    """BGR channel gains of a mis-set white balance."""
    warmth, tint = rng.normal(0, WARMTH_STD), rng.normal(0, TINT_STD)
    return 1 - warmth, 1 + tint, 1 + warmth


def _occluder(rng: np.random.Generator) -> _Occluder | None:
    if rng.random() >= OCCLUDE_PROB:
        return None
    angle = rng.uniform(0, 2 * math.pi)
    reach = rng.uniform(*OCCLUDER_REACH)
    center = (0.5 + reach * math.cos(angle), 0.5 + reach * math.sin(angle))
    axes = (rng.uniform(*OCCLUDER_SIZE), rng.uniform(*OCCLUDER_SIZE))
    color = tuple(float(c) for c in _palette(rng, LEAF_COLOR, COLOR_SPREAD))
    return _Occluder(center, axes, int(rng.integers(2**31)), color)


def _track_style(spec: SignSpec, rng: np.random.Generator, sizes: tuple[tuple[int, int], ...]) -> _TrackStyle:
    face, mask = spec.draw()
    motion = (rng.uniform(*MOTION_LENGTH), rng.normal(0, MOTION_ANGLE_STD)) if rng.random() < MOTION_PROB else (0, 0)
    pole = (float(rng.uniform(*POLE_GREY)), float(rng.uniform(*POLE_WIDTH))) if rng.random() < POLE_PROB else None
    return _TrackStyle(
        sign=_weather(face, mask, rng),
        outline=spec.shape.outline(),
        scene=_scene(rng),
        bg_zoom=float(rng.uniform(*BG_ZOOM)),
        sign_gain=float(rng.uniform(*SIGN_GAIN)),
        angles=(
            _truncated_normal(rng, YAW_STD, YAW_MAX),
            _truncated_normal(rng, PITCH_STD, PITCH_MAX),
            _truncated_normal(rng, ROLL_STD, ROLL_MAX),
        ),
        yaw_drift=float(rng.uniform(-YAW_DRIFT, YAW_DRIFT)),
        margin_fraction=float(rng.uniform(*MARGIN_FRACTION)),
        margin_min_px=float(rng.uniform(*MARGIN_MIN_PX)),
        gain=float(np.clip(math.exp(rng.normal(GAIN_LOG_MEAN, GAIN_LOG_STD)), *GAIN_RANGE)),
        gamma=float(rng.uniform(*GAMMA)),
        contrast=float(rng.uniform(*CONTRAST)),
        cast=_white_balance(rng),
        blur_sigma=float(rng.uniform(*BLUR_SIGMA)),
        motion=(float(motion[0]), float(motion[1])),
        noise_sigma=float(rng.uniform(*NOISE_SIGMA)),
        pole=pole,
        plate=bool(rng.random() < PLATE_PROB),
        occluder=_occluder(rng),
        sizes=sizes,
    )


# --- per-frame rendering ----------------------------------------------------------
def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def _project(points: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Unit-plane points seen by a pinhole camera CAMERA_DISTANCE units away."""
    xyz = np.column_stack([points, np.zeros(len(points))]) @ rotation.T
    return xyz[:, :2] * (CAMERA_DISTANCE / (CAMERA_DISTANCE + xyz[:, 2:3]))


def _placement(
    style: _TrackStyle, rng: np.random.Generator, angles: np.ndarray, work: tuple[int, int], scale_px: float
) -> tuple[np.ndarray, float]:
    """Homography from canvas px to work-frame px, and the sign's width in work px."""
    rotation = _rotation(*angles)
    outline = _project(style.outline, rotation)
    lo, hi = outline.min(axis=0), outline.max(axis=0)
    w, h = work
    side = min(w, h)
    margin = min(max(style.margin_fraction * side, style.margin_min_px * scale_px), MARGIN_MAX_FRACTION * side)
    fit = min((w - 2 * margin) / (hi[0] - lo[0]), (h - 2 * margin) / (hi[1] - lo[1]))
    spare = np.array([w, h]) - (hi - lo) * fit
    center = np.array([w, h]) / 2 + rng.uniform(-1, 1, 2) * spare / 2 * CENTER_JITTER
    corners_unit = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * (CANVAS / 2 / UNIT_PX)
    dst = (_project(corners_unit, rotation) - (lo + hi) / 2) * fit + center
    src = np.array([[0, 0], [CANVAS, 0], [CANVAS, CANVAS], [0, CANVAS]], float)
    return cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32)), float((hi[0] - lo[0]) * fit)


def _warp_sign(sign: np.ndarray, homography: np.ndarray, work: tuple[int, int], sign_px: float) -> np.ndarray:
    """Warp the BGRA canvas, pre-shrunk first so bilinear sampling does not alias."""
    side = int(min(CANVAS, max(MIN_MIP_SIDE, math.ceil(sign_px * MIP_OVERSAMPLE))))
    if side < CANVAS:
        sign = cv2.resize(sign, (side, side), interpolation=cv2.INTER_AREA)
        shrink = np.diag([CANVAS / side, CANVAS / side, 1.0])
        homography = homography @ shrink
    return cv2.warpPerspective(sign, homography, work, flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))


def _backdrop(style: _TrackStyle, rng: np.random.Generator, work: tuple[int, int]) -> np.ndarray:
    """The track's scene, re-cropped with a little drift, as float32 [0, 1]."""
    w, h = work
    view = BG_RES / style.bg_zoom
    origin = (BG_RES - view) / 2 + rng.uniform(-BG_DRIFT, BG_DRIFT, 2) * BG_RES
    affine = np.array([[w / view, 0, -origin[0] * w / view], [0, h / view, -origin[1] * h / view]])
    scene = cv2.warpAffine(style.scene, affine, work, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return scene.astype(np.float32) / 255


def _props(style: _TrackStyle, frame: np.ndarray, homography: np.ndarray, sign_px: float) -> None:
    """Pole and supplementary plate behind the sign (they show in the margin)."""
    bottom = cv2.perspectiveTransform(np.array([[[CANVAS / 2, CANVAS * POLE_TOP]]], np.float32), homography)[0, 0]
    h = frame.shape[0]
    if style.pole is not None:
        grey, width = style.pole
        x = int(bottom[0])
        cv2.line(frame, (x, int(bottom[1])), (x, h), (grey, grey, grey), max(1, round(width * sign_px)), cv2.LINE_AA)
    if style.plate:
        top = int(bottom[1] + PLATE_GAP * sign_px)
        half = int(PLATE_HALF_WIDTH * sign_px)
        x = int(bottom[0])
        cv2.rectangle(frame, (x - half, top), (x + half, h), (PLATE_GREY,) * 3, -1, cv2.LINE_AA)


def _occlude(frame: np.ndarray, occluder: _Occluder, rng: np.random.Generator) -> None:
    """A clump of leaves: overlapping blobs in varied shades, drifting slightly per frame."""
    h, w = frame.shape[:2]
    center = (np.array(occluder.center) + rng.normal(0, OCCLUDER_DRIFT, 2)) * (w, h)
    axes = np.array(occluder.axes) * (w, h)
    leaves = np.random.default_rng(occluder.seed)  # same clump shape in every frame of the track
    for _ in range(LEAVES):
        offset = leaves.normal(0, LEAF_SPREAD, 2) * axes
        size = np.maximum(1, leaves.uniform(*LEAF_SIZE, 2) * axes).astype(int)
        color = tuple(float(c) * leaves.uniform(*LEAF_SHADE) for c in occluder.color)
        at = (int(center[0] + offset[0]), int(center[1] + offset[1]))
        cv2.ellipse(frame, at, (int(size[0]), int(size[1])), leaves.uniform(0, 180), 0, 360, color, -1)


def _roi(alpha: np.ndarray, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Sign bounding box in output px (x2, y2 exclusive), from the warped alpha."""
    ys, xs = np.nonzero(alpha > 127)
    w, h = size
    x1, y1 = int(xs.min()) // SUPERSAMPLE, int(ys.min()) // SUPERSAMPLE
    x2, y2 = -(-(int(xs.max()) + 1) // SUPERSAMPLE), -(-(int(ys.max()) + 1) // SUPERSAMPLE)
    return max(0, x1), max(0, y1), min(w, x2), min(h, y2)


def _motion_kernel(length: float, angle: float) -> np.ndarray:
    size = int(math.ceil(length)) | 1
    kernel = np.zeros((size, size), np.float32)
    c = size // 2
    dx, dy = math.cos(math.radians(angle)) * length / 2, math.sin(math.radians(angle)) * length / 2
    scale = 1 << SHIFT_BITS
    a, b = (round((c - dx) * scale), round((c - dy) * scale)), (round((c + dx) * scale), round((c + dy) * scale))
    cv2.line(kernel, a, b, 1.0, 1, cv2.LINE_AA, SHIFT_BITS)
    return kernel / kernel.sum()


def _optics(style: _TrackStyle, rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Defocus and motion blur, at output resolution where a camera blurs."""
    sigma = style.blur_sigma * rng.uniform(*FRAME_BLUR_JITTER)
    if sigma > MIN_BLUR_SIGMA:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    length = style.motion[0] * min(img.shape[:2]) / MOTION_REF_SIZE * rng.uniform(*FRAME_MOTION_JITTER)
    if length > 1:
        img = cv2.filter2D(img, -1, _motion_kernel(length, style.motion[1]), borderType=cv2.BORDER_REFLECT)
    return img


def _exposure(style: _TrackStyle, rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Haze, white balance, exposure and tone curve, on float32 [0, 1]."""
    img = img + (img.mean() - img) * (1 - style.contrast)
    img = img * np.array(style.cast, np.float32) * (style.gain * math.exp(rng.normal(0, FRAME_GAIN_STD)))
    return np.clip(img, 0, 1) ** style.gamma


def _sensor(style: _TrackStyle, rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Demosaicing fringes, noise, quantisation and JPEG re-compression: uint8 out."""
    img = _chroma_shift(img, rng)
    img = img + rng.normal(0, style.noise_sigma, img.shape).astype(np.float32)
    out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    quality = int(rng.integers(*JPEG_QUALITY, endpoint=True))
    _, jpeg = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(jpeg, cv2.IMREAD_COLOR)


def _chroma_shift(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Misregister the blue and red planes by a fraction of a pixel, as demosaicing does."""
    h, w = img.shape[:2]
    planes = list(cv2.split(img))
    for channel in (0, 2):
        dx, dy = rng.uniform(-CHROMA_SHIFT, CHROMA_SHIFT, 2)
        affine = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
        planes[channel] = cv2.warpAffine(planes[channel], affine, (w, h), borderMode=cv2.BORDER_REFLECT)
    return cv2.merge(planes)


def _render_frame(
    style: _TrackStyle, rng: np.random.Generator, index: int
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """One frame of a track: the image and the sign's ROI in it."""
    size = style.sizes[index]
    work = (size[0] * SUPERSAMPLE, size[1] * SUPERSAMPLE)
    progress = index / max(1, len(style.sizes) - 1)
    angles = np.array(style.angles) + rng.normal(0, FRAME_ANGLE_JITTER, 3)
    angles[0] += style.yaw_drift * progress
    homography, sign_px = _placement(style, rng, angles, work, SUPERSAMPLE)
    frame = _backdrop(style, rng, work)
    _props(style, frame, homography, sign_px)
    warped = _warp_sign(style.sign, homography, work, sign_px)
    alpha = warped[..., 3:].astype(np.float32) / 255
    frame = frame * (1 - alpha) + warped[..., :3].astype(np.float32) / 255 * style.sign_gain * alpha
    if style.occluder is not None:
        _occlude(frame, style.occluder, rng)
    small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    image = _sensor(style, rng, _exposure(style, rng, _optics(style, rng, small)))
    return image, _roi(warped[..., 3], size)


def render_sign(class_id: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """One ``size`` x ``size`` x 3 uint8 BGR image of a fresh random instance (tests, debugging)."""
    if size < MIN_SIDE:
        raise ValueError(f"size must be >= {MIN_SIDE} px, got {size}")
    style = _track_style(resolve_sign(class_id), rng, ((size, size),))
    image, _ = _render_frame(style, rng, 0)
    return image


# --- dataset ----------------------------------------------------------------------
@dataclass(frozen=True)
class _TrackJob:
    out_dir: Path
    class_id: str
    track: int
    config: SynthConfig


def _track_rng(config: SynthConfig, class_id: str, track: int) -> np.random.Generator:
    """Independent stream per (class, track): results do not depend on job order."""
    sequence = np.random.SeedSequence(config.seed, spawn_key=(int(class_id), track))
    return np.random.default_rng(sequence)


def _render_track(job: _TrackJob) -> list[RawRecord]:
    """Render and write the frames of one track; return their records."""
    rng = _track_rng(job.config, job.class_id, job.track)
    sizes = _track_sizes(rng, job.config)
    style = _track_style(resolve_sign(job.class_id), rng, sizes)
    class_dir = f"{int(job.class_id):05d}"
    (job.out_dir / class_dir).mkdir(parents=True, exist_ok=True)
    track = f"{job.track:05d}"
    records = []
    for index in range(len(sizes)):
        image, (x1, y1, x2, y2) = _render_frame(style, rng, index)
        rel = f"{class_dir}/{track}_{index:05d}.png"
        if not cv2.imwrite(str(job.out_dir / rel), image):
            raise OSError(f"could not write {job.out_dir / rel}")
        h, w = image.shape[:2]
        records.append(RawRecord(rel, job.class_id, track, w, h, x1, y1, x2, y2))
    return records


JOBS_PER_WORKER = 8  # chunks per worker: large enough to amortise pickling, small enough to balance


def _run(jobs: list[_TrackJob], workers: int) -> Iterator[list[RawRecord]]:
    if workers <= 1:
        yield from map(_render_track, jobs)
        return
    chunk = max(1, len(jobs) // (workers * JOBS_PER_WORKER))
    with process_pool(workers) as pool:
        yield from pool.map(_render_track, jobs, chunksize=chunk)


def render_dataset(out_dir: Path, class_ids: Sequence[str], config: SynthConfig, workers: int = 1) -> list[RawRecord]:
    """Render ``config.tracks_per_class`` tracks per class under ``out_dir`` (GTSRB layout).

    Writes ``<class:05d>/<track:05d>_<frame:05d>.png`` and returns one record per
    image (ROI x2/y2 exclusive). Files are written in place: wrap ``out_dir`` in
    ``signflow.io.atomic_path`` if a crash must not leave a partial tree.
    """
    specs = [resolve_sign(class_id) for class_id in class_ids]  # fail before any work
    if len({id(spec) for spec in specs}) != len(specs):
        raise ValueError(f"duplicate class ids would overwrite each other's files: {list(class_ids)}")
    out_dir = Path(out_dir)
    jobs = [_TrackJob(out_dir, str(c), t, config) for c in class_ids for t in range(config.tracks_per_class)]
    records: list[RawRecord] = []
    for track_records in tqdm(_run(jobs, workers), total=len(jobs), desc="synthetic", unit="track"):
        records.extend(track_records)
    log.info("rendered %d synthetic images (%d classes x %d tracks) into %s",
             len(records), len(class_ids), config.tracks_per_class, out_dir)  # fmt: skip
    return records
