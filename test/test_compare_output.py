"""The container test's comparison tolerates CPU rounding only where it can flip an outcome."""

from __future__ import annotations

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "compare_output", Path(__file__).resolve().parent / "container" / "compare_output.py"
)
compare_output = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_output)


def doc(*points):
    return {"points": [{"name": n, "point": [x, 0.1, 0], "probability": p} for n, x, p in points]}


def test_points_at_the_floor_may_differ_elsewhere_they_may_not():
    expected = doc(("non-mitotic figure", 0.1, 0.30), ("non-mitotic figure", 0.2, 0.055))
    actual = doc(("non-mitotic figure", 0.1, 0.30), ("non-mitotic figure", 0.3, 0.06))
    assert compare_output.comparison_errors(actual, expected, 2e-4, 0.02, floor=0.05) == []
    assert compare_output.comparison_errors(actual, expected, 2e-4, 0.02)  # without --floor: strict
    far = doc(("non-mitotic figure", 0.1, 0.30))
    assert compare_output.comparison_errors(far, doc(("non-mitotic figure", 0.1, 0.30), ("mitotic figure", 0.2, 0.9)),
                                            2e-4, 0.02, floor=0.05)


def test_a_name_may_flip_only_at_the_threshold():
    expected = doc(("mitotic figure", 0.1, 0.915))
    flipped = doc(("non-mitotic figure", 0.1, 0.905))
    assert compare_output.comparison_errors(flipped, expected, 2e-4, 0.02, threshold=0.91) == []
    assert compare_output.comparison_errors(flipped, expected, 2e-4, 0.02, threshold=0.5)
