"""Where the network looks: receptive field, output stride and how map cells map to image pixels.

One place for these facts. The network (`model.architecture`) is checked against them at construction time, dense
inference derives its tile overlap from them, and candidates are converted to pixel positions with them.

Dense maps are computed on the image mirrored by `BORDER_PAD_PX` on every side (numpy "reflect"), so that a
mitosis at the very edge still has a window centred on it. A map cell ``(row, col)`` is the network's output for
the window of the padded image whose top-left pixel is ``(row * OUTPUT_STRIDE_PX, col * OUTPUT_STRIDE_PX)`` and whose
size is ``RECEPTIVE_FIELD_PX`` squared. Its centre, in continuous coordinates of the original image (pixel ``i``
covers ``[i - 0.5, i + 0.5]``), is at ``index * OUTPUT_STRIDE_PX + WINDOW_CENTRE_PX - BORDER_PAD_PX``: every 8 px
from 6.5 (7 px inside the image's first edge) to within 15 px of its last edge.

`Grid` carries the same two numbers (receptive field, stride) for any dense network: the P4 models' grid is
`P4_GRID`; the screen (`model.screen`) derives its own from its layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RECEPTIVE_FIELD_PX: int = 78
"""Side of the square window the network scores (the paper's 78x78)."""

OUTPUT_STRIDE_PX: int = 8
"""Distance in input pixels between two neighbouring cells of the dense probability map."""

WINDOW_CENTRE_PX: float = (RECEPTIVE_FIELD_PX - 1) / 2
"""Centre of a window relative to its first pixel: 38.5 for 78 px (between the two middle pixels)."""

BORDER_PAD_PX: int = (RECEPTIVE_FIELD_PX // 2) // OUTPUT_STRIDE_PX * OUTPUT_STRIDE_PX
"""Mirrored margin around the image: half the receptive field rounded down to the stride (32 px), so windows are
centred up to 6.5 px from every edge, and every window of the unpadded image keeps its place on the stride grid (the
models are sensitive to the grid's phase: see `model/weights/README.md`, "Limits")."""

BORDER_STRIP_PX: int = RECEPTIVE_FIELD_PX // 2
"""Width of the image's border strip: a window centred closer than this (39 px) to an edge reaches past it and sees
mirrored pixels. A half nucleus cut by the edge and mirrored looks like a whole, round, dark nucleus centred in the
window; training therefore draws negatives in this strip cut the same way (`training.data.sources`, kind "border"),
and validation reports false positives per mm2 in the strip and in the interior separately."""

NEAREST_CENTRE_PX: float = WINDOW_CENTRE_PX - BORDER_PAD_PX
"""Distance from the image's first pixel to the nearest window centre of the dense map (6.5 px)."""


def distance_to_border_px(xy_px: np.ndarray, height_px: int, width_px: int) -> np.ndarray:
    """Distance (px) of points (x, y) to the nearest image edge (pixel centres 0 .. size - 1)."""
    xy = np.asarray(xy_px, dtype=np.float64).reshape(-1, 2)
    return np.minimum.reduce([xy[:, 0], xy[:, 1], width_px - 1 - xy[:, 0], height_px - 1 - xy[:, 1]])


def in_border_strip(xy_px: np.ndarray, height_px, width_px) -> np.ndarray:
    """Which points (x, y) lie in the border strip (`BORDER_STRIP_PX`); the image size may be one per point."""
    return distance_to_border_px(xy_px, height_px, width_px) < BORDER_STRIP_PX


@dataclass(frozen=True)
class Grid:
    """Where a dense network's map cells sit: window side and distance between neighbouring windows, in pixels."""

    receptive_field_px: int
    stride_px: int

    def map_shape(self, height_px: int, width_px: int) -> tuple[int, int]:
        """Cells of the map of an input of this size: one per full window whose origin is on the stride grid."""
        if height_px < self.receptive_field_px or width_px < self.receptive_field_px:
            raise ValueError(
                f"input of {width_px}x{height_px} px is smaller than the {self.receptive_field_px} px receptive field"
            )
        return (
            (height_px - self.receptive_field_px) // self.stride_px + 1,
            (width_px - self.receptive_field_px) // self.stride_px + 1,
        )


P4_GRID = Grid(RECEPTIVE_FIELD_PX, OUTPUT_STRIDE_PX)


def map_shape(height_px: int, width_px: int, pad_px: int = BORDER_PAD_PX) -> tuple[int, int]:
    """Shape of the P4 models' dense map of an image mirrored by `pad_px` on every side."""
    if pad_px and min(height_px, width_px) <= pad_px:
        raise ValueError(
            f"image of {width_px}x{height_px} px is too small to be mirrored by {pad_px} px: at least "
            f"{pad_px + 1} px per side"
        )
    return P4_GRID.map_shape(height_px + 2 * pad_px, width_px + 2 * pad_px)


def pixel_from_map_index(index: np.ndarray, pad_px: int = BORDER_PAD_PX) -> np.ndarray:
    """Pixel coordinates (continuous, same axis order as given) of the window centres of map cells, in the image
    before mirroring."""
    return np.asarray(index, dtype=np.float64) * OUTPUT_STRIDE_PX + WINDOW_CENTRE_PX - pad_px
