"""Which windows each network must score: the screen decides where model A looks, model A where model B looks.

Every output point is one of model A's candidates (`model.candidates.agree`), merged with its partner among B's
candidates when there is one within the agreement radius, and scored with the lower of the two probabilities. So B's
map enters the output in two ways only, both near A's candidates (`cells_for_model_b`):

* a partner: a B peak within the agreement radius of an A candidate;
* an A candidate left alone: B's value at the A candidate's own cell.

Both lie in the square of whole cells the agreement radius spans around the A candidate, and the point's probability
is at most B's maximum there. So B is scored in two steps: first on those squares; an A candidate whose square never
reaches the floor cannot make a point (nor take a partner, since B's candidates start at the floor) and is dropped
(`b_reaches_floor`); B's peak margin is then added around the others only.

Whether a cell of B is a peak depends on B over the (2 n + 1)^2 cells around it (n = `min_distance_cells`). So B
scored on A's candidate cells grown by the agreement radius plus n gives the same points, names and probabilities as
B scored everywhere. One exception is left: skimage keeps one of two peaks of exactly equal value closer than n cells,
so a plateau of identical probabilities wider than the margin could resolve differently (none on the validation
fields: `test/test_cascade.py`).

Where a map is computed in part, a cell is a peak of the true map only if its whole neighbourhood was computed:
`trusted_cells` says where (uncomputed cells are 0, below every probability, so they can make a false peak at the
edge of the computed part but never hide a true one).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from model.geometry import OUTPUT_STRIDE_PX


def cells_near(mask: np.ndarray, radius_cells: int) -> np.ndarray:
    """Cells within `radius_cells` (Chebyshev: a (2 r + 1)^2 square) of a cell of the boolean `mask`."""
    if radius_cells <= 0 or not mask.any():
        return mask.copy()
    return ndimage.maximum_filter(mask.astype(np.uint8), size=2 * radius_cells + 1, mode="constant", cval=0) > 0


def trusted_cells(computed: np.ndarray, min_distance_cells: int) -> np.ndarray:
    """Cells whose peak test (`model.candidates.local_maxima`) saw only computed cells; beyond the map's edge counts as
    computed, as skimage's maximum filter repeats the edge there."""
    return ndimage.minimum_filter(computed.astype(np.uint8), size=2 * min_distance_cells + 1, mode="nearest") > 0


def partner_cells(agreement_radius_px: float) -> int:
    """Whole map cells a partner can be away from an A candidate along each axis."""
    return int(np.floor(agreement_radius_px / OUTPUT_STRIDE_PX))


def b_reaches_floor(map_b: np.ndarray, cells: np.ndarray, agreement_radius_px: float, floor: float) -> np.ndarray:
    """For each A candidate cell (row, col): does B reach `floor` anywhere in its partner square?"""
    if not len(cells):
        return np.zeros(0, dtype=bool)
    square_max = ndimage.maximum_filter(map_b, size=2 * partner_cells(agreement_radius_px) + 1, mode="nearest")
    return square_max[cells[:, 0], cells[:, 1]] >= floor


def cells_for_model_b(
    candidate_cells: np.ndarray, map_shape: tuple[int, int], agreement_radius_px: float, min_distance_cells: int
) -> np.ndarray:
    """Cells of model B the output depends on: A's candidate cells (row, col), grown by the agreement radius (in whole
    cells a partner can be away) plus the peak neighbourhood. See the module docstring for why this is exact."""
    mask = np.zeros(map_shape, dtype=bool)
    if len(candidate_cells):
        mask[candidate_cells[:, 0], candidate_cells[:, 1]] = True
    return cells_near(mask, partner_cells(agreement_radius_px) + min_distance_cells)
