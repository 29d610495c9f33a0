"""Tiles of a slide whose seams are exact: every mitotic figure is found once, as on the slide read whole.

A tile is read with a margin around its core and detected like any image; only the points inside its core are
kept (half-open: a point on a seam belongs to one core). A point's result depends on the pixels within
`MARGIN_PX` of it only: its windows (78 px, `model.geometry`), the peak test among its neighbours, its partner of
the other model within the agreement radius, and the micrograph guard, with room to spare (`test/test_wsi.py`
compares a tiled slide with the same pixels detected whole). The cores are aligned to the networks' output stride,
so a tile's map cells are the whole slide's map cells; away from the margin the mirrored border of a tile is never
seen. The detector runs its exact dense path here (no screen: `wsi.detect`), whose output does not depend on where
a tile starts.

Only tiles whose core touches tissue (`wsi.tissue`) are read, so memory is one tile whatever the slide's size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from model import spacing
from model.geometry import OUTPUT_STRIDE_PX

MARGIN_PX = 192
"""Margin read around a tile's core, in pixels at the networks' 0.25 um/px: a point depends on pixels up to about
120 px away (window 39, peak neighbourhood 24, agreement radius about 30, partner's window 39); a named figure's
P(atypical) on the 128 px crop around it, 64 px away (`model.atypical`)."""
CORE_PX = 3072
"""Side of a tile's core at 0.25 um/px: 3456 px read for 3072 kept (1.27x the pixels), 36 MB of RGB."""


@dataclass(frozen=True)
class Tile:
    """One tile, in pixels of the level read: the core it answers for and the region it reads (core + margin)."""

    row: int
    col: int
    core: tuple[int, int, int, int]  # x0, y0, x1, y1 (half-open)
    read: tuple[int, int, int, int]

    @property
    def key(self) -> str:
        return f"r{self.row:04d}_c{self.col:04d}"

    def in_core(self, xy_px: np.ndarray) -> np.ndarray:
        """Which points (x, y in the level's pixels) lie in this tile's core."""
        x0, y0, x1, y1 = self.core
        xy = np.asarray(xy_px, dtype=np.float64).reshape(-1, 2)
        return (xy[:, 0] >= x0 - 0.5) & (xy[:, 0] < x1 - 0.5) & (xy[:, 1] >= y0 - 0.5) & (xy[:, 1] < y1 - 0.5)


def level_px(model_px: int, level_um: float) -> int:
    """A length in pixels at 0.25 um/px as pixels of a level of `level_um`, rounded up to the output stride."""
    level = model_px * spacing.DEFAULT_SPACING_MM * 1000 / level_um
    return int(math.ceil(level / OUTPUT_STRIDE_PX)) * OUTPUT_STRIDE_PX


def plan_tiles(
    level_size_px: tuple[int, int],
    level_um: float,
    tissue: np.ndarray | None = None,
    core_px: int = CORE_PX,
    margin_px: int = MARGIN_PX,
) -> list[Tile]:
    """Tiles covering the level (`level_size_px` = (width, height), pixel size `level_um`) whose core touches
    `tissue` (a boolean mask over the whole level at any coarser scale; None: every tile). `core_px` and
    `margin_px` are at 0.25 um/px; cores start on multiples of the output stride."""
    width_px, height_px = level_size_px
    core, margin = level_px(core_px, level_um), level_px(margin_px, level_um)
    tiles = []
    for row, y0 in enumerate(range(0, height_px, core)):
        for col, x0 in enumerate(range(0, width_px, core)):
            x1, y1 = min(x0 + core, width_px), min(y0 + core, height_px)
            if tissue is not None and not _touches(tissue, (x0, y0, x1, y1), level_size_px):
                continue
            read = (max(0, x0 - margin), max(0, y0 - margin), min(width_px, x1 + margin), min(height_px, y1 + margin))
            tiles.append(Tile(row, col, (x0, y0, x1, y1), read))
    return tiles


def _touches(tissue: np.ndarray, box: tuple[int, int, int, int], level_size_px: tuple[int, int]) -> bool:
    """Does the mask hold tissue within the box (level pixels), the box widened by one mask pixel?"""
    scale_x, scale_y = tissue.shape[1] / level_size_px[0], tissue.shape[0] / level_size_px[1]
    x0, y0, x1, y1 = box
    c0, r0 = max(0, int(x0 * scale_x) - 1), max(0, int(y0 * scale_y) - 1)
    c1, r1 = int(math.ceil(x1 * scale_x)) + 1, int(math.ceil(y1 * scale_y)) + 1
    return bool(tissue[r0:r1, c0:c1].any())
