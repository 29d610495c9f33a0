"""benchmarks.path_agreement: what counts as a differing point, and that its exact path scores whole maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks import path_agreement
from model import cascade, detector
from model.detector import Detections, Detector
from model.image_io import read_rgb

SAMPLE = Path(__file__).parent / "container" / "input" / "001.tiff"


def detections(xy_mm: list[tuple[float, float]], probability: list[float]) -> Detections:
    n = len(probability)
    return Detections(
        xy_px=np.zeros((n, 2)),
        xy_mm=np.asarray(xy_mm, dtype=float).reshape(n, 2),
        probability=np.asarray(probability, dtype=float),
        agreed=np.ones(n, dtype=bool),
        is_mitosis=np.zeros(n, dtype=bool),
    )


def test_a_point_differs_when_moved_or_rescored_and_not_otherwise():
    reference = detections([(1.0, 2.0), (3.0, 4.0)], [0.9, 0.5])
    assert path_agreement.points_differing(reference, reference) == 0
    assert path_agreement.points_differing(reference, detections([(1.0, 2.0), (3.0, 4.001)], [0.9, 0.5])) == 1
    assert path_agreement.points_differing(reference, detections([(1.0, 2.0), (3.0, 4.0)], [0.9, 0.51])) == 1
    assert path_agreement.points_differing(reference, detections([], [])) == 2
    assert path_agreement.points_differing(detections([], []), reference) == 0


def test_the_exact_path_scores_whole_maps_and_leaves_the_default_alone(monkeypatch):
    """On the sample image beside as much glass the default path scores part of B's map; the exact path never scores
    part of a map, and both give the same points."""
    whole_map_calls: list[bool] = []
    real_map = detector.probability_map

    def recording(*args, cells=None, **kwargs):
        whole_map_calls.append(cells is None)
        return real_map(*args, cells=cells, **kwargs)

    monkeypatch.setattr(detector, "probability_map", recording)
    sample = read_rgb(SAMPLE)[0]
    rgb = np.concatenate([sample, np.full_like(sample, 240)], axis=1)
    share = cascade.FULL_MAP_SHARE
    found = {}
    for path in path_agreement.PATHS:
        whole_map_calls.clear()
        found |= path_agreement.detect_both({path: Detector(use_screen=False)}, rgb, 0.00025, "sample")
        assert cascade.FULL_MAP_SHARE == share
        if path == "exact":
            assert whole_map_calls and all(whole_map_calls), "the exact path scored part of a map"
        else:
            assert not all(whole_map_calls), "the default path should score part of B's map here"
    assert path_agreement.points_differing(found["default"][0], found["exact"][0]) == 0
    assert path_agreement.points_differing(found["exact"][0], found["default"][0]) == 0
