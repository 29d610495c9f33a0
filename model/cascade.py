"""Which windows each network must score: the screen decides where model A looks, model A where model B looks.

Every output point is one of model A's candidates (`model.candidates.agree`), merged with its partner among B's
candidates when there is one within the agreement radius, and scored with the lower of the two probabilities. So B's
map enters the output in two ways only, both near A's candidates (`cells_for_model_b`):

* a partner: a B peak within the agreement radius of an A candidate;
* an A candidate left alone: B's value at the A candidate's own cell.

Both lie in the square of whole cells the agreement radius spans around the A candidate, and the point's probability
is at most B's maximum there. So B is scored in two steps: first on those squares; an A candidate whose square never
reaches the floor cannot make a point (nor take a partner, since B's candidates start at the floor) and is dropped
(`b_reaches_floor`). Second, B's peak margin, but only around the cells that could still be partners
(`peak_margin_cells`).

Whether a cell of B is a peak depends on B over the (2 n + 1)^2 cells around it (n = `min_distance_cells`). After the
first step every partner a kept A candidate can have was scored (it lies in the candidate's square); its peak test
only lacks the uncomputed cells of its neighbourhood. Uncomputed cells count as 0, below every probability, so a
true peak is also a peak of the part computed so far: scoring the neighbourhoods of the cells above the floor that
are peaks so far, in the kept candidates' squares and not yet trusted, completes every partner's test and gives the
same points, names and probabilities as B scored everywhere, at an eighth of the margin that growing every square by n
would score (docs/performance.md). One exception is left: skimage keeps one of two peaks of exactly equal value
closer than n cells, so a plateau of identical probabilities wider than the margin could resolve differently (none
on the validation fields: `test/test_cascade.py`).

Where a map is computed in part, a cell is a peak of the true map only if its whole neighbourhood was computed:
`trusted_cells` says where (uncomputed cells are 0, below every probability, so they can make a false peak at the
edge of the computed part but never hide a true one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from model import spacing
from model.candidates import (
    Candidates,
    EnsembleDetections,
    agree,
    local_maxima,
    min_distance_cells,
    with_neighbourhood,
)
from model.geometry import OUTPUT_STRIDE_PX

if TYPE_CHECKING:  # reading a bundle's fields needs no torch
    from model.bundle import Bundle


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


def peak_margin_cells(
    values: np.ndarray, computed: np.ndarray, where: np.ndarray, min_distance_cells: int, floor: float
) -> np.ndarray:
    """The uncomputed cells still needed to finish the peak tests of a part-computed map in the mask `where`.

    A true peak above `floor` in `where` (all computed) is also the maximum of its neighbourhood among the cells
    computed so far (`values` is 0 elsewhere); such cells not yet trusted (`trusted_cells`) need the rest of their
    neighbourhood. Used for model B's second step (the module docstring says why it is exact) and by
    `benchmarks/gating_ceiling.py` for the other order."""
    peak_so_far = values >= ndimage.maximum_filter(values, size=2 * min_distance_cells + 1, mode="nearest")
    possible = where & computed & (values > floor) & peak_so_far & ~trusted_cells(computed, min_distance_cells)
    return cells_near(possible, min_distance_cells) & ~computed


PART_TILE_CELLS = {"A": 24, "B": 12}
"""Map cells per tile side where only part of a map is scored (the cascade), per model: A's cells come in patches
(262 px tiles), B's are scattered squares around A's candidates (166 px tiles): each model's size is the fastest
for its pattern (docs/performance.md, "Tile and batch settings")."""
PART_FITTED_TILES = {"A": False, "B": True}
"""Tiles fitted to the wanted cells (`model.dense.tiles_holding`) or the fixed grid's tiles holding them. B's
output is exact whatever B scores beyond its wanted cells (module docstring), so B takes the cheaper fitted tiles.
A keeps the fixed grid: which of A's candidates are trusted depends on every cell A scored, and the screen's
threshold was chosen with the grid's cells (docs/performance.md, "Tile and batch settings")."""
FULL_MAP_SHARE = 0.5
"""When the tiles holding a model's wanted cells would cover more than this share of its map, it scores the whole
map instead, in the full map's larger tiles: on tissue B's tiles cover most of the image, and scattered small tiles
cost more per window than the full map's (docs/performance.md, "Tile and batch settings"). The points stay exact: a
full map computes every cell a partial one would."""
PART_BATCH_TILES = {"A": 4, "B": 16}
"""Tiles of that size scored per forward call (16 per call on a GPU)."""
CUDA_TILE_CELLS = 128
"""On a GPU, big tiles and big batches: small tiles only add kernel launches there (docs/performance.md)."""
CUDA_PART_BATCH_TILES = 16


MapOf = Callable[[np.ndarray | None], tuple[np.ndarray, np.ndarray | None]]
"""cells mask (None: everywhere) -> (a P4 model's map, 0 where not scored; the cells scored, None: all)."""


def cascade_points(
    bundle: Bundle,
    spacing_mm: Sequence[float],
    map_a_of: MapOf,
    map_b_of: MapOf,
    passing: np.ndarray | None,
    full_maps: bool = False,
) -> tuple[Candidates, Candidates, EnsembleDetections]:
    """The cascade (`model.cascade`): A on the cells the screen passes (`passing`; None: everywhere), its candidates
    where trusted, B around them (everywhere with `full_maps`), and their agreement. The maps come from `map_*_of`, so
    the screen's threshold can be chosen by replaying this very function on full maps (`training.screen`)."""
    min_distance_px = spacing.px_from_um(bundle.candidate_min_distance_um, spacing_mm)
    md_cells = min_distance_cells(min_distance_px)
    radius_px = spacing.px_from_um(bundle.agreement_radius_um, spacing_mm)
    floor = bundle.candidate_floor

    def trusted(computed: np.ndarray | None) -> np.ndarray | None:
        return None if computed is None else trusted_cells(computed, md_cells)

    map_a, computed_a = map_a_of(None if passing is None else cells_near(passing, md_cells))
    candidates_a = local_maxima(map_a, min_distance_px, floor, trusted(computed_a))
    squares = cells_for_model_b(candidates_a.cells, map_a.shape, radius_px, 0)
    if full_maps or full_map_pays(part_tiles(squares, "B")):
        map_b, computed_b = map_b_of(None)  # B wanted over most of the image: its whole map costs less
    else:  # B in two steps: around every A candidate, then the peak margin of the possible partners only
        map_b, computed_b = map_b_of(squares)
        candidates_a = candidates_a.subset(b_reaches_floor(map_b, candidates_a.cells, radius_px, floor))
        partners = cells_for_model_b(candidates_a.cells, map_a.shape, radius_px, 0)
        wanted = peak_margin_cells(map_b, computed_b, partners, md_cells, floor)
        if wanted.any():
            more_b, more_computed = map_b_of(wanted)
            map_b, computed_b = np.where(computed_b, map_b, more_b), computed_b | more_computed
    candidates_b = local_maxima(map_b, min_distance_px, floor, trusted(computed_b))
    merged = with_neighbourhood(agree(candidates_a, candidates_b, map_b, radius_px), map_a, map_b)
    return candidates_a, candidates_b, merged


def part_tiles(cells: np.ndarray, role: str) -> np.ndarray:
    """The cells model `role`'s part tiles compute when asked for `cells` (`model.dense.covered_cells`)."""
    from model.dense import covered_cells  # torch: only where maps are computed

    return covered_cells(cells, PART_TILE_CELLS[role], PART_FITTED_TILES[role])


def full_map_pays(covered: np.ndarray) -> bool:
    """Would part tiles computing `covered` (`part_tiles`) cover more than `FULL_MAP_SHARE` of the map?"""
    return bool(covered.mean() > FULL_MAP_SHARE)
