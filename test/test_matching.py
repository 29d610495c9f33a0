"""Greedy matching identical to the challenge's evalutils.scorers.score_detection."""

from __future__ import annotations

import numpy as np
import pytest
from evalutils.scorers import score_detection

from model.matching import MATCH_RADIUS_UM, greedy_match


def counts(targets, predictions, radius):
    tp = len(greedy_match(np.asarray(targets), np.asarray(predictions), radius))
    return tp, len(predictions) - tp, len(targets) - tp


@pytest.mark.parametrize("seed", range(40))
def test_matches_evalutils_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    radius = MATCH_RADIUS_UM / 1000  # mm
    targets = rng.uniform(0, 0.1, size=(rng.integers(0, 25), 2))
    predictions = rng.uniform(0, 0.1, size=(rng.integers(0, 25), 2))
    if seed % 3 == 0 and len(targets) and len(predictions):  # duplicates and exact ties
        predictions = np.concatenate([predictions, predictions[:3], targets[:2] + [radius, 0]])
    expected = score_detection(ground_truth=targets.tolist(), predictions=predictions.tolist(), radius=radius)
    assert counts(targets, predictions, radius) == (
        expected.true_positives,
        expected.false_positives,
        expected.false_negatives,
    )


def test_point_at_exactly_the_radius_matches():
    assert counts([[0.0, 0.0]], [[3.0, 4.0]], 5.0) == (1, 0, 0)


def test_empty_inputs():
    assert greedy_match(np.zeros((0, 2)), np.ones((3, 2)), 1.0) == []
    assert greedy_match(np.ones((3, 2)), np.zeros((0, 2)), 1.0) == []
