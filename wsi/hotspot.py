"""The mitotic hotspot of a slide, and the Nottingham mitotic score of its count.

Pathologists count mitoses in the most active area of a tumour, a fixed area (10 high-power fields). On a whole
slide that area is a circle: the circle of the given area that holds the most mitotic figures. `densest_circle`
finds it exactly, not on a grid, because a grid can miss the optimum by a figure or two and the score's cut-offs
are counts: one figure can change a grade.

Sources:
- Elston CW, Ellis IO. Pathological prognostic factors in breast cancer. I. The value of histological grade in
  breast cancer: experience from a large study with long-term follow-up. Histopathology 1991;19:403-410. Table 2
  gives the mitotic cut-offs per field diameter; for 10 fields of 0.59 mm (0.274 mm2 each): 0-9, 10-19, >=20.
- Meuten DJ, Moore FM, George JW. Mitotic count and the field of view area: time to standardize. Vet Pathol
  2016;53(1):7-9. The veterinary mitotic count is the count in 2.37 mm2 (10 fields of a field-number-22 ocular
  with a 40x objective); its cut-offs depend on the tumour type, so only the count is given.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

ELSTON_ELLIS_AREA_MM2 = 2.74
"""10 high-power fields of 0.274 mm2 each (field diameter 0.59 mm), the area Elston & Ellis's cut-offs are for."""
ELSTON_ELLIS_CUTOFFS = (10, 20)
"""Mitoses in `ELSTON_ELLIS_AREA_MM2` at which the score becomes 2, then 3."""
DEFAULT_HOTSPOT_MM2 = 2.0
"""The hotspot area most digital-pathology studies report (about 10 fields of 0.50 mm diameter)."""
VETERINARY_HOTSPOT_MM2 = 2.37
"""Meuten et al. (2016): 10 fields of a field-number-22 ocular with a 40x objective (field diameter 0.55 mm)."""
MAX_ANNOTATED_DENSITY_PER_MM2 = 98.0
"""The densest region the MIDOG datasets annotate: 239 mitotic figures in image 548 of MIDOG++ (7215 x 5412 px at
0.25 um/px, 2.44 mm2), the most of its 553 regions and of MIDOG 2021's 200 (at most 82). A hotspot denser than this
is far more likely a detector naming ordinary nuclei (a stain, tissue or scan it was not trained on) than a tumour:
`wsi.count` says so in the slide's summary."""

BOUNDARY_TOLERANCE_MM = 1e-9
"""A point this far outside the circle still counts: points on the boundary are inside despite rounding."""

_SLACK_MM = 1e-7
"""Search boxes are widened by this much: a centre computed from two points is off by ~1e-8 mm at worst (tangent
circles), and must still fall in a box that knows both points."""
_LEAF_POINTS = 48
"""A box is solved exactly once at most this many points are undecided in it (neither surely in nor surely out of
every circle centred in the box): at most 48 * 47 candidate centres, each counted against 48 points."""
_MIN_BOX_MM = 1e-6
"""Boxes are not split below this side (many points on one circle would otherwise never become few)."""
_CHUNK_ELEMENTS = 1 << 22
"""Candidate-by-point distance matrices are built in pieces of at most this many elements (32 MiB of float64)."""


@dataclass(frozen=True)
class Hotspot:
    """The densest circle: its centre (x, y) and radius in mm, its area in mm2 and the points it holds."""

    center_mm: tuple[float, float]
    radius_mm: float
    area_mm2: float
    count: int

    def holds(self, points_mm: np.ndarray) -> np.ndarray:
        """Which of `points_mm` (N, 2) the circle counts, by `densest_circle`'s rule (within radius +
        `BOUNDARY_TOLERANCE_MM`): of the points it was found on, `holds(points).sum() == count`, so a subset of them
        (the atypical figures) is counted inside the same circle."""
        points = np.asarray(points_mm, dtype=np.float64).reshape(-1, 2)
        squared = ((points - np.asarray(self.center_mm, dtype=np.float64)[None, :]) ** 2).sum(axis=1)
        return squared <= (self.radius_mm + BOUNDARY_TOLERANCE_MM) ** 2


def hpf_area_mm2(field_diameter_mm: float, fields: int = 10) -> float:
    """Area of `fields` circular high-power fields of the given diameter: 10 fields of 0.59 mm are 2.73 mm2 (Elston
    & Ellis round it to 2.74), of 0.50 mm 1.96 mm2, of 0.55 mm (FN 22, 40x) 2.38 mm2 (Meuten et al.: 2.37)."""
    if not (math.isfinite(field_diameter_mm) and field_diameter_mm > 0):
        raise ValueError(f"field_diameter_mm must be positive, got {field_diameter_mm}")
    if fields < 1:
        raise ValueError(f"fields must be at least 1, got {fields}")
    return fields * math.pi * (field_diameter_mm / 2) ** 2


def nottingham_mitotic_score(count: int, area_mm2: float) -> int:
    """The mitotic component (1, 2 or 3) of the Nottingham grade for `count` mitoses in `area_mm2`.

    Elston & Ellis (1991) give cut-offs of 10 and 20 mitoses in 10 fields of 0.274 mm2 (2.74 mm2); a count in
    another area is scaled to 2.74 mm2 first (`count * 2.74 / area_mm2`). That reproduces their table for other
    microscopes, e.g. 10 fields of 0.50 mm diameter (1.96 mm2): 0-7 -> 1, 8-14 -> 2, >=15 -> 3, and the same
    cut-offs for the 2 mm2 of `DEFAULT_HOTSPOT_MM2`.
    """
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    if not (math.isfinite(area_mm2) and area_mm2 > 0):
        raise ValueError(f"area_mm2 must be positive, got {area_mm2}")
    # count * 2.74 / area >= cut-off, multiplied out; the relative 1e-12 keeps an exact cut-off from rounding down
    scaled = count * ELSTON_ELLIS_AREA_MM2 * (1 + 1e-12)
    return 1 + sum(scaled >= cutoff * area_mm2 for cutoff in ELSTON_ELLIS_CUTOFFS)


def densest_circle(
    points_mm: np.ndarray, area_mm2: float, on_tissue: Callable[[np.ndarray], np.ndarray] | None = None
) -> Hotspot | None:
    """The circle of area `area_mm2` that holds the most of `points_mm` (N, 2), exactly.

    A point counts when its distance to the centre is at most radius + `BOUNDARY_TOLERANCE_MM`. An optimal circle
    can be moved until its boundary passes through two points (or, holding one point, centred on it), so the
    optimum is among these candidate centres: every point, and both intersections of the radius-r circles around
    every two points at most 2r apart. `on_tissue(centres_mm (M, 2)) -> bool (M,)` removes candidates (the hotspot
    must lie on tissue); equal counts go to the lowest y, then the lowest x, of the centre. Returns None when there
    is no point or no candidate on tissue. Every copy of a repeated point counts.

    Enumerating all candidates is O(n^2) pairs when the points crowd into one 2r disc (50,000 points in 2 mm2:
    1.25e9 pairs), so the candidates are searched branch-and-bound over boxes of centres instead. For a box, a point
    is surely in every circle centred in the box (farthest box corner within r), surely out of every one (nearest
    box point beyond r) or undecided; the circles of the box hold at most (surely in) + (undecided) points. Boxes
    are split in four, highest bound first, until few points are undecided; then the box's candidates (pairs of
    undecided points, points inside the box) are counted exactly, and boxes whose bound cannot beat the best count
    are dropped. The undecided points lie in a ring about one box side wide, so splitting halves them.

    Complexity: boxes start at side r over the n points' neighbourhood (O(n log n) to build and order); a box is
    solved in O(`_LEAF_POINTS`^2 * `_LEAF_POINTS`) and split in O(undecided points). Sparse points are solved in
    the first boxes; dense ones need about log2(rho * r^2 / `_LEAF_POINTS`) splits (density rho per mm2) only
    where the bound reaches the best count, near the optimum. Measured on 2 shared CPU cores: 50,000 points in a
    Gaussian blob (sd 0.75 mm) 0.9 s, 50,000 uniform in 4 mm2 2 s, 100,000 uniform in 300 mm2 3.6 s. Worst case
    O(n^2), like the enumeration: where `on_tissue` rejects the best centres, every box whose bound beats the best
    count on tissue is solved before its candidates are seen to be off tissue (5,000 points in a 1 mm2 blob cut in
    half by the tissue edge: 8 s; all off tissue: 30 s). Memory: O(n) per open box at the top levels, a few MiB
    per solved box.
    """
    points = np.asarray(points_mm, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points_mm must have shape (N, 2), got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("points_mm must be finite")
    if not (math.isfinite(area_mm2) and area_mm2 > 0):
        raise ValueError(f"area_mm2 must be positive, got {area_mm2}")
    if len(points) == 0:
        return None
    radius_mm = math.sqrt(area_mm2 / math.pi)
    unique_mm, weight = np.unique(points, axis=0, return_counts=True)
    found = _BranchAndBound(unique_mm, weight, radius_mm, on_tissue).run()
    if found is None:
        return None
    count, y_mm, x_mm = found
    return Hotspot(center_mm=(x_mm, y_mm), radius_mm=radius_mm, area_mm2=float(area_mm2), count=count)


def _pair_centres(first_mm: np.ndarray, second_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    """(2K, 2) centres of the radius-r circles through each of K pairs of distinct points at most 2r apart."""
    delta = second_mm - first_mm
    distance = np.hypot(delta[:, 0], delta[:, 1])
    keep = (distance > 0) & (distance <= 2 * radius_mm)
    delta, distance, middle = delta[keep], distance[keep], (first_mm[keep] + second_mm[keep]) / 2
    offset = np.sqrt(np.maximum(radius_mm**2 - (distance / 2) ** 2, 0.0)) / distance
    normal = np.stack([-delta[:, 1], delta[:, 0]], axis=1) * offset[:, None]
    return np.concatenate([middle + normal, middle - normal])


@dataclass
class _Box:
    """Centres in [x0, x1] x [y0, y1] (widened by `_SLACK_MM`): the points in every circle around them (`sure`,
    a summed weight), the most any of these circles can hold (`bound`), the undecided points (`undecided`,
    indices) and the points inside the box (`inside`)."""

    x0: float
    y0: float
    x1: float
    y1: float
    sure: int
    bound: int
    undecided: np.ndarray
    inside: np.ndarray


class _BranchAndBound:
    """State of one `densest_circle` search: the unique points, their multiplicities and the best found so far."""

    def __init__(self, xy_mm: np.ndarray, weight: np.ndarray, radius_mm: float, on_tissue: Callable | None) -> None:
        self.xy_mm, self.weight, self.radius_mm, self.on_tissue = xy_mm, weight.astype(np.int64), radius_mm, on_tissue
        self.counted_mm2 = (radius_mm + BOUNDARY_TOLERANCE_MM) ** 2
        self.outside_mm2 = (radius_mm + _SLACK_MM) ** 2
        self.sure_mm2 = (radius_mm - _SLACK_MM) ** 2 if radius_mm > _SLACK_MM else -1.0
        self.best: tuple[int, float, float] | None = None  # (count, y, x)
        self._serial = 0

    def run(self) -> tuple[int, float, float] | None:
        heap = self._top_boxes()
        while heap:
            bound, y0, _, _, item = heapq.heappop(heap)
            bound = -bound
            if self.best is not None:
                if bound < self.best[0]:
                    break  # the heap is ordered by bound: nothing left can reach the best count
                if bound == self.best[0] and y0 - _SLACK_MM > self.best[1]:
                    continue  # it could only tie, at a higher y
            if isinstance(item, tuple):  # a top box, first taken: its exact state goes back with its exact bound
                self._push(heap, self._top_box(*item))
            elif len(item.undecided) <= _LEAF_POINTS or max(item.x1 - item.x0, item.y1 - item.y0) <= _MIN_BOX_MM:
                self._solve(item)
            else:
                for child in self._split(item):
                    self._push(heap, child)
        return self.best

    def _push(self, heap: list, box: _Box) -> None:
        if self.best is None or box.bound >= self.best[0]:
            self._serial += 1
            heapq.heappush(heap, (-box.bound, box.y0, box.x0, self._serial, box))

    def _top_boxes(self) -> list:
        """Boxes of side r over every centre within r of a point, with a loose bound (the points of the 5 x 5 bins
        around it, which hold every point within r of the box); their exact state is computed when first taken."""
        side = self.radius_mm
        self.origin_mm = self.xy_mm.min(axis=0)
        bins = np.floor((self.xy_mm - self.origin_mm) / side).astype(np.int64) + 2  # >= 2: neighbours stay >= 0
        self.stride = int(bins[:, 1].max()) + 3
        if (int(bins[:, 0].max()) + 3) * self.stride >= 2**62:
            raise ValueError("points_mm spread over too many hotspot radii")
        keys = bins[:, 0] * self.stride + bins[:, 1]
        self.order = np.argsort(keys, kind="stable")
        self.bin_keys, self.bin_start, bin_points = np.unique(keys[self.order], return_index=True, return_counts=True)
        self.bin_end = self.bin_start + bin_points
        bin_weight = np.add.reduceat(self.weight[self.order], self.bin_start)

        def offsets(reach: int) -> np.ndarray:
            steps = np.arange(-reach, reach + 1)
            return (steps[:, None] * self.stride + steps[None, :]).ravel()

        top_keys = np.unique((self.bin_keys[:, None] + offsets(1)[None, :]).ravel())
        bound = np.zeros(len(top_keys), dtype=np.int64)
        for offset in offsets(2):
            position, found = self._find_bins(top_keys + offset)
            bound[found] += bin_weight[position[found]]
        heap = []
        for key, key_bound in zip(top_keys.tolist(), bound.tolist(), strict=True):
            column, row = divmod(key, self.stride)
            self._serial += 1
            x0, y0 = self.origin_mm[0] + (column - 2) * side, self.origin_mm[1] + (row - 2) * side
            heap.append((-key_bound, y0, x0, self._serial, (column, row)))
        heapq.heapify(heap)
        return heap

    def _find_bins(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        position = np.minimum(np.searchsorted(self.bin_keys, keys), len(self.bin_keys) - 1)
        return position, self.bin_keys[position] == keys

    def _top_box(self, column: int, row: int) -> _Box:
        side = self.radius_mm
        x0, y0 = self.origin_mm[0] + (column - 2) * side, self.origin_mm[1] + (row - 2) * side
        keys = np.array([(column + dx) * self.stride + row + dy for dx in range(-2, 3) for dy in range(-2, 3)])
        position, found = self._find_bins(keys)
        near = [self.order[self.bin_start[p] : self.bin_end[p]] for p in position[found]]
        near = np.concatenate(near)
        return self._boxes(np.array([[x0, y0, x0 + side, y0 + side]]), 0, near, near)[0]

    def _boxes(self, corners_mm: np.ndarray, sure: int, candidates: np.ndarray, inside: np.ndarray) -> list[_Box]:
        """The state of B boxes (`corners_mm` (B, 4): x0, y0, x1, y1) inside one parent, from the parent's surely-in
        weight, its undecided points (`candidates`) and its points inside (`inside`), all boxes at once."""
        low_x, low_y = corners_mm[:, :1] - _SLACK_MM, corners_mm[:, 1:2] - _SLACK_MM  # (B, 1) against (1, K)
        high_x, high_y = corners_mm[:, 2:3] + _SLACK_MM, corners_mm[:, 3:4] + _SLACK_MM
        x, y = self.xy_mm[candidates, 0][None, :], self.xy_mm[candidates, 1][None, :]
        near_x = np.maximum(np.maximum(low_x - x, x - high_x), 0.0)
        near_y = np.maximum(np.maximum(low_y - y, y - high_y), 0.0)
        far_x = np.maximum(np.abs(x - low_x), np.abs(x - high_x))
        far_y = np.maximum(np.abs(y - low_y), np.abs(y - high_y))
        surely_in = far_x**2 + far_y**2 < self.sure_mm2
        undecided = ~surely_in & (near_x**2 + near_y**2 <= self.outside_mm2)
        weight = self.weight[candidates]
        surely_in_weight, undecided_weight = surely_in @ weight, undecided @ weight
        x, y = self.xy_mm[inside, 0][None, :], self.xy_mm[inside, 1][None, :]
        within = (x >= low_x) & (x <= high_x) & (y >= low_y) & (y <= high_y)
        return [
            _Box(
                *corners_mm[index].tolist(),
                sure=sure + int(surely_in_weight[index]),
                bound=sure + int(surely_in_weight[index] + undecided_weight[index]),
                undecided=candidates[undecided[index]],
                inside=inside[within[index]],
            )
            for index in range(len(corners_mm))
        ]

    def _split(self, box: _Box) -> list[_Box]:
        middle_x, middle_y = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
        corners_mm = np.array(
            [
                (x0, y0, x1, y1)
                for y0, y1 in ((box.y0, middle_y), (middle_y, box.y1))
                for x0, x1 in ((box.x0, middle_x), (middle_x, box.x1))
            ]
        )
        return self._boxes(corners_mm, box.sure, box.undecided, box.inside)

    def _solve(self, box: _Box) -> None:
        """Count every candidate centre of the box exactly and keep the best."""
        xy = self.xy_mm[box.undecided]
        if len(xy) <= _LEAF_POINTS:
            first, second = np.triu_indices(len(xy), k=1)
        else:  # a box at the smallest size that still has many undecided points
            first, second = cKDTree(xy).query_pairs(2 * self.radius_mm, output_type="ndarray").T
        centres = np.concatenate([self.xy_mm[box.inside], _pair_centres(xy[first], xy[second], self.radius_mm)])
        within = (
            (centres[:, 0] >= box.x0 - _SLACK_MM)
            & (centres[:, 0] <= box.x1 + _SLACK_MM)
            & (centres[:, 1] >= box.y0 - _SLACK_MM)
            & (centres[:, 1] <= box.y1 + _SLACK_MM)
        )
        centres = centres[within]
        if self.on_tissue is not None and len(centres):
            allowed = np.asarray(self.on_tissue(centres), dtype=bool)
            if allowed.shape != (len(centres),):
                raise ValueError(f"on_tissue must return shape ({len(centres)},), got {allowed.shape}")
            centres = centres[allowed]
        if not len(centres):
            return
        weight = self.weight[box.undecided]
        counts = np.empty(len(centres), dtype=np.int64)
        chunk = max(1, _CHUNK_ELEMENTS // max(1, len(xy)))
        for start in range(0, len(centres), chunk):
            part = centres[start : start + chunk]
            squared = ((part[:, None, :] - xy[None, :, :]) ** 2).sum(axis=2)
            counts[start : start + chunk] = box.sure + (squared <= self.counted_mm2) @ weight
        best = np.lexsort((centres[:, 0], centres[:, 1], -counts))[0]
        found = (int(counts[best]), float(centres[best, 1]), float(centres[best, 0]))
        if self.best is None or (-found[0], found[1], found[2]) < (-self.best[0], self.best[1], self.best[2]):
            self.best = found
