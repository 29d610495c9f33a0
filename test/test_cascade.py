"""Model B only where the output depends on it (`model.cascade`): the same points, names and probabilities as both
models scored everywhere, on real fields with the shipped bundle; and the mask rules themselves."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import REAL_DATA

from model import Detector
from model.bundle import DEFAULT_BUNDLE_DIR
from model.cascade import (
    PART_FITTED_TILES,
    PART_TILE_CELLS,
    b_reaches_floor,
    cascade_points,
    cells_for_model_b,
    cells_near,
    full_map_pays,
    part_tiles,
    peak_margin_cells,
    trusted_cells,
)
from model.dense import covered_cells
from model.spacing import DEFAULT_SPACING_MM
from training.data.real_data import read_image
from training.validation.field_validation import held_out_fields

has_real_data = pytest.mark.skipif(
    not (REAL_DATA / "patches.csv").is_file(), reason="../shared/data/real not available"
)
SPACING_MM = (DEFAULT_SPACING_MM, DEFAULT_SPACING_MM)


def test_cells_near_is_a_square_neighbourhood():
    mask = np.zeros((9, 9), dtype=bool)
    mask[4, 4] = True
    near = cells_near(mask, 2)
    assert near.sum() == 25 and near[2:7, 2:7].all()
    assert (cells_near(mask, 0) == mask).all()


def test_trusted_cells_need_their_whole_neighbourhood_computed():
    computed = np.zeros((12, 12), dtype=bool)
    computed[:, :8] = True  # the map's own edge (column 0) counts as computed, the uncomputed columns 8+ do not
    trusted = trusted_cells(computed, 2)
    assert trusted[:, :6].all() and not trusted[:, 6:].any()


def test_model_b_cells_grow_from_a_candidates():
    cells = cells_for_model_b(np.array([[20, 20]]), (40, 40), agreement_radius_px=30.0, min_distance_cells=3)
    # 30 px = 3 whole cells of 8 px for a partner, + 3 cells of peak neighbourhood
    assert cells[14:27, 14:27].all() and cells.sum() == 13 * 13
    assert not cells_for_model_b(np.zeros((0, 2), int), (40, 40), 30.0, 3).any()


def test_a_candidates_whose_partner_square_stays_below_the_floor_are_dropped():
    map_b = np.zeros((20, 20), dtype=np.float32)
    map_b[5, 8] = 0.4  # 3 cells (24 px) from the first candidate: inside its 30 px partner square
    map_b[15, 15] = 0.1
    cells = np.array([[5, 5], [15, 12], [15, 15]])
    assert b_reaches_floor(map_b, cells, 30.0, floor=0.25).tolist() == [True, False, False]


def _points(merged, floor: float) -> tuple[np.ndarray, ...]:
    keep = merged.probability >= floor
    return merged.xy_px[keep], merged.probability[keep], merged.agreed[keep]


@has_real_data
def test_model_b_on_part_of_the_image_changes_nothing_on_real_fields():
    """In fp32, where exactness is a property of the cascade and not of the CPU: under bf16 autocast, tiles of other
    shapes round differently, by CPU kind (0.0026 with Intel AMX, less with AMD AVX512-BF16), which says nothing about
    which cells the cascade scores."""
    detector = Detector(DEFAULT_BUNDLE_DIR, use_screen=False, precision="fp32")
    floor, threshold = detector.bundle.candidate_floor, detector.bundle.threshold
    fields = held_out_fields(REAL_DATA)[:3]
    scored_b = []
    for field in fields:
        rgb = read_image(field.path)
        exact_xy, exact_p, exact_agreed = _points(detector.candidates(rgb, SPACING_MM, full_maps=True)[2], floor)
        fast_xy, fast_p, fast_agreed = _points(detector.candidates(rgb, SPACING_MM)[2], floor)
        assert len(fast_p) == len(exact_p) > 0
        order_exact, order_fast = np.lexsort(exact_xy.T), np.lexsort(fast_xy.T)
        np.testing.assert_array_equal(fast_xy[order_fast], exact_xy[order_exact])
        np.testing.assert_array_equal(fast_agreed[order_fast], exact_agreed[order_exact])
        np.testing.assert_allclose(fast_p[order_fast], exact_p[order_exact], atol=1e-4)  # fp32 sums in another order
        named = exact_agreed[order_exact] & (exact_p[order_exact] >= threshold)
        named_fast = fast_agreed[order_fast] & (fast_p[order_fast] >= threshold)
        assert (named == named_fast).all() or np.abs(exact_p[order_exact][named != named_fast] - threshold).max() < 1e-4
        candidates_a = detector.candidates(rgb, SPACING_MM)[0]
        scored_b.append(
            covered_cells(
                cells_for_model_b(candidates_a.cells, (127, 127), 30.0, 3), PART_TILE_CELLS["B"], PART_FITTED_TILES["B"]
            ).mean()
        )
    assert min(scored_b) < 1.0, "B was needed everywhere: the test did not exercise a partial map"


@pytest.mark.parametrize("floor_quantile", [0.9, 0.999, 0.9995])
def test_model_b_on_part_of_the_image_changes_nothing_synthetic(random_bundle_dir, floor_quantile):
    """The same exactness without `../shared`: any two networks, any image, any floor. Random networks on a blotchy
    synthetic image, fp32; the floor is set from A's own map so that A's candidates cover only part of it."""
    from scipy import ndimage

    rng = np.random.default_rng(7)
    noise = rng.normal(0.0, 1.0, (700, 650, 3))
    rgb = np.clip(170 + 60 * ndimage.gaussian_filter(noise, (6, 6, 0)) / 0.05, 0, 255).astype(np.uint8)
    detector = Detector(random_bundle_dir, use_screen=False, precision="fp32")
    map_a = detector._map_of("A", detector.networks[0], rgb, False)(None)[0]
    floor = float(np.quantile(map_a, floor_quantile))
    detector.bundle = dataclasses.replace(detector.bundle, candidate_floor=floor)
    exact_xy, exact_p, exact_agreed = _points(detector.candidates(rgb, SPACING_MM, full_maps=True)[2], floor)
    candidates_a, _, merged = detector.candidates(rgb, SPACING_MM)
    fast_xy, fast_p, fast_agreed = _points(merged, floor)
    assert len(fast_p) == len(exact_p) > 0
    order_exact, order_fast = np.lexsort(exact_xy.T), np.lexsort(fast_xy.T)
    np.testing.assert_array_equal(fast_xy[order_fast], exact_xy[order_exact])
    np.testing.assert_array_equal(fast_agreed[order_fast], exact_agreed[order_exact])
    np.testing.assert_allclose(fast_p[order_fast], exact_p[order_exact], atol=1e-5)
    # what the verifier reads of the maps is exact too: both probabilities and the 3 x 3 neighbourhoods
    exact_all = detector.candidates(rgb, SPACING_MM, full_maps=True)[2]
    for name in ("probability_a", "probability_b", "neighbourhood"):
        exact_values = getattr(exact_all, name)[exact_all.probability >= floor][order_exact]
        np.testing.assert_allclose(
            getattr(merged, name)[merged.probability >= floor][order_fast], exact_values, atol=1e-5
        )
    squares_b = cells_for_model_b(candidates_a.cells, map_a.shape, 30.0, 0)
    # the low floor takes B's whole map (its tiles would cover more than FULL_MAP_SHARE), the high ones B in part
    assert full_map_pays(part_tiles(squares_b, "B")) == (floor_quantile == 0.9), squares_b.mean()


def test_peak_margin_cells_finish_only_the_peak_tests_left_open():
    values = np.zeros((30, 30), dtype=np.float32)
    computed = np.zeros((30, 30), dtype=bool)
    computed[5:15, 5:15] = True
    values[5:15, 5:15] = 0.1
    values[13, 13] = 0.6  # a peak so far, 1 cell from the computed edge: its neighbourhood needs 2 more cells outward
    values[8, 8] = 0.2  # below the floor: no test to finish
    where = np.ones((30, 30), dtype=bool)
    margin = peak_margin_cells(values, computed, where, min_distance_cells=3, floor=0.25)
    expected = cells_near(np.pad(np.ones((1, 1), bool), ((13, 16), (13, 16))), 3) & ~computed
    np.testing.assert_array_equal(margin, expected)
    assert not peak_margin_cells(values, computed, ~where, 3, 0.25).any()  # outside `where`: nothing needed
    assert not peak_margin_cells(values, np.ones_like(computed), where, 3, 0.25).any()  # all computed: nothing


def _maps_of(full: np.ndarray, role: str, calls: list):
    """`cascade.MapOf` over a precomputed map: what part tiles would compute, 0 elsewhere."""

    def map_of(cells):
        if cells is None:
            calls.append((role, 1.0))
            return full, None
        covered = part_tiles(cells, role)
        calls.append((role, float(covered.mean())))
        return np.where(covered, full, 0), covered

    return map_of


@pytest.mark.parametrize("seed", range(12))
def test_two_step_model_b_equals_full_maps_on_random_smooth_maps(seed):
    """The cascade's logic alone, on many maps: B's second step scores only the margins of possible partners, yet
    every point, probability and neighbourhood equals the full maps'. Smooth random maps put peaks at the edges of
    the partner squares, where a margin left out would turn a non-peak into a false partner."""
    from scipy import ndimage

    from model.bundle import read_bundle

    rng = np.random.default_rng(seed)
    bundle = read_bundle(DEFAULT_BUNDLE_DIR)  # its radius, spacing and floor; no network is run
    maps = []
    for _ in range(2):
        field = ndimage.gaussian_filter(rng.normal(size=(200, 220)), 2.0)
        maps.append(np.clip((field - field.mean()) / field.std() * 0.13, 0, 1).astype(np.float32))
    calls: list = []
    exact = cascade_points(bundle, SPACING_MM, _maps_of(maps[0], "A", []), _maps_of(maps[1], "B", []), None, True)[2]
    fast = cascade_points(bundle, SPACING_MM, _maps_of(maps[0], "A", calls), _maps_of(maps[1], "B", calls), None)[2]
    b_calls = [share for role, share in calls if role == "B"]
    assert len(b_calls) == 2 and sum(b_calls) < 1.0, b_calls  # B in two steps, in part
    keep_exact, keep_fast = exact.probability >= bundle.candidate_floor, fast.probability >= bundle.candidate_floor
    assert keep_exact.sum() == keep_fast.sum() > 0
    order_exact = np.lexsort(exact.xy_px[keep_exact].T)
    order_fast = np.lexsort(fast.xy_px[keep_fast].T)
    for name in ("xy_px", "probability", "agreed", "probability_a", "probability_b", "neighbourhood"):
        np.testing.assert_array_equal(
            getattr(fast, name)[keep_fast][order_fast], getattr(exact, name)[keep_exact][order_exact], err_msg=name
        )
