"""Where the network looks: receptive field, output stride and how map cells map to image pixels.

One place for these facts. The network (`model.architecture`) is checked against them at construction time, dense
inference derives its tile overlap from them, and candidates are converted to pixel positions with them.

A map cell ``(row, col)`` is the network's output for the input window whose top-left pixel is
``(row * OUTPUT_STRIDE_PX, col * OUTPUT_STRIDE_PX)`` and whose size is ``RECEPTIVE_FIELD_PX`` squared. The window's
centre, in continuous pixel coordinates where pixel ``i`` covers ``[i - 0.5, i + 0.5]``, is at
``index * OUTPUT_STRIDE_PX + WINDOW_CENTRE_PX``.
"""

from __future__ import annotations

import numpy as np

RECEPTIVE_FIELD_PX: int = 78
"""Side of the square window the network scores (the paper's 78x78)."""

OUTPUT_STRIDE_PX: int = 8
"""Distance in input pixels between two neighbouring cells of the dense probability map."""

WINDOW_CENTRE_PX: float = (RECEPTIVE_FIELD_PX - 1) / 2
"""Centre of a window relative to its first pixel: 38.5 for 78 px (between the two middle pixels)."""

TILE_OVERLAP_PX: int = RECEPTIVE_FIELD_PX - OUTPUT_STRIDE_PX
"""Overlap of neighbouring tiles so that every window of the whole image lies entirely inside one tile."""


def map_shape(height_px: int, width_px: int) -> tuple[int, int]:
    """Shape of the dense map of an image: one cell per full window whose origin is on the stride grid."""
    if height_px < RECEPTIVE_FIELD_PX or width_px < RECEPTIVE_FIELD_PX:
        raise ValueError(
            f"image of {width_px}x{height_px} px is smaller than the {RECEPTIVE_FIELD_PX} px receptive field"
        )
    return (
        (height_px - RECEPTIVE_FIELD_PX) // OUTPUT_STRIDE_PX + 1,
        (width_px - RECEPTIVE_FIELD_PX) // OUTPUT_STRIDE_PX + 1,
    )


def pixel_from_map_index(index: np.ndarray) -> np.ndarray:
    """Pixel coordinates (continuous, same axis order as given) of the window centres of map cells."""
    return np.asarray(index, dtype=np.float64) * OUTPUT_STRIDE_PX + WINDOW_CENTRE_PX
