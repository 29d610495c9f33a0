"""Pixel spacing and pixel <-> millimetre conversion: the one place that knows about physical units.

SimpleITK reports a TIFF's spacing in millimetres per pixel (0.25 um/px -> 0.00025). A TIFF without resolution tags
reads as spacing 1.0, which would silently turn every output into pixel coordinates; such images get a warning and
the MIDOG scanners' nominal 0.25 um/px instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_SPACING_MM: float = 0.00025
"""0.25 um/px, the nominal 40x resolution of the MIDOG scanners."""

_PLAUSIBLE_SPACING_MM = (0.00005, 0.005)  # 0.05 .. 5 um/px: anything else is not a microscopy resolution tag


def resolve_spacing_mm(spacing_mm: Sequence[float], source: str = "image") -> tuple[float, float]:
    """Return (x, y) spacing in mm, replacing missing / implausible resolution tags by the default with a warning."""
    spacing_x_mm, spacing_y_mm = float(spacing_mm[0]), float(spacing_mm[1])
    low, high = _PLAUSIBLE_SPACING_MM
    if not (low <= spacing_x_mm <= high and low <= spacing_y_mm <= high):
        logger.warning(
            "%s has spacing %s mm/px (no usable resolution tags); assuming %.2f um/px",
            source,
            (spacing_x_mm, spacing_y_mm),
            DEFAULT_SPACING_MM * 1000,
        )
        return DEFAULT_SPACING_MM, DEFAULT_SPACING_MM
    return spacing_x_mm, spacing_y_mm


def mm_from_px(xy_px: np.ndarray, spacing_mm: Sequence[float], origin_mm: Sequence[float] = (0.0, 0.0)) -> np.ndarray:
    """Physical (x, y) in mm of continuous pixel indices (x, y): index * spacing + origin (identity direction)."""
    xy_px = np.asarray(xy_px, dtype=np.float64).reshape(-1, 2)
    return xy_px * np.asarray(spacing_mm[:2], dtype=np.float64) + np.asarray(origin_mm[:2], dtype=np.float64)


def px_from_um(distance_um: float, spacing_mm: Sequence[float]) -> float:
    """A physical distance in micrometres expressed in pixels (mean of x and y spacing)."""
    return distance_um / (1000.0 * float(np.mean(spacing_mm[:2])))
