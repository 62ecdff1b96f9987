"""Train and eval transforms on whole uint8 batches: the one place for both.

Per-sample randomness, batched: one homography per image (random resized crop,
rotation and perspective composed) applied with a single ``grid_sample``, and
colour jitter as per-sample tensor arithmetic. A batch of 64 images at 64 px
costs a few milliseconds, far below the model step, which per-sample PIL
pipelines (the tutorials' way) do not achieve on two cores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from signflow.config import AugmentConfig

# ITU-R BT.601 luma weights, for grayscale (saturation) and the YIQ hue rotation.
LUMA = (0.299, 0.587, 0.114)
RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
BLUR_SIGMA = 0.8
BLUR_KERNEL = 5


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean/std the backbone was trained with (0-1 pixel scale)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def to_float(batch_u8: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [0, 1]."""
    x = batch_u8.permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def normalize(x: torch.Tensor, norm: Normalization) -> torch.Tensor:
    mean = torch.tensor(norm.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(norm.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def eval_transform(batch_u8: torch.Tensor, norm: Normalization, channels_last: bool = False) -> torch.Tensor:
    """The deterministic transform for validation, test and predict."""
    return normalize(to_float(batch_u8, channels_last), norm)


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (high - low) + low


def _homography_from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Batched DLT: (N, 4, 2) point pairs -> (N, 3, 3) H with dst ~ H @ src."""
    n = src.shape[0]
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], dim=-1)
    a = torch.cat([rows_u, rows_v], dim=1)  # (N, 8, 8)
    b = torch.cat([u, v], dim=1)  # (N, 8)
    h = torch.linalg.solve(a, b)
    return torch.cat([h, torch.ones(n, 1)], dim=1).view(n, 3, 3)


def random_homographies(n: int, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Maps output coords to input coords in [-1, 1]: crop, rotate, perspective, flip."""
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]).expand(n, 4, 2)
    scale = _uniform(n, cfg.scale_min, 1.0, gen).sqrt()  # side of the crop, area in [scale_min, 1]
    shift = (1 - scale).unsqueeze(1) * (torch.rand(n, 2, generator=gen) * 2 - 1)
    angle = _uniform(n, -cfg.rotate_degrees, cfg.rotate_degrees, gen) * math.pi / 180
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    jitter = (torch.rand(n, 4, 2, generator=gen) * 2 - 1) * cfg.perspective * 0.5
    src = (corners + jitter) @ rotation.transpose(1, 2) * scale.view(n, 1, 1) + shift.unsqueeze(1)
    if cfg.hflip:
        flip = torch.rand(n, generator=gen) < 0.5
        src = torch.where(flip.view(n, 1, 1), src * torch.tensor([-1.0, 1.0]), src)
    return _homography_from_points(corners, src)


def warp(x: torch.Tensor, homographies: torch.Tensor) -> torch.Tensor:
    """Resample each image of (N, C, H, W) through its homography (output -> input)."""
    n, _, h, w = x.shape
    ys, xs = torch.linspace(-1, 1, h), torch.linspace(-1, 1, w)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    base = torch.stack([grid_x, grid_y, torch.ones_like(grid_x)], -1).view(1, h * w, 3)
    mapped = base @ homographies.transpose(1, 2)  # (N, H*W, 3)
    grid = (mapped[..., :2] / mapped[..., 2:].clamp_min(1e-6)).view(n, h, w, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def color_jitter(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Per-sample brightness, contrast, saturation and hue on (N, 3, H, W) in [0, 1]."""
    n = x.shape[0]

    def factor(strength: float) -> torch.Tensor:
        return _uniform(n, 1 - strength, 1 + strength, gen).view(n, 1, 1, 1)

    luma = torch.tensor(LUMA).view(1, 3, 1, 1)
    x = x * factor(cfg.brightness)
    mean = (x * luma).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = (x - mean) * factor(cfg.contrast) + mean
    gray = (x * luma).sum(1, keepdim=True)
    x = (x - gray) * factor(cfg.saturation) + gray
    if cfg.hue > 0:
        x = _rotate_hue(x, _uniform(n, -cfg.hue, cfg.hue, gen) * 2 * math.pi)
    return x.clamp_(0, 1)


def _rotate_hue(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate chroma in YIQ space by ``angle`` radians per sample."""
    to_yiq = torch.tensor(RGB_TO_YIQ)
    to_rgb = torch.linalg.inv(to_yiq)
    cos, sin = angle.cos(), angle.sin()
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    rot = torch.stack(
        [torch.stack([one, zero, zero], -1), torch.stack([zero, cos, -sin], -1), torch.stack([zero, sin, cos], -1)], -2
    )
    matrix = to_rgb @ rot @ to_yiq  # (N, 3, 3)
    return torch.einsum("nij,njhw->nihw", matrix, x)


def random_blur(x: torch.Tensor, prob: float, gen: torch.Generator) -> torch.Tensor:
    """Gaussian blur on a random subset of the batch (signs seen at speed, out of focus)."""
    chosen = torch.rand(x.shape[0], generator=gen) < prob
    if not chosen.any():
        return x
    coords = torch.arange(BLUR_KERNEL) - BLUR_KERNEL // 2
    kernel_1d = torch.exp(-(coords.float() ** 2) / (2 * BLUR_SIGMA**2))
    kernel = (kernel_1d[:, None] * kernel_1d[None, :]) / kernel_1d.sum() ** 2
    weight = kernel.expand(3, 1, BLUR_KERNEL, BLUR_KERNEL)
    blurred = F.conv2d(F.pad(x[chosen], [BLUR_KERNEL // 2] * 4, mode="reflect"), weight, groups=3)
    out = x.clone()
    out[chosen] = blurred
    return out


def train_transform(
    batch_u8: torch.Tensor,
    cfg: AugmentConfig,
    norm: Normalization,
    gen: torch.Generator,
    channels_last: bool = False,
) -> torch.Tensor:
    """Augment a uint8 (N, H, W, 3) batch with per-sample randomness; returns normalised floats."""
    x = to_float(batch_u8)
    x = warp(x, random_homographies(x.shape[0], cfg, gen))
    x = color_jitter(x, cfg, gen)
    x = random_blur(x, cfg.blur_prob, gen)
    x = normalize(x, norm)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
