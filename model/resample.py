"""Detection at the networks' own pixel size: resample an image whose spacing is off, map the points back.

The networks learned mitotic figures at 0.25 um/px (`model.spacing.DEFAULT_SPACING_MM`). An image more than
`model.spacing.SPACING_TOLERANCE` away is resampled to that spacing (bilinear, Gaussian anti-aliasing when it
shrinks, each axis on its own so anisotropic pixels come out square), detected, and every point is mapped back to the
original pixel grid; its millimetre coordinates are exact because the resampled grid covers the same physical extent.
This module only resamples and maps points back: naming is the detector's (`model.candidates`), which also asks the
micrograph guard on the original pixels after upsampling (`AtModelSpacing.upsampled`).

Grid: pixel i of an axis of n pixels covers [i - 0.5, i + 0.5] (its centre is index i, as in `model.geometry`), so the
image spans n * spacing mm. Resampled to m pixels over the same extent, pixel j's centre sits at original index
(j + 0.5) * n / m - 0.5 (scipy's `zoom(..., grid_mode=True)` uses exactly this mapping). Equivalently the resampled
image has spacing s * n / m and origin origin + (s * n / m - s) / 2, which is what the detector is given.

Memory: one uint8 copy at the model's size, e.g. a 40-MP scan at 0.5 um/px becomes 160 MP = 480 MB beside the 120 MB
original; dense inference then runs tile by tile as on any image.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from model import spacing

logger = logging.getLogger(__name__)


def resample_rgb(image_rgb: np.ndarray, size_px: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> (height, width, 3) uint8 of `size_px` = (width, height) over the same extent.

    Bilinear on the pixel-area grid; an axis that shrinks is first smoothed with a Gaussian of sigma
    (1 / zoom - 1) / 2 pixels (the rule of `skimage.transform.resize`) so that detail finer than the new pixels does
    not alias. Works channel by channel in uint8: memory is the output image plus one channel.
    """
    height_px, width_px = image_rgb.shape[:2]
    new_width_px, new_height_px = size_px
    zoom_yx = (new_height_px / height_px, new_width_px / width_px)
    sigma_yx = tuple(max(0.0, (1.0 / zoom - 1.0) / 2.0) for zoom in zoom_yx)
    resampled = np.empty((new_height_px, new_width_px, image_rgb.shape[2]), dtype=np.uint8)
    for channel in range(image_rgb.shape[2]):
        plane = image_rgb[..., channel]
        if any(sigma > 0 for sigma in sigma_yx):
            plane = ndimage.gaussian_filter(plane, sigma_yx, output=np.uint8, mode="nearest")
        ndimage.zoom(plane, zoom_yx, output=resampled[..., channel], order=1, mode="nearest", grid_mode=True)
    return resampled


def original_px(resampled_xy_px: np.ndarray, scale_xy: Sequence[float]) -> np.ndarray:
    """Continuous (x, y) pixel positions on the resampled grid -> on the original grid.

    `scale_xy` is original pixels per resampled pixel per axis (n / m above): x = (u + 0.5) * n / m - 0.5.
    """
    scale = np.asarray(scale_xy, dtype=np.float64)
    return (np.asarray(resampled_xy_px, dtype=np.float64).reshape(-1, 2) + 0.5) * scale - 0.5


@dataclass(frozen=True)
class AtModelSpacing:
    """An image as the networks see it: at their pixel size, with the spacing and origin of that grid."""

    image_rgb: np.ndarray
    """The input itself when its pixel size is within tolerance, else its resampled copy."""
    spacing_mm: tuple[float, float]
    origin_mm: tuple[float, float]
    scale_xy: tuple[float, float] | None = None
    """Original pixels per resampled pixel, per axis; None when the input was not resampled."""

    @property
    def upsampled(self) -> bool:
        """Whether interpolation made pixels along some axis (noise then looks as smooth as a micrograph)."""
        return self.scale_xy is not None and any(scale < 1 for scale in self.scale_xy)

    def original_px(self, xy_px: np.ndarray) -> np.ndarray:
        """Points on this grid -> on the input's pixel grid (the points themselves when it was not resampled)."""
        return xy_px if self.scale_xy is None else original_px(xy_px, self.scale_xy)


def to_model_spacing(
    image_rgb: np.ndarray,
    spacing_mm: Sequence[float],
    origin_mm: Sequence[float] = (0.0, 0.0),
    source: str = "image",
) -> AtModelSpacing:
    """The image at the networks' spacing, with that grid's spacing and origin.

    Images within `SPACING_TOLERANCE` of 0.25 um/px pass untouched; others are resampled (one INFO line), and the
    grid's spacing and origin keep millimetre coordinates exact (module docstring).
    """
    height_px, width_px = image_rgb.shape[:2]
    if not spacing.needs_resampling(spacing_mm):
        return AtModelSpacing(image_rgb, tuple(spacing_mm), tuple(origin_mm))
    new_width_px, new_height_px = spacing.model_size_px(width_px, height_px, spacing_mm)
    logger.info(
        "%s: %s differs from the model's %s by more than %d%%: resampled %dx%d -> %dx%d px (%.0f MB) for detection",
        source,
        spacing.describe_um(spacing_mm),
        spacing.describe_um((spacing.DEFAULT_SPACING_MM, spacing.DEFAULT_SPACING_MM)),
        round(spacing.SPACING_TOLERANCE * 100),
        width_px,
        height_px,
        new_width_px,
        new_height_px,
        new_width_px * new_height_px * 3 / 1e6,
    )
    scale_xy = (width_px / new_width_px, height_px / new_height_px)
    resampled_spacing_mm = tuple(float(s) * k for s, k in zip(spacing_mm[:2], scale_xy, strict=True))
    resampled_origin_mm = tuple(
        float(o) + (sr - float(s)) / 2
        for o, s, sr in zip(origin_mm[:2], spacing_mm[:2], resampled_spacing_mm, strict=True)
    )
    resampled = resample_rgb(image_rgb, (new_width_px, new_height_px))
    return AtModelSpacing(resampled, resampled_spacing_mm, resampled_origin_mm, scale_xy)
