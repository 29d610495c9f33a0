"""wsi.hotspot: the densest circle equals a brute-force search, and the Nottingham score follows Elston & Ellis."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsi.hotspot import (
    BOUNDARY_TOLERANCE_MM,
    DEFAULT_HOTSPOT_MM2,
    ELSTON_ELLIS_AREA_MM2,
    VETERINARY_HOTSPOT_MM2,
    densest_circle,
    hpf_area_mm2,
    nottingham_mitotic_score,
)


def counts_at(centres_mm: np.ndarray, points_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    squared = ((centres_mm[:, None, :] - points_mm[None, :, :]) ** 2).sum(axis=2)
    return (squared <= (radius_mm + BOUNDARY_TOLERANCE_MM) ** 2).sum(axis=1)


def exact_candidates(points_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    """Every point, and both centres of the radius-r circles through every two points at most 2r apart."""
    first, second = np.triu_indices(len(points_mm), k=1)
    a, b = points_mm[first], points_mm[second]
    half = np.linalg.norm(b - a, axis=1) / 2
    keep = (half > 0) & (half <= radius_mm)
    a, b, half = a[keep], b[keep], half[keep]
    unit_normal = np.stack([a[:, 1] - b[:, 1], b[:, 0] - a[:, 0]], axis=1) / (2 * half[:, None])
    lift = np.sqrt(np.maximum(radius_mm**2 - half**2, 0))[:, None] * unit_normal
    middle = (a + b) / 2
    return np.concatenate([points_mm, middle + lift, middle - lift])


def grid_centres(points_mm: np.ndarray, radius_mm: float, steps: int) -> np.ndarray:
    low, high = points_mm.min(axis=0) - radius_mm, points_mm.max(axis=0) + radius_mm
    x, y = np.meshgrid(np.linspace(low[0], high[0], steps), np.linspace(low[1], high[1], steps))
    return np.stack([x.ravel(), y.ravel()], axis=1)


def brute_force(points_mm: np.ndarray, area_mm2: float, on_tissue=None) -> tuple[int, np.ndarray] | None:
    """Best (count, centre) over the exact candidates, lowest y then x among equal counts."""
    radius_mm = math.sqrt(area_mm2 / math.pi)
    centres = exact_candidates(points_mm, radius_mm)
    if on_tissue is not None:
        centres = centres[on_tissue(centres)]
    if not len(centres):
        return None
    counts = counts_at(centres, points_mm, radius_mm)
    best = np.lexsort((centres[:, 0], centres[:, 1], -counts))[0]
    return int(counts[best]), centres[best]


@pytest.mark.parametrize("seed", range(12))
def test_densest_circle_equals_brute_force_on_random_points(seed):
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, rng.uniform(1, 5), size=(int(rng.integers(2, 90)), 2))
    if seed % 2:  # clustered: most points in one small blob
        points[: len(points) // 2] = rng.normal(points[0], 0.2, size=(len(points) // 2, 2))
    area_mm2 = float(rng.uniform(0.2, 2.5))
    radius_mm = math.sqrt(area_mm2 / math.pi)

    hotspot = densest_circle(points, area_mm2)
    count, centre = brute_force(points, area_mm2)

    assert hotspot.count == count
    np.testing.assert_allclose(hotspot.center_mm, centre, atol=1e-9)
    assert counts_at(np.array([hotspot.center_mm]), points, radius_mm)[0] == hotspot.count
    assert hotspot.holds(points).sum() == hotspot.count  # the atypical figures inside are counted by this rule
    assert hotspot.radius_mm == pytest.approx(radius_mm) and hotspot.area_mm2 == area_mm2
    fine_grid = grid_centres(points, radius_mm, steps=120)
    assert counts_at(fine_grid, points, radius_mm).max() <= hotspot.count


def test_grid_search_misses_an_optimum_the_exact_search_finds():
    """Two points 2r - 0.1 um apart share a circle only in a lens 0.2 um wide around their midpoint, off any grid."""
    area_mm2 = 2.0
    radius_mm = math.sqrt(area_mm2 / math.pi)
    middle = np.array([1.00037, 0.75])
    points = np.array([middle - [radius_mm - 1e-4, 0], middle + [radius_mm - 1e-4, 0], [3.0, 3.0]])

    hotspot = densest_circle(points, area_mm2)

    assert hotspot.count == 2
    assert abs(hotspot.center_mm[0] - middle[0]) <= 1e-4
    grid = grid_centres(points, radius_mm, steps=400)  # 10 um steps
    assert counts_at(grid, points, radius_mm).max() == 1


def test_a_point_on_the_boundary_counts():
    points = np.array([[0.0, 0.0], [2.0, 0.0]])  # exactly 2r apart for r = 1: one circle, tangent at both
    hotspot = densest_circle(points, math.pi)
    assert hotspot.count == 2 and hotspot.holds(points).all()
    np.testing.assert_allclose(hotspot.center_mm, (1.0, 0.0), atol=1e-9)


def test_the_hotspot_lies_on_tissue():
    rng = np.random.default_rng(3)
    blob_off_tissue = rng.normal([-0.6, 0.0], 0.15, size=(40, 2))
    scattered = rng.uniform([-2, -2], [3, 2], size=(40, 2))
    points = np.concatenate([blob_off_tissue, scattered])

    def on_tissue(centres_mm: np.ndarray) -> np.ndarray:
        return centres_mm[:, 0] >= 0.0

    free = densest_circle(points, 1.0)
    hotspot = densest_circle(points, 1.0, on_tissue=on_tissue)
    count, centre = brute_force(points, 1.0, on_tissue)

    assert free.center_mm[0] < 0
    assert hotspot.center_mm[0] >= 0
    assert hotspot.count == count < free.count
    np.testing.assert_allclose(hotspot.center_mm, centre, atol=1e-9)
    assert densest_circle(points, 1.0, on_tissue=lambda centres: np.zeros(len(centres), dtype=bool)) is None


def test_equal_counts_go_to_the_lowest_y_then_x_whatever_the_input_order():
    one_cluster = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1]])
    points = np.concatenate([one_cluster + [5.0, 2.0], one_cluster + [0.0, 4.0], one_cluster + [9.0, 2.0]])
    results = {densest_circle(np.random.default_rng(seed).permutation(points), 0.5) for seed in range(5)}
    assert len(results) == 1
    (hotspot,) = results
    count, centre = brute_force(points, 0.5)
    assert hotspot.count == count == 3
    np.testing.assert_allclose(hotspot.center_mm, centre, atol=1e-9)
    assert np.hypot(*np.subtract(hotspot.center_mm, (5.0, 2.0))) <= hotspot.radius_mm  # the cluster at y = 2, x = 5

    single = densest_circle(np.array([[3.0, 1.0], [1.0, 1.0], [2.0, 5.0]]), 0.1)
    assert single.count == 1 and single.center_mm == (1.0, 1.0)


def test_duplicate_points_count_each():
    points = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [4.0, 4.0], [4.1, 4.0]])
    assert densest_circle(points, 0.5).count == 3


def test_no_points_no_hotspot():
    assert densest_circle(np.zeros((0, 2)), DEFAULT_HOTSPOT_MM2) is None


@pytest.mark.parametrize(
    ("points", "area_mm2"),
    [(np.zeros((3, 3)), 1.0), (np.array([[0.0, np.nan]]), 1.0), (np.zeros((1, 2)), 0.0), (np.zeros((1, 2)), -1.0)],
)
def test_bad_input_is_refused(points, area_mm2):
    with pytest.raises(ValueError):
        densest_circle(points, area_mm2)


def test_fifty_thousand_clustered_points_finish():
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 3, size=(4, 2))
    points = np.concatenate([rng.normal(centre, 0.4, size=(12_500, 2)) for centre in centres])
    hotspot = densest_circle(points, DEFAULT_HOTSPOT_MM2)
    assert counts_at(np.array([hotspot.center_mm]), points, hotspot.radius_mm)[0] == hotspot.count > 12_500 / 2


def expected_score(count: int, cutoffs: tuple[int, int]) -> int:
    return 1 if count < cutoffs[0] else 2 if count < cutoffs[1] else 3


@pytest.mark.parametrize(
    ("area_mm2", "cutoffs"),
    [
        (ELSTON_ELLIS_AREA_MM2, (10, 20)),  # Elston & Ellis: 10 fields of 0.59 mm
        (hpf_area_mm2(0.59), (10, 20)),  # the same fields measured: 2.734 mm2
        (1.96, (8, 15)),  # the familiar table for 10 fields of 0.50 mm: 0-7, 8-14, >=15
        (hpf_area_mm2(0.50), (8, 15)),
        (DEFAULT_HOTSPOT_MM2, (8, 15)),
    ],
)
def test_nottingham_score_table(area_mm2, cutoffs):
    assert [nottingham_mitotic_score(count, area_mm2) for count in range(40)] == [
        expected_score(count, cutoffs) for count in range(40)
    ]


def test_score_refuses_impossible_input():
    with pytest.raises(ValueError):
        nottingham_mitotic_score(-1, 2.0)
    with pytest.raises(ValueError):
        nottingham_mitotic_score(5, 0.0)


def test_field_areas_match_the_published_ones():
    assert hpf_area_mm2(0.59) == pytest.approx(ELSTON_ELLIS_AREA_MM2, abs=0.01)
    assert hpf_area_mm2(0.50) == pytest.approx(1.96, abs=0.01)
    assert hpf_area_mm2(22 / 40) == pytest.approx(VETERINARY_HOTSPOT_MM2, abs=0.01)  # FN 22 ocular, 40x objective
    assert hpf_area_mm2(0.5, fields=1) == pytest.approx(0.196, abs=0.001)
    with pytest.raises(ValueError):
        hpf_area_mm2(0.0)
    with pytest.raises(ValueError):
        hpf_area_mm2(0.5, fields=0)
