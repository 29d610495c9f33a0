"""benchmarks.gating_ceiling on a small image with random networks: every variant is scored for real, its shares of
windows are what the masks ask for, and the report has one row per variant. No timing is asserted."""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from benchmarks import gating_ceiling
from model import Detector


def test_every_variant_scores_its_share_and_is_reported(random_bundle_dir):
    rng = np.random.default_rng(3)
    noise = ndimage.gaussian_filter(rng.normal(0.0, 1.0, (420, 460, 3)), (6, 6, 0))
    rgb = np.clip(170 + 60 * noise / noise.std(), 0, 255).astype(np.uint8)
    detector = Detector(random_bundle_dir, use_screen=False, verifier=False, atypical=False, precision="fp32")
    map_a = detector._map_of("A", detector.networks[0], rgb, False)(None)[0]
    floor = float(np.quantile(map_a, 0.995))  # A's cells above the floor: a small part of the map
    detector.bundle = dataclasses.replace(detector.bundle, candidate_floor=floor)
    result = gating_ceiling.measure(rgb, detector)
    variants = result["variants"]
    assert set(variants) == {
        "both full maps",
        "A full, B in two steps",
        "perfect cell-level screen for A, B in two steps",
        "B full, A in two steps",
    }
    assert result["share_above_floor"]["A"] <= 0.006
    assert 0 < variants["perfect cell-level screen for A, B in two steps"]["A_share"] < 1
    assert 0 < variants["A full, B in two steps"]["B_share"] < 1
    for variant in variants.values():
        assert variant["A_s"] > 0 and variant["B_s"] > 0
    table = gating_ceiling.report(result, "test CPU")
    assert table.count("\n| ") == 1 + 4 and "test CPU" in table  # the header, then one row per variant
