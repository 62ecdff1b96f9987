"""The catalogue: the 43 GTSRB classes as tables of paint layers.

Pure data built from the ``draw`` layer builders and sign families, so adding or
fixing a sign touches no drawing or rendering code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

from signflow.data.sources.synthetic.draw import (
    AMBER,
    BLACK,
    DIAMOND,
    DIAMOND_FIELD,
    DISC,
    GREEN,
    GREY,
    OCTAGON,
    RED,
    RIM,
    TRIANGLE_BORDER,
    TRIANGLE_DOWN,
    WHITE,
    YELLOW,
    Layer,
    SignSpec,
    arc,
    arrow,
    bumps,
    car_rear,
    car_side,
    disc,
    end_of,
    extend,
    fill,
    line,
    mandatory,
    mirror,
    person,
    poly,
    prohibitory,
    rect,
    speed_digits,
    text,
    truck_rear,
    truck_side,
    warning,
)

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
