"""Drawing primitives for the clean sign faces, in unit coordinates.

Shapes and glyphs are in *unit* coordinates: the origin is the sign's centre and
1 unit is half the sign's width, so every entry of the catalogue in ``signs``
reads like a sign drawing. Nothing here is random: a face is drawn once, crisp,
on a ``CANVAS`` px canvas, and only ``render`` degrades it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import cv2
import numpy as np

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
