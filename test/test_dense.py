"""Tiled dense inference equals whole-image application of the mirrored image, for any image size; scoring part of
a map gives the full map's values on the cells it covers."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from conftest import random_plain_state

from model import geometry
from model.architecture import ArchitectureConfig
from model.dense import MirroredImage, covered_cells, probability_map, tile_grid, tiles_holding
from model.plain import PlainP4ResNet


@pytest.fixture(scope="module")
def score_fn():
    net = PlainP4ResNet(ArchitectureConfig())
    net.load_state_dict(random_plain_state(3))
    net.eval()

    def score(batch):
        return torch.softmax(net(batch), dim=1)[:, 1]

    return score


@pytest.mark.parametrize("height_px, width_px", [(78 + 8 * 9, 78 + 8 * 7), (150, 201), (60, 90)])
def test_tiled_equals_whole_mirrored_image(score_fn, height_px, width_px):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(height_px, width_px, 3), dtype=np.uint8)
    pad = geometry.BORDER_PAD_PX
    mirrored = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    whole = probability_map(mirrored, score_fn, torch.device("cpu"), tile_cells=10_000, pad_px=0)
    tiled = probability_map(image, score_fn, torch.device("cpu"), tile_cells=3)
    assert whole.shape == tiled.shape == geometry.map_shape(height_px, width_px)
    assert np.abs(whole - tiled).max() < 1e-5


def test_padding_keeps_every_unpadded_window_in_place(score_fn):
    """The margin is a multiple of the stride: the unpadded map is the padded one without its border cells."""
    image = np.random.default_rng(1).integers(0, 256, size=(150, 140, 3), dtype=np.uint8)
    unpadded = probability_map(image, score_fn, torch.device("cpu"), pad_px=0)
    padded = probability_map(image, score_fn, torch.device("cpu"))
    border = geometry.BORDER_PAD_PX // geometry.OUTPUT_STRIDE_PX
    inner = padded[border : border + unpadded.shape[0], border : border + unpadded.shape[1]]
    assert np.abs(inner - unpadded).max() < 1e-5
    assert geometry.pixel_from_map_index(np.array([border]))[0] == geometry.WINDOW_CENTRE_PX


@pytest.mark.parametrize(
    "rows, cols", [(slice(0, 40), slice(0, 40)), (slice(5, 93), slice(60, 98)), (slice(None), slice(None))]
)
def test_mirrored_view_equals_numpy_reflect(rows, cols):
    image = np.random.default_rng(2).integers(0, 256, size=(34, 50, 3), dtype=np.uint8)
    expected = np.pad(image, ((32, 32), (32, 32), (0, 0)), mode="reflect")[rows, cols]
    np.testing.assert_array_equal(MirroredImage(image, 32)[rows, cols], expected)


def test_part_of_a_map_equals_the_full_map_where_computed(score_fn):
    image = np.random.default_rng(3).integers(0, 256, size=(230, 260, 3), dtype=np.uint8)
    full = probability_map(image, score_fn, torch.device("cpu"))
    wanted = np.zeros(full.shape, dtype=bool)
    wanted[2, 3] = wanted[20, 25] = True
    part = probability_map(image, score_fn, torch.device("cpu"), tile_cells=6, cells=wanted, batch_tiles=3)
    covered = covered_cells(wanted, 6)
    assert covered[wanted].all() and 0 < covered.mean() < 0.5
    assert np.abs(part[covered] - full[covered]).max() < 1e-5
    assert (part[~covered] == 0).all()


def test_tiles_cover_map_exactly_once():
    covered = np.zeros((23, 17), dtype=int)
    for row0, col0, rows, cols in tile_grid(23, 17, 5):
        covered[row0 : row0 + rows, col0 : col0 + cols] += 1
    assert (covered == 1).all()


def test_image_too_small_to_mirror_is_rejected(score_fn):
    with pytest.raises(ValueError, match="too small"):
        probability_map(np.zeros((geometry.BORDER_PAD_PX, 200, 3), np.uint8), score_fn, torch.device("cpu"))
    with pytest.raises(ValueError, match="receptive field"):
        probability_map(np.zeros((77, 200, 3), np.uint8), score_fn, torch.device("cpu"), pad_px=0)


def test_fitted_tiles_score_every_wanted_cell_exactly_and_fewer_others(score_fn):
    image = np.random.default_rng(4).integers(0, 256, size=(420, 470, 3), dtype=np.uint8)
    full = probability_map(image, score_fn, torch.device("cpu"))
    wanted = np.zeros(full.shape, dtype=bool)
    wanted[1:4, 2:5] = wanted[30:33, 40:42] = wanted[10, 50] = True  # small groups astride the fixed grid's lines
    part = probability_map(image, score_fn, torch.device("cpu"), tile_cells=16, cells=wanted, fitted=True)
    covered = covered_cells(wanted, 16, fitted=True)
    assert covered[wanted].all() and covered.sum() < covered_cells(wanted, 16).sum()
    assert np.abs(part[covered] - full[covered]).max() < 1e-5 and (part[~covered] == 0).all()
    for row0, col0, rows, cols in tiles_holding(wanted, wanted.shape, 16, fitted=True):
        assert rows in (8, 16) and cols in (8, 16)  # few distinct input shapes: oneDNN reuses its kernels
        assert 0 <= row0 and row0 + rows <= wanted.shape[0] and 0 <= col0 and col0 + cols <= wanted.shape[1]


def test_tile_workers_score_side_by_side_with_the_single_thread_result(score_fn):
    """On a CPU with 2 threads, batches go to 2 single-threaded workers (no grad, results written in order); the map
    equals the single-threaded one and the caller's thread count is left as it was."""
    image = np.random.default_rng(1).integers(0, 256, size=(78 + 8 * 20, 78 + 8 * 20, 3), dtype=np.uint8)
    seen = []

    def recording(batch):
        seen.append((threading.current_thread().name, torch.is_grad_enabled(), torch.get_num_threads()))
        return score_fn(batch)

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = probability_map(image, recording, torch.device("cpu"), tile_cells=4)
        assert {name for name, _, _ in seen} == {threading.current_thread().name}
        seen.clear()
        torch.set_num_threads(2)
        side_by_side = probability_map(image, recording, torch.device("cpu"), tile_cells=4)
        assert torch.get_num_threads() == 2
        again = probability_map(image, score_fn, torch.device("cpu"), tile_cells=4)
    finally:
        torch.set_num_threads(before)
    assert len({name for name, _, _ in seen}) == 2 and all(name.startswith("tiles") for name, _, _ in seen)
    assert not any(grad for _, grad, _ in seen) and {threads for _, _, threads in seen} == {1}
    np.testing.assert_allclose(side_by_side, alone, atol=1e-6)
    assert np.array_equal(side_by_side, again)  # identical output for identical input


def test_a_failing_tile_worker_raises_in_the_caller_and_restores_the_threads(score_fn):
    image = np.random.default_rng(2).integers(0, 256, size=(78 + 8 * 20, 78 + 8 * 20, 3), dtype=np.uint8)
    calls = []

    def failing(batch):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("tile 3 failed")
        return score_fn(batch)

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(RuntimeError, match="tile 3 failed"):
            probability_map(image, failing, torch.device("cpu"), tile_cells=2)
        assert torch.get_num_threads() == 2
        tiles = len(list(tile_grid(*geometry.map_shape(*image.shape[:2]), 2)))
        assert len(calls) <= 3 + 2 * 2 < tiles  # the batches still waiting were dropped
    finally:
        torch.set_num_threads(before)
