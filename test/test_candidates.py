"""Local maxima and two-model agreement."""

from __future__ import annotations

import numpy as np

from model.candidates import agree, local_maxima
from model.geometry import BORDER_PAD_PX, OUTPUT_STRIDE_PX, WINDOW_CENTRE_PX


def test_local_maxima_positions_and_order():
    probability = np.zeros((20, 20), dtype=np.float32)
    probability[5, 7] = 0.9
    probability[15, 2] = 0.6
    probability[5, 8] = 0.5  # neighbour of a stronger peak: suppressed
    found = local_maxima(probability, min_distance_px=2 * OUTPUT_STRIDE_PX, floor=0.1)
    assert found.cells.tolist() == [[5, 7], [15, 2]]
    # positions in the image before mirroring: window origin on the padded grid, minus the margin
    centre_px = WINDOW_CENTRE_PX - BORDER_PAD_PX
    assert np.allclose(found.xy_px[0], [7 * OUTPUT_STRIDE_PX + centre_px, 5 * OUTPUT_STRIDE_PX + centre_px])
    assert np.allclose(found.probability, [0.9, 0.6])


def test_peaks_outside_the_trusted_cells_are_dropped():
    probability = np.zeros((20, 20), dtype=np.float32)
    probability[5, 7], probability[15, 2] = 0.9, 0.6
    trusted = np.ones((20, 20), dtype=bool)
    trusted[10:] = False
    found = local_maxima(probability, min_distance_px=2 * OUTPUT_STRIDE_PX, floor=0.1, trusted=trusted)
    assert found.cells.tolist() == [[5, 7]]


def test_agreement_keeps_pairs_and_scores_a_singletons_with_b_map():
    map_a = np.zeros((30, 30), dtype=np.float32)
    map_b = np.zeros((30, 30), dtype=np.float32)
    map_a[10, 10], map_b[10, 11] = 0.9, 0.8  # one cell apart: agreed
    map_a[25, 25], map_b[25, 25] = 0.7, 0.05  # B has no candidate above the floor there
    map_b[2, 5] = 0.95  # a peak of B with no peak of A near it is not a point: it could never be named
    found_a = local_maxima(map_a, 16, 0.1)
    found_b = local_maxima(map_b, 16, 0.1)
    merged = agree(found_a, found_b, map_b, agreement_radius_px=30)
    assert merged.agreed.tolist() == [True, False]
    assert np.allclose(merged.probability, [0.8, 0.05])
    partner = found_b.cells.tolist().index([10, 11])
    assert np.allclose(merged.xy_px[0], (found_a.xy_px[0] + found_b.xy_px[partner]) / 2)


def test_no_candidates():
    empty = np.zeros((5, 5), dtype=np.float32)
    merged = agree(local_maxima(empty, 16, 0.1), local_maxima(empty, 16, 0.1), empty, 30)
    assert len(merged.probability) == 0
