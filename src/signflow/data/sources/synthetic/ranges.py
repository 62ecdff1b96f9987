"""Randomisation ranges: every knob of the degradation, each with why it has its value.

Constants only, grouped by what they imitate (framing, viewpoint, paint ageing,
camera, scene, props, occluders), so tuning realism never means reading code.
"""

from __future__ import annotations

import math

from signflow.data.sources.synthetic.draw import Color

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
# Sign vs background light: a sign in shadow against a bright sky (backlight) down to 0.35, a
# retro-reflecting sign in a dark street up to 1.4. Widened from (0.55, 1.25): real tracks show both.
SIGN_GAIN = (0.35, 1.4)

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
# In-camera sharpening (unsharp mask): real GTSRB frames have 2-4x the edge energy of unsharpened renders.
SHARPEN_AMOUNT = (0.0, 1.5)  # per track; 0 = none
SHARPEN_SIGMA = 1.0  # output px
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
PLATE_PROB = 0.15  # a supplementary plate below the sign, under signs of every type
PLATE_BLUE_SHARE = 0.5  # of those, blue information plates (parking "P") rather than white text plates:
# real GTSRB tracks have a blue "P" under priority-road diamonds, which a model never shown one
# files under "unknown", whose source signs are the blue ones
PLATE_GREY = 0.8
PLATE_GAP = 0.1  # from the pole top (inside the sign) to the plate: it starts just below the sign
PLATE_HALF_WIDTH = 0.45  # fraction of the sign width
PLATE_HEIGHT = 0.6  # fraction of the sign width; the pole continues below
PLATE_GLYPH = 0.6  # glyph ("P", or a text line) height, fraction of the plate's height
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
