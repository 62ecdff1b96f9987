"""The renderer: degrade a clean face into GTSRB-like frames and write the dataset.

Two levels, like GTSRB's tracks of one physical sign: a per-track style (faded
and dirty paint, shading, scene, pole or plate, lighting, colour cast, viewpoint,
maybe an occluder, frame sizes growing as the car approaches) and per-frame
effects (perspective warp with a GTSRB-like margin, jitter, downscale, optical
and motion blur, tone curve, sensor noise, JPEG re-compression). Every
(class, track) gets its own ``np.random.Generator`` spawned from the seed, so
the files are byte-identical whatever the worker count or order.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from signflow.config import MIN_SYNTHETIC_SIDE, SyntheticConfig
from signflow.data.records import RawRecord
from signflow.data.sources.synthetic.draw import BLACK, BLUE, CANVAS, SHIFT_BITS, UNIT_PX, WHITE, SignSpec
from signflow.data.sources.synthetic.ranges import (
    ASPECT_JITTER,
    BG_DRIFT,
    BG_RES,
    BG_ZOOM,
    BLUR_SIGMA,
    CAMERA_DISTANCE,
    CENTER_JITTER,
    CHROMA_SHIFT,
    COLOR_SPREAD,
    CONTRAST,
    DIRT,
    DIRT_CELLS,
    DIRT_COLOR,
    DIRT_TEXTURE,
    FRAME_ANGLE_JITTER,
    FRAME_BLUR_JITTER,
    FRAME_GAIN_STD,
    FRAME_MOTION_JITTER,
    GAIN_LOG_MEAN,
    GAIN_LOG_STD,
    GAIN_RANGE,
    GAMMA,
    HUE_SHIFT_STD,
    JPEG_QUALITY,
    LEAF_COLOR,
    LEAF_SHADE,
    LEAF_SIZE,
    LEAF_SPREAD,
    LEAVES,
    MARGIN_FRACTION,
    MARGIN_MAX_FRACTION,
    MARGIN_MIN_PX,
    MIN_BLUR_SIGMA,
    MIN_MIP_SIDE,
    MIP_OVERSAMPLE,
    MOTION_ANGLE_STD,
    MOTION_LENGTH,
    MOTION_PROB,
    MOTION_REF_SIZE,
    NOISE_SIGMA,
    OCCLUDE_PROB,
    OCCLUDER_DRIFT,
    OCCLUDER_REACH,
    OCCLUDER_SIZE,
    PITCH_MAX,
    PITCH_STD,
    PLATE_BLUE_SHARE,
    PLATE_GAP,
    PLATE_GLYPH,
    PLATE_GREY,
    PLATE_HALF_WIDTH,
    PLATE_HEIGHT,
    PLATE_PROB,
    POLE_GREY,
    POLE_PROB,
    POLE_TOP,
    POLE_WIDTH,
    ROLL_MAX,
    ROLL_STD,
    SATURATION,
    SHADING,
    SHARPEN_AMOUNT,
    SHARPEN_SIGMA,
    SIGN_GAIN,
    SIZE_BETA,
    SUPERSAMPLE,
    TINT_STD,
    TRACK_GROWTH,
    VALUE,
    WARMTH_STD,
    YAW_DRIFT,
    YAW_MAX,
    YAW_STD,
)
from signflow.data.sources.synthetic.scene import _palette, _scene, _smooth_noise
from signflow.data.sources.synthetic.signs import resolve_sign
from signflow.parallel import process_pool

log = logging.getLogger(__name__)


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
    sharpen: float  # unsharp-mask amount of the camera's processing
    pole: tuple[float, float] | None  # (grey level, width as a fraction of the sign) or no pole
    plate: str | None  # PLATE_WHITE, PLATE_BLUE or no plate
    occluder: _Occluder | None
    sizes: tuple[tuple[int, int], ...]  # (width, height) per frame


def _truncated_normal(rng: np.random.Generator, std: float, limit: float) -> float:
    return float(np.clip(rng.normal(0, std), -limit, limit))


def _track_sizes(rng: np.random.Generator, config: SyntheticConfig) -> tuple[tuple[int, int], ...]:
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


PLATE_WHITE, PLATE_BLUE = "white", "blue"


def _plate(draw: float) -> str | None:
    """The track's plate from one uniform draw (so adding plate colours left every other draw as it was)."""
    if draw >= PLATE_PROB:
        return None
    return PLATE_BLUE if draw < PLATE_PROB * PLATE_BLUE_SHARE else PLATE_WHITE


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
        sharpen=float(rng.uniform(*SHARPEN_AMOUNT)),
        pole=pole,
        plate=_plate(float(rng.random())),
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
    if style.plate is not None:
        _draw_plate(frame, style.plate, int(bottom[0]), int(bottom[1] + PLATE_GAP * sign_px), sign_px)


def _draw_plate(frame: np.ndarray, kind: str, x: int, top: int, sign_px: float) -> None:
    """A supplementary plate centred at ``x`` below the sign: blue with a white "P", or white with a text line."""
    half, height = int(PLATE_HALF_WIDTH * sign_px), int(PLATE_HEIGHT * sign_px)
    blue = kind == PLATE_BLUE
    field = tuple(c / 255 for c in BLUE) if blue else (PLATE_GREY,) * 3
    ink = tuple(c / 255 for c in (WHITE if blue else BLACK))
    cv2.rectangle(frame, (x - half, top), (x + half, top + height), field, -1, cv2.LINE_AA)
    glyph = max(1, int(PLATE_GLYPH * height))
    if blue:  # a "P": stem and bowl (cv2.putText draws on uint8 only; the frame is float)
        stroke, left, glyph_top = max(1, glyph // 5), x - glyph // 4, top + (height - glyph) // 2
        cv2.line(frame, (left, glyph_top), (left, glyph_top + glyph), ink, stroke, cv2.LINE_AA)
        bowl = (left, glyph_top + glyph // 4)
        cv2.ellipse(frame, bowl, (glyph // 3, glyph // 4), 0, -90, 90, ink, stroke, cv2.LINE_AA)
    else:
        middle = top + height // 2
        cv2.line(frame, (x - half * 2 // 3, middle), (x + half * 2 // 3, middle), ink, max(1, glyph // 3), cv2.LINE_AA)


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
    """Demosaicing fringes, noise, in-camera sharpening, quantisation and JPEG re-compression: uint8 out."""
    img = _chroma_shift(img, rng)
    img = img + rng.normal(0, style.noise_sigma, img.shape).astype(np.float32)
    if style.sharpen > 0:
        img = img + (img - cv2.GaussianBlur(img, (0, 0), SHARPEN_SIGMA)) * style.sharpen
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
    if size < MIN_SYNTHETIC_SIDE:
        raise ValueError(f"size must be >= {MIN_SYNTHETIC_SIDE} px, got {size}")
    style = _track_style(resolve_sign(class_id), rng, ((size, size),))
    image, _ = _render_frame(style, rng, 0)
    return image


# --- dataset ----------------------------------------------------------------------
@dataclass(frozen=True)
class _TrackJob:
    out_dir: Path
    class_id: str
    track: int
    config: SyntheticConfig


def _track_rng(config: SyntheticConfig, class_id: str, track: int) -> np.random.Generator:
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


def render_dataset(
    out_dir: Path,
    class_ids: Sequence[str],
    config: SyntheticConfig,
    workers: int = 1,
    targets: Collection[str] | None = None,
) -> list[RawRecord]:
    """Render the tracks of every class under ``out_dir`` (GTSRB layout).

    A class in ``targets`` (``None``: every class) gets ``config.tracks_per_class``
    tracks, any other at most ``config.max_other_tracks``. Writes
    ``<class:05d>/<track:05d>_<frame:05d>.png`` and returns one record per
    image (ROI x2/y2 exclusive). Files are written in place: wrap ``out_dir`` in
    ``signflow.files.atomic_path`` if a crash must not leave a partial tree.
    """
    config.validate("data.synthetic")  # a bad value fails naming its params key, before any work
    specs = [resolve_sign(class_id) for class_id in class_ids]  # fail before any work
    if len({id(spec) for spec in specs}) != len(specs):
        raise ValueError(f"duplicate class ids would overwrite each other's files: {list(class_ids)}")
    target_specs = {id(resolve_sign(c)) for c in (class_ids if targets is None else targets)}
    out_dir = Path(out_dir)
    jobs = [
        _TrackJob(out_dir, str(c), t, config)
        for c, spec in zip(class_ids, specs, strict=True)
        for t in range(config.tracks_for(id(spec) in target_specs))
    ]
    records: list[RawRecord] = []
    for track_records in tqdm(_run(jobs, workers), total=len(jobs), desc="synthetic", unit="track"):
        records.extend(track_records)
    log.info("rendered %d synthetic images (%d classes, %d tracks) into %s",
             len(records), len(class_ids), len(jobs), out_dir)  # fmt: skip
    return records
