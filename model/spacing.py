"""Pixel spacing and pixel <-> millimetre conversion: the one place that knows about physical units.

SimpleITK reports a TIFF's spacing in millimetres per pixel (0.25 um/px -> 0.00025). A TIFF without resolution tags
reads as spacing 1.0, which would silently turn every output into pixel coordinates; such images get a warning and
the MIDOG scanners' nominal 0.25 um/px instead.

Three ranges, from wide to narrow (all per axis):
- `PLAUSIBLE_SPACING_MM` (0.05 .. 5 um/px): a tag outside it is not a microscope's resolution at all (missing tags
  read as 1 mm, image editors write 72 or 300 dpi = 353 or 85 um/px): warn and assume `DEFAULT_SPACING_MM`.
- `USABLE_SPACING_MM` (0.1 .. 0.75 um/px): a real microscope resolution outside it is refused (`check_usable_spacing`).
- within `SPACING_TOLERANCE` of `DEFAULT_SPACING_MM`: the network runs on the native pixels; otherwise the image is
  resampled to `DEFAULT_SPACING_MM` first (`model.resample`) and the points are mapped back, exact in mm.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_SPACING_MM: float = 0.00025
"""0.25 um/px: the nominal 40x resolution of the MIDOG scanners, the spacing the networks were trained at, and the
spacing an image is resampled to when its own differs by more than `SPACING_TOLERANCE`."""

SPACING_TOLERANCE: float = 0.10
"""Largest relative difference |spacing / DEFAULT_SPACING_MM - 1| (per axis) run on the native pixels.

The training images themselves span 0.23-0.25 um/px (MIDOG scanners), and the training's zoom augmentation covers
-10% .. +20%, so the networks have seen mitotic figures at every scale within 10% of 0.25 um/px. Further away (a 20x
scan at 0.5 um/px shows a figure at half the size the networks learned, and the networks then miss most of them:
docs/how-it-works.md, "Other pixel sizes") the image is resampled instead."""

USABLE_SPACING_MM: tuple[float, float] = (0.0001, 0.00075)
"""0.1 .. 0.75 um/px: the resolutions the detector accepts (resampling to 0.25 um/px between them).

Recall falls with the pixel size (measured: docs/inputs-and-errors.md, "Resolution"). Beyond 0.75 um/px the
chromatin pattern that tells a mitotic figure (5-10 um) from a nucleus is no longer in the image, and upsampling
cannot put it back: the detector would return an empty or near-empty answer that looks like a low count. Below 0.1
um/px is finer than any brightfield objective resolves (about 0.25 um at 40x / NA 0.75, 0.2 um with a 100x oil
objective): such a tag is more likely wrong than a real scan."""

PLAUSIBLE_SPACING_MM: tuple[float, float] = (0.00005, 0.005)
"""0.05 .. 5 um/px: a resolution tag outside it is not a microscope's at all (missing tags, 72 dpi)."""


def resolve_spacing_mm(spacing_mm: Sequence[float], source: str = "image") -> tuple[float, float]:
    """Return (x, y) spacing in mm, replacing missing / implausible resolution tags by the default with a warning."""
    spacing_x_mm, spacing_y_mm = float(spacing_mm[0]), float(spacing_mm[1])
    low, high = PLAUSIBLE_SPACING_MM
    if not (low <= spacing_x_mm <= high and low <= spacing_y_mm <= high):
        logger.warning(
            "%s has spacing %s mm/px (no usable resolution tags); assuming %.2f um/px",
            source,
            (spacing_x_mm, spacing_y_mm),
            DEFAULT_SPACING_MM * 1000,
        )
        return DEFAULT_SPACING_MM, DEFAULT_SPACING_MM
    return spacing_x_mm, spacing_y_mm


def describe_um(spacing_mm: Sequence[float]) -> str:
    """'0.25 um/px' for square pixels, '0.25 x 0.5 um/px' (x, y) otherwise: for messages."""
    x_um, y_um = (float(value) * 1000 for value in spacing_mm[:2])
    return f"{x_um:.4g} um/px" if np.isclose(x_um, y_um, rtol=1e-6) else f"{x_um:.4g} x {y_um:.4g} um/px"


def check_usable_spacing(spacing_mm: Sequence[float]) -> None:
    """Raise ValueError (a one-line message) when a spacing lies outside `USABLE_SPACING_MM` on either axis."""
    low, high = USABLE_SPACING_MM
    if not all(low <= float(value) <= high for value in spacing_mm[:2]):
        raise ValueError(
            f"resolution {describe_um(spacing_mm)} is outside the {low * 1000:g}-{high * 1000:g} um/px this detector "
            f"can use (it was trained at {DEFAULT_SPACING_MM * 1000:g} um/px)"
        )


def needs_resampling(spacing_mm: Sequence[float]) -> bool:
    """Does either axis differ from `DEFAULT_SPACING_MM` by more than `SPACING_TOLERANCE`?"""
    return any(abs(float(value) / DEFAULT_SPACING_MM - 1.0) > SPACING_TOLERANCE for value in spacing_mm[:2])


def model_size_px(width_px: int, height_px: int, spacing_mm: Sequence[float]) -> tuple[int, int]:
    """(width, height) in pixels the detector sees: the native size, or the size at `DEFAULT_SPACING_MM` when the
    image is resampled (same physical extent, rounded to whole pixels)."""
    if not needs_resampling(spacing_mm):
        return int(width_px), int(height_px)
    return (
        max(1, int(round(width_px * float(spacing_mm[0]) / DEFAULT_SPACING_MM))),
        max(1, int(round(height_px * float(spacing_mm[1]) / DEFAULT_SPACING_MM))),
    )


def mm_from_px(xy_px: np.ndarray, spacing_mm: Sequence[float], origin_mm: Sequence[float] = (0.0, 0.0)) -> np.ndarray:
    """Physical (x, y) in mm of continuous pixel indices (x, y): index * spacing + origin (identity direction)."""
    xy_px = np.asarray(xy_px, dtype=np.float64).reshape(-1, 2)
    return xy_px * np.asarray(spacing_mm[:2], dtype=np.float64) + np.asarray(origin_mm[:2], dtype=np.float64)


def px_from_um(distance_um: float, spacing_mm: Sequence[float]) -> float:
    """A physical distance in micrometres expressed in pixels (mean of x and y spacing)."""
    return distance_um / (1000.0 * float(np.mean(spacing_mm[:2])))
