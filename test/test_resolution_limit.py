"""benchmarks.resolution_limit: the coarser scans it measures, and that it measures past the accepted range."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import resolution_limit
from model import spacing


def test_whole_factors_are_area_means_with_their_centre_offset():
    fine = np.arange(6 * 4 * 3, dtype=np.uint8).reshape(6, 4, 3)
    coarse, origin_px = resolution_limit.coarser_scan(fine, 2.0)
    assert coarse.shape == (3, 2, 3) and origin_px == (0.5, 0.5)
    assert coarse[0, 0, 0] == round(fine[:2, :2, 0].mean())


def test_other_factors_keep_the_extent():
    coarse, origin_px = resolution_limit.coarser_scan(np.full((300, 200, 3), 128, np.uint8), 3.0 / 1.25)
    assert coarse.shape[:2] == (125, 83) and coarse.mean() == pytest.approx(128, abs=1)
    assert origin_px[1] == pytest.approx((300 / 125 - 1) / 2)


def test_the_benchmark_lifts_the_limit_for_its_own_run_only(monkeypatch):
    seen = []
    monkeypatch.setattr(resolution_limit, "_measure", lambda *args: seen.append(spacing.USABLE_SPACING_MM) or [])
    resolution_limit.measure(None, [2.0])
    assert seen == [resolution_limit.MEASURED_RANGE_MM]
    assert spacing.USABLE_SPACING_MM != resolution_limit.MEASURED_RANGE_MM
