"""From probability maps to scored points: local maxima per model, then two-model agreement.

The paper's submission keeps a detection when both policy models detect it. Here every candidate is kept with an
ensemble probability (so the challenge's AP sees the full ranking); only agreed candidates at or above the tuned
threshold are named "mitotic figure" (the only ones the challenge's F1 counts).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from skimage.feature import peak_local_max

from model.geometry import OUTPUT_STRIDE_PX, pixel_from_map_index
from model.matching import greedy_match
from model.plausibility import looks_like_micrograph


def ensemble_probability(probability_a: np.ndarray, probability_b: np.ndarray) -> np.ndarray:
    """Combine the two policy models' probabilities into one agreement score: the lower of the two.

    Taking the minimum makes a threshold mean agreement: score >= t exactly when both models say >= t.

    Parameters
    ----------
    probability_a, probability_b : array_like of float
        Mitosis probabilities in [0, 1] of models A and B; arrays of broadcastable shapes, or scalars.

    Returns
    -------
    probability : ndarray or numpy scalar
        Element-wise ``minimum(probability_a, probability_b)``, in [0, 1], of the broadcast shape (a numpy scalar
        for two scalars).
    """
    return np.minimum(probability_a, probability_b)


@dataclass(frozen=True)
class Candidates:
    """Local maxima of one map: pixel positions (x, y), map indices (row, col) and probabilities."""

    xy_px: np.ndarray  # (N, 2) float, continuous pixel coordinates of window centres
    cells: np.ndarray  # (N, 2) int, (row, col) in the map
    probability: np.ndarray  # (N,) float

    def subset(self, keep: np.ndarray) -> Candidates:
        """The candidates where the boolean `keep` is True, in the same order."""
        return Candidates(self.xy_px[keep], self.cells[keep], self.probability[keep])


def min_distance_cells(min_distance_px: float) -> int:
    """Convert the candidate spacing from pixels to cells of the probability map.

    A peak is the maximum of the (2 n + 1)^2 cells around it (``skimage.feature.peak_local_max``'s `min_distance`),
    and neighbouring cells are ``OUTPUT_STRIDE_PX`` (8) px apart.

    Parameters
    ----------
    min_distance_px : float
        Minimum distance between two candidates, in input-image px.

    Returns
    -------
    n : int
        ``min_distance_px / OUTPUT_STRIDE_PX`` rounded to the nearest integer (Python's `round`: halves go to the
        even neighbour), at least 1.
    """
    return max(1, int(round(min_distance_px / OUTPUT_STRIDE_PX)))


def local_maxima(
    probability: np.ndarray, min_distance_px: float, floor: float, trusted: np.ndarray | None = None
) -> Candidates:
    """Find the peaks of a probability map, at least `min_distance_px` apart and above `floor`.

    `trusted` (boolean, map-shaped) keeps only peaks in those cells: where a map was computed in part
    (`model.cascade`), a cell is a peak of the true map only if its whole neighbourhood was computed.

    Parameters
    ----------
    probability : (rows, cols) ndarray of float
        Dense mitosis probability map in [0, 1], one cell per ``OUTPUT_STRIDE_PX`` (8) input px.
    min_distance_px : float
        Minimum distance between two peaks, in input-image px; converted to cells with `min_distance_cells`, so a
        peak is the maximum of the (2 n + 1)^2 cells around it (Chebyshev distance on the map).
    floor : float
        Probability a peak must exceed: peaks lie strictly above it (``skimage.feature.peak_local_max``'s
        `threshold_abs`).
    trusted : (rows, cols) ndarray of bool, optional
        Cells where a peak may be kept; None keeps peaks everywhere. Peaks on the map's border are kept.

    Returns
    -------
    candidates : Candidates
        ``cells``: (N, 2) int64 (row, col) map indices; ``xy_px``: (N, 2) float64 (x, y) continuous pixel
        coordinates of the window centres in the unpadded image (`model.geometry.pixel_from_map_index`, pixel ``i``
        covering [i - 0.5, i + 0.5]); ``probability``: (N,) float64 map values at the peaks. Sorted by decreasing
        probability with a stable tie order (row-major), so output is deterministic. Empty (N = 0, arrays of shape
        (0, 2), (0, 2) and (0,)) when no cell is a peak above `floor`, as for a constant map.
    """
    cells = peak_local_max(
        probability, min_distance=min_distance_cells(min_distance_px), threshold_abs=floor, exclude_border=False
    ).astype(np.int64)
    if trusted is not None and len(cells):
        cells = cells[trusted[cells[:, 0], cells[:, 1]]]
    if len(cells):
        order = np.lexsort((cells[:, 1], cells[:, 0], -probability[cells[:, 0], cells[:, 1]]))
        cells = cells[order]
    values = probability[cells[:, 0], cells[:, 1]] if len(cells) else np.zeros(0, dtype=np.float32)
    xy_px = pixel_from_map_index(cells[:, ::-1]) if len(cells) else np.zeros((0, 2))
    return Candidates(xy_px=xy_px, cells=cells, probability=values.astype(np.float64))


@dataclass(frozen=True)
class EnsembleDetections:
    xy_px: np.ndarray  # (N, 2)
    probability: np.ndarray  # (N,) ensemble probability
    agreed: np.ndarray  # (N,) bool: the other model has a candidate within the agreement radius
    probability_a: np.ndarray | None = None  # (N,) model A's peak (what the verifier reads; None: not kept)
    probability_b: np.ndarray | None = None  # (N,) B's partner peak, or B's map at A's cell when alone
    cell_a: np.ndarray | None = None  # (N, 2) A's map cell (row, col) of each point
    neighbourhood: np.ndarray | None = None  # (N, 2) A's and B's maps averaged over the 3 x 3 cells around `cell_a`

    def subset(self, keep: np.ndarray) -> EnsembleDetections:
        """The points `keep` selects (a boolean mask or indices), in that order."""
        return EnsembleDetections(
            *(None if value is None else value[keep] for value in (getattr(self, f) for f in self.__dataclass_fields__))
        )


def agree(
    candidates_a: Candidates,
    candidates_b: Candidates,
    map_b: np.ndarray,
    agreement_radius_px: float,
) -> EnsembleDetections:
    """Confirm model A's candidates with model B: an agreed pair becomes one point at the midpoint.

    The paper's submission keeps a detection when both policy models detect it. Candidates are paired with
    `model.matching.greedy_match` (A's candidates in their order, each taking B's nearest unused candidate within
    `agreement_radius_px`), the rule the challenge uses to match points. A candidate of A without a partner keeps its
    position and is scored with B's map at its cell, so its ensemble probability still says how much both models
    believe in it. A peak of B with no peak of A within the radius is not a point: it could never be named (naming
    needs agreement), and leaving it out is what lets B be scored only around A's candidates (`model.cascade`).

    Parameters
    ----------
    candidates_a : Candidates
        Model A's peaks, as `local_maxima` returns them (strongest first, so stronger candidates pick first).
    candidates_b : Candidates
        Model B's peaks.
    map_b : (rows, cols) ndarray of float
        Model B's probability map on the same grid as A's map: A's unpaired candidates read it at their (row, col)
        cell.
    agreement_radius_px : float
        Largest distance, in input-image px (inclusive), between two candidates that agree.

    Returns
    -------
    detections : EnsembleDetections
        One point per candidate of A. ``xy_px``: (N, 2) float64 (x, y) pixel coordinates, the midpoint of an agreed
        pair or A's own position; ``probability``: (N,) float64 `ensemble_probability` of the two peaks, or of A's
        peak and ``map_b`` at its cell; ``agreed``: (N,) bool, whether B had a candidate within the radius. Sorted by
        decreasing probability (stable: agreed pairs in A's order, then A's unpaired candidates in their order).
        Empty (arrays of shape (0, 2), (0,) and (0,)) when A has no candidate.
    """
    pairs = greedy_match(candidates_a.xy_px, candidates_b.xy_px, agreement_radius_px)
    rows = _agreed_rows(candidates_a, candidates_b, pairs) + _unpaired_rows(candidates_a, map_b, {a for a, _ in pairs})
    if not rows:
        empty = np.zeros(0)
        return EnsembleDetections(
            np.zeros((0, 2)), empty, np.zeros(0, dtype=bool), empty, empty, np.zeros((0, 2), dtype=np.int64)
        )
    source, xy, probability, agreed, probability_a, probability_b = zip(*rows, strict=True)
    xy_arr, probability_arr, agreed_arr = np.asarray(xy), np.asarray(probability, dtype=np.float64), np.asarray(agreed)
    order = np.argsort(-probability_arr, kind="stable")
    a_arr, b_arr = np.asarray(probability_a, dtype=np.float64), np.asarray(probability_b, dtype=np.float64)
    cells = candidates_a.cells[np.asarray(source, dtype=np.int64)]
    return EnsembleDetections(
        xy_arr[order], probability_arr[order], agreed_arr[order], a_arr[order], b_arr[order], cells[order]
    )


_Row = tuple[int, np.ndarray, float, bool, float, float]
"""(A's candidate index, xy_px, ensemble probability, agreed, A's probability, B's probability) of one point."""


def _agreed_rows(candidates_a: Candidates, candidates_b: Candidates, pairs: list[tuple[int, int]]) -> list[_Row]:
    """One point per agreed pair, at the pair's midpoint, in A's order."""
    rows = []
    for a, b in pairs:
        p_a, p_b = candidates_a.probability[a], candidates_b.probability[b]
        xy = (candidates_a.xy_px[a] + candidates_b.xy_px[b]) / 2
        rows.append((a, xy, ensemble_probability(p_a, p_b), True, p_a, p_b))
    return rows


def _unpaired_rows(candidates_a: Candidates, map_b: np.ndarray, matched_a: set[int]) -> list[_Row]:
    """One point per candidate of A without a partner, at its own position, with B's map read at its cell."""
    rows = []
    for index in range(len(candidates_a.probability)):
        if index in matched_a:
            continue
        row, col = candidates_a.cells[index]
        p_a, p_b = candidates_a.probability[index], float(map_b[row, col])
        rows.append((index, candidates_a.xy_px[index], ensemble_probability(p_a, p_b), False, p_a, p_b))
    return rows


def with_neighbourhood(points: EnsembleDetections, map_a: np.ndarray, map_b: np.ndarray) -> EnsembleDetections:
    """`points` with both maps averaged over the 3 x 3 cells around each point's A cell: how broad the peak is
    (what the verifier reads; the cells lie inside what the cascade computed: A's candidates are peaks of trusted
    cells, and B is scored around them)."""
    if points.cell_a is None or not len(points.cell_a):
        return replace(points, neighbourhood=np.zeros((len(points.probability), 2)))
    rows, cols = points.cell_a[:, 0] + 1, points.cell_a[:, 1] + 1  # in the maps padded by one edge cell
    means = []
    for values in (map_a, map_b):  # at the points' cells only: a filter over the whole map costs far more
        padded = np.pad(np.asarray(values, dtype=np.float64), 1, mode="edge")
        means.append(sum(padded[rows + dr, cols + dc] for dr in (-1, 0, 1) for dc in (-1, 0, 1)) / 9)
    return replace(points, neighbourhood=np.column_stack(means))


Original = tuple[np.ndarray, np.ndarray]
"""(original image, the points on its pixels) of an image the detector upsampled to the networks' pixel size."""


def name_mitotic_figures(
    points: EnsembleDetections, threshold: float, image_rgb: np.ndarray, original: Original | None = None
) -> np.ndarray:
    """The dense nets' naming rule, in one place: a point is a mitotic figure when both models agree on it, its
    ensemble probability is at least the bundle's `threshold`, and its window looks like a micrograph
    (`only_micrographs`). `image_rgb` is the image the points' `xy_px` refer to."""
    return only_micrographs(points.agreed & (points.probability >= threshold), image_rgb, points.xy_px, original)


def only_micrographs(
    named: np.ndarray, image_rgb: np.ndarray, xy_px: np.ndarray, original: Original | None = None
) -> np.ndarray:
    """`named` less the points whose window does not look like a micrograph (`model.plausibility`: a 70-layer
    classifier names noise confidently), for either naming rule (the dense nets' or the verifier's).

    `original`: when the image was upsampled (`model.resample`), the guard is asked on the original pixels as well,
    because interpolation makes noise as smooth as a micrograph (docs/how-it-works.md, "Other pixel sizes").
    """
    named = np.array(named, dtype=bool)
    if named.any():  # the guard reads pixels: only where it can change a name
        named[named] = looks_like_micrograph(image_rgb, xy_px[named])
    if original is not None and named.any():
        original_rgb, original_xy_px = original
        named[named] = looks_like_micrograph(original_rgb, original_xy_px[named])
    return named
