"""Point matching within a radius, exactly as the MIDOG evaluation does it.

The challenge scores with `evalutils.scorers.score_detection(radius=7.5e-3 mm)`: each ground-truth point in turn
(file order) takes its nearest not-yet-used prediction within the radius (ties by distance keep the lower index, as
BallTree's sorted query does). The same greedy rule decides two-model agreement in the ensemble, so one function
serves both. `MATCH_RADIUS_UM` is the only definition of the challenge radius in this project.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

MATCH_RADIUS_UM: float = 7.5
"""Challenge matching radius: 7.5 um (30 px at 0.25 um/px)."""


def greedy_match(targets_xy: np.ndarray, predictions_xy: np.ndarray, radius: float) -> list[tuple[int, int]]:
    """Match points greedily: each target in order takes its nearest unused prediction within `radius`.

    This is the matching of the MIDOG challenges' evaluation, ``evalutils.scorers.score_detection`` [1]_: each
    ground-truth point in turn (file order) takes its nearest not-yet-used prediction within the radius, ties by
    distance going to the lower prediction index. It is greedy, not an optimal assignment: an earlier target may take
    the prediction a later one needed. The ensemble uses the same rule for two-model agreement.

    Parameters
    ----------
    targets_xy : (N, 2) array_like of float
        Target (ground-truth) points, in the order in which they choose.
    predictions_xy : (M, 2) array_like of float
        Predicted points. Both point sets use the same axis order ((x, y) by convention) and the same unit.
    radius : float
        Largest matching distance (Euclidean, inclusive), in the unit of the coordinates: coordinates and radius share
        one unit (mm, um or px), e.g. ``MATCH_RADIUS_UM`` (7.5 um) for the challenge.

    Returns
    -------
    pairs : list of (int, int)
        (target index, prediction index) pairs in target order; every target and every prediction is in at most one
        pair. Empty when there are no targets or no predictions (either may have shape (0, 2) or be empty).

    References
    ----------
    .. [1] evalutils (Grand Challenge), ``evalutils.scorers.score_detection``.
           https://github.com/comic/evalutils
    """
    targets_xy = np.asarray(targets_xy, dtype=np.float64).reshape(-1, 2)
    predictions_xy = np.asarray(predictions_xy, dtype=np.float64).reshape(-1, 2)
    if len(targets_xy) == 0 or len(predictions_xy) == 0:
        return []
    tree = cKDTree(predictions_xy)
    used = np.zeros(len(predictions_xy), dtype=bool)
    pairs = []
    for target_index, neighbours in enumerate(tree.query_ball_point(targets_xy, r=radius)):
        if not neighbours:
            continue
        neighbours = np.asarray(neighbours)
        distances = np.linalg.norm(predictions_xy[neighbours] - targets_xy[target_index], axis=1)
        for prediction_index in neighbours[np.lexsort((neighbours, distances))]:
            if not used[prediction_index]:
                used[prediction_index] = True
                pairs.append((target_index, int(prediction_index)))
                break
    return pairs
