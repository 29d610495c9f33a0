"""Augmentation policies A and B of the paper (Table 1), applied to whole mini-batches in torch.

Each sample is a source crop larger than the 78 px window (128 px here); one `grid_sample` per batch applies
transposition, elastic deformation, spatial shift and zoom while cutting the window out, then the colour transforms
run on the window. Batched torch ops keep augmentation a few percent of a training step on CPU, which per-sample
library pipelines (albumentations, torchvision) did not; the transforms and their ranges follow Table 1 exactly.
No rotations: the P4 network is invariant to 90-degree rotations by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.geometry import RECEPTIVE_FIELD_PX


@dataclass(frozen=True)
class Policy:
    """Probability of each transform and its parameter range (uniform)."""

    transpose_p: float = 0.5
    elastic_p: float = 1.0
    elastic_amplitude_px: float = 3.0  # std of control-point displacements (not given in the paper)
    elastic_grid: int = 4  # control points per side
    shift_p: float = 1.0
    shift_px: float = 12.0
    zoom_p: float = 0.5
    zoom_range: tuple[float, float] = (-0.10, 0.20)
    hue_p: float = 0.8
    hue_range_deg: tuple[float, float] = (0.0, 360.0)
    colour_shift_p: float = 0.8
    colour_shift_range: tuple[float, float] = (-51.0, 51.0)  # in 8-bit intensity units
    contrast_p: float = 0.8
    contrast_range: tuple[float, float] = (0.8, 1.2)
    gamma_p: float = 0.0
    gamma_range: tuple[float, float] = (0.8, 1.2)


POLICIES: dict[str, Policy] = {
    "A": Policy(),
    "B": Policy(
        elastic_p=0.5,
        hue_p=0.5,
        hue_range_deg=(-60.0, 60.0),
        colour_shift_p=0.5,
        contrast_p=0.5,
        gamma_p=0.5,
    ),
    "none": Policy(transpose_p=0, elastic_p=0, shift_p=0, zoom_p=0, hue_p=0, colour_shift_p=0, contrast_p=0),
}


def _uniform(shape, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator) * (high - low) + low


def _coin(count: int, probability: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(count, generator=generator) < probability


def sampling_grid(count: int, source_px: int, policy: Policy, generator: torch.Generator) -> torch.Tensor:
    """Normalised (count, 78, 78, 2) grid mapping each output pixel to its source-crop position."""
    half = (RECEPTIVE_FIELD_PX - 1) / 2
    offsets = torch.arange(RECEPTIVE_FIELD_PX, dtype=torch.float32) - half
    grid_y, grid_x = torch.meshgrid(offsets, offsets, indexing="ij")
    xy = torch.stack([grid_x, grid_y], dim=-1).expand(count, -1, -1, -1).clone()  # output offsets in px

    transpose = _coin(count, policy.transpose_p, generator)
    xy[transpose] = xy[transpose].flip(-1)

    if policy.elastic_p > 0:
        elastic = _coin(count, policy.elastic_p, generator).float().view(count, 1, 1, 1)
        control = torch.randn((count, 2, policy.elastic_grid, policy.elastic_grid), generator=generator)
        field = F.interpolate(control, size=(RECEPTIVE_FIELD_PX,) * 2, mode="bicubic", align_corners=True)
        xy = xy + field.permute(0, 2, 3, 1) * policy.elastic_amplitude_px * elastic

    zoom = torch.ones(count)
    zoom_on = _coin(count, policy.zoom_p, generator)
    zoom[zoom_on] = 1.0 + _uniform(int(zoom_on.sum()), *policy.zoom_range, generator)
    xy = xy / zoom.view(count, 1, 1, 1)  # zoom in (+20%) = sample a smaller source region

    shift = torch.zeros(count, 2)
    shift_on = _coin(count, policy.shift_p, generator)
    shift[shift_on] = _uniform((int(shift_on.sum()), 2), -policy.shift_px, policy.shift_px, generator)
    xy = xy + shift.view(count, 1, 1, 2)

    centre = (source_px - 1) / 2
    return (xy + centre + 0.5) / source_px * 2 - 1  # pixel centres -> [-1, 1] with align_corners=False


def rotate_hue(rgb: torch.Tensor, angle_deg: torch.Tensor) -> torch.Tensor:
    """Rotate the HLS hue of (N, 3, H, W) RGB in [0, 1] by per-sample angles, keeping lightness and saturation.

    HLS and HSV share the hue definition and both fix max and min of (R, G, B), so the rotation is done in HSV.
    """
    maximum, argmax = rgb.max(dim=1)
    minimum = rgb.min(dim=1).values
    chroma = maximum - minimum
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    red, green, blue = rgb.unbind(1)
    hue = torch.where(
        argmax == 0,
        ((green - blue) / safe) % 6,
        torch.where(argmax == 1, (blue - red) / safe + 2, (red - green) / safe + 4),
    )
    hue = (hue + angle_deg.view(-1, 1, 1) / 60.0) % 6
    # HSV -> RGB with V = max and chroma preserved
    k = (torch.tensor([5.0, 3.0, 1.0], device=rgb.device).view(1, 3, 1, 1) + hue.unsqueeze(1)) % 6
    weight = torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return maximum.unsqueeze(1) - chroma.unsqueeze(1) * weight


def colour_jitter(rgb: torch.Tensor, policy: Policy, generator: torch.Generator) -> torch.Tensor:
    """Hue rotation, per-channel colour shift, contrast and gamma (Table 1 order), each with its probability."""
    count = rgb.shape[0]
    hue_on = _coin(count, policy.hue_p, generator)
    angles = _uniform(count, *policy.hue_range_deg, generator) * hue_on
    if hue_on.any():
        rgb = torch.where(hue_on.view(-1, 1, 1, 1), rotate_hue(rgb, angles), rgb)
    shift_on = _coin(count, policy.colour_shift_p, generator).float().view(count, 1, 1, 1)
    shift = _uniform((count, 3, 1, 1), *policy.colour_shift_range, generator) / 255.0
    rgb = (rgb + shift * shift_on).clamp(0, 1)
    contrast_on = _coin(count, policy.contrast_p, generator).view(count, 1, 1, 1)
    factor = torch.where(contrast_on, _uniform((count, 3, 1, 1), *policy.contrast_range, generator), 1.0)
    mean = rgb.mean(dim=(2, 3), keepdim=True)
    rgb = ((rgb - mean) * factor + mean).clamp(0, 1)
    gamma_on = _coin(count, policy.gamma_p, generator).view(count, 1, 1, 1)
    gamma = torch.where(gamma_on, _uniform((count, 3, 1, 1), *policy.gamma_range, generator), 1.0)
    return rgb.clamp_min(1e-6).pow(gamma)


def augment_batch(crops_uint8: torch.Tensor, policy: Policy, generator: torch.Generator) -> torch.Tensor:
    """(N, S, S, 3) uint8 source crops centred on the sample -> (N, 3, 78, 78) float windows in [0, 1]."""
    count, source_px = crops_uint8.shape[0], crops_uint8.shape[1]
    source = crops_uint8.permute(0, 3, 1, 2).float() / 255.0
    grid = sampling_grid(count, source_px, policy, generator)
    windows = F.grid_sample(source, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return colour_jitter(windows, policy, generator)


def centre_windows(crops_uint8: torch.Tensor) -> torch.Tensor:
    """Un-augmented central 78 px windows, for validation: (N, S, S, 3) uint8 -> (N, 3, 78, 78) float."""
    source_px = crops_uint8.shape[1]
    start = (source_px - RECEPTIVE_FIELD_PX) // 2
    window = crops_uint8[:, start : start + RECEPTIVE_FIELD_PX, start : start + RECEPTIVE_FIELD_PX]
    return window.permute(0, 3, 1, 2).float() / 255.0
