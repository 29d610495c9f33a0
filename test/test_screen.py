"""The screen's geometry, its one ownership rule in both directions, and what it skips (glass only)."""

from __future__ import annotations

import numpy as np
import torch

from model.geometry import BORDER_PAD_PX, map_shape, pixel_from_map_index
from model.screen import (
    SCREEN_GRID,
    ScreenNet,
    p4_cells_passing,
    screen_cells_off_glass,
    screen_map,
    screen_map_shape,
    screen_targets,
)
from model.tissue import non_glass_blocks


def test_geometry_is_derived_from_the_layers():
    assert (SCREEN_GRID.receptive_field_px, SCREEN_GRID.stride_px) == (96, 16)
    net = ScreenNet().eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 96 + 16 * 4, 96 + 16 * 4))
    assert out.shape == (1, 1, 5, 5)


def test_ownership_rule_is_the_same_in_both_directions():
    height_px, width_px = 300, 260
    p4_shape = map_shape(height_px, width_px)
    screen_shape = screen_map_shape(height_px, width_px)
    rng = np.random.default_rng(0)
    for _ in range(20):
        p4_map = np.zeros(p4_shape, np.float32)
        row, col = rng.integers(0, p4_shape[0]), rng.integers(0, p4_shape[1])
        p4_map[row, col] = 1.0
        target = screen_targets(p4_map, screen_shape)
        assert target.sum() == 1.0  # every P4 cell has exactly one owner
        assert p4_cells_passing(target > 0, p4_shape)[row, col]  # and passing the owner passes the cell


def test_owned_p4_windows_lie_inside_the_screen_window():
    """Screen cell i covers padded pixels [16 i, 16 i + 96); it owns P4 cells 2 i + 1 and 2 i + 2."""
    for i in range(5):
        window = (16 * i - BORDER_PAD_PX, 16 * i + 96 - BORDER_PAD_PX)  # in image pixels
        for p4_cell in (2 * i + 1, 2 * i + 2):
            centre = pixel_from_map_index(np.array([p4_cell]))[0]
            assert window[0] <= centre - 39 + 0.5 and centre + 39 - 0.5 <= window[1]


def test_only_glass_is_skipped():
    glass = np.full((400, 400, 3), 240, np.uint8)
    assert not non_glass_blocks(glass, 16).any()
    assert not screen_cells_off_glass(glass).any()
    with_tissue = glass.copy()
    with_tissue[200:210, 100:110] = (120, 60, 150)  # a small stained spot
    cells = screen_cells_off_glass(with_tissue)
    assert 0 < cells.sum() <= 8 * 8  # the cells whose 96 px window holds the spot, no more
    rows, cols = np.nonzero(cells)
    for row, col in zip(rows, cols, strict=True):
        top, left = 16 * row - BORDER_PAD_PX, 16 * col - BORDER_PAD_PX
        assert top < 210 and top + 96 > 200 and left < 110 and left + 96 > 100


def test_screen_map_scores_nothing_on_glass():
    calls = []
    net = ScreenNet().eval()
    net.register_forward_hook(lambda *_: calls.append(1))
    probability = screen_map(np.full((300, 300, 3), 240, np.uint8), net, torch.device("cpu"), None)
    assert not calls and (probability == 0).all()
    screen_map(np.full((300, 300, 3), 120, np.uint8), net, torch.device("cpu"), None)
    assert calls
