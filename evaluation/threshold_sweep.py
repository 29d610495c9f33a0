"""The challenge's greedy matching at every probability threshold of one image, in one pass.

F1 by threshold and the MIDOG 2025 FROC need the counts of `model.matching.greedy_match` for "keep the points with
probability >= t" at many thresholds t. Re-matching at each distinct probability costs points x points per image
(30,000 points in one file took 191 s, 300,000 never finished). Here the points are added instead, from the highest
probability down, and the greedy assignment is repaired after each addition (30,000 points: 1.6 s for the whole
evaluation, same output); the counts equal those of `greedy_match` run on each kept set (checked against it in
`test/test_evaluate.py`).

Why repairing is exact. `greedy_match` lets each target in turn take its best unused prediction within the radius,
best meaning the smallest (distance, prediction index). Add one prediction p to the kept set:

- the targets before the first target i that ranks p above its current choice (or has none) choose as before;
- i takes p and releases its previous choice q (if it had none, the matching grows by one and nothing else moves);
- q is now free for the targets after i: the first of them that ranks q above its current choice takes it and
  releases its own, and so on. Targets before it do not want q: they chose, with q available, something better.

So each addition changes one chain of targets and the number of matches by 0 or 1. A target's candidates (its
predictions within the radius, ranked by distance then index) and the distances come from the same cKDTree query and
the same `np.linalg.norm` as `greedy_match`; only here the tree holds every prediction of the image, not the kept ones
(a pair's distance test does not depend on the other points; cKDTree's bulk inclusion of a box lying wholly inside the
radius could, in principle, differ from the pointwise test by one rounding step exactly at the radius).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree


@dataclass(frozen=True)
class ThresholdSweep:
    """Greedy-matching counts of one image for every "keep probability >= t".

    `thresholds` are the image's distinct probabilities, ascending; `tp[i]` and `kept[i]` are the matched pairs and
    the kept points at `thresholds[i]`. `n_targets` is the image's number of targets (FN = n_targets - TP).
    """

    thresholds: np.ndarray
    tp: np.ndarray
    kept: np.ndarray
    n_targets: int

    def at(self, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(TP, kept) when the points with probability >= each of `thresholds` are kept (0 and 0 above them all)."""
        index = np.searchsorted(self.thresholds, np.asarray(thresholds, dtype=np.float64), side="left")
        tp = np.append(self.tp, 0)[index]
        kept = np.append(self.kept, 0)[index]
        return tp, kept


def sweep_thresholds(
    targets_xy: np.ndarray, predictions_xy: np.ndarray, scores: np.ndarray, radius: float
) -> ThresholdSweep:
    """Compute `greedy_match`'s number of pairs for every threshold of one image (keep score >= t), exactly.

    Parameters
    ----------
    targets_xy : (N, 2) array_like of float
        Target (ground-truth) points, in the order in which they choose.
    predictions_xy : (M, 2) array_like of float
        Predicted points, same unit as the targets.
    scores : (M,) array_like of float
        Each prediction's probability (finite).
    radius : float
        Largest matching distance (inclusive), in the unit of the coordinates.

    Returns
    -------
    sweep : ThresholdSweep
        The distinct scores ascending, and TP / kept at each. Cost: O((N + M) log M) for the neighbour search plus,
        per prediction within the radius of a target, its neighbours along the chain it moves (short in practice).
    """
    targets_xy = np.asarray(targets_xy, dtype=np.float64).reshape(-1, 2)
    predictions_xy = np.asarray(predictions_xy, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(predictions_xy):
        raise ValueError(f"{len(predictions_xy)} predictions but {len(scores)} scores")
    thresholds = -np.unique(-scores)  # distinct scores, descending
    order = np.argsort(-scores, kind="stable")  # highest first; equal scores in index order
    group_ends = np.searchsorted(-scores[order], -thresholds, side="right")  # points kept at each threshold
    tp_descending = np.zeros(len(thresholds), dtype=np.int64)
    if len(targets_xy) and len(predictions_xy):
        tp_descending = _tp_after_each_group(targets_xy, predictions_xy, order, group_ends, radius)
    return ThresholdSweep(thresholds[::-1].copy(), tp_descending[::-1].copy(), group_ends[::-1].copy(), len(targets_xy))


def _tp_after_each_group(
    targets_xy: np.ndarray, predictions_xy: np.ndarray, order: np.ndarray, group_ends: np.ndarray, radius: float
) -> np.ndarray:
    """Matches after adding `order[:end]` for each of `group_ends`, by repairing the greedy assignment."""
    neighbours = cKDTree(predictions_xy).query_ball_point(targets_xy, r=radius)
    lengths = np.fromiter((len(n) for n in neighbours), dtype=np.int64, count=len(neighbours))
    pair_target = np.repeat(np.arange(len(targets_xy)), lengths)
    pair_prediction = np.fromiter((j for n in neighbours for j in n), dtype=np.int64, count=int(lengths.sum()))
    # the distance exactly as greedy_match computes it (row by row, the same operations)
    distance = np.linalg.norm(predictions_xy[pair_prediction] - targets_xy[pair_target], axis=1)
    # rank of each candidate among its target's: by distance, then prediction index (greedy_match's lexsort)
    by_target = np.lexsort((pair_prediction, distance, pair_target))
    starts = np.concatenate([[0], np.cumsum(lengths)])
    rank = np.empty(len(by_target), dtype=np.int64)
    rank[by_target] = np.arange(len(by_target)) - np.repeat(starts[:-1], lengths)
    # per prediction: its targets in target order, with the rank the target gives it
    by_prediction = np.lexsort((pair_target, pair_prediction))
    candidates: dict[int, list[tuple[int, int]]] = {}
    for j, i, r in zip(
        pair_prediction[by_prediction].tolist(),
        pair_target[by_prediction].tolist(),
        rank[by_prediction].tolist(),
        strict=True,
    ):
        candidates.setdefault(j, []).append((i, r))

    unmatched = len(predictions_xy)  # rank of "no prediction": worse than any
    held_rank = [unmatched] * len(targets_xy)
    held = [-1] * len(targets_xy)
    matches = 0
    tp = np.zeros(len(group_ends), dtype=np.int64)
    start = 0
    for group, end in enumerate(group_ends.tolist()):
        for added in order[start:end].tolist():
            chain = candidates.get(added)
            after = -1  # the newly free prediction goes to the first later target that prefers it
            free = added
            while chain is not None:
                for target, rank_there in chain:
                    if target > after and rank_there < held_rank[target]:
                        released = held[target]
                        held[target], held_rank[target] = free, rank_there
                        break
                else:  # nobody wants it: it stays unmatched
                    break
                if released < 0:  # the chain ended at a target that had nothing: one match more
                    matches += 1
                    break
                after, free, chain = target, released, candidates[released]
        tp[group] = matches
        start = end
    return tp
