"""Augmentation policies A and B of the paper (Table 1), applied to whole mini-batches in torch.

Each sample is a source crop larger than the 78 px window (128 px here); one `grid_sample` per batch applies
transposition, elastic deformation, spatial shift and zoom while cutting the window out, then the colour transforms
run on the window. Batched torch ops keep augmentation a few percent of a training step on CPU, which per-sample
library pipelines (albumentations, torchvision) did not; the transforms and their ranges follow Table 1 exactly.
No rotations: the P4 network is invariant to 90-degree rotations by construction.

Optionally (`lab_transfer_p`, off in both policies unless `with_lab_transfer` turns it on) a sample takes the CIE LAB
mean and standard deviation of another sample of its batch (Reinhard et al. 2001 colour transfer, used as stain
augmentation for mitosis detection by Akram et al.), so the network sees each mitosis under other images' stains.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from model.bundle import POLICY_NAMES
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
    # Reinhard LAB colour transfer from another sample of the batch; 0 = off and no generator draws, so runs made
    # before this option existed stay bit-for-bit reproducible.
    lab_transfer_p: float = 0.0


POLICIES: dict[str, Policy] = dict(
    zip(
        POLICY_NAMES,
        (
            Policy(),
            Policy(
                elastic_p=0.5,
                hue_p=0.5,
                hue_range_deg=(-60.0, 60.0),
                colour_shift_p=0.5,
                contrast_p=0.5,
                gamma_p=0.5,
            ),
        ),
        strict=True,
    )
) | {"none": Policy(transpose_p=0, elastic_p=0, shift_p=0, zoom_p=0, hue_p=0, colour_shift_p=0, contrast_p=0)}


def with_lab_transfer(policy: Policy, probability: float) -> Policy:
    """`policy` with LAB colour transfer applied to each sample with `probability` (A and B leave it off)."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    return replace(policy, lab_transfer_p=probability)


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


# sRGB (D65) -> CIE XYZ with the matrix scikit-image uses (the test compares with rgb2lab), D65 reference white, and
# the linear map from (f(X/Xn), f(Y/Yn), f(Z/Zn)) to LAB. The white is folded into the matrices and every linear
# step is one batched 3x3 matmul, so a conversion is two matmuls and a handful of in-place element-wise passes.
_XYZ_FROM_SRGB_LINEAR = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]],
    dtype=torch.float64,
)
_D65_WHITE = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
_LAB_FROM_F = torch.tensor([[0.0, 116.0, 0.0], [500.0, -500.0, 0.0], [0.0, 200.0, -200.0]], dtype=torch.float64)
_WHITE_XYZ_FROM_RGB = (_XYZ_FROM_SRGB_LINEAR / _D65_WHITE[:, None]).float()
_RGB_FROM_WHITE_XYZ = (torch.linalg.inv(_XYZ_FROM_SRGB_LINEAR) * _D65_WHITE[None, :]).float()
_F_FROM_LAB = torch.linalg.inv(_LAB_FROM_F).float()
_LAB_FROM_F = _LAB_FROM_F.float()
_LAB_DELTA = 6.0 / 29.0
# Floor on a window's LAB standard deviation (in LAB units, below one 8-bit level of L), so a flat window is moved to
# the target's mean instead of having its interpolation noise blown up by std_target / ~0.
_LAB_STD_FLOOR = 0.1


def _mix_channels(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 colour matrix to the channel axis of (N, 3, H, W)."""
    flat = image.reshape(image.shape[0], 3, -1)
    return torch.matmul(matrix.to(image.device, image.dtype), flat).view_as(image)


def srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) sRGB in [0, 1] -> CIE LAB (D65; L in [0, 100]), as skimage.color.rgb2lab but batched in torch."""
    linear = torch.where(rgb > 0.04045, rgb.add(0.055).div_(1.055).clamp_min_(0).pow_(2.4), rgb / 12.92)
    xyz = _mix_channels(_WHITE_XYZ_FROM_RGB, linear)  # X/Xn, Y/Yn, Z/Zn
    cube = _LAB_DELTA**3
    f = torch.where(xyz > cube, xyz.clamp_min(cube).pow_(1.0 / 3.0), xyz.mul(1 / (3 * _LAB_DELTA**2)).add_(4 / 29))
    lab = _mix_channels(_LAB_FROM_F, f)
    lab[:, 0] -= 16.0
    return lab


def lab_to_srgb(lab: torch.Tensor) -> torch.Tensor:
    """Inverse of `srgb_to_lab`; out-of-gamut colours come back outside [0, 1] (callers clamp)."""
    shifted = lab.clone()
    shifted[:, 0] += 16.0
    f = _mix_channels(_F_FROM_LAB, shifted)
    xyz = torch.where(f > _LAB_DELTA, f.pow(3), f.sub(4 / 29).mul_(3 * _LAB_DELTA**2))
    linear = _mix_channels(_RGB_FROM_WHITE_XYZ, xyz)
    encoded = linear.clamp_min(0.0031308).pow_(1 / 2.4).mul_(1.055).sub_(0.055)
    return torch.where(linear > 0.0031308, encoded, linear * 12.92)


def transfer_lab_statistics(rgb: torch.Tensor, target: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Reinhard colour transfer: selected windows take the per-channel LAB mean and std of window target[i].

    rgb: (N, 3, H, W) in [0, 1]; target: (N,) long indices into the batch; selected: (N,) bool. Statistics are over
    each whole window and taken before any transfer, so chains (i <- j <- k) use j's original colours. Only selected
    windows are converted back; the result is clamped to [0, 1], which may pull the statistics of saturated colours
    slightly off the target's.
    """
    if not selected.any():
        return rgb
    lab = srgb_to_lab(rgb)
    std, mean = torch.std_mean(lab, dim=(2, 3), keepdim=True)
    std = std.clamp_min(_LAB_STD_FLOOR)
    chosen = selected.nonzero().squeeze(1)
    source = target[chosen]
    scale = std[source] / std[chosen]  # (x - mean_i) / std_i * std_j + mean_j as one multiply-add
    moved = torch.addcmul(mean[source] - mean[chosen] * scale, lab[chosen], scale)
    out = rgb.clone()
    out[chosen] = lab_to_srgb(moved).clamp(0, 1)
    return out


def lab_transfer(rgb: torch.Tensor, policy: Policy, generator: torch.Generator) -> torch.Tensor:
    """With probability `policy.lab_transfer_p`, give each window the LAB statistics of another window of the batch.

    The donor of window i is (i + k) mod N with k uniform in 1..N-1, i.e. uniform over the other samples: batches are
    drawn at random from all slides, so this is a random other image's stain at no extra I/O. Draws nothing from the
    generator when the probability is 0 or the batch has a single window (nothing to transfer from), so existing
    seeded runs are unchanged.
    """
    count = rgb.shape[0]
    if policy.lab_transfer_p <= 0 or count < 2:
        return rgb
    selected = _coin(count, policy.lab_transfer_p, generator)
    offset = torch.randint(1, count, (count,), generator=generator)
    target = (torch.arange(count) + offset) % count
    return transfer_lab_statistics(rgb, target.to(rgb.device), selected.to(rgb.device))


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
    windows = lab_transfer(windows, policy, generator)  # before the jitter, which then acts on the new stain
    return colour_jitter(windows, policy, generator)


def centre_windows(crops_uint8: torch.Tensor) -> torch.Tensor:
    """Un-augmented central 78 px windows, for validation: (N, S, S, 3) uint8 -> (N, 3, 78, 78) float."""
    source_px = crops_uint8.shape[1]
    start = (source_px - RECEPTIVE_FIELD_PX) // 2
    window = crops_uint8[:, start : start + RECEPTIVE_FIELD_PX, start : start + RECEPTIVE_FIELD_PX]
    return window.permute(0, 3, 1, 2).float() / 255.0
