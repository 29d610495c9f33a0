"""The overlay says what it shows: a legend in the corner, each ring's probability beside it."""

from __future__ import annotations

import numpy as np
from PIL import Image

from app.overlay import CANDIDATE_COLOUR, MITOSIS_COLOUR, draw_overlay


def test_overlay_has_a_legend_and_each_rings_probability(tmp_path):
    grey = np.full((600, 600, 3), 128, dtype=np.uint8)
    xy_px = np.array([[400.0, 400.0], [200.0, 450.0], [500.0, 150.0]])
    is_mitosis = np.array([True, False, False])
    probability = np.array([0.9, 0.6, 0.1])  # the last is below half the lowest named one: not drawn
    draw_overlay(grey, xy_px, is_mitosis, probability, (0.00025, 0.00025), tmp_path / "o.png", candidate_floor=0.25)
    picture = np.asarray(Image.open(tmp_path / "o.png").convert("RGB")).astype(int)

    legend = picture[:60, :200]
    assert (legend == 255).all(axis=-1).mean() > 0.5 and (legend.sum(axis=-1) < 200).any()  # white box, dark text
    for colour in (MITOSIS_COLOUR, CANDIDATE_COLOUR):  # the legend's sample rings
        assert (np.abs(legend - colour).sum(axis=-1) < 30).any()

    def coloured(region: np.ndarray, colour: tuple[int, int, int]) -> int:
        return int((np.abs(region - colour).sum(axis=-1) < 30).sum())

    radius = 30  # 7.5 um at 0.25 um/px
    beside = picture[400 - radius : 400 - radius + 20, 400 + radius + 2 : 400 + radius + 40]
    assert coloured(beside, MITOSIS_COLOUR) > 5  # "0.90" in green
    assert coloured(picture[450 - radius : 450 - radius + 20, 200 + radius + 2 : 200 + radius + 40], CANDIDATE_COLOUR)
    assert coloured(picture[100:200, 450:560], CANDIDATE_COLOUR) == 0  # p 0.1: not drawn
