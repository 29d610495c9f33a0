"""Tiled dense inference equals whole-image application, for any image size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_plain_state

from model import geometry
from model.architecture import ArchitectureConfig
from model.dense import probability_map, tile_grid
from model.plain import PlainP4ResNet


@pytest.fixture(scope="module")
def score_fn():
    net = PlainP4ResNet(ArchitectureConfig())
    net.load_state_dict(random_plain_state(3))
    net.eval()

    def score(batch):
        return torch.softmax(net(batch), dim=1)[:, 1]

    return score


@pytest.mark.parametrize("height_px, width_px", [(78 + 8 * 9, 78 + 8 * 7), (150, 201)])
def test_tiled_equals_full_image(score_fn, height_px, width_px):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(height_px, width_px, 3), dtype=np.uint8)
    whole = probability_map(image, score_fn, torch.device("cpu"), tile_cells=10_000)
    tiled = probability_map(image, score_fn, torch.device("cpu"), tile_cells=3)
    assert whole.shape == geometry.map_shape(height_px, width_px)
    assert np.abs(whole - tiled).max() < 1e-5


def test_tiles_cover_map_exactly_once():
    covered = np.zeros((23, 17), dtype=int)
    for row0, col0, rows, cols in tile_grid(23, 17, 5):
        covered[row0 : row0 + rows, col0 : col0 + cols] += 1
    assert (covered == 1).all()


def test_image_smaller_than_receptive_field_is_rejected(score_fn):
    with pytest.raises(ValueError, match="receptive field"):
        probability_map(np.zeros((77, 200, 3), np.uint8), score_fn, torch.device("cpu"))
